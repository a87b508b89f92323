//! One DataFusion session per principal: its catalog holds exactly the tables the principal
//! may read, each behind the policies of its grants; cached until tables, users or grants
//! change. Table providers (a version's parquet footers, read once) and users' memory pools
//! are shared by the sessions.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider};
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use quiver_config::{SyncMode, TableDef};

use crate::auth::principal::Principal;
use crate::engine::executor::YieldAfterJoins;
use crate::engine::functions::BoundedConcatPlanner;
use crate::engine::memory::UserPool;
use crate::engine::policy::{MaskHash, PolicyTable, RowPolicies, TablePolicy, TagMask};
use crate::engine::remote::RemoteTable;
use crate::engine::system::{SYSTEM_SCHEMA, SnapshotTable};
use crate::names::CATALOG_NAME;
use crate::state::TableEntry;
use crate::state::access::Grant;
use crate::state::governance::{Mask, Policy, PolicyKind, PolicyRules, Tags, tag_covers};
use crate::{CatalogError, TableName};

use super::{DEFAULT_SCHEMA, PERSONAL_SCHEMA, QueryEngine, lock};

/// A principal's DataFusion session and the tables in its catalog.
pub(super) struct PrincipalSession {
    pub(super) ctx: SessionContext,
    pub(super) tables: Vec<VisibleTable>,
}

/// A table in a principal's catalog.
#[derive(Debug, Clone)]
pub struct VisibleTable {
    /// The name the principal addresses it by: the registered name, except for its own
    /// personal tables (`me.scores`).
    pub name: TableName,
    /// The table as registered (its version, and its stored name).
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
    /// The grants and policies that shape it for this principal (`grant 12`,
    /// `policy legal_only`), for the access history.
    pub applied: Vec<String>,
}

impl QueryEngine {
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

    pub(super) async fn principal_session(
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
    pub(super) fn new_context(&self, email: &str) -> Result<SessionContext, CatalogError> {
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
        self.register_functions(&ctx, email, &pool)?;
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
        // Tags and policies reach users other than admins.
        let governance = if principal.is_admin() {
            (Tags::default(), Vec::new())
        } else {
            let g = self.state.governance();
            (g.tags()?, g.policies()?)
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
        // The principal's own tables are in `me`; others' personal schemas are for admins.
        let own = self.state.tables().personal_schema(principal.email())?;
        let personal: std::collections::HashSet<String> = self
            .state
            .tables()
            .personal_schemas()?
            .into_iter()
            .map(|(schema, _)| schema)
            .collect();
        if self.writes.personal_schemas {
            schemas.insert(
                PERSONAL_SCHEMA.to_string(),
                Arc::new(MemorySchemaProvider::new()),
            );
        }
        for entry in self.state.tables().list()? {
            let mine = own.as_deref() == Some(entry.name.schema());
            if personal.contains(entry.name.schema()) && !mine && !principal.is_admin() {
                continue;
            }
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
            let mut applied: Vec<String> = Vec::new();
            let mut clear_columns: Vec<String> = base
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            let provider = if principal.is_admin() || mine {
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
                let rows = row_policies(&governance, principal, &entry.name, &base.schema());
                let Some(mut policy) =
                    TablePolicy::compile(&state, &base.schema(), &applicable, &rows)
                else {
                    continue;
                };
                let masks = tag_masks(&governance, principal, &entry.name, &base.schema());
                policy.apply_tag_masks(&state, &base.schema(), &masks);
                applied.extend(applicable.iter().map(|g| format!("grant {}", g.id)));
                let named = rows
                    .permissive
                    .iter()
                    .chain(&rows.restrictive)
                    .map(|(name, _)| name)
                    .chain(masks.iter().map(|m| &m.policy));
                applied.extend(named.map(|name| format!("policy {name}")));
                applied.sort();
                applied.dedup();
                row_filtered = policy.filters_rows();
                clear_columns = policy.clear_columns(&base.schema());
                if policy.is_transparent(&base.schema()) {
                    base
                } else {
                    Arc::new(PolicyTable::new(base, policy))
                }
            };
            let name = if mine {
                TableName::new(PERSONAL_SCHEMA, entry.name.table())?
            } else {
                entry.name.clone()
            };
            let schema = schemas
                .entry(name.schema().to_string())
                .or_insert_with(|| Arc::new(MemorySchemaProvider::new()));
            datafusion::catalog::SchemaProvider::register_table(
                schema.as_ref(),
                name.table().to_string(),
                provider,
            )?;
            visible.push(VisibleTable {
                name,
                remote: remote.contains_key(&entry.name),
                entry,
                row_filtered,
                clear_columns,
                applied,
            });
        }
        if principal.is_admin() {
            let system = Arc::new(MemorySchemaProvider::new());
            datafusion::catalog::SchemaProvider::register_table(
                system.as_ref(),
                "audit".into(),
                Arc::new(SnapshotTable::audit(self.state.clone())?),
            )?;
            datafusion::catalog::SchemaProvider::register_table(
                system.as_ref(),
                "access_history".into(),
                Arc::new(SnapshotTable::access_history(self.state.clone())?),
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

    pub(super) async fn provider(
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

    /// Copies `entry` into memory; sessions made after it is ready read the copy.
    pub(super) async fn hold_in_memory(self: Arc<Self>, entry: TableEntry) {
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
}

impl QueryEngine {
    /// The functions of `email`'s sessions: the caller's (`current_user()`, its groups and
    /// attributes, read from the state), the amplifying functions bounded by `pool`, and
    /// the keyed hash of `hash` masks.
    pub(crate) fn register_functions(
        &self,
        ctx: &SessionContext,
        email: &str,
        pool: &Arc<dyn MemoryPool>,
    ) -> Result<(), CatalogError> {
        let identity = self.state.identity();
        let groups = identity
            .principal(email)?
            .map(|p| p.groups().to_vec())
            .unwrap_or_default();
        crate::engine::caller::register(
            ctx,
            email,
            &groups,
            &identity.attributes(email)?,
            &identity.list_attributes()?,
        );
        ctx.register_udf(MaskHash::udf(&self.mask_key()?));
        crate::engine::functions::bound_functions(ctx, pool);
        Ok(())
    }
}

/// The tag masks `principal` sees `table`'s columns (of `schema`) through: for each column
/// carrying a tag that a policy not excepting the principal's groups is bound to, the most
/// restrictive such policy's mask.
pub(super) fn tag_masks(
    (tags, policies): &(Tags, Vec<Policy>),
    principal: &Principal,
    table: &TableName,
    schema: &datafusion::arrow::datatypes::Schema,
) -> Vec<TagMask> {
    if tags.is_empty() || policies.is_empty() {
        return Vec::new();
    }
    let applying: Vec<(&Policy, Mask)> = policies
        .iter()
        .filter(|p| p.kind == PolicyKind::Mask && p.applies_to(principal.groups()))
        .filter_map(|p| p.parsed_mask().ok().map(|m| (p, m)))
        .collect();
    schema
        .fields()
        .iter()
        .enumerate()
        .filter_map(|(column, field)| {
            let carried = tags.of_column(table, field.name());
            applying
                .iter()
                .filter(|(p, _)| {
                    let bound = p.tag.as_deref().unwrap_or_default();
                    carried.iter().any(|t| tag_covers(bound, t))
                })
                .min_by_key(|(_, m)| m.rank())
                .map(|(p, mask)| TagMask {
                    column,
                    mask: mask.clone(),
                    policy: p.name.clone(),
                })
        })
        .collect()
}

/// The row policies covering `table` (of `schema`) for `principal`: those bound to the
/// table (or its schema), and those bound to a tag, once for each column carrying it.
pub(super) fn row_policies(
    (tags, policies): &(Tags, Vec<Policy>),
    principal: &Principal,
    table: &TableName,
    schema: &datafusion::arrow::datatypes::Schema,
) -> RowPolicies {
    let mut out = RowPolicies {
        table: table.to_string(),
        ..RowPolicies::default()
    };
    let applying = policies
        .iter()
        .filter(|p| p.kind == PolicyKind::Row && p.applies_to(principal.groups()));
    for policy in applying {
        let conditions: Vec<String> = match (&policy.tag, policy.table_pattern()) {
            (_, Some(pattern)) if pattern.covers(table) => vec![policy.condition_for(None)],
            (Some(bound), _) => schema
                .fields()
                .iter()
                .filter(|f| {
                    tags.of_column(table, f.name())
                        .iter()
                        .any(|t| tag_covers(bound, t))
                })
                .map(|f| policy.condition_for(Some(f.name())))
                .collect(),
            _ => Vec::new(),
        };
        let list = if policy.restrictive {
            &mut out.restrictive
        } else {
            &mut out.permissive
        };
        list.extend(conditions.into_iter().map(|c| (policy.name.clone(), c)));
    }
    out
}
