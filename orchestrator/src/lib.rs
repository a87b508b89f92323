//! The orchestrator runs connectors on schedule or on demand and publishes what they land as
//! new table versions.
//!
//! - [`Orchestrator`]: one sync per table at a time, a global concurrency limit, run history,
//!   retries with backoff, the scheduler loop.
//! - [`sync`]: one run — read, land, merge (incremental), profile, commit in one transaction.
//! - [`schedule`]: `every 15m`, `daily 03:00`, cron. [`profile`]: per-column statistics.
//! - [`jira`]: Jira webhook deliveries into monthly shards of schema `jira`; backfill,
//!   consistency check, SLA refresh.
//! - [`retention`]: removes replaced versions after their retention, and orphaned folders.
//!
//! Readers see the previous version until the commit and the new one after, never a mix; a
//! crash at any point leaves the previous version served, and the next start cleans up.

pub mod jira;
pub mod profile;
pub mod retention;
pub mod schedule;
pub mod sync;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quiver_catalog::state::tables::SyncRun;
use quiver_catalog::{
    Backend, CatalogError, QueryEngine, StateStore, Storage, TableEntry, TableName,
};
use quiver_config::{FieldProblem, SyncConfig, SyncMode, TableDef};
use quiver_connectors::sink::Progress;
use quiver_connectors::{CONNECTORS, ConnectorError, connector, connector_names, tpch};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use jira::JiraJob;
pub use schedule::Schedule;

/// Errors of the orchestrator.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// A connector failed; the previous version keeps serving.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// The state store or object store failed, or a name or definition is wrong.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The query engine failed while merging or profiling.
    #[error("{0}")]
    Query(#[from] datafusion::error::DataFusionError),
    /// A definition that cannot be used; every problem names its field.
    #[error("invalid table definition: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldProblem>),
    /// Arrow failed while profiling.
    #[error("{0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The source's schema changed in a way the table cannot follow.
    #[error("{0}")]
    SchemaChange(String),
    /// A webhook payload that cannot be used.
    #[error("{0}")]
    BadPayload(String),
    /// Parquet failed reading or writing a shard.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

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

/// Checks a definition completely: names, mode, schedule, and the connector's options.
pub fn validate(def: &TableDef) -> Vec<FieldProblem> {
    let mut problems = def.problems();
    if let Some(schedule) = &def.schedule
        && let Err(e) = schedule.parse::<Schedule>()
    {
        problems.push(FieldProblem::new("schedule", e));
    }
    match connector(&def.connector) {
        Some(c) => {
            problems.extend(c.check(&def.options));
            if def.mode == SyncMode::Remote && c.remote().is_none() {
                let remote: Vec<&str> = CONNECTORS
                    .iter()
                    .filter(|(_, c)| c.remote().is_some())
                    .map(|(name, _)| *name)
                    .collect();
                problems.push(FieldProblem::new(
                    "mode",
                    format!(
                        "`{}` tables are copied, not read at query time: `mode: remote` works with {} (use `full` or `incremental`)",
                        def.connector,
                        remote.join(" and ")
                    ),
                ));
            }
        }
        None => problems.push(FieldProblem::new(
            "connector",
            format!(
                "`{}` is not a connector (expected one of: {})",
                def.connector,
                connector_names()
            ),
        )),
    }
    problems
}

/// A sync in progress.
#[derive(Debug, Clone)]
pub struct Running {
    /// Its run id.
    pub run: i64,
    /// Rows and bytes so far.
    pub progress: Arc<Progress>,
}

/// Runs syncs and publishes versions. Shared behind an `Arc` by the scheduler, the HTTP API
/// and `quiver sync`.
pub struct Orchestrator {
    state: Arc<StateStore>,
    storage: Storage,
    engine: Arc<QueryEngine>,
    options: SyncConfig,
    scratch: PathBuf,
    running: Mutex<HashMap<TableName, Running>>,
    permits: Semaphore,
    jira: Option<Arc<jira::JiraSync>>,
    /// This process's id among the replicas (its runs and its `background` lease).
    replica: String,
    /// Whether this replica holds the lease now.
    leading: std::sync::atomic::AtomicBool,
    /// When the leader last forgot long-dead replicas (once a minute is plenty).
    forgot_replicas: Mutex<Option<std::time::Instant>>,
    /// Tables whose interrupted runs left files a sweep could not remove yet (another
    /// sync of the table was running): the leader sweeps them again on its next tick.
    unswept: Mutex<std::collections::BTreeSet<TableName>>,
}

/// The lease whose holder runs scheduled syncs, Jira processing and retention.
const LEASE: &str = "background";
/// How long a lease lasts unrenewed: a dead leader is replaced within this and a tick.
const LEASE_TTL: Duration = Duration::from_secs(10);

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Orchestrator {
    /// An orchestrator of replica `replica` writing to `storage`; `scratch` holds
    /// downloads during a sync.
    pub fn new(
        state: Arc<StateStore>,
        storage: Storage,
        engine: Arc<QueryEngine>,
        options: SyncConfig,
        scratch: PathBuf,
        replica: String,
    ) -> Self {
        Self {
            permits: Semaphore::new(options.concurrency.max(1)),
            state,
            storage,
            engine,
            options,
            scratch,
            running: Mutex::default(),
            jira: None,
            replica,
            leading: Default::default(),
            forgot_replicas: Mutex::default(),
            unswept: Mutex::default(),
        }
    }

    /// Where syncs (and state backups) put their temporary files.
    pub fn scratch(&self) -> &std::path::Path {
        &self.scratch
    }

    /// Keeping Jira's tables for the site in `config` (deliveries are processed while the
    /// scheduler runs).
    pub fn with_jira(
        mut self,
        config: quiver_config::JiraConfig,
    ) -> Result<Self, OrchestratorError> {
        let jira = jira::JiraSync::new(
            config,
            self.state.clone(),
            self.storage.clone(),
            self.options.retention,
        )?;
        self.jira = Some(Arc::new(jira));
        Ok(self)
    }

    /// The Jira writer, when Jira is configured.
    pub fn jira(&self) -> Option<&Arc<jira::JiraSync>> {
        self.jira.as_ref()
    }

    /// The state store.
    pub fn state(&self) -> &Arc<StateStore> {
        &self.state
    }

    /// The object store tables are written to.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// This process's id among the replicas.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Whether this replica runs the cluster's schedules and background jobs now.
    pub fn is_leading(&self) -> bool {
        self.leading.load(std::sync::atomic::Ordering::Relaxed)
    }

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
    async fn clean_up_after_stopped(&self, all: bool) -> Result<(), OrchestratorError> {
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
        if self.is_jira(table)? {
            return self.start_jira(JiraJob::Check, trigger);
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
        if self.is_jira(table)? {
            return self.run_jira(JiraJob::Check, trigger, |_, _| {}).await;
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
    fn claim_slot(
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
    /// replicas that died, and runs Jira processing, which stops when the lease is lost.
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
                if let Some(jira) = &self.jira {
                    tokio::spawn(jira.clone().run(leading.clone()));
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
        if self.jira.as_ref().is_some_and(|j| j.is_writing()) {
            busy.extend(jira::JiraSync::tables());
        }
        retention::collect(&self.state, &self.storage, self.options.retention, &busy).await
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Commits a landed run as the next version of `table`; returns the version number.
pub fn publish(
    state: &StateStore,
    table: &TableName,
    landed: &quiver_connectors::Landed,
    description: Option<&str>,
) -> Result<i64, OrchestratorError> {
    Ok(state.tables().commit_version(
        table,
        &quiver_catalog::NewVersion {
            location: landed.location.clone(),
            rows: landed.rows,
            bytes: landed.bytes,
            description: description.map(String::from),
            ..Default::default()
        },
    )?)
}

/// The description a demo table carries; it records the scale so a new scale regenerates.
fn demo_description(table: &str, scale: f64) -> String {
    format!("TPC-H {table} (demo data, scale {scale})")
}

/// Makes sure all eight TPC-H tables exist in schema `tpch` at `scale`, generating and
/// publishing the missing ones (first start) and reusing what is already there.
pub async fn ensure_demo_data(
    state: &StateStore,
    storage: &Storage,
    scale: f64,
) -> Result<Vec<TableEntry>, OrchestratorError> {
    let existing = state.tables().list()?;
    for table in tpch::TABLES {
        let name = TableName::new(tpch::SCHEMA, table)?;
        let description = demo_description(table, scale);
        let current = existing.iter().find(|t| t.name == name);
        if current.is_some_and(|t| t.description.as_deref() == Some(description.as_str())) {
            continue;
        }
        tracing::info!(table = %name, scale, "generating demo table");
        let landed = tpch::generate(storage, table, scale).await?;
        publish(state, &name, &landed, Some(&description))?;
    }
    Ok(state
        .tables()
        .list()?
        .into_iter()
        .filter(|t| t.name.schema() == tpch::SCHEMA)
        .collect())
}
