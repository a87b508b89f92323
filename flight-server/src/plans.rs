//! Statements planned at `GetFlightInfo`, kept for the `DoGet` that follows, so a query is
//! planned once. An entry is taken by the first redemption of its ticket; a ticket redeemed
//! again, on another replica, after a change to tables, users or grants, or after its entry
//! was pushed out, is planned anew.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quiver_catalog::{Planned, Principal};

/// Plans kept at most; past it the oldest is forgotten.
const CAPACITY: usize = 256;

/// Plans by query id, for the principal they were planned for.
#[derive(Clone)]
pub struct PlanCache {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
    max_age: Duration,
}

struct Entry {
    principal: Principal,
    planned: Planned,
    at: Instant,
}

impl PlanCache {
    /// A cache whose entries live at most `max_age` (a ticket's lifetime).
    pub fn new(max_age: Duration) -> Self {
        Self {
            inner: Arc::default(),
            max_age,
        }
    }

    /// Keeps `planned` for query `id` of `principal`.
    pub fn keep(&self, id: &str, principal: &Principal, planned: &Planned) {
        let mut plans = self.lock();
        plans.retain(|_, e| e.at.elapsed() < self.max_age);
        if plans.len() >= CAPACITY
            && let Some(oldest) = plans
                .iter()
                .min_by_key(|(_, e)| e.at)
                .map(|(k, _)| k.clone())
        {
            plans.remove(&oldest);
        }
        plans.insert(
            id.to_string(),
            Entry {
                principal: principal.clone(),
                planned: planned.clone(),
                at: Instant::now(),
            },
        );
    }

    /// The plan kept for query `id`, if it was planned for `principal` (same user, same
    /// groups); the caller checks that it is still current.
    pub fn take(&self, id: &str, principal: &Principal) -> Option<Planned> {
        let entry = self.lock().remove(id)?;
        (&entry.principal == principal && entry.at.elapsed() < self.max_age)
            .then_some(entry.planned)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
