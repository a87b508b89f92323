//! Leases: which replica of a cluster runs the work that must happen once (scheduled
//! syncs, Jira delivery processing, retention). A holder renews its lease well before it
//! lapses; when a holder dies, another replica takes the lease once it has lapsed.

use std::time::Duration;

use super::Cluster;
use crate::CatalogError;
use crate::state::{Timestamp, params};

impl Cluster<'_> {
    /// Takes or renews lease `name` for `holder` until `ttl` from now; whether `holder`
    /// holds it afterwards. A lease held by another replica is taken only once lapsed.
    pub fn hold_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, CatalogError> {
        let now = Timestamp::now().millis();
        let until = now + ttl.as_millis() as i64;
        self.0.transaction(|tx| {
            let current: Option<(String, i64)> = tx.query_opt(
                "SELECT holder, expires_at FROM leases WHERE name = $1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            match current {
                None => {
                    tx.execute(
                        "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)",
                        params![name, holder, until],
                    )?;
                }
                Some((h, expires)) if h == holder || expires < now => {
                    tx.execute(
                        "UPDATE leases SET holder = $1, expires_at = $2 WHERE name = $3",
                        params![holder, until, name],
                    )?;
                }
                Some(_) => return Ok(false),
            }
            Ok(true)
        })
    }

    /// Gives lease `name` up if `holder` has it, so another replica can take over at once.
    pub fn release_lease(&self, name: &str, holder: &str) -> Result<(), CatalogError> {
        self.0.conn()?.execute(
            "DELETE FROM leases WHERE name = $1 AND holder = $2",
            params![name, holder],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateStore;

    #[test]
    fn one_holder_at_a_time_until_it_lapses_or_is_released() {
        let s = StateStore::in_memory().unwrap();
        let ttl = Duration::from_millis(200);
        assert!(s.cluster().hold_lease("background", "a", ttl).unwrap());
        assert!(!s.cluster().hold_lease("background", "b", ttl).unwrap());
        assert!(s.cluster().hold_lease("background", "a", ttl).unwrap());
        std::thread::sleep(Duration::from_millis(250));
        assert!(s.cluster().hold_lease("background", "b", ttl).unwrap());
        assert!(!s.cluster().hold_lease("background", "a", ttl).unwrap());
        s.cluster().release_lease("background", "b").unwrap();
        assert!(s.cluster().hold_lease("background", "a", ttl).unwrap());
    }
}
