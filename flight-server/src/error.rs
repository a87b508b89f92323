//! The one mapping from Quiver's errors to gRPC statuses.
//!
//! Users' mistakes (bad SQL, unknown tables, refused statements) say exactly what was wrong;
//! failures of the server itself get a generic message while the detail goes to the log.

use datafusion::error::DataFusionError;
use quiver_catalog::CatalogError;
use tonic::Status;

/// Maps a catalog error to the status a client sees.
pub(crate) fn to_status(error: CatalogError) -> Status {
    match error {
        CatalogError::InvalidName(m)
        | CatalogError::InvalidQuery(m)
        | CatalogError::InvalidInput(m) => Status::invalid_argument(m),
        e @ CatalogError::LimitExceeded { .. } => Status::invalid_argument(e.to_string()),
        CatalogError::NotFound(m) | CatalogError::TableNotFound(m) => Status::not_found(m),
        CatalogError::Conflict(m) => Status::failed_precondition(m),
        CatalogError::AlreadyExists(m) => Status::already_exists(m),
        CatalogError::Aborted(m) => Status::aborted(m),
        CatalogError::PermissionDenied(m) => Status::permission_denied(m),
        CatalogError::Unsupported(m) => Status::unimplemented(m),
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
pub(crate) fn datafusion_status(error: &DataFusionError) -> Status {
    let root = error.find_root();
    let message = root.strip_backtrace();
    match root {
        // Quiver's memory pools name the setting that was hit (`engine::memory`); spill space
        // running out says so in DataFusion's words.
        DataFusionError::ResourcesExhausted(_) => Status::resource_exhausted(message),
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
pub(crate) fn internal(error: &dyn std::fmt::Display) -> Status {
    tracing::error!(error = %error, "internal error");
    Status::internal("internal error; the server log has the details")
}
