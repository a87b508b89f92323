//! Quiver's system state and the per-principal view of the data.
//!
//! - [`state`]: the state database (embedded DuckDB, or PostgreSQL shared by the
//!   replicas) and its migrations, one repository per kind of thing: `state.identity()`
//!   (users, groups, memberships, tokens, service accounts, ended sessions),
//!   `state.access()` (grants), `state.tables()` (versions, definitions, sync runs,
//!   shards), `state.audit()`, `state.webhooks()` and `state.cluster()` (replicas, the work
//!   each runs, leases). Each change is validated and audited in one transaction.
//! - [`identity`]: principals, argon2id password hashes and signed bearer tokens;
//!   [`authenticator`]: sign-in, written once for every edge; [`throttle`]: sign-in rate
//!   limits.
//! - [`policy`]: row filters and column masks, enforced inside a per-principal table
//!   provider; [`system`]: the admins' `system` schema; [`remote`]: tables read from
//!   their source at query time.
//! - [`storage`]: the object store holding table data, and its key layout.
//! - [`engine`]: one DataFusion session per principal whose catalog holds only what that
//!   principal may read, with a read-only SQL surface; [`limits`]: bounds on a statement's
//!   size, depth and plan; [`functions`]: functions that build large values, bounded by the
//!   user's memory; [`executor`]: the runtime user statements are planned and run on.
//! - [`names`]: validated `schema.table` names; [`wire`]: what clients and landed files
//!   see, without Arrow view types.
//! - [`distributed`]: large statements' stages run on the replicas (datafusion-distributed),
//!   each stage proved to come from one.

pub mod authenticator;
pub mod distributed;
pub mod engine;
pub mod executor;
pub mod functions;
pub mod identity;
pub mod limits;
pub mod memory;
pub mod names;
pub mod policy;
pub mod remote;
pub mod state;
pub mod storage;
pub mod system;
pub mod throttle;
pub mod wire;

pub use engine::{EngineOptions, Planned, QueryEngine, VisibleTable};
pub use identity::{Origin, Principal, TokenSigner, Verified};
pub use limits::QueryLimits;
pub use names::{CATALOG_NAME, TableName};
pub use remote::{RemoteQuery, RemoteSource, RemoteSources, SourceError};
pub use state::{Backend, CopyReport, NewVersion, StateStore, TableEntry};
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
    /// Input that cannot be accepted (a bad e-mail, a row filter naming an unknown column…).
    #[error("{0}")]
    InvalidInput(String),
    /// The named user, group, grant, token or table does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with what exists (a duplicate, the last administrator…).
    #[error("{0}")]
    Conflict(String),
    /// The object store could not be opened or used.
    #[error("object store: {0}")]
    Storage(String),
    /// The state file is open in another process.
    #[error(
        "the state file {0} is in use by another Quiver process (a running server); stop it, or make the change through its HTTP API"
    )]
    StateLocked(String),
    /// The state database failed a statement.
    #[error("state store: {0}")]
    State(String),
    /// The state database cannot be reached (URL without its password, then why).
    #[error("cannot reach the state database {0}: {1}")]
    StateUnavailable(String, String),
    /// A bug or an environment failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<duckdb::Error> for CatalogError {
    fn from(e: duckdb::Error) -> Self {
        CatalogError::State(e.to_string())
    }
}
