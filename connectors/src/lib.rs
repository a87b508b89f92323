//! Connectors pull data from sources and land it as parquet in the object store.
//!
//! A [`Connector`] turns a table definition's options into a stream of Arrow batches; the
//! orchestrator writes that stream through the [`sink`] into a fresh run folder, merges it
//! for incremental tables and commits it as a new version. So a connector only knows its
//! source: files, PostgreSQL, BigQuery, Keboola, or SQL over other Quiver tables.
//!
//! - [`bigquery`]: a BigQuery table or query, with a dry run as the cost guard.
//! - [`files`]: CSV (typed by DuckDB's sniffer), JSON lines and Parquet, local or remote.
//! - [`push`]: sources that push changes by webhook ([`PushSource`], beside [`Connector`]);
//!   [`jira`]: Jira Cloud issues, fetched whole when a delivery names them.
//! - [`keboola`]: a Keboola Storage table, through the Storage API's async export.
//! - [`postgres`]: a PostgreSQL table or query, via binary `COPY`.
//! - [`sql`]: a query over other Quiver tables, materialized.
//! - [`remote`]: PostgreSQL and BigQuery as sources of tables read at query time
//!   (`mode: remote`); [`pushdown`]: the filters such a source runs, in its SQL.
//! - [`tpch`]: the demo dataset (written, like every connector's data, through
//!   `quiver_catalog::sink`).
//! - [`options`]: typed, documented options with errors that name the field.

pub(crate) mod bigquery;
pub(crate) mod files;
pub(crate) mod jira;
pub(crate) mod keboola;
pub mod options;
pub(crate) mod postgres;
pub mod push;
pub(crate) mod pushdown;
pub mod remote;
pub(crate) mod sql;
pub mod tpch;

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use futures::stream::BoxStream;
use quiver_config::FieldProblem;

pub use push::PushSource;
/// The sink lives beside the storage it writes to, shared with users' writes.
pub use quiver_catalog::sink;
pub use sink::{Landed, ParquetSink};

/// Every connector, by the name a table definition uses. Adding one is one line here.
pub const CONNECTORS: &[(&str, &dyn Connector)] = &[
    ("bigquery", &bigquery::BigQuery),
    ("files", &files::Files),
    ("keboola", &keboola::Keboola),
    ("postgres", &postgres::Postgres),
    ("sql", &sql::Sql),
];

/// The connector named `name`.
pub fn connector(name: &str) -> Option<&'static dyn Connector> {
    CONNECTORS.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
}

/// The names of every connector, for error messages.
pub fn connector_names() -> String {
    CONNECTORS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every push source, by the name of its schema, webhook path (`/webhooks/{name}`) and
/// configuration section. Adding one is one line here.
pub const PUSH_SOURCES: &[(&str, PushFactory)] = &[("jira", jira::Jira::from_config)];

/// Builds a push source from the configuration; `None` when its section is absent.
pub type PushFactory =
    fn(&quiver_config::Config) -> Result<Option<Arc<dyn PushSource>>, ConnectorError>;

/// The push sources the configuration sets up.
pub fn push_sources(
    config: &quiver_config::Config,
) -> Result<Vec<Arc<dyn PushSource>>, ConnectorError> {
    let mut sources = Vec::new();
    for (_, build) in PUSH_SOURCES {
        sources.extend(build(config)?);
    }
    Ok(sources)
}

/// A source of rows.
#[async_trait::async_trait]
pub trait Connector: Send + Sync {
    /// Checks a definition's options without touching the source: unknown keys, types,
    /// secrets written as literals. Problems name the field (`options.path`).
    fn check(&self, options: &Options) -> Vec<FieldProblem>;

    /// Starts reading. `options` have their `${ENV}` references resolved.
    async fn read(&self, request: ReadRequest<'_>) -> Result<Batches, ConnectorError>;

    /// The connector as the source of tables read at query time (`mode: remote`), if it
    /// can be one.
    fn remote(&self) -> Option<&dyn Remote> {
        None
    }
}

/// A connector whose source can answer queries (`mode: remote`; see [`remote`]).
#[async_trait::async_trait]
pub trait Remote: Send + Sync {
    /// The SQL the source's filters are written in.
    fn dialect(&self) -> pushdown::SourceDialect;

    /// The source's schema, without reading rows: a remote table's sync.
    async fn schema(
        &self,
        options: &Options,
        sync: &quiver_config::SyncConfig,
    ) -> Result<SchemaRef, ConnectorError>;

    /// Starts reading the rows of one query. `options` have their references resolved.
    async fn scan(
        &self,
        options: &Options,
        query: &quiver_catalog::RemoteQuery,
        sync: &quiver_config::SyncConfig,
    ) -> Result<Batches, ConnectorError>;
}

/// A definition's `options` mapping.
pub type Options = serde_json::Map<String, serde_json::Value>;

/// What one sync asks of a connector.
pub struct ReadRequest<'a> {
    /// The options, with `${ENV}` references resolved.
    pub options: &'a Options,
    /// For an incremental sync after the first: the watermark column and the largest value
    /// already loaded (as text). A connector may use it to read less; the orchestrator
    /// filters by it either way.
    pub since: Option<(&'a str, &'a str)>,
    /// For an incremental sync after the first: when the last successful sync started
    /// (seconds since the epoch), for sources that track change times themselves.
    pub changed_since: Option<i64>,
    /// A private directory for downloads, removed after the sync.
    pub scratch: &'a Path,
    /// A session over every published table (for the `sql` connector).
    pub session: &'a SessionContext,
    /// The server's sync settings (defaults such as BigQuery's byte limit).
    pub sync: &'a quiver_config::SyncConfig,
}

/// Batches as they arrive from the source, all of one schema.
pub struct Batches {
    /// The schema of every batch.
    pub schema: SchemaRef,
    /// The batches; an error ends the sync.
    pub stream: BoxStream<'static, Result<RecordBatch, ConnectorError>>,
}

/// Errors of the connectors.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// A table definition or option that cannot work.
    #[error("invalid connector configuration: {0}")]
    Config(String),
    /// The source failed or sent data that cannot be read. The message may name the
    /// source's host, database or account: only admins and the log see it.
    #[error("source: {0}")]
    Source(String),
    /// The source cannot answer as asked, for a reason the caller can act on (a column
    /// that is gone, the cost guard). The message names nothing of the source's location.
    #[error("{0}")]
    Request(String),
    /// Writing to the object store failed.
    #[error("object store: {0}")]
    Storage(String),
    /// Arrow could not decode or convert the data.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Parquet encoding failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// The query engine failed (SQL connector, JSON and Parquet reading).
    #[error("{0}")]
    Query(#[from] datafusion::error::DataFusionError),
    /// A catalog-level failure (names, storage).
    #[error(transparent)]
    Catalog(#[from] quiver_catalog::CatalogError),
}
