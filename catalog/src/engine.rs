//! The query engine: one DataFusion [`SessionContext`] per principal, whose catalog holds
//! only the tables that principal may read.
//!
//! Enforcement lives here, in what the planner can resolve, not in filters over SQL text:
//! a relation that is not in the principal's catalog does not exist for it, whatever way it
//! is spelled. The SQL surface is read-only ([`read_only`]): DDL, DML (`COPY`, `INSERT`),
//! and statements (`SET`, `PREPARE`) are refused for every plan, including prepared ones.
//! URL tables (`SELECT * FROM '/etc/passwd'`) are never enabled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider};
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::identity::Principal;
use crate::names::CATALOG_NAME;
use crate::state::{StateStore, TableEntry};
use crate::storage::Storage;
use crate::{CatalogError, TableName};

/// Engine limits, from the `query` section of the configuration.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Memory all running queries may hold; spilling operators spill beyond it.
    pub memory_limit: usize,
    /// Where spill files go.
    pub spill_dir: std::path::PathBuf,
    /// Cap on spill files on disk.
    pub max_spill_bytes: u64,
    /// Rows per batch.
    pub batch_size: usize,
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
    batch_size: usize,
    /// Table providers by (table, version): a provider reads a version's parquet footers
    /// once, then serves every principal.
    providers: Mutex<HashMap<(TableName, i64), Arc<dyn TableProvider>>>,
    /// Sessions by principal, valid while the state store's generation is unchanged.
    sessions: Mutex<HashMap<Principal, (u64, SessionContext)>>,
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
            batch_size: options.batch_size,
            providers: Mutex::default(),
            sessions: Mutex::default(),
        })
    }

    /// The state store this engine reads the table registry from.
    pub fn state(&self) -> &Arc<StateStore> {
        &self.state
    }

    /// Tables `principal` may read, from the registry.
    pub fn visible_tables(&self, principal: &Principal) -> Result<Vec<TableEntry>, CatalogError> {
        let tables = self.state.tables()?;
        Ok(tables
            .into_iter()
            .filter(|t| may_read(principal, &t.name))
            .collect())
    }

    /// The principal's session: its catalog holds exactly the tables it may read, at their
    /// current versions. Cached until tables, users or grants change.
    pub async fn session(&self, principal: &Principal) -> Result<SessionContext, CatalogError> {
        let generation = self.state.generation();
        if let Some((g, ctx)) = lock(&self.sessions).get(principal)
            && *g == generation
        {
            return Ok(ctx.clone());
        }
        let ctx = self.build_session(principal).await?;
        lock(&self.sessions).insert(principal.clone(), (generation, ctx.clone()));
        Ok(ctx)
    }

    fn new_context(&self) -> SessionContext {
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG_NAME, "public")
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true)
            .with_batch_size(self.batch_size);
        // Plain Utf8/Binary on the wire: JDBC and older drivers do not read view types.
        config
            .options_mut()
            .execution
            .parquet
            .schema_force_view_types = false;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(self.runtime.clone())
            .with_default_features()
            .build();
        SessionContext::new_with_state(state)
    }

    async fn build_session(&self, principal: &Principal) -> Result<SessionContext, CatalogError> {
        let ctx = self.new_context();
        let catalog = MemoryCatalogProvider::new();
        let mut schemas: HashMap<String, Arc<MemorySchemaProvider>> = HashMap::new();
        for entry in self.visible_tables(principal)? {
            let provider = self.provider(&ctx, &entry).await?;
            let schema = schemas
                .entry(entry.name.schema().to_string())
                .or_insert_with(|| Arc::new(MemorySchemaProvider::new()));
            datafusion::catalog::SchemaProvider::register_table(
                schema.as_ref(),
                entry.name.table().to_string(),
                provider,
            )?;
        }
        for (name, schema) in schemas {
            catalog.register_schema(&name, schema)?;
        }
        ctx.register_catalog(CATALOG_NAME, Arc::new(catalog));
        Ok(ctx)
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
        let url = ListingTableUrl::parse(&entry.location)?;
        // The format carries its own options: take the session's (no view types).
        let mut parquet = ctx.state().table_options().parquet.clone();
        parquet.global.schema_force_view_types = false;
        let format = ParquetFormat::default().with_options(parquet);
        let options = ListingOptions::new(Arc::new(format)).with_file_extension(".parquet");
        let schema = options.infer_schema(&ctx.state(), &url).await?;
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(schema);
        let provider: Arc<dyn TableProvider> = Arc::new(ListingTable::try_new(config)?);
        let mut providers = lock(&self.providers);
        // Forget older versions of this table; running queries keep their own Arc.
        providers.retain(|(name, _), _| name != &entry.name);
        providers.insert(key, provider.clone());
        Ok(provider)
    }

    /// Plans `sql` for `principal`, refusing anything but a read-only query. `?` placeholders
    /// are accepted as well as `$1`.
    pub async fn plan(
        &self,
        principal: &Principal,
        sql: &str,
    ) -> Result<(SessionContext, LogicalPlan), CatalogError> {
        let ctx = self.session(principal).await?;
        let sql = number_placeholders(sql)?;
        let plan = ctx.state().create_logical_plan(&sql).await?;
        verify_read_only(&plan)?;
        Ok((ctx, plan))
    }

    /// Runs a plan (after binding `params` to its placeholders) as a stream of batches.
    pub async fn execute(
        &self,
        ctx: &SessionContext,
        plan: LogicalPlan,
        params: Vec<ScalarValue>,
    ) -> Result<SendableRecordBatchStream, CatalogError> {
        let plan = if params.is_empty() {
            plan
        } else {
            plan.with_param_values(params)?
        };
        verify_read_only(&plan)?;
        let df = ctx.execute_logical_plan(plan).await?;
        Ok(df.execute_stream().await?)
    }

    /// The Arrow schema of a visible table, or `None` when the principal cannot see it.
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
        Ok(schema.table(name.table()).await?.map(|t| t.schema()))
    }
}

/// Refuses plans that would change anything (DDL, DML, `COPY`, `SET`, …).
fn verify_read_only(plan: &LogicalPlan) -> Result<(), CatalogError> {
    read_only().verify_plan(plan).map_err(|e| {
        CatalogError::InvalidQuery(format!(
            "Quiver is read-only; only queries are accepted ({})",
            e.find_root().strip_backtrace()
        ))
    })
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

/// Whether `principal` may read `table`. Admins read everything; grants arrive with the
/// identity-and-access work.
fn may_read(principal: &Principal, _table: &TableName) -> bool {
    principal.is_admin()
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
