//! The query engine: one DataFusion [`SessionContext`] per principal, whose catalog holds
//! only the tables that principal may read.
//!
//! Enforcement lives here, in what the planner can resolve, not in filters over SQL text:
//! a relation that is not in the principal's catalog does not exist for it, whatever way it
//! is spelled. The SQL surface is read-only ([`read_only`]): DDL, DML (`COPY`, `INSERT`),
//! and statements (`SET`, `PREPARE`) are refused for every plan, including prepared ones.
//! URL tables (`SELECT * FROM '/etc/passwd'`) are never enabled.
//!
//! Administrators see every table as it is (and the `system` schema). Everyone else sees
//! the tables their groups are granted, each wrapped in a [`PolicyTable`] that applies the
//! grants' row filters and column masks before any of the user's SQL runs.
//!
//! Tables read often can be held in memory (`accelerate`), and large plain scans fetched
//! in parts (`parts`). Every plan ends in plain Arrow types ([`crate::engine::wire`]).

mod accelerate;
mod access;
pub(crate) mod caller;
pub mod distributed;
pub(crate) mod executor;
pub(crate) mod functions;
pub(crate) mod limits;
mod lineage;
pub(crate) mod memory;
mod parts;
pub(crate) mod policy;
pub mod remote;
mod results;
mod sessions;
mod statements;
pub(crate) mod system;
pub mod temporary;
pub mod wire;
pub mod worker;
pub mod writes;

pub use access::{ColumnAccess, GrantInForce, PolicyEffect, RowPolicyInForce, TableAccess};
pub use parts::Layout;

use sessions::PrincipalSession;
pub use sessions::VisibleTable;
pub use statements::{Planned, number_placeholders, parameter_types, read_only, tables_read};
pub use temporary::{TEMP_SCHEMA, TempTables};
pub use writes::{IngestMode, PERSONAL_SCHEMA, WriteOptions, WriteStatement, WriteTarget};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::TableProvider;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};

use crate::auth::principal::Principal;
use crate::engine::distributed::Distribution;
use crate::engine::executor::QueryExecutor;
use crate::engine::limits::QueryLimits;
use crate::engine::policy::{TablePolicy, validate_condition};
use crate::engine::remote::RemoteSources;
use crate::names::CATALOG_NAME;
use crate::state::access::{Grant, GrantTarget, NewGrant, Privilege};
use crate::state::governance::{Policy, PolicyKind, PolicyRules, tag_covers};
use crate::state::tables::PERSONAL_PREFIX;
use crate::state::{StateStore, TableEntry};
use crate::storage::Storage;
use crate::{CatalogError, TableName};

/// Engine limits, from the `query` section of the configuration.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Memory all running queries may hold; spilling operators spill beyond it.
    pub memory_limit: usize,
    /// Memory one user's running queries may hold together, within `memory_limit`.
    pub memory_limit_per_user: usize,
    /// Where spill files go.
    pub spill_dir: std::path::PathBuf,
    /// Cap on spill files on disk.
    pub max_spill_bytes: u64,
    /// Rows per batch.
    pub batch_size: usize,
    /// Bounds on a statement's size, depth and plan.
    pub limits: QueryLimits,
    /// Threads of the query runtime (planning and execution).
    pub query_threads: usize,
    /// On a cluster (shared state, `server.advertise` set): the replicas stages run on,
    /// and whether large statements received here are spread (`query.distributed`).
    /// `None`: no stages run here and every statement runs here.
    pub distribution: Option<Arc<Distribution>>,
    /// Memory for copies of hot tables (`query.acceleration_memory`); 0: none.
    pub acceleration_memory: usize,
    /// Memory for results of repeated statements (`query.results_cache_memory`); 0: none.
    pub results_cache_memory: usize,
    /// The sources of `mode: remote` tables; `None`: such tables are not served here.
    pub remote_sources: Option<Arc<dyn RemoteSources>>,
    /// Where users may write, and how much.
    pub writes: WriteOptions,
}

/// The schema unqualified table names are looked up in when the client chose none.
pub const DEFAULT_SCHEMA: &str = "public";

/// Per-principal query sessions over the committed tables.
pub struct QueryEngine {
    state: Arc<StateStore>,
    runtime: Arc<RuntimeEnv>,
    /// Where user statements are planned and run, off the servers' async workers.
    executor: QueryExecutor,
    limits: QueryLimits,
    batch_size: usize,
    memory_limit_per_user: usize,
    distribution: Option<Arc<Distribution>>,
    /// Each user's memory pool, kept across sessions so a grant change does not hand a
    /// user a second pool while their queries still hold the first.
    pools: Mutex<HashMap<String, Arc<dyn MemoryPool>>>,
    /// Table providers by (table, version): a provider reads a version's parquet footers
    /// once, then serves every principal.
    providers: Mutex<HashMap<(TableName, i64), Arc<dyn TableProvider>>>,
    /// Sessions by principal, valid while the state store's generation is unchanged.
    sessions: Mutex<HashMap<Principal, (u64, Arc<PrincipalSession>)>>,
    /// Hot tables held in memory.
    accelerator: accelerate::Accelerator,
    /// Results of repeated statements.
    results: Arc<results::ResultsCache>,
    /// The sources of remote tables.
    remote_sources: Option<Arc<dyn RemoteSources>>,
    /// Where users' writes land.
    storage: Storage,
    /// Where spill files and sessions' temporary tables go.
    spill_dir: std::path::PathBuf,
    /// Where users may write, and how much.
    writes: WriteOptions,
    /// The key of `hash` masks, read from the state once.
    mask_key: std::sync::OnceLock<Arc<[u8]>>,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine").finish_non_exhaustive()
    }
}

impl QueryEngine {
    /// An engine reading table data from `storage`.
    pub fn new(
        state: Arc<StateStore>,
        storage: &Storage,
        options: EngineOptions,
    ) -> Result<Self, CatalogError> {
        std::fs::create_dir_all(&options.spill_dir).map_err(|e| {
            CatalogError::Storage(format!(
                "cannot create spill directory {}: {e}",
                options.spill_dir.display()
            ))
        })?;
        // Temporary tables of a previous process's sessions: their sessions are gone.
        let _ = std::fs::remove_dir_all(options.spill_dir.join("temporary"));
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(options.memory_limit)))
            .with_disk_manager_builder(
                DiskManagerBuilder::default()
                    .with_mode(DiskManagerMode::Directories(vec![
                        options.spill_dir.clone(),
                    ]))
                    .with_max_temp_directory_size(options.max_spill_bytes),
            )
            .build_arc()?;
        runtime.register_object_store(storage.base_url(), storage.store().clone());
        Ok(Self {
            state,
            runtime,
            executor: QueryExecutor::new(options.query_threads)?,
            limits: options.limits,
            batch_size: options.batch_size,
            memory_limit_per_user: options.memory_limit_per_user,
            distribution: options.distribution,
            pools: Mutex::default(),
            providers: Mutex::default(),
            sessions: Mutex::default(),
            accelerator: accelerate::Accelerator::new(options.acceleration_memory),
            results: Arc::new(results::ResultsCache::new(options.results_cache_memory)),
            remote_sources: options.remote_sources,
            storage: storage.clone(),
            spill_dir: options.spill_dir.clone(),
            writes: options.writes,
            mask_key: std::sync::OnceLock::new(),
        })
    }

    /// The state store this engine reads the table registry from.
    pub fn state(&self) -> &Arc<StateStore> {
        &self.state
    }

    /// The key of `hash` masks (kept in the state, the same on every replica).
    pub(crate) fn mask_key(&self) -> Result<Arc<[u8]>, CatalogError> {
        if let Some(key) = self.mask_key.get() {
            return Ok(key.clone());
        }
        let key: Arc<[u8]> = self.state.governance().mask_key()?.into();
        Ok(self.mask_key.get_or_init(|| key).clone())
    }

    /// Where large statements' stages run, on a cluster.
    pub fn distribution(&self) -> Option<&Arc<Distribution>> {
        self.distribution.as_ref()
    }

    /// Validates a grant against the tables it covers (its row filter must be a condition
    /// over their columns, each mask an expression of its column's type) and stores it.
    pub async fn create_grant(&self, actor: &str, new: &NewGrant) -> Result<Grant, CatalogError> {
        let target: GrantTarget = new.table.trim().parse()?;
        let row_filter = new
            .row_filter
            .as_deref()
            .map(str::trim)
            .filter(|f| !f.is_empty());
        let grant = Grant {
            id: 0,
            group: new.group.clone(),
            table: target.clone(),
            row_filter: row_filter.map(String::from),
            column_masks: new.column_masks.clone(),
            privilege: new.privilege,
        };
        let covered: Vec<TableEntry> = self
            .state
            .tables()
            .list()?
            .into_iter()
            .filter(|t| target.covers(&t.name))
            .collect();
        // Personal schemas are their owners' alone.
        if target.schema().starts_with(PERSONAL_PREFIX) || target.schema() == PERSONAL_SCHEMA {
            return Err(CatalogError::InvalidInput(format!(
                "`{}` is a personal schema: only its owner and administrators reach it, and no grant can change that",
                target.schema()
            )));
        }
        if new.privilege == Privilege::Write {
            self.check_writable(&target)?;
        }
        if covered.is_empty() && matches!(target, GrantTarget::Table(_)) {
            return Err(CatalogError::NotFound(format!("no table `{target}`")));
        }
        let ctx = self.new_context(actor)?;
        let mut masked_somewhere: std::collections::BTreeSet<&str> = Default::default();
        for entry in &covered {
            let base = self.provider(&ctx, entry).await?;
            let schema = base.schema();
            let mut grant = grant.clone();
            if matches!(target, GrantTarget::Schema(_)) {
                // A schema-wide mask applies to the tables that have the column.
                grant
                    .column_masks
                    .retain(|c, _| schema.field_with_name(c).is_ok());
                masked_somewhere.extend(
                    new.column_masks
                        .keys()
                        .filter(|c| schema.field_with_name(c).is_ok())
                        .map(String::as_str),
                );
            }
            TablePolicy::validate(&ctx.state(), &schema, &grant)
                .map_err(|e| CatalogError::InvalidInput(format!("{}: {e}", entry.name)))?;
        }
        if let GrantTarget::Schema(schema) = &target
            && let Some(unknown) = new
                .column_masks
                .keys()
                .find(|c| !covered.is_empty() && !masked_somewhere.contains(c.as_str()))
        {
            return Err(CatalogError::InvalidInput(format!(
                "column_masks names `{unknown}`, which no table in `{schema}` has"
            )));
        }
        self.state.access().insert_grant(
            actor,
            &grant.group,
            &target,
            row_filter,
            &grant.column_masks,
            grant.privilege,
        )
    }

    /// Validates a policy and stores it. A row policy's condition must be a true/false
    /// condition on each table it covers now (bound to a tag: each column carrying it).
    pub async fn create_policy(
        &self,
        actor: &str,
        policy: &Policy,
    ) -> Result<Policy, CatalogError> {
        if policy.kind == PolicyKind::Row
            && let Some(condition) = &policy.condition
        {
            let tags = self.state.governance().tags()?;
            let ctx = self.new_context(actor)?;
            let bound_table = policy.table_pattern();
            for entry in self.state.tables().list()? {
                if bound_table.as_ref().is_some_and(|t| !t.covers(&entry.name)) {
                    continue;
                }
                let schema = self.provider(&ctx, &entry).await?.schema();
                // Bound to a table: the condition as written; to a tag: once per tagged column.
                let columns: Vec<Option<&str>> = match (&bound_table, &policy.tag) {
                    (Some(_), _) => vec![None],
                    (None, Some(bound)) => schema
                        .fields()
                        .iter()
                        .filter(|f| {
                            tags.of_column(&entry.name, f.name())
                                .iter()
                                .any(|t| tag_covers(bound, t))
                        })
                        .map(|f| Some(f.name().as_str()))
                        .collect(),
                    (None, None) => Vec::new(),
                };
                for column in columns {
                    let sql = policy.condition_for(column);
                    validate_condition(&ctx.state(), &schema, &sql).map_err(|e| {
                        CatalogError::InvalidInput(format!(
                            "condition `{condition}` on {}: {e}",
                            entry.name
                        ))
                    })?;
                }
            }
        }
        self.state.governance().create_policy(actor, policy)
    }

    /// Whether `target` may be granted for writing: a whole schema, holding no table that a
    /// sync keeps (its next sync would overwrite what users wrote) and no definition.
    fn check_writable(&self, target: &GrantTarget) -> Result<(), CatalogError> {
        let GrantTarget::Schema(schema) = target else {
            return Err(CatalogError::InvalidInput(format!(
                "`write` is granted on a whole schema (`{}.*`), not on one table",
                target.schema()
            )));
        };
        if let Some(kept) = self.state.tables().kept_by_syncs(schema)? {
            return Err(CatalogError::InvalidInput(format!(
                "`{schema}` holds tables kept by syncs (such as `{kept}`), which would overwrite \
                 what users write: grant `write` on a schema of its own"
            )));
        }
        Ok(())
    }

    /// The Arrow schema of a visible table as clients see it (no view types), or `None`
    /// when the principal cannot see it.
    pub async fn table_schema(
        &self,
        principal: &Principal,
        name: &TableName,
    ) -> Result<Option<SchemaRef>, CatalogError> {
        let ctx = self.session(principal).await?;
        let Some(catalog) = ctx.catalog(CATALOG_NAME) else {
            return Ok(None);
        };
        let Some(schema) = catalog.schema(name.schema()) else {
            return Ok(None);
        };
        Ok(schema
            .table(name.table())
            .await?
            .map(|t| crate::engine::wire::plain_schema(&t.schema())))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
