//! `mode: remote`: connectors as the sources of tables read at query time.
//!
//! The engine's [`RemoteTable`](quiver_catalog::engine::remote::RemoteTable) asks for a query's
//! columns, filters and limit; [`RemoteSources`] turns a table's definition into a source
//! that runs it through its connector's [`Remote`]. Secrets in the options are resolved
//! for each query and dropped with it.

use std::sync::Arc;

use datafusion::common::DFSchema;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::TryStreamExt;
use quiver_catalog::{CatalogError, RemoteQuery, RemoteSource, SourceError};
use quiver_config::{SyncConfig, TableDef};

use crate::{ConnectorError, Options, Remote, options, pushdown};

/// The connectors, as the sources of remote tables.
#[derive(Debug)]
pub struct RemoteSources {
    sync: Arc<SyncConfig>,
}

impl RemoteSources {
    /// Sources that apply the server's `sync` settings (BigQuery's default byte limit).
    pub fn new(sync: SyncConfig) -> Self {
        Self {
            sync: Arc::new(sync),
        }
    }
}

impl quiver_catalog::RemoteSources for RemoteSources {
    fn source(&self, def: &TableDef) -> Result<Arc<dyn RemoteSource>, CatalogError> {
        let remote = crate::connector(&def.connector)
            .and_then(|c| c.remote())
            .ok_or_else(|| {
                CatalogError::InvalidInput(format!(
                    "{}: the `{}` connector cannot serve `mode: remote`",
                    def.name, def.connector
                ))
            })?;
        Ok(Arc::new(Source {
            table: def.name.clone(),
            remote,
            options: def.options.clone(),
            sync: self.sync.clone(),
        }))
    }
}

/// One remote table's source. Its options hold `${ENV}` references, not secrets.
struct Source {
    table: String,
    remote: &'static dyn Remote,
    options: Options,
    sync: Arc<SyncConfig>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// A source's failure, as the query's error: what was read and what went wrong, in full
/// for admins and the log; for everyone else, only what they can act on (see
/// [`SourceError`]).
fn read_error(table: &str, e: ConnectorError) -> DataFusionError {
    let detail = format!("reading {table} from its source: {e}");
    let public = match e {
        ConnectorError::Request(_) => detail.clone(),
        _ => format!(
            "reading {table} from its source failed; an admin can find the cause in the server log"
        ),
    };
    DataFusionError::External(Box::new(SourceError { public, detail }))
}

#[async_trait::async_trait]
impl RemoteSource for Source {
    fn can_run(&self, schema: &DFSchema, filter: &Expr) -> bool {
        pushdown::can_run(self.remote.dialect(), schema, filter)
    }

    async fn scan(&self, query: &RemoteQuery) -> Result<SendableRecordBatchStream> {
        let options = options::resolve(&self.options).map_err(|e| read_error(&self.table, e))?;
        tracing::debug!(table = %self.table, columns = query.columns.len(), filters = query.filters.len(), limit = ?query.limit, "remote scan");
        let batches = self
            .remote
            .scan(&options, query, &self.sync)
            .await
            .map_err(|e| read_error(&self.table, e))?;
        let table = self.table.clone();
        let stream = batches.stream.map_err(move |e| read_error(&table, e));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            batches.schema,
            stream,
        )))
    }
}
