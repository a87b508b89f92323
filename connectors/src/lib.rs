//! Connectors pull data from sources and land it as parquet in the object store.
//!
//! - [`sink`]: the one place data is written — part files under a fresh run folder that
//!   becomes a table version only when the orchestrator commits it.
//! - [`tpch`]: the TPC-H demo dataset, generated offline.
//!
//! Source connectors (files, PostgreSQL, Keboola, SQL) arrive as one module each.

pub mod sink;
pub mod tpch;

pub use sink::{Landed, ParquetSink};

/// Errors of the connectors.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// A table definition or option that cannot work.
    #[error("invalid connector configuration: {0}")]
    Config(String),
    /// The source failed or sent data that cannot be read.
    #[error("source: {0}")]
    Source(String),
    /// Writing to the object store failed.
    #[error("object store: {0}")]
    Storage(String),
    /// Arrow could not decode or convert the data.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Parquet encoding failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// A catalog-level failure (names, storage).
    #[error(transparent)]
    Catalog(#[from] quiver_catalog::CatalogError),
}
