//! Statements planned at `GetFlightInfo`, kept for the `DoGet` that follows, so a query is
//! planned once. An entry is taken by the first redemption of its ticket; a ticket redeemed
//! again, on another replica, after a change to tables, users or grants, or after its entry
//! was pushed out, is planned anew.
//!
//! Plans take memory (a statement with a long `IN` list holds megabytes), and a client may
//! ask for many tickets it never redeems: what is kept is bounded by count, by bytes per
//! user ([`USER_BYTES`]) and by bytes in all ([`TOTAL_BYTES`]), the oldest pushed out first.
//! A plan that alone is over a user's share is not kept at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quiver_catalog::{Planned, Principal};

/// Plans kept at most; past it the oldest is forgotten.
const CAPACITY: usize = 256;
/// Bytes of plans kept for one user at most ([`Planned::approx_bytes`]).
pub(crate) const USER_BYTES: usize = 16 << 20;
/// Bytes of plans kept in all.
pub(crate) const TOTAL_BYTES: usize = 128 << 20;

/// Plans by query id, for the principal they were planned for.
#[derive(Clone)]
pub(crate) struct PlanCache {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
    max_age: Duration,
}

struct Entry {
    principal: Principal,
    planned: Planned,
    bytes: usize,
    at: Instant,
}

impl PlanCache {
    /// A cache whose entries live at most `max_age` (a ticket's lifetime).
    pub(crate) fn new(max_age: Duration) -> Self {
        Self {
            inner: Arc::default(),
            max_age,
        }
    }

    /// Keeps `planned` for query `id` of `principal`, within the bounds.
    pub(crate) fn keep(&self, id: &str, principal: &Principal, planned: &Planned) {
        let bytes = planned.approx_bytes();
        if bytes > USER_BYTES {
            return;
        }
        let mut plans = self.lock();
        plans.retain(|_, e| e.at.elapsed() < self.max_age);
        let user = principal.email();
        loop {
            let (mut count, mut total, mut mine) = (plans.len(), bytes, bytes);
            for e in plans.values() {
                total += e.bytes;
                if e.principal.email() == user {
                    mine += e.bytes;
                }
            }
            count += 1;
            if count <= CAPACITY && total <= TOTAL_BYTES && mine <= USER_BYTES {
                break;
            }
            // Over the user's share: their own oldest goes; otherwise anyone's oldest.
            let oldest = plans
                .iter()
                .filter(|(_, e)| mine <= USER_BYTES || e.principal.email() == user)
                .min_by_key(|(_, e)| e.at)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(oldest) => plans.remove(&oldest),
                None => return,
            };
        }
        plans.insert(
            id.to_string(),
            Entry {
                principal: principal.clone(),
                planned: planned.clone(),
                bytes,
                at: Instant::now(),
            },
        );
    }

    /// The plan kept for query `id`, if it was planned for `principal` (same user, same
    /// groups); the caller checks that it is still current.
    pub(crate) fn take(&self, id: &str, principal: &Principal) -> Option<Planned> {
        let entry = self.lock().remove(id)?;
        (&entry.principal == principal && entry.at.elapsed() < self.max_age)
            .then_some(entry.planned)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
