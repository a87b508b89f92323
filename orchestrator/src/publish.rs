//! Publishing: a landed run becomes the next version of its table in one state transaction.

use quiver_catalog::{StateStore, TableName};

use crate::OrchestratorError;

/// Commits a landed run as the next version of `table`; returns the version number.
pub fn publish(
    state: &StateStore,
    table: &TableName,
    landed: &quiver_connectors::Landed,
    description: Option<&str>,
) -> Result<i64, OrchestratorError> {
    Ok(state.tables().commit_version(
        table,
        &quiver_catalog::NewVersion {
            location: landed.location.clone(),
            rows: landed.rows,
            bytes: landed.bytes,
            description: description.map(String::from),
            ..Default::default()
        },
    )?)
}
