//! The replicas sharing one state database, and the work each runs.
//!
//! A replica joins with a random id and renews its row with a heartbeat every
//! [`HEARTBEAT`]; one not seen for [`REPLICA_TIMEOUT`] is dead, and what it was doing no
//! longer counts: its streams stop taking the user's places, and the leader marks its
//! syncs interrupted. Each result being streamed is a row while it runs, so
//! `query.max_concurrent_per_user` holds across the cluster and a cancel sent to any
//! replica reaches the one streaming the query. On the embedded state there is
//! one process, and these rows are not written (the in-process registry is the truth).

use std::sync::Arc;
use std::time::Duration;

use crate::CatalogError;
use crate::state::{Backend, StateStore, Timestamp, params};

mod leases;

/// How often a replica renews its row.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A replica not seen for this long is dead.
pub const REPLICA_TIMEOUT: Duration = Duration::from_secs(10);
/// A dead replica's row (and its work) is removed after this long.
const FORGET_AFTER: Duration = Duration::from_secs(300);

/// A live replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Its id.
    pub id: String,
    /// Where clients reach its Flight SQL listener (`server.advertise`), if it said.
    pub advertise: Option<String>,
}

/// Why a user's work was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The user already has this many (results streaming, or statements holding bound
    /// parameters) in the cluster.
    #[error("{0} in use")]
    Busy(usize),
    /// The state database failed.
    #[error(transparent)]
    State(#[from] CatalogError),
}

fn ago_ms(d: Duration) -> i64 {
    Timestamp::now().minus(d).millis()
}

/// Records `replica` in a shared state and keeps it alive, a heartbeat every
/// [`HEARTBEAT`], until `stop` completes; then removes it (its work no longer counts
/// anywhere). Returns once the first heartbeat is recorded. Nothing to do on an embedded
/// state.
pub async fn keep_alive(
    state: Arc<StateStore>,
    replica: Replica,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, CatalogError> {
    if !state.cluster().is_shared() {
        return Ok(tokio::spawn(stop));
    }
    let (s, r) = (state.clone(), replica.clone());
    tokio::task::spawn_blocking(move || s.cluster().beat(&r))
        .await
        .map_err(|e| CatalogError::Internal(format!("heartbeat task: {e}")))??;
    Ok(tokio::spawn(heartbeat(state, replica, stop)))
}

async fn heartbeat(state: Arc<StateStore>, replica: Replica, stop: impl Future<Output = ()>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => {
                let (s, r) = (state.clone(), replica.clone());
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.cluster().beat(&r)).await {
                    tracing::warn!(replica = %replica.id, error = %e, "cannot renew this replica's heartbeat");
                }
            }
        }
    }
    let id = replica.id.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || state.cluster().leave(&id)).await {
        tracing::warn!(replica = %replica.id, error = %e, "cannot remove this replica from the state");
    }
}

impl Replica {
    /// A new replica id, reached at `advertise`.
    pub fn new(advertise: Option<String>) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            advertise,
        }
    }
}

/// The replicas, the work they run and the leases they hold (see [`StateStore::cluster`]).
pub struct Cluster<'a>(pub(super) &'a StateStore);

impl Cluster<'_> {
    /// Whether replicas share this state (and so record their work in it).
    pub fn is_shared(&self) -> bool {
        self.0.backend() == Backend::Postgres
    }

    /// Records `replica` as alive (joining, or its heartbeat).
    pub fn beat(&self, replica: &Replica) -> Result<(), CatalogError> {
        let now = Timestamp::now().millis();
        let updated = self.0.conn()?.execute(
            "UPDATE replicas SET seen_at = $1, advertise = $2 WHERE id = $3",
            params![now, replica.advertise.as_deref(), replica.id.as_str()],
        )?;
        if updated == 0 {
            self.0.conn()?.execute(
                "INSERT INTO replicas (id, advertise, started_at, seen_at) VALUES ($1, $2, $3, $3)",
                params![replica.id.as_str(), replica.advertise.as_deref(), now],
            )?;
        }
        Ok(())
    }

    /// Removes `replica` and its work (a clean shutdown).
    pub fn leave(&self, replica: &str) -> Result<(), CatalogError> {
        self.0.transaction(|tx| {
            tx.execute(
                "DELETE FROM running_work WHERE replica = $1",
                params![replica],
            )?;
            tx.execute(
                "DELETE FROM bound_statements WHERE replica = $1",
                params![replica],
            )?;
            tx.execute("DELETE FROM replicas WHERE id = $1", params![replica])?;
            Ok(())
        })
    }

    /// The replicas seen alive recently, oldest first.
    pub fn live_replicas(&self) -> Result<Vec<Replica>, CatalogError> {
        self.0.conn()?.query_map(
            "SELECT id, advertise FROM replicas WHERE seen_at > $1 ORDER BY started_at, id",
            params![ago_ms(REPLICA_TIMEOUT)],
            |r| {
                Ok(Replica {
                    id: r.get(0)?,
                    advertise: r.get(1)?,
                })
            },
        )
    }

    /// Forgets replicas dead for a while and their work, and which replica ran the runs
    /// that have ended; returns how many replicas went.
    pub fn forget_dead_replicas(&self) -> Result<usize, CatalogError> {
        let cutoff = ago_ms(FORGET_AFTER);
        self.0.transaction(|tx| {
            tx.execute(
                "DELETE FROM running_work WHERE replica IN (SELECT id FROM replicas WHERE seen_at < $1)",
                params![cutoff],
            )?;
            tx.execute(
                "DELETE FROM bound_statements WHERE replica IN (SELECT id FROM replicas WHERE seen_at < $1)",
                params![cutoff],
            )?;
            tx.execute(
                "DELETE FROM sync_run_replicas
                 WHERE run IN (SELECT id FROM sync_runs WHERE status <> 'running')",
                params![],
            )?;
            tx.execute("DELETE FROM replicas WHERE seen_at < $1", params![cutoff])
        })
    }

    /// Admits `user`'s stream of `query_id` on `replica` as work `id` unless the user
    /// already has `max` streaming on live replicas. It ends with [`Self::finish_work`].
    pub fn claim_work(
        &self,
        id: &str,
        replica: &str,
        user: &str,
        query_id: &str,
        max: usize,
    ) -> Result<(), ClaimError> {
        let lock = format!("work:{user}");
        self.0.locked(&lock, |tx| {
            let live = ago_ms(REPLICA_TIMEOUT);
            let admitted = tx.execute(
                "INSERT INTO running_work (id, replica, principal, query_id)
                 SELECT $1::VARCHAR, $2::VARCHAR, $3::VARCHAR, $4::VARCHAR
                 WHERE (SELECT count(*) FROM running_work w JOIN replicas r ON r.id = w.replica
                        WHERE w.principal = $3::VARCHAR AND r.seen_at > $5::BIGINT) < $6::BIGINT",
                params![id, replica, user, query_id, live, max as i64],
            )?;
            if admitted == 1 {
                return Ok(Ok(()));
            }
            let busy: i64 = tx.query_row(
                "SELECT count(*) FROM running_work w JOIN replicas r ON r.id = w.replica
                 WHERE w.principal = $1 AND r.seen_at > $2",
                params![user, live],
                |r| r.get(0),
            )?;
            Ok(Err(ClaimError::Busy(busy as usize)))
        })?
    }

    /// Records that prepared statement `id` of `user` holds bound parameters on `replica`,
    /// unless the user already has `max` such statements on live replicas (a statement
    /// bound again keeps its place). It ends with [`Self::release_statement`].
    pub fn claim_statement(
        &self,
        id: &str,
        replica: &str,
        user: &str,
        max: usize,
    ) -> Result<(), ClaimError> {
        let lock = format!("statements:{user}");
        self.0.locked(&lock, |tx| {
            let live = ago_ms(REPLICA_TIMEOUT);
            let moved = tx.execute(
                "UPDATE bound_statements SET replica = $1 WHERE id = $2 AND principal = $3",
                params![replica, id, user],
            )?;
            if moved == 1 {
                return Ok(Ok(()));
            }
            let held: i64 = tx.query_row(
                "SELECT count(*) FROM bound_statements s JOIN replicas r ON r.id = s.replica
                 WHERE s.principal = $1 AND r.seen_at > $2",
                params![user, live],
                |r| r.get(0),
            )?;
            if held as usize >= max {
                return Ok(Err(ClaimError::Busy(held as usize)));
            }
            tx.execute(
                "INSERT INTO bound_statements (id, replica, principal) VALUES ($1, $2, $3)",
                params![id, replica, user],
            )?;
            Ok(Ok(()))
        })?
    }

    /// Ends [`Self::claim_statement`]: the statement was closed or forgotten.
    pub fn release_statement(&self, id: &str) -> Result<(), CatalogError> {
        self.0
            .conn()?
            .execute("DELETE FROM bound_statements WHERE id = $1", params![id])?;
        Ok(())
    }

    /// The work `replica` has recorded (to find rows whose end could not be recorded).
    pub fn work_on(&self, replica: &str) -> Result<Vec<String>, CatalogError> {
        self.0.conn()?.query_map(
            "SELECT id FROM running_work WHERE replica = $1",
            params![replica],
            |r| r.get(0),
        )
    }

    /// Ends a unit of work.
    pub fn finish_work(&self, work: &str) -> Result<(), CatalogError> {
        self.0
            .conn()?
            .execute("DELETE FROM running_work WHERE id = $1", params![work])?;
        Ok(())
    }

    /// Asks whichever replica streams `query_id` to cancel it, on behalf of `user` (an
    /// admin may cancel anyone's); whether such a stream is running.
    pub fn request_cancel(
        &self,
        query_id: &str,
        user: &str,
        admin: bool,
    ) -> Result<bool, CatalogError> {
        let marked = self.0.conn()?.execute(
            "UPDATE running_work SET cancel = true
             WHERE query_id = $1 AND ($2 OR principal = $3)",
            params![query_id, admin, user],
        )?;
        Ok(marked > 0)
    }

    /// The queries streaming on `replica` that someone asked (on any replica) to cancel.
    pub fn cancel_requests(&self, replica: &str) -> Result<Vec<String>, CatalogError> {
        self.0.conn()?.query_map(
            "SELECT DISTINCT query_id FROM running_work
             WHERE replica = $1 AND cancel",
            params![replica],
            |r| r.get(0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(id: &str) -> Replica {
        Replica {
            id: id.into(),
            advertise: Some(format!("grpc://{id}:50051")),
        }
    }

    #[test]
    fn statements_with_bound_parameters_are_counted_across_replicas() {
        let state = StateStore::in_memory().unwrap();
        let cluster = state.cluster();
        cluster.beat(&replica("a")).unwrap();
        cluster.beat(&replica("b")).unwrap();
        cluster.claim_statement("s1", "a", "u@x.com", 2).unwrap();
        cluster.claim_statement("s2", "b", "u@x.com", 2).unwrap();
        assert!(matches!(
            cluster.claim_statement("s3", "a", "u@x.com", 2),
            Err(ClaimError::Busy(2))
        ));
        // Bound again (on any replica), a statement keeps its place.
        cluster.claim_statement("s1", "b", "u@x.com", 2).unwrap();
        cluster.claim_statement("s9", "a", "v@x.com", 2).unwrap();
        cluster.release_statement("s2").unwrap();
        cluster.claim_statement("s3", "a", "u@x.com", 2).unwrap();
        // A replica that leaves takes its statements with it.
        cluster.leave("a").unwrap();
        cluster.claim_statement("s4", "b", "u@x.com", 2).unwrap();
    }

    #[test]
    fn work_is_counted_across_replicas_and_cancelled_from_any() {
        let state = StateStore::in_memory().unwrap();
        state.cluster().beat(&replica("a")).unwrap();
        state.cluster().beat(&replica("b")).unwrap();
        assert_eq!(state.cluster().live_replicas().unwrap().len(), 2);

        state
            .cluster()
            .claim_work("w1", "a", "u@x.com", "q1", 2)
            .unwrap();
        state
            .cluster()
            .claim_work("w2", "b", "u@x.com", "q2", 2)
            .unwrap();
        assert!(matches!(
            state.cluster().claim_work("w3", "a", "u@x.com", "q3", 2),
            Err(ClaimError::Busy(2))
        ));
        assert!(
            state
                .cluster()
                .claim_work("w4", "a", "v@x.com", "q4", 2)
                .is_ok(),
            "per user"
        );

        assert!(
            !state
                .cluster()
                .request_cancel("q1", "v@x.com", false)
                .unwrap()
        );
        assert!(state.cluster().cancel_requests("a").unwrap().is_empty());
        assert!(
            state
                .cluster()
                .request_cancel("q1", "u@x.com", false)
                .unwrap()
        );
        assert_eq!(
            state.cluster().cancel_requests("a").unwrap(),
            vec!["q1".to_string()]
        );
        assert!(state.cluster().cancel_requests("b").unwrap().is_empty());

        assert_eq!(state.cluster().work_on("a").unwrap().len(), 2);
        state.cluster().finish_work("w1").unwrap();
        assert!(
            state
                .cluster()
                .claim_work("w3", "a", "u@x.com", "q3", 2)
                .is_ok()
        );

        // A replica that left no longer counts.
        state.cluster().leave("b").unwrap();
        assert_eq!(state.cluster().live_replicas().unwrap(), vec![replica("a")]);
    }
}
