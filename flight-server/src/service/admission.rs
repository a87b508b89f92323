//! Admission: the user's places for concurrent work (counted across replicas when they share
//! the state), the deadline a call runs under, audited refusals, and the cluster watch that
//! cancels what other replicas were asked to cancel and learns where they are reached.

use std::time::Duration;

use arrow_flight::Location;
use quiver_catalog::Principal;
use quiver_catalog::state::cluster::ClaimError;
use tonic::Status;

use crate::error::{internal, to_status};
use crate::stream::{QueryLog, Slot};

use super::QuiverFlightSql;

/// How often a replica looks for cancellations asked of other replicas.
pub(super) const CLUSTER_POLL: Duration = Duration::from_millis(250);
/// How long a call waits for one of the user's places to be freed before it is refused: a
/// client that drops a stream once it has its last row and calls again at once must not
/// be refused for the place that stream still held.
const PLACE_GRACE: Duration = Duration::from_millis(500);
/// The location that means "the connection this `FlightInfo` came on" (Flight spec).
pub(super) const REUSE_CONNECTION: &str = "arrow-flight-reuse-connection://?";

impl QuiverFlightSql {
    /// Takes one of the user's places for concurrent work (planning, or the stream of
    /// `query_id`); a refusal names the setting and is audited. When replicas share the
    /// state, streams count across all of them (statements being planned, short and
    /// bounded, count here only: a round trip less for every query).
    pub(super) async fn slot(
        &self,
        principal: &Principal,
        sql: &str,
        query_id: Option<&str>,
    ) -> Result<Slot, Status> {
        let max = self.options.max_concurrent_per_user;
        let refuse = |busy: usize| {
            let status = Status::resource_exhausted(format!(
                "you already have {busy} queries running (query.max_concurrent_per_user); wait for one to finish"
            ));
            self.audit_refusal(principal, sql, &status);
            status
        };
        let mut slot = self
            .running
            .slot_within(principal.email(), max, PLACE_GRACE)
            .await
            .map_err(refuse)?;
        let state = self.engine.state().clone();
        if let Some(query) = query_id
            && state.cluster().is_shared()
        {
            self.running.settled(principal.email()).await;
            let id = uuid::Uuid::new_v4().to_string();
            slot.share(state.clone(), id.clone());
            let (replica, user) = (
                self.options.replica.id.clone(),
                principal.email().to_string(),
            );
            let query = query.to_string();
            let claimed = tokio::task::spawn_blocking(move || {
                state
                    .cluster()
                    .claim_work(&id, &replica, &user, &query, max)
            })
            .await
            .map_err(|e| internal(&e))?;
            match claimed {
                Ok(()) => {}
                Err(ClaimError::Busy(busy)) => {
                    slot.unshare();
                    return Err(refuse(busy));
                }
                Err(ClaimError::State(e)) => return Err(to_status(e)),
            }
        }
        Ok(slot)
    }

    /// Every `CLUSTER_POLL` while `stop` is pending: cancels the queries streaming here that
    /// someone asked another replica to cancel, and refreshes where the other replicas are
    /// reached; now and then, removes this replica's work rows whose end could not be
    /// recorded (the database was away), so they do not hold the users' places. Does
    /// nothing on an embedded state.
    pub async fn watch_cluster(self, stop: impl Future<Output = ()>) {
        let state = self.engine.state().clone();
        if !state.cluster().is_shared() {
            return stop.await;
        }
        let mut stop = std::pin::pin!(stop);
        let mut tick = tokio::time::interval(CLUSTER_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        for round in 1u64.. {
            tokio::select! {
                () = &mut stop => return,
                _ = tick.tick() => {}
            }
            if round % 40 == 0 {
                self.forget_ended_work().await;
            }
            let (store, replica) = (state.clone(), self.options.replica.clone());
            let seen = tokio::task::spawn_blocking(move || {
                Ok::<_, quiver_catalog::CatalogError>((
                    store.cluster().cancel_requests(&replica.id)?,
                    store.cluster().live_replicas()?,
                ))
            })
            .await;
            let (cancels, replicas) = match seen {
                Ok(Ok(seen)) => seen,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read the cluster's state");
                    continue;
                }
                Err(_) => continue,
            };
            if let Some(distribution) = self.engine.distribution() {
                distribution.set_workers(replicas.iter().filter_map(|r| r.advertise.clone()));
            }
            for query in cancels {
                if self.running.cancel(&query, "", true) {
                    tracing::info!(query_id = %query, "query cancelled through another replica");
                }
            }
            *self.locations.lock().unwrap_or_else(|p| p.into_inner()) = replicas
                .into_iter()
                .filter(|r| r.id != self.options.replica.id)
                .filter_map(|r| r.advertise)
                .collect();
        }
    }

    /// Removes this replica's work rows that no stream here holds any more.
    pub(super) async fn forget_ended_work(&self) {
        let (state, running) = (self.engine.state().clone(), self.running.clone());
        let replica = self.options.replica.id.clone();
        let forgotten = tokio::task::spawn_blocking(move || {
            // Recorded rows first: a stream holds its id locally before its row exists.
            let recorded = state.cluster().work_on(&replica)?;
            let held = running.shared_work();
            let mut forgotten = 0;
            for id in recorded.iter().filter(|id| !held.contains(*id)) {
                state.cluster().finish_work(id)?;
                forgotten += 1;
            }
            Ok::<_, quiver_catalog::CatalogError>(forgotten)
        })
        .await;
        match forgotten {
            Ok(Ok(0)) | Err(_) => {}
            Ok(Ok(n)) => tracing::info!(rows = n, "removed work rows of streams that had ended"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot tidy this replica's work rows"),
        }
    }

    /// Where a ticket issued here may be redeemed: this connection first, then the other
    /// replicas' advertised URLs (none unless `server.advertise` is set).
    pub(super) fn locations(&self) -> Vec<Location> {
        if self.options.replica.advertise.is_none() {
            return Vec::new();
        }
        let others = self.locations.lock().unwrap_or_else(|p| p.into_inner());
        std::iter::once(REUSE_CONNECTION.to_string())
            .chain(others.iter().cloned())
            .map(|uri| Location { uri })
            .collect()
    }

    /// When a call that starts now must be done.
    pub(super) fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.options.query_timeout
    }

    /// Logs and audits a statement that did not run: refused, or failed while planning
    /// (an internal error, its deadline).
    pub(super) fn audit_refusal(&self, principal: &Principal, sql: &str, status: &Status) {
        let log = QueryLog::new(
            uuid::Uuid::new_v4().to_string(),
            principal.email().to_string(),
            sql.to_string(),
            self.running.clone(),
            Some(self.engine.state().clone()),
        );
        match status.code() {
            tonic::Code::Internal | tonic::Code::DeadlineExceeded => log.failed(status),
            _ => log.refused(status),
        }
    }
}
