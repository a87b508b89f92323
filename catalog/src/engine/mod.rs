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
pub mod distributed;
pub(crate) mod executor;
pub(crate) mod functions;
pub(crate) mod limits;
pub(crate) mod memory;
mod parts;
pub(crate) mod policy;
pub mod remote;
mod results;
pub(crate) mod system;
pub mod wire;

pub use parts::Layout;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider};
use datafusion::common::TableReference;
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use quiver_config::{SyncMode, TableDef};

use crate::auth::principal::Principal;
use crate::engine::distributed::Distribution;
use crate::engine::executor::{QueryExecutor, YieldAfterJoins};
use crate::engine::functions::BoundedConcatPlanner;
use crate::engine::limits::QueryLimits;
use crate::engine::memory::UserPool;
use crate::engine::policy::{CurrentUser, PolicyTable, TablePolicy};
use crate::engine::remote::{RemoteSources, RemoteTable};
use crate::engine::system::{AuditTable, SYSTEM_SCHEMA};
use crate::names::CATALOG_NAME;
use crate::state::access::{Grant, GrantTarget, NewGrant};
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
}

/// The schema unqualified table names are looked up in when the client chose none.
pub const DEFAULT_SCHEMA: &str = "public";

/// The first table `statement` names that the session's catalog does not hold, as
/// [`CatalogError::TableNotFound`] with a hint: the tables of that name the principal can
/// read, else the schemas it can read. Asked of the catalog before planning, so a missing
/// table is known by what it is, not by the planner's wording.
fn missing_table(
    state: &datafusion::execution::SessionState,
    statement: &DfStatement,
    visible: &[VisibleTable],
) -> Result<(), CatalogError> {
    for reference in state.resolve_table_references(statement)? {
        // `FROM generate_series(…)` names a table function, not a table.
        let function = matches!(reference, TableReference::Bare { .. })
            && state.table_functions().contains_key(reference.table());
        let exists = function
            || state
                .schema_for_ref(reference.clone())
                .is_ok_and(|schema| schema.table_exist(reference.table()));
        if exists {
            continue;
        }
        let options = &state.config_options().catalog;
        let name = reference
            .clone()
            .resolve(&options.default_catalog, &options.default_schema);
        let message = format!("table '{name}' not found");
        let candidates: Vec<String> = visible
            .iter()
            .filter(|t| t.entry.name.table() == reference.table())
            .map(|t| format!("`{}`", t.entry.name))
            .collect();
        let schemas: std::collections::BTreeSet<String> = visible
            .iter()
            .map(|t| format!("`{}`", t.entry.name.schema()))
            .collect();
        let schemas = schemas.into_iter().collect::<Vec<_>>();
        return Err(CatalogError::TableNotFound(if !candidates.is_empty() {
            format!(
                "{message}; did you mean {}? (a table name without its schema is looked up in the session's schema, `{DEFAULT_SCHEMA}` unless set)",
                candidates.join(" or ")
            )
        } else if schemas.is_empty() {
            format!("{message}; you cannot read any table yet (an admin grants them)")
        } else {
            format!(
                "{message}; the schemas you can read are {} (name tables `schema.table`)",
                schemas.join(", ")
            )
        }));
    }
    Ok(())
}

/// What the SQL surface allows: queries only.
pub fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

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
}

/// A principal's DataFusion session and the tables in its catalog.
struct PrincipalSession {
    ctx: SessionContext,
    tables: Vec<VisibleTable>,
}

/// A table in a principal's catalog.
#[derive(Debug, Clone)]
pub struct VisibleTable {
    /// The table as registered.
    pub entry: TableEntry,
    /// Rows are filtered for this principal, so the table-wide row and byte counts would
    /// reveal how much is hidden: do not show them.
    pub row_filtered: bool,
    /// Columns the principal sees unchanged (neither hidden nor masked): statistics of
    /// other columns would reveal what the policy hides.
    pub clear_columns: Vec<String>,
    /// Read from its source by each query (`mode: remote`): its version holds only the
    /// schema, so it has no row count or profile of its own.
    pub remote: bool,
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
        })
    }

    /// The state store this engine reads the table registry from.
    pub fn state(&self) -> &Arc<StateStore> {
        &self.state
    }

    /// Where large statements' stages run, on a cluster.
    pub fn distribution(&self) -> Option<&Arc<Distribution>> {
        self.distribution.as_ref()
    }

    /// Tables `principal` may read, by name.
    pub async fn visible_tables(
        &self,
        principal: &Principal,
    ) -> Result<Vec<VisibleTable>, CatalogError> {
        Ok(self.principal_session(principal).await?.tables.clone())
    }

    /// The principal's session: its catalog holds exactly the tables it may read, at their
    /// current versions, with its policies applied. Cached until tables, users or grants
    /// change.
    pub async fn session(&self, principal: &Principal) -> Result<SessionContext, CatalogError> {
        Ok(self.principal_session(principal).await?.ctx.clone())
    }

    async fn principal_session(
        &self,
        principal: &Principal,
    ) -> Result<Arc<PrincipalSession>, CatalogError> {
        let generation = self.state.generation();
        if let Some((g, session)) = lock(&self.sessions).get(principal)
            && *g == generation
        {
            return Ok(session.clone());
        }
        let session = Arc::new(self.build_session(principal).await?);
        lock(&self.sessions).insert(principal.clone(), (generation, session.clone()));
        Ok(session)
    }

    /// A fresh context for `email`, with no tables yet.
    fn new_context(&self, email: &str) -> Result<SessionContext, CatalogError> {
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG_NAME, DEFAULT_SCHEMA)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true)
            .with_batch_size(self.batch_size);
        // The parser refuses nesting past the depth the rest of planning is checked for.
        config.options_mut().sql_parser.recursion_limit = self.limits.max_expression_depth;
        let (runtime, pool) = self.user_runtime(email);
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(YieldAfterJoins));
        if let Some(distribution) = &self.distribution {
            state = distribution.coordinate(state, email)?;
        }
        // After the defaults, so list `||` is already planned as an array function.
        state
            .expr_planners()
            .get_or_insert_default()
            .push(Arc::new(BoundedConcatPlanner::new(&pool)));
        let ctx = SessionContext::new_with_state(state.build());
        register_functions(&ctx, email, &pool);
        Ok(ctx)
    }

    /// The engine's runtime with `email`'s memory pool, and the pool.
    pub(crate) fn user_runtime(&self, email: &str) -> (Arc<RuntimeEnv>, Arc<dyn MemoryPool>) {
        let pool = self.user_pool(email);
        let runtime = RuntimeEnv {
            memory_pool: pool.clone(),
            ..self.runtime.as_ref().clone()
        };
        (Arc::new(runtime), pool)
    }

    async fn build_session(&self, principal: &Principal) -> Result<PrincipalSession, CatalogError> {
        let ctx = self.new_context(principal.email())?;
        let grants = if principal.is_admin() {
            Vec::new()
        } else {
            self.state.access().grants()?
        };
        let catalog = MemoryCatalogProvider::new();
        let mut schemas: HashMap<String, Arc<MemorySchemaProvider>> = HashMap::new();
        let mut visible = Vec::new();
        let remote: HashMap<TableName, TableDef> = self
            .state
            .tables()
            .definitions()?
            .into_iter()
            .filter(|d| d.def.mode == SyncMode::Remote)
            .map(|d| (d.name, d.def))
            .collect();
        for entry in self.state.tables().list()? {
            let base = match (remote.get(&entry.name), self.accelerator.table(&entry)) {
                (Some(def), _) => match self
                    .remote_table(&ctx, &entry, def, principal.is_admin())
                    .await?
                {
                    Some(table) => table,
                    None => continue,
                },
                (None, Some(copy)) => copy,
                (None, None) => self.provider(&ctx, &entry).await?,
            };
            let mut row_filtered = false;
            let mut clear_columns: Vec<String> = base
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            let provider = if principal.is_admin() {
                base
            } else {
                let applicable: Vec<&Grant> = grants
                    .iter()
                    .filter(|g| {
                        principal.groups().contains(&g.group) && g.table.covers(&entry.name)
                    })
                    .collect();
                if applicable.is_empty() {
                    continue;
                }
                let state = ctx.state();
                let Some(policy) = TablePolicy::compile(&state, &base.schema(), &applicable) else {
                    continue;
                };
                row_filtered = policy.filters_rows();
                clear_columns = policy.clear_columns(&base.schema());
                if policy.is_transparent(&base.schema()) {
                    base
                } else {
                    Arc::new(PolicyTable::new(base, policy))
                }
            };
            let schema = schemas
                .entry(entry.name.schema().to_string())
                .or_insert_with(|| Arc::new(MemorySchemaProvider::new()));
            datafusion::catalog::SchemaProvider::register_table(
                schema.as_ref(),
                entry.name.table().to_string(),
                provider,
            )?;
            visible.push(VisibleTable {
                remote: remote.contains_key(&entry.name),
                entry,
                row_filtered,
                clear_columns,
            });
        }
        if principal.is_admin() {
            let system = Arc::new(MemorySchemaProvider::new());
            datafusion::catalog::SchemaProvider::register_table(
                system.as_ref(),
                "audit".into(),
                Arc::new(AuditTable::new(self.state.clone())?),
            )?;
            schemas.insert(SYSTEM_SCHEMA.into(), system);
        }
        for (name, schema) in schemas {
            catalog.register_schema(&name, schema)?;
        }
        ctx.register_catalog(CATALOG_NAME, Arc::new(catalog));
        Ok(PrincipalSession {
            ctx,
            tables: visible,
        })
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
        };
        let covered: Vec<TableEntry> = self
            .state
            .tables()
            .list()?
            .into_iter()
            .filter(|t| target.covers(&t.name))
            .collect();
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
        )
    }

    /// The provider of a remote table: its source, with the schema its version recorded.
    /// `None` (the table is left out, with a warning) when this engine has no sources.
    async fn remote_table(
        &self,
        ctx: &SessionContext,
        entry: &TableEntry,
        def: &TableDef,
        detail: bool,
    ) -> Result<Option<Arc<dyn TableProvider>>, CatalogError> {
        let Some(sources) = &self.remote_sources else {
            tracing::warn!(table = %entry.name, "remote tables are not served by this process");
            return Ok(None);
        };
        let schema = crate::engine::wire::plain_schema(&self.provider(ctx, entry).await?.schema());
        Ok(Some(Arc::new(RemoteTable::new(
            entry.name.clone(),
            schema,
            sources.source(def)?,
            detail,
        ))))
    }

    async fn provider(
        &self,
        ctx: &SessionContext,
        entry: &TableEntry,
    ) -> Result<Arc<dyn TableProvider>, CatalogError> {
        let key = (entry.name.clone(), entry.version);
        if let Some(p) = lock(&self.providers).get(&key) {
            return Ok(p.clone());
        }
        // A folder, or for a sharded table the files its version lists.
        let files = self
            .state
            .tables()
            .shard_files(&entry.name, entry.version)?;
        let urls = if files.is_empty() {
            vec![ListingTableUrl::parse(&entry.location)?]
        } else {
            files
                .iter()
                .map(|f| ListingTableUrl::parse(&f.url))
                .collect::<Result<_, _>>()?
        };
        // Strings are read as views (faster inside DataFusion); results are cast to plain
        // types at the top of each plan (`wire::plain_plan`).
        let parquet = ctx.state().table_options().parquet.clone();
        let format = ParquetFormat::default().with_options(parquet);
        // Statistics from the footers let the planner put the small side of a join on
        // the build side (TPC-H Q18 needs many times the memory without them).
        let options = ListingOptions::new(Arc::new(format))
            .with_file_extension(".parquet")
            .with_collect_stat(ctx.state().config().collect_statistics());
        let schema = options.infer_schema(&ctx.state(), &urls[0]).await?;
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(schema);
        let provider: Arc<dyn TableProvider> = Arc::new(ListingTable::try_new(config)?);
        let mut providers = lock(&self.providers);
        // Forget older versions of this table; running queries keep their own Arc.
        providers.retain(|(name, _), _| name != &entry.name);
        providers.insert(key, provider.clone());
        Ok(provider)
    }

    /// The memory pool `email`'s queries draw from (created on first use).
    pub fn user_pool(&self, email: &str) -> Arc<dyn MemoryPool> {
        lock(&self.pools)
            .entry(email.to_string())
            .or_insert_with(|| {
                Arc::new(UserPool::new(
                    self.memory_limit_per_user,
                    self.runtime.memory_pool.clone(),
                ))
            })
            .clone()
    }

    /// Plans `sql` for `principal`, refusing anything but a read-only query within the
    /// [`QueryLimits`]. `?` placeholders are accepted as well as `$1`. Unqualified table
    /// names are looked up in `schema` (the client's session schema; default `public`).
    /// The work runs on the query runtime; dropping the future abandons it.
    pub async fn plan(
        self: &Arc<Self>,
        principal: &Principal,
        sql: &str,
        schema: Option<&str>,
    ) -> Result<Planned, CatalogError> {
        self.limits.check_length(sql)?;
        let engine = self.clone();
        let principal = principal.clone();
        let sql = sql.to_string();
        let schema = schema.unwrap_or(DEFAULT_SCHEMA).to_string();
        let planned = self
            .executor
            .run(async move { engine.plan_here(&principal, &sql, &schema).await })
            .await?;
        for entry in self.accelerator.note_reads(&planned.read) {
            let engine = self.clone();
            self.executor
                .spawn(async move { engine.hold_in_memory(entry).await });
        }
        Ok(planned)
    }

    /// Copies `entry` into memory; sessions made after it is ready read the copy.
    async fn hold_in_memory(self: Arc<Self>, entry: TableEntry) {
        let held = async {
            let ctx = self.new_context("acceleration@quiver.internal")?;
            let provider = self.provider(&ctx, &entry).await?;
            self.accelerator.load(&ctx, &entry, provider).await
        }
        .await;
        match held {
            Ok(true) => lock(&self.sessions).clear(),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(table = %entry.name, error = %e, "cannot hold the table in memory")
            }
        }
    }

    async fn plan_here(
        &self,
        principal: &Principal,
        sql: &str,
        schema: &str,
    ) -> Result<Planned, CatalogError> {
        // Read first: a change while planning makes the plan look stale, never current.
        let generation = self.state.generation();
        let session = self.principal_session(principal).await?;
        let ctx = session.ctx.clone();
        let sql = number_placeholders(sql)?;
        let mut state = ctx.state();
        state.config_mut().options_mut().catalog.default_schema = schema.to_string();
        let dialect = state.config_options().sql_parser.dialect;
        let statement = state
            .sql_to_statement(&sql, &dialect)
            .map_err(|e| self.parse_error(&sql, e))?;
        let query = match &statement {
            DfStatement::Statement(inner) => inner.as_ref(),
            DfStatement::Explain(explain) => match explain.statement.as_ref() {
                DfStatement::Statement(inner) => inner.as_ref(),
                _ => return Err(read_only_error("not a query")),
            },
            _ => return Err(read_only_error("not a query")),
        };
        self.limits.check_depth(query)?;
        self.limits.check_expansion(query)?;
        missing_table(&state, &statement, &session.tables)?;
        let plan = state.statement_to_plan(statement).await?;
        self.limits.check_plan(&plan)?;
        verify_read_only(&plan)?;
        // EXPLAIN would show policy literals, storage paths and pre-filter row counts.
        if !principal.is_admin()
            && matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_))
        {
            return Err(CatalogError::InvalidQuery(
                "EXPLAIN is available to administrators only".into(),
            ));
        }
        let tables = tables_read(&plan, schema);
        // No view types leave the server (EXPLAIN's text columns are plain already).
        let plan = match plan {
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) => plan,
            plan => crate::engine::wire::plain_plan(plan)?,
        };
        // The engine's settings include server paths (the spill directory): for admins.
        if !principal.is_admin() && tables.iter().any(|t| t == SETTINGS_TABLE) {
            return Err(CatalogError::TableNotFound(format!(
                "table '{CATALOG_NAME}.{SETTINGS_TABLE}' not found"
            )));
        }
        // Remote tables have no versions of their rows: what reads them is never kept,
        // held in memory or split by version.
        let read = session
            .tables
            .iter()
            .filter(|t| !t.remote && tables.contains(&t.entry.name.to_string()))
            .map(|t| t.entry.clone())
            .collect::<Vec<_>>();
        let result_key = self.results.key(principal, &plan, &read, &tables);
        Ok(Planned {
            ctx,
            plan,
            tables,
            read,
            generation,
            result_key,
        })
    }

    /// Whether `planned` still holds: no table, user or grant changed since it was planned,
    /// so running it now reads what planning it again would.
    pub fn is_current(&self, planned: &Planned) -> bool {
        planned.generation == self.state.generation()
    }

    /// The error for a statement the parser refused. Past the depth limit, the parser
    /// sometimes backtracks and reports a syntax error instead of the limit; a second parse
    /// with room to spare (only on failure, on the query runtime's deep stack) tells which.
    fn parse_error(&self, sql: &str, error: DataFusionError) -> CatalogError {
        let recursion = |e: &DataFusionError| {
            matches!(e.find_root(), DataFusionError::SQL(parse, _)
                if matches!(parse.as_ref(), ParserError::RecursionLimitExceeded))
        };
        if recursion(&error) {
            return self.limits.too_deep();
        }
        let roomy = DFParserBuilder::new(sql)
            .with_dialect(&GenericDialect {})
            .with_recursion_limit(self.limits.max_expression_depth.saturating_mul(10))
            .build()
            .and_then(|mut parser| parser.parse_statements());
        match roomy {
            Ok(_) => self.limits.too_deep(),
            Err(e) if recursion(&e) => self.limits.too_deep(),
            Err(_) => CatalogError::Query(error),
        }
    }

    /// Runs a planned statement (after binding `params` to its placeholders) as a stream of
    /// batches, produced on the query runtime, or answers it from the results of an
    /// identical one (`query.results_cache_memory`).
    pub async fn execute(
        self: &Arc<Self>,
        planned: &Planned,
        params: Vec<ScalarValue>,
    ) -> Result<SendableRecordBatchStream, CatalogError> {
        let key = planned
            .result_key
            .as_ref()
            .map(|key| format!("{key}parameters {params:?}"));
        if let Some(key) = &key
            && let Some(kept) = self.results.get(key, planned.generation)
        {
            return Ok(kept);
        }
        let (ctx, plan) = (planned.ctx.clone(), planned.plan.clone());
        let stream = self
            .executor
            .run(async move {
                let plan = if params.is_empty() {
                    plan
                } else {
                    plan.with_param_values(params)?
                };
                verify_read_only(&plan)?;
                let df = ctx.execute_logical_plan(plan).await?;
                Ok(df.execute_stream().await?)
            })
            .await?;
        let stream = self.executor.forward(stream);
        Ok(match key {
            Some(key) => self.results.record(key, planned.generation, stream),
            None => stream,
        })
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

/// The functions of `email`'s sessions: `current_user()` and the amplifying functions
/// bounded by `pool`.
pub(crate) fn register_functions(ctx: &SessionContext, email: &str, pool: &Arc<dyn MemoryPool>) {
    ctx.register_udf(CurrentUser::udf(email));
    crate::engine::functions::bound_functions(ctx, pool);
}

/// A statement planned for a principal.
#[derive(Clone)]
pub struct Planned {
    /// The principal's session it was planned in (and must run in).
    pub ctx: SessionContext,
    /// The logical plan, policies included.
    pub plan: LogicalPlan,
    /// The tables it reads (`schema.table`), for the audit log.
    pub tables: Vec<String>,
    /// The registered tables among them, at the versions it reads.
    pub read: Vec<TableEntry>,
    /// The state's generation it was planned at (see [`QueryEngine::is_current`]).
    generation: u64,
    /// Where its result is kept, if it may be (see `results`).
    result_key: Option<String>,
}

impl Planned {
    /// Roughly the memory the plan holds, for bounding how many are kept: its nodes and
    /// expressions (a few hundred bytes each), the text of its literals and its results-cache
    /// key. A 700 KiB `IN` list of numbers comes to about 12 MiB.
    pub fn approx_bytes(&self) -> usize {
        use datafusion::common::ScalarValue;
        use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
        use datafusion::logical_expr::Expr;

        const NODE: usize = 512;
        const EXPR: usize = 160;
        let mut bytes = self.result_key.as_ref().map_or(0, String::len);
        let _ = self.plan.apply_with_subqueries(|node| {
            bytes += NODE;
            let _ = node.apply_expressions(|e| {
                e.apply(|e| {
                    bytes += EXPR;
                    if let Expr::Literal(
                        ScalarValue::Utf8(Some(s))
                        | ScalarValue::Utf8View(Some(s))
                        | ScalarValue::LargeUtf8(Some(s)),
                        _,
                    ) = e
                    {
                        bytes += s.len();
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
            });
            Ok(TreeNodeRecursion::Continue)
        });
        bytes
    }

    /// The statement with its untyped placeholders (`SELECT ?`, `SELECT $1 AS a`) given the
    /// types of the values bound to them (`types[0]` for `$1`), so that its schema says what
    /// its rows will hold. Typed placeholders keep their type (a bound value is cast to it).
    pub fn with_parameter_types(&self, types: &[DataType]) -> Result<Self, CatalogError> {
        use datafusion::arrow::datatypes::Field;
        use datafusion::common::tree_node::{Transformed, TreeNode};
        use datafusion::logical_expr::{Expr, expr::Placeholder};

        let untyped = |p: &Placeholder| p.field.as_ref().is_none_or(|f| f.data_type().is_null());
        let bound = |id: &str| {
            let index = id.trim_start_matches('$').parse::<usize>().ok()?;
            types.get(index.checked_sub(1)?).filter(|t| !t.is_null())
        };
        let plan = self
            .plan
            .clone()
            .transform_up_with_subqueries(|node| {
                node.map_expressions(|e| {
                    e.transform(|e| match e {
                        Expr::Placeholder(p) if untyped(&p) => match bound(&p.id) {
                            Some(ty) => {
                                let field = Arc::new(Field::new("", ty.clone(), true));
                                Ok(Transformed::yes(Expr::Placeholder(
                                    Placeholder::new_with_field(p.id, Some(field)),
                                )))
                            }
                            None => Ok(Transformed::no(Expr::Placeholder(p))),
                        },
                        other => Ok(Transformed::no(other)),
                    })
                })?
                // Every node above a typed placeholder derives its schema again.
                .map_data(|plan| plan.recompute_schema())
            })?
            .data;
        Ok(Self {
            plan,
            ..self.clone()
        })
    }
}

/// `information_schema.df_settings`, as [`tables_read`] names it.
const SETTINGS_TABLE: &str = "information_schema.df_settings";

/// Refuses plans that would change anything (DDL, DML, `COPY`, `SET`, …).
fn verify_read_only(plan: &LogicalPlan) -> Result<(), CatalogError> {
    read_only()
        .verify_plan(plan)
        .map_err(|e| read_only_error(&e.find_root().strip_backtrace()))
}

fn read_only_error(why: &str) -> CatalogError {
    CatalogError::InvalidQuery(format!(
        "Quiver is read-only; only queries are accepted ({why})"
    ))
}

/// The placeholders' types in a plan, ordered `$1, $2, …`; unknown types come back as `Null`.
pub fn parameter_types(plan: &LogicalPlan) -> Result<Vec<DataType>, CatalogError> {
    let types = plan.get_parameter_types()?;
    let mut numbered: Vec<(usize, DataType)> = types
        .into_iter()
        .map(|(name, ty)| {
            let index = name.trim_start_matches('$').parse::<usize>().map_err(|_| {
                CatalogError::InvalidQuery(format!(
                    "named placeholder `{name}` is not supported; use `?` or `$1`, `$2`, …"
                ))
            })?;
            Ok((index, ty.unwrap_or(DataType::Null)))
        })
        .collect::<Result<_, CatalogError>>()?;
    numbered.sort_by_key(|(i, _)| *i);
    Ok(numbered.into_iter().map(|(_, t)| t).collect())
}

/// Rewrites JDBC/ODBC-style `?` placeholders to DataFusion's `$1`, `$2`, … (outside string
/// literals and comments, which the tokenizer keeps intact).
pub fn number_placeholders(sql: &str) -> Result<String, CatalogError> {
    if !sql.contains('?') {
        return Ok(sql.to_string());
    }
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| CatalogError::InvalidQuery(format!("SQL syntax error: {e}")))?;
    let mut next = 0;
    let mut out = String::with_capacity(sql.len() + 8);
    for token in tokens {
        match token {
            Token::Placeholder(p) if p == "?" => {
                next += 1;
                out.push_str(&format!("${next}"));
            }
            other => out.push_str(&other.to_string()),
        }
    }
    Ok(out)
}

/// The tables a plan planned with default schema `schema` reads (`schema.table`, as
/// resolved), subqueries included.
pub fn tables_read(plan: &LogicalPlan, schema: &str) -> Vec<String> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut tables = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let name = scan.table_name.clone().resolve(CATALOG_NAME, schema);
            tables.push(format!("{}.{}", name.schema, name.table));
        }
        Ok(TreeNodeRecursion::Continue)
    });
    tables.sort();
    tables.dedup();
    tables
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_become_numbered_placeholders() {
        assert_eq!(
            number_placeholders("SELECT * FROM t WHERE a = ? AND b = '?' AND c > ?").unwrap(),
            "SELECT * FROM t WHERE a = $1 AND b = '?' AND c > $2"
        );
        assert_eq!(number_placeholders("SELECT 1").unwrap(), "SELECT 1");
    }
}
