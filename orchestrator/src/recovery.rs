//! Recovery: a starting server stores the configuration's definitions and cleans up after
//! syncs a stopped process (or a dead replica) left behind; the previous versions keep
//! serving throughout.

use quiver_catalog::{Backend, TableName};
use quiver_config::TableDef;

use crate::{Orchestrator, OrchestratorError, lock, retention, validate};

impl Orchestrator {
    /// Startup: stores the configuration file's definitions and, on the embedded state,
    /// marks runs a stopped process left behind as interrupted and removes the folders they
    /// were writing. (On a shared state the leader does so for replicas that died.)
    pub async fn recover(&self, config_tables: &[TableDef]) -> Result<(), OrchestratorError> {
        let mut defs = Vec::new();
        for def in config_tables {
            let problems = validate(def);
            if !problems.is_empty() {
                return Err(OrchestratorError::Invalid(problems));
            }
            defs.push((def.name.parse::<TableName>()?, def.clone()));
        }
        self.state.tables().sync_config_definitions(&defs)?;
        if self.state.backend() == Backend::DuckDb {
            self.clean_up_after_stopped(true).await?;
            self.state.cluster().forget_dead_replicas()?;
        }
        Ok(())
    }

    /// Marks the runs of stopped processes as interrupted (every run left `running` with
    /// `all`: the embedded state's one process is starting) and removes the files they
    /// were writing. Without `all`, the runs of replicas whose heartbeats stopped; a table
    /// another sync has taken up since is swept on a later tick, once that sync is over.
    pub(crate) async fn clean_up_after_stopped(&self, all: bool) -> Result<(), OrchestratorError> {
        let tables = self.state.tables().interrupt_runs(all)?;
        if !tables.is_empty() {
            let names: Vec<String> = tables.iter().map(ToString::to_string).collect();
            tracing::warn!(tables = %names.join(","), "syncs cut off by a stopped server marked interrupted; previous versions kept serving");
        }
        let mut pending = std::mem::take(&mut *lock(&self.unswept));
        pending.extend(tables);
        if pending.is_empty() && !all {
            return Ok(());
        }
        let busy: Vec<TableName> = lock(&self.running).keys().cloned().collect();
        let scope: Vec<TableName> = pending.iter().cloned().collect();
        let scope = (!all).then_some(scope.as_slice());
        match retention::sweep_orphans(&self.state, &self.storage, scope, &busy, None).await {
            Ok(swept) => {
                if swept.folders > 0 {
                    tracing::info!(folders = swept.folders, "removed unpublished sync folders");
                }
                lock(&self.unswept).extend(swept.deferred);
                Ok(())
            }
            Err(e) => {
                lock(&self.unswept).extend(pending);
                Err(e)
            }
        }
    }
}
