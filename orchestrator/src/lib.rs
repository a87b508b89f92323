//! The orchestrator runs connectors on schedule or on demand and publishes what they land as
//! new table versions.
//!
//! - [`Orchestrator`]: shared by the scheduler, the HTTP API and `quiver sync`; `runs`: one
//!   sync per table at a time, a global concurrency limit, run history; `scheduler`: the
//!   background lease, due syncs with retries and backoff; `recovery`: cleaning up after
//!   stopped processes; `validate`: checking definitions; `publish`: every kind of version
//!   becomes visible there; `demo`: the TPC-H demo tables.
//! - [`sync`]: one run — read, land, merge (incremental), profile, commit in one transaction.
//! - [`schedule`]: `every 15m`, `daily 03:00`, cron. [`profile`]: per-column statistics.
//! - [`push`]: the driver of push sources (Jira): webhook deliveries into shards of the
//!   source's schema; backfill, consistency check, refresh.
//! - [`retention`]: removes replaced versions after their retention, and orphaned folders.
//!
//! Readers see the previous version until the commit and the new one after, never a mix; a
//! crash at any point leaves the previous version served, and the next start cleans up.

mod demo;
pub(crate) mod profile;
mod publish;
pub mod push;
mod recovery;
pub(crate) mod retention;
mod runs;
pub(crate) mod schedule;
mod scheduler;
pub(crate) mod sync;
mod validate;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use quiver_catalog::{CatalogError, QueryEngine, StateStore, Storage, TableName};
use quiver_config::{FieldProblem, SyncConfig};
use quiver_connectors::ConnectorError;
use tokio::sync::Semaphore;

pub use demo::ensure_demo_data;
pub use push::{PushJob, PushSync};
pub use runs::{Running, Trigger};
pub use schedule::Schedule;
pub use validate::validate;

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
    /// A webhook delivery that was refused before anything was stored.
    #[error(transparent)]
    Refused(#[from] quiver_connectors::push::Refused),
    /// Parquet failed reading or writing a shard.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
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
    /// The push sources' writers (Jira), each keeping the schema of its name.
    push: Vec<Arc<PushSync>>,
    /// This process's id among the replicas (its runs and its `background` lease).
    replica: String,
    /// Whether this replica holds the lease now.
    leading: std::sync::atomic::AtomicBool,
    /// Whether a written table is being profiled now (one at a time).
    profiling: std::sync::atomic::AtomicBool,
    /// When the leader last forgot long-dead replicas (once a minute is plenty).
    forgot_replicas: Mutex<Option<std::time::Instant>>,
    /// Tables whose interrupted runs left files a sweep could not remove yet (another
    /// sync of the table was running): the leader sweeps them again on its next tick.
    unswept: Mutex<std::collections::BTreeSet<TableName>>,
}

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
            push: Vec::new(),
            replica,
            leading: Default::default(),
            profiling: Default::default(),
            forgot_replicas: Mutex::default(),
            unswept: Mutex::default(),
        }
    }

    /// Where syncs (and state backups) put their temporary files.
    pub fn scratch(&self) -> &std::path::Path {
        &self.scratch
    }

    /// Keeping `source`'s tables (deliveries are processed while the scheduler runs).
    pub fn with_push(mut self, source: Arc<dyn quiver_connectors::PushSource>) -> Self {
        self.push.push(Arc::new(PushSync::new(
            source,
            self.state.clone(),
            self.storage.clone(),
            self.options.retention,
        )));
        self
    }

    /// The writer of push source `name`, when it is configured.
    pub fn push(&self, name: &str) -> Option<&Arc<PushSync>> {
        self.push.iter().find(|p| p.name() == name)
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
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
