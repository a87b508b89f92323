//! Runs of a sync: claiming a table (one sync per table at a time), waiting for one of the
//! global permits, running it and recording how it ended.

use std::sync::Arc;

use quiver_catalog::state::tables::SyncRun;
use quiver_catalog::{CatalogError, TableName};
use quiver_config::TableDef;
use quiver_connectors::sink::Progress;

use crate::{Orchestrator, OrchestratorError, PushJob, lock, retention, sync};

/// Why a sync runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Its schedule said so.
    Schedule,
    /// A retry after a failure.
    Retry,
    /// Someone asked (API, `quiver sync`).
    Manual(String),
}

impl Trigger {
    fn name(&self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Retry => "retry",
            Trigger::Manual(_) => "manual",
        }
    }

    fn actor(&self) -> Option<&str> {
        match self {
            Trigger::Manual(actor) => Some(actor),
            _ => None,
        }
    }
}

/// A sync in progress.
#[derive(Debug, Clone)]
pub struct Running {
    /// Its run id.
    pub run: i64,
    /// Rows and bytes so far.
    pub progress: Arc<Progress>,
}

impl Orchestrator {
    /// The sync of `table` in progress, if any.
    pub fn running(&self, table: &TableName) -> Option<Running> {
        lock(&self.running).get(table).cloned()
    }

    /// Starts a sync in the background and returns its run id. A table already syncing is a
    /// conflict; a table without a definition is not found.
    pub fn start(
        self: &Arc<Self>,
        table: &TableName,
        trigger: Trigger,
    ) -> Result<i64, OrchestratorError> {
        if let Some(push) = self.pushed(table)? {
            return self.start_push(push.name(), PushJob::Check, trigger);
        }
        let (def, running) = self.claim(table, &trigger)?;
        let run = running.run;
        let this = self.clone();
        let table = table.clone();
        tokio::spawn(async move {
            let _ = this.execute(&table, &def, running).await;
        });
        Ok(run)
    }

    /// Runs a sync to its end and returns the finished run (failed runs included).
    pub async fn run(
        &self,
        table: &TableName,
        trigger: Trigger,
        on_start: impl FnOnce(&Running),
    ) -> Result<SyncRun, OrchestratorError> {
        if let Some(push) = self.pushed(table)? {
            return self
                .run_push(push.name(), PushJob::Check, trigger, |_, _| {})
                .await;
        }
        let (def, running) = self.claim(table, &trigger)?;
        on_start(&running);
        let run = running.run;
        let _ = self.execute(table, &def, running).await;
        Ok(self.state.tables().sync_run(run)?)
    }

    /// Looks up `table`'s definition and claims it ([`Self::claim_slot`]).
    fn claim(
        &self,
        table: &TableName,
        trigger: &Trigger,
    ) -> Result<(TableDef, Running), OrchestratorError> {
        let def = self
            .state
            .tables().definition(table)?
            .ok_or_else(|| {
                CatalogError::NotFound(format!(
                    "table `{table}` has no definition to sync (it is not in the `tables:` list or registered through the API)"
                ))
            })?
            .def;
        Ok((def, self.claim_slot(table, trigger)?))
    }

    /// Marks `table` as syncing and records the run; refuses a second concurrent sync.
    pub(crate) fn claim_slot(
        &self,
        table: &TableName,
        trigger: &Trigger,
    ) -> Result<Running, OrchestratorError> {
        let mut running = lock(&self.running);
        if let Some(r) = running.get(table) {
            return Err(CatalogError::Conflict(format!(
                "a sync of `{table}` is already running (run {})",
                r.run
            ))
            .into());
        }
        let run =
            self.state
                .tables()
                .start_run(table, trigger.name(), trigger.actor(), &self.replica)?;
        let entry = Running {
            run,
            progress: Arc::default(),
        };
        running.insert(table.clone(), entry.clone());
        Ok(entry)
    }

    /// Runs one claimed sync: waits for a permit, lands, commits or records the failure.
    async fn execute(
        &self,
        table: &TableName,
        def: &TableDef,
        running: Running,
    ) -> Result<i64, OrchestratorError> {
        let _permit = self.permits.acquire().await;
        let started = std::time::Instant::now();
        tracing::info!(table = %table, run = running.run, connector = %def.connector, mode = def.mode.as_str(), "sync started");
        let outcome = sync::run(self, table, def, &running).await;
        lock(&self.running).remove(table);
        let seconds = started.elapsed().as_secs_f64();
        match outcome {
            Ok(version) => {
                metrics::counter!("quiver_syncs_total", "outcome" => "succeeded").increment(1);
                tracing::info!(table = %table, run = running.run, version, rows = running.progress.rows(), bytes = running.progress.bytes(), seconds, "sync succeeded");
                // A new version may have pushed an older one past its retention. (Orphan
                // folders need a listing of the whole store: the scheduler sweeps them.)
                if let Err(e) =
                    retention::expire(&self.state, &self.storage, self.options.retention).await
                {
                    tracing::warn!(error = %e, "garbage collection");
                }
                Ok(version)
            }
            Err(e) => {
                metrics::counter!("quiver_syncs_total", "outcome" => "failed").increment(1);
                let message = e.to_string();
                tracing::warn!(table = %table, run = running.run, error = %message, seconds, "sync failed; the previous version keeps serving");
                if let Err(store) = self.state.tables().fail_run(running.run, &message) {
                    tracing::error!(error = %store, "cannot record the failed sync");
                }
                Err(e)
            }
        }
    }
}
