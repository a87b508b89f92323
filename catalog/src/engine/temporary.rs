//! Temporary tables (ADBC's `adbc_ingest(…, temporary=True)`): a Flight SQL session's own,
//! visible only to its statements, as schema `temp` (and to unqualified names when the
//! session chose no schema). Their parquet lives under the spill directory on this
//! replica's disk — never in the object store or the state's versions — and is removed when
//! the session closes or expires (when its [`TempTables`] is dropped).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{CatalogProvider, MemorySchemaProvider, SchemaProvider};
use datafusion::datasource::TableProvider;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::SessionContext;
use futures::Stream;

use crate::engine::wire::plain_schema;
use crate::names::CATALOG_NAME;
use crate::sink::{ParquetSink, Progress};
use crate::state::tables::ShardFile;
use crate::{CatalogError, Storage, TableName};

use super::{IngestMode, QueryEngine};

/// The schema a session's temporary tables are in.
pub const TEMP_SCHEMA: &str = "temp";

/// One session's temporary tables.
pub struct TempTables {
    /// This session's folder under the spill directory.
    dir: PathBuf,
    storage: Storage,
    tables: Mutex<BTreeMap<String, Vec<ShardFile>>>,
}

impl std::fmt::Debug for TempTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempTables")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Drop for TempTables {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove a closed session's temporary tables");
        }
    }
}

impl TempTables {
    /// Whether the session holds any.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<ShardFile>>> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl QueryEngine {
    /// A new, empty set of temporary tables for one session.
    pub fn temp_tables(&self) -> Result<Arc<TempTables>, CatalogError> {
        let dir = self
            .spill_dir
            .join("temporary")
            .join(uuid::Uuid::new_v4().simple().to_string());
        Ok(Arc::new(TempTables {
            storage: Storage::local(&dir)?,
            dir,
            tables: Mutex::default(),
        }))
    }

    /// Writes `batches` into the session's temporary table `table`, as `mode` says.
    /// Bounded by `write.max_write_bytes` per write, like any write.
    pub async fn ingest_temporary<S>(
        &self,
        temp: &TempTables,
        table: &str,
        mode: IngestMode,
        schema: SchemaRef,
        batches: S,
    ) -> Result<i64, CatalogError>
    where
        S: Stream<Item = Result<RecordBatch, CatalogError>> + Send + Unpin,
    {
        let name = TableName::new(TEMP_SCHEMA, table)?;
        let shown = name.to_string();
        let existing = temp.lock().get(table).cloned();
        match (mode, &existing) {
            (IngestMode::Create, Some(_)) => {
                return Err(CatalogError::AlreadyExists(format!(
                    "temporary table `{shown}` already exists (ingest with mode append or replace)"
                )));
            }
            (IngestMode::Append, None) => {
                return Err(CatalogError::NotFound(format!(
                    "no temporary table `{shown}` to append to (ingest with mode create or create_append)"
                )));
            }
            _ => {}
        }
        if let Some(files) = existing
            .as_ref()
            .filter(|_| matches!(mode, IngestMode::Append | IngestMode::CreateAppend))
        {
            let ctx = self.new_context("temporary@quiver.internal")?;
            let current = plain_schema(&temp_provider(&ctx, files).await?.schema());
            super::writes::check_append(&shown, &current, &plain_schema(&schema))?;
        }
        let sink = ParquetSink::new(&temp.storage, &name);
        let landed = sink
            .write_stream(schema, self.bounded(batches), &Progress::default())
            .await?;
        let rows = landed.rows;
        let mut tables = temp.lock();
        let files = tables.entry(table.to_string()).or_default();
        if matches!(mode, IngestMode::Replace | IngestMode::Create) {
            files.clear();
        }
        files.extend(landed.files);
        Ok(rows)
    }

    /// `ctx` with the session's temporary tables as schema `temp` beside the principal's
    /// catalog (which stays shared and unchanged).
    pub(super) async fn with_temp_tables(
        &self,
        ctx: &SessionContext,
        temp: &TempTables,
    ) -> Result<SessionContext, CatalogError> {
        let schema = Arc::new(MemorySchemaProvider::new());
        let tables = temp.lock().clone();
        for (name, files) in &tables {
            schema.register_table(name.clone(), temp_provider(ctx, files).await?)?;
        }
        let base = ctx
            .catalog(CATALOG_NAME)
            .ok_or_else(|| CatalogError::Internal("no catalog".into()))?;
        let catalogs = datafusion::catalog::MemoryCatalogProviderList::new();
        datafusion::catalog::CatalogProviderList::register_catalog(
            &catalogs,
            CATALOG_NAME.into(),
            Arc::new(Overlay { base, temp: schema }),
        );
        let state = SessionStateBuilder::new_from_existing(ctx.state())
            .with_catalog_list(Arc::new(catalogs))
            .build();
        Ok(SessionContext::new_with_state(state))
    }
}

/// A ListingTable over a temporary table's files.
async fn temp_provider(
    ctx: &SessionContext,
    files: &[ShardFile],
) -> Result<Arc<dyn TableProvider>, CatalogError> {
    use datafusion::datasource::file_format::parquet::ParquetFormat;
    use datafusion::datasource::listing::{
        ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
    };
    let urls = files
        .iter()
        .map(|f| ListingTableUrl::parse(&f.url))
        .collect::<Result<Vec<_>, _>>()?;
    let first = urls
        .first()
        .ok_or_else(|| CatalogError::Internal("a temporary table without files".into()))?
        .clone();
    // Local files: DataFusion's registry knows `file:///` whatever the object store is.
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let schema = options.infer_schema(&ctx.state(), &first).await?;
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// The principal's catalog with one more schema, `temp`.
#[derive(Debug)]
struct Overlay {
    base: Arc<dyn CatalogProvider>,
    temp: Arc<MemorySchemaProvider>,
}

impl CatalogProvider for Overlay {
    fn schema_names(&self) -> Vec<String> {
        let mut names = self.base.schema_names();
        names.push(TEMP_SCHEMA.into());
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == TEMP_SCHEMA {
            Some(self.temp.clone())
        } else {
            self.base.schema(name)
        }
    }
}
