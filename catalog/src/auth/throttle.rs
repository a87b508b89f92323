//! Sign-in rate limits: failed attempts are counted per account and per client address in
//! a sliding window; once either is over its limit, further attempts are refused until the
//! window moves on. Unknown accounts are counted like known ones, so the limiter reveals
//! nothing, and a successful sign-in clears its account's count. The failures are rows in
//! the state database, so the limits hold across every replica sharing it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::CatalogError;
use crate::state::{StateStore, Timestamp, params};

/// Failed-attempt limits for sign-ins.
#[derive(Debug)]
pub(crate) struct LoginThrottle {
    window: Duration,
    per_account: usize,
    per_address: usize,
    /// When this process last removed failures older than the window (ms).
    pruned: AtomicI64,
}

impl Default for LoginThrottle {
    /// 10 failures per account and 50 per address in 5 minutes.
    fn default() -> Self {
        Self::new(Duration::from_secs(300), 10, 50)
    }
}

impl LoginThrottle {
    /// A throttle allowing `per_account` and `per_address` failures per `window`.
    pub(crate) fn new(window: Duration, per_account: usize, per_address: usize) -> Self {
        Self {
            window,
            per_account,
            per_address,
            pruned: AtomicI64::new(0),
        }
    }

    fn account_key(account: &str) -> String {
        format!("account:{}", account.trim().to_lowercase())
    }

    fn address_key(address: Option<&str>) -> String {
        format!("address:{}", address.unwrap_or("unknown"))
    }

    fn window_ms(&self) -> i64 {
        self.window.as_millis() as i64
    }

    /// `Ok(Err(wait))` when `account` or `address` has failed too often recently.
    pub(crate) fn check(
        &self,
        state: &StateStore,
        account: &str,
        address: Option<&str>,
    ) -> Result<Result<(), Duration>, CatalogError> {
        let now = Timestamp::now().millis();
        let (account, address) = (Self::account_key(account), Self::address_key(address));
        let counts: Vec<(String, i64, i64)> = state.conn()?.query_map(
            "SELECT key, count(*), min(failed_at) FROM sign_in_failures
             WHERE key IN ($1, $2) AND failed_at > $3 GROUP BY key",
            params![account.as_str(), address.as_str(), now - self.window_ms()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        for (key, failures, oldest) in counts {
            let limit = if key == account {
                self.per_account
            } else {
                self.per_address
            };
            if failures as usize >= limit {
                let wait = (oldest + self.window_ms() - now).max(0);
                return Ok(Err(Duration::from_millis(wait as u64)));
            }
        }
        Ok(Ok(()))
    }

    /// Counts a failed attempt.
    pub(crate) fn failed(
        &self,
        state: &StateStore,
        account: &str,
        address: Option<&str>,
    ) -> Result<(), CatalogError> {
        let now = Timestamp::now().millis();
        let conn = state.conn()?;
        // Keep the table to the window's worth under a spray of made-up accounts.
        let pruned = self.pruned.load(Ordering::Relaxed);
        if now - pruned > 10_000
            && self
                .pruned
                .compare_exchange(pruned, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            conn.execute(
                "DELETE FROM sign_in_failures WHERE failed_at <= $1",
                params![now - self.window_ms()],
            )?;
        }
        conn.execute(
            "INSERT INTO sign_in_failures (key, failed_at) VALUES ($1, $3), ($2, $3)",
            params![
                Self::account_key(account).as_str(),
                Self::address_key(address).as_str(),
                now
            ],
        )?;
        Ok(())
    }

    /// Clears an account's failures after a successful sign-in.
    pub(crate) fn succeeded(&self, state: &StateStore, account: &str) -> Result<(), CatalogError> {
        state.conn()?.execute(
            "DELETE FROM sign_in_failures WHERE key = $1",
            params![Self::account_key(account).as_str()],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_lock_the_account_and_the_address() {
        let s = StateStore::in_memory().unwrap();
        let t = LoginThrottle::new(Duration::from_secs(60), 3, 5);
        let ok = |account: &str, address: &str| t.check(&s, account, Some(address)).unwrap();
        for _ in 0..3 {
            assert!(ok("a@x.com", "1.1.1.1").is_ok());
            t.failed(&s, "a@x.com", Some("1.1.1.1")).unwrap();
        }
        assert!(ok("A@x.com", "2.2.2.2").is_err(), "account limit");
        assert!(ok("b@x.com", "2.2.2.2").is_ok());
        t.failed(&s, "b@x.com", Some("1.1.1.1")).unwrap();
        t.failed(&s, "c@x.com", Some("1.1.1.1")).unwrap();
        assert!(ok("d@x.com", "1.1.1.1").is_err(), "address limit");
        t.succeeded(&s, "a@x.com").unwrap();
        assert!(ok("a@x.com", "3.3.3.3").is_ok());
    }
}
