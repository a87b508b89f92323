//! The one mapping from Quiver's errors to gRPC statuses.
//!
//! Users' mistakes (bad SQL, unknown tables, refused statements) say exactly what was wrong;
//! failures of the server itself get a generic message while the detail goes to the log.

use datafusion::error::DataFusionError;
use quiver_catalog::CatalogError;
use tonic::Status;

/// Maps a catalog error to the status a client sees.
pub fn to_status(error: CatalogError) -> Status {
    match error {
        CatalogError::InvalidName(m)
        | CatalogError::InvalidQuery(m)
        | CatalogError::InvalidInput(m) => Status::invalid_argument(m),
        CatalogError::NotFound(m) | CatalogError::TableNotFound(m) => Status::not_found(m),
        CatalogError::Conflict(m) => Status::failed_precondition(m),
        CatalogError::Query(e) => datafusion_status(&e),
        other @ CatalogError::StateUnavailable(..) => {
            tracing::error!(error = %other, "state database unavailable");
            Status::unavailable("the state database is unavailable; try again shortly")
        }
        other @ (CatalogError::Storage(_)
        | CatalogError::State(_)
        | CatalogError::StateLocked(_)
        | CatalogError::Internal(_)) => internal(&other),
    }
}

/// Maps a DataFusion error, planning or execution, to a status.
pub fn datafusion_status(error: &DataFusionError) -> Status {
    let root = error.find_root();
    let message = root.strip_backtrace();
    match root {
        // The memory pools name the setting that was hit; other exhaustion (spill space)
        // says what it is.
        DataFusionError::ResourcesExhausted(m) if m.contains("(query.") => {
            Status::resource_exhausted(message)
        }
        DataFusionError::ResourcesExhausted(_) => Status::resource_exhausted(format!(
            "the query needs more memory or spill space than allowed (query.memory_limit): {message}"
        )),
        DataFusionError::NotImplemented(_) => Status::unimplemented(message),
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::Configuration(_)
        | DataFusionError::Execution(_)
        | DataFusionError::ArrowError(..) => Status::invalid_argument(message),
        _ => internal(error),
    }
}

/// A generic internal error; the detail is logged, not sent.
pub fn internal(error: &dyn std::fmt::Display) -> Status {
    tracing::error!(error = %error, "internal error");
    Status::internal("internal error; the server log has the details")
}
