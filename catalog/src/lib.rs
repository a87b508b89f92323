//! Quiver's system state, sign-in, and the per-principal view of the data: three rooms.
//!
//! - [`state`]: the state database (embedded DuckDB, or PostgreSQL shared by the
//!   replicas) and its migrations, one repository per kind of thing: `state.identity()`
//!   (users, groups, memberships, tokens, service accounts, ended sessions),
//!   `state.access()` (grants), `state.tables()` (versions, definitions, sync runs,
//!   shards), `state.audit()`, `state.webhooks()` and `state.cluster()` (replicas, the work
//!   each runs, leases). Each change is validated and audited in one transaction.
//! - [`auth`]: how a caller is signed in — principals, argon2id password hashes and signed
//!   bearer tokens (`principal`), sign-in written once for every edge (`authenticator`),
//!   and its rate limits (`throttle`).
//! - [`engine`]: everything a query needs — one DataFusion session per principal whose
//!   catalog holds only what that principal may read, row filters and masks in the plan
//!   (`policy`), statement limits, memory, the runtime, remote tables, distributed stages,
//!   hot tables in memory, results cache and parts, plain types on the wire.
//! - [`storage`]: the object store holding table data, and its key layout; [`sink`]: the
//!   one place table data is written (by syncs and by users); [`names`]: validated
//!   `schema.table` names.

pub mod auth;
pub mod engine;
pub(crate) mod names;
pub mod sink;
pub mod state;
pub(crate) mod storage;

pub use auth::principal::{Origin, Principal, TokenSigner, Verified};
pub use engine::limits::QueryLimits;
pub use engine::remote::{RemoteQuery, RemoteSource, RemoteSources, SourceError};
pub use engine::{EngineOptions, Planned, QueryEngine, VisibleTable};
pub use names::{CATALOG_NAME, TableName};
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
    /// A statement beyond one of the `query.*` bounds on its size or shape; the message says
    /// by how much and how to stay within it, and always names the setting.
    #[error("{message} ({setting})")]
    LimitExceeded {
        /// The configuration key of the bound, e.g. `query.max_sql_length`.
        setting: &'static str,
        /// What was over the bound.
        message: String,
    },
    /// The named user, group, grant, token or table does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A statement names a table the caller's catalog does not hold (whether it does not
    /// exist or is not granted reads the same), with a hint of what the caller can read.
    #[error("{0}")]
    TableNotFound(String),
    /// The change conflicts with what exists (a duplicate, the last administrator…).
    #[error("{0}")]
    Conflict(String),
    /// A table to be created exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// A write lost a race: what it started from changed before it committed. Trying again
    /// may succeed.
    #[error("{0}")]
    Aborted(String),
    /// The caller may read the table or schema but not do this to it.
    #[error("{0}")]
    PermissionDenied(String),
    /// A kind of statement Quiver does not run (`UPDATE`, `DELETE`, …); the message names
    /// what it accepts instead.
    #[error("{0}")]
    Unsupported(String),
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
