//! Quiver's system state and the per-principal view of the data.
//!
//! - [`state`]: the embedded DuckDB state file — users, groups, the table registry and its
//!   versions — with versioned migrations.
//! - [`identity`]: principals, argon2id password hashes and signed bearer tokens.
//! - [`storage`]: the object store holding table data, and its key layout.
//! - [`engine`]: one DataFusion session per principal whose catalog holds only what that
//!   principal may read, with a read-only SQL surface.
//! - [`names`]: validated `schema.table` names.

pub mod engine;
pub mod identity;
pub mod names;
pub mod state;
pub mod storage;

pub use engine::{EngineOptions, QueryEngine};
pub use identity::{Principal, TokenSigner};
pub use names::{CATALOG_NAME, TableName};
pub use state::{StateStore, TableEntry};
pub use storage::Storage;

use datafusion::error::DataFusionError;

/// Errors of the catalog crate. The edges (gRPC, HTTP) map each variant once.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A schema or table name that cannot be used.
    #[error("{0}")]
    InvalidName(String),
    /// A query that cannot be planned or is not allowed, before DataFusion is involved.
    #[error("{0}")]
    InvalidQuery(String),
    /// Planning or running a query failed.
    #[error(transparent)]
    Query(#[from] DataFusionError),
    /// The object store could not be opened or used.
    #[error("object store: {0}")]
    Storage(String),
    /// The state file is open in another process.
    #[error(
        "the state file {0} is in use by another Quiver process (a running server); stop it, or make the change through its HTTP API"
    )]
    StateLocked(String),
    /// The state file failed.
    #[error("state store: {0}")]
    State(String),
    /// A bug or an environment failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<duckdb::Error> for CatalogError {
    fn from(e: duckdb::Error) -> Self {
        CatalogError::State(e.to_string())
    }
}
