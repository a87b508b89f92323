//! Sign-in rate limits: failed attempts are counted per account and per client address in
//! a sliding window; once either is over its limit, further attempts are refused until the
//! window moves on. Unknown accounts are counted like known ones, so the limiter reveals
//! nothing, and a successful sign-in clears its account's count.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed-attempt limits for sign-ins.
#[derive(Debug)]
pub struct LoginThrottle {
    window: Duration,
    per_account: usize,
    per_address: usize,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Default for LoginThrottle {
    /// 10 failures per account and 50 per address in 5 minutes.
    fn default() -> Self {
        Self::new(Duration::from_secs(300), 10, 50)
    }
}

impl LoginThrottle {
    /// A throttle allowing `per_account` and `per_address` failures per `window`.
    pub fn new(window: Duration, per_account: usize, per_address: usize) -> Self {
        Self {
            window,
            per_account,
            per_address,
            failures: Mutex::default(),
        }
    }

    fn keys(account: &str, address: Option<&str>) -> [(String, bool); 2] {
        [
            (format!("account:{}", account.trim().to_lowercase()), true),
            (format!("address:{}", address.unwrap_or("unknown")), false),
        ]
    }

    /// `Err(wait)` when `account` or `address` has failed too often recently.
    pub fn check(&self, account: &str, address: Option<&str>) -> Result<(), Duration> {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for (key, is_account) in Self::keys(account, address) {
            let limit = if is_account {
                self.per_account
            } else {
                self.per_address
            };
            if let Some(times) = map.get_mut(&key) {
                while times
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    times.pop_front();
                }
                if times.len() >= limit {
                    let oldest = *times.front().expect("non-empty");
                    return Err(self.window.saturating_sub(now.duration_since(oldest)));
                }
            }
        }
        Ok(())
    }

    /// Counts a failed attempt.
    pub fn failed(&self, account: &str, address: Option<&str>) {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        // Keep memory bounded under a spray of made-up accounts.
        if map.len() > 100_000 {
            map.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < self.window)
            });
        }
        for (key, _) in Self::keys(account, address) {
            map.entry(key).or_default().push_back(now);
        }
    }

    /// Clears an account's failures after a successful sign-in.
    pub fn succeeded(&self, account: &str) {
        let [(key, _), _] = Self::keys(account, None);
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_lock_the_account_and_the_address() {
        let t = LoginThrottle::new(Duration::from_secs(60), 3, 5);
        for _ in 0..3 {
            assert!(t.check("a@x.com", Some("1.1.1.1")).is_ok());
            t.failed("a@x.com", Some("1.1.1.1"));
        }
        assert!(
            t.check("A@x.com", Some("2.2.2.2")).is_err(),
            "account limit"
        );
        assert!(t.check("b@x.com", Some("2.2.2.2")).is_ok());
        t.failed("b@x.com", Some("1.1.1.1"));
        t.failed("c@x.com", Some("1.1.1.1"));
        assert!(
            t.check("d@x.com", Some("1.1.1.1")).is_err(),
            "address limit"
        );
        t.succeeded("a@x.com");
        assert!(t.check("a@x.com", Some("3.3.3.3")).is_ok());
    }
}
