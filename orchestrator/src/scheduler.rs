//! The scheduler: the background lease that makes one replica the leader, due syncs
//! started with retries and backoff, push sources' deliveries and garbage collection while leading.

use std::sync::Arc;
use std::time::Duration;

use quiver_catalog::{Backend, CatalogError, TableName};
use quiver_config::SyncMode;
use tokio_util::sync::CancellationToken;

use crate::{Orchestrator, OrchestratorError, Schedule, Trigger, lock, retention};

/// The lease whose holder runs scheduled syncs, push sources' deliveries and retention.
const LEASE: &str = "background";
/// How long a lease lasts unrenewed: a dead leader is replaced within this and a tick.
const LEASE_TTL: Duration = Duration::from_secs(10);

impl Orchestrator {
    /// Starts every scheduled table that is due: its schedule has come round since the last
    /// successful sync (or it never succeeded), and a failure's backoff has passed. A remote
    /// table is due until its first sync succeeds, schedule or not: that sync reads only its
    /// schema, and until then it cannot be queried.
    pub fn start_due(self: &Arc<Self>) -> Result<(), OrchestratorError> {
        let now = chrono::Utc::now();
        for definition in self.state.tables().definitions()? {
            let schedule = match &definition.def.schedule {
                Some(text) => match text.parse::<Schedule>() {
                    Ok(schedule) => Some(schedule),
                    Err(_) => continue,
                },
                None if definition.def.mode == SyncMode::Remote => None,
                None => continue,
            };
            if self.running(&definition.name).is_some() {
                continue;
            }
            let history = self.state.tables().run_history(&definition.name)?;
            let due = match history
                .last_success
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
            {
                None => true,
                Some(last) => schedule.is_some_and(|s| now >= s.next_after(last)),
            };
            let backing_off = history.failures > 0
                && history.last_failure.is_some_and(|at| {
                    let wait = self.backoff(history.failures);
                    now.timestamp() < at + wait.as_secs() as i64
                });
            if due && !backing_off {
                let trigger = if history.failures > 0 {
                    Trigger::Retry
                } else {
                    Trigger::Schedule
                };
                match self.start(&definition.name, trigger) {
                    Ok(_) | Err(OrchestratorError::Catalog(CatalogError::Conflict(_))) => {}
                    Err(e) => {
                        tracing::warn!(table = %definition.name, error = %e, "cannot start a scheduled sync")
                    }
                }
            }
        }
        Ok(())
    }

    /// Wait before retry number `failures`: `backoff`, doubled each time, capped.
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
        self.options
            .backoff
            .saturating_mul(factor)
            .min(self.options.max_backoff)
    }

    /// The scheduler: starts due syncs every few seconds and collects garbage every few
    /// minutes, until `shutdown`.
    pub async fn run_scheduler(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        let mut collect = tokio::time::interval(Duration::from_secs(300));
        // Set while this replica holds the lease; cancelled when it loses it.
        let mut leading: Option<CancellationToken> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    leading = self.lead(leading, &shutdown).await;
                    if leading.is_some() && let Err(e) = self.start_due() {
                        tracing::warn!(error = %e, "scheduler");
                    }
                    if leading.is_some() && !self.profiling.swap(true, std::sync::atomic::Ordering::AcqRel) {
                        let me = self.clone();
                        tokio::spawn(async move {
                            // One table per tick, so a burst of writes does not hold a core.
                            if let Err(e) = crate::profile::profile_a_write(&me).await {
                                tracing::warn!(error = %e, "profiling a written table");
                            }
                            me.profiling.store(false, std::sync::atomic::Ordering::Release);
                        });
                    }
                }
                _ = collect.tick(), if leading.is_some() => {
                    if let Err(e) = self.collect_garbage().await {
                        tracing::warn!(error = %e, "garbage collection");
                    }
                }
            }
        }
        if let Some(leading) = leading {
            leading.cancel();
            if let Err(e) = self.state.cluster().release_lease(LEASE, &self.replica) {
                tracing::warn!(error = %e, "cannot give up the background lease");
            }
        }
        // Syncs still running are cut off by the shutdown: say so in their history now.
        for (table, running) in lock(&self.running).drain() {
            tracing::warn!(table = %table, run = running.run, "sync interrupted by shutdown");
            let _ = self.state.tables().fail_run(
                running.run,
                "the server stopped during the sync; the previous version kept serving",
            );
        }
    }

    /// Renews or takes the background lease; while holding it, interrupts the syncs of
    /// replicas that died, and processes push sources' deliveries, which stops when the lease is lost.
    async fn lead(
        &self,
        leading: Option<CancellationToken>,
        shutdown: &CancellationToken,
    ) -> Option<CancellationToken> {
        // The embedded state file has one process: it always leads.
        let holds = self.state.backend() == Backend::DuckDb
            || self
                .state
                .cluster()
                .hold_lease(LEASE, &self.replica, LEASE_TTL)
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot renew the background lease");
                    false
                });
        self.leading
            .store(holds, std::sync::atomic::Ordering::Relaxed);
        metrics::gauge!("quiver_replica_info", "replica" => self.replica.clone()).set(1.0);
        metrics::gauge!("quiver_leader").set(if holds { 1.0 } else { 0.0 });
        // The leader notices replicas that died mid-sync (their heartbeats stopped), so the
        // scheduler retries their tables.
        if holds && self.state.cluster().is_shared() {
            if let Err(e) = self.clean_up_after_stopped(false).await {
                tracing::warn!(error = %e, "cleaning up after stopped replicas");
            }
            let due = lock(&self.forgot_replicas)
                .is_none_or(|at| at.elapsed() >= Duration::from_secs(60));
            if due {
                match self.state.cluster().forget_dead_replicas() {
                    Ok(_) => *lock(&self.forgot_replicas) = Some(std::time::Instant::now()),
                    Err(e) => tracing::warn!(error = %e, "forgetting long-dead replicas"),
                }
            }
        }
        match (holds, leading) {
            (true, Some(leading)) => Some(leading),
            (true, None) => {
                tracing::info!(replica = %self.replica, "this replica now runs schedules and background jobs");
                let leading = shutdown.child_token();
                for push in &self.push {
                    tokio::spawn(push.clone().run(leading.clone()));
                }
                Some(leading)
            }
            (false, Some(leading)) => {
                tracing::warn!(replica = %self.replica, "lost the background lease; another replica runs the jobs");
                leading.cancel();
                None
            }
            (false, None) => None,
        }
    }

    /// Removes versions replaced longer than the retention ago, and folders no version
    /// points at (unfinished runs); returns how many folders went.
    pub async fn collect_garbage(&self) -> Result<usize, OrchestratorError> {
        let mut busy: Vec<TableName> = lock(&self.running).keys().cloned().collect();
        for push in self.push.iter().filter(|p| p.is_writing()) {
            busy.extend(push.tables());
        }
        retention::collect(&self.state, &self.storage, self.options.retention, &busy).await
    }
}
