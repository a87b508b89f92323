//! Publishing: every kind of version becomes visible here, each in one state transaction —
//! a landed run (a sync, the demo) as the next version of its table, or the shards a push
//! source rewrote as the next versions of its tables. Readers see the previous versions
//! until the commit and the new ones after, never a mix.

use quiver_catalog::state::tables::ShardChange;
use quiver_catalog::{NewVersion, StateStore, TableName};

use crate::OrchestratorError;

/// Commits a landed run as the next version of `table`; returns the version number.
pub(crate) fn version(
    state: &StateStore,
    table: &TableName,
    new: &NewVersion,
) -> Result<i64, OrchestratorError> {
    Ok(state.tables().commit_version(table, new)?)
}

/// Commits a landed run with nothing but its size and description (the demo's tables).
pub(crate) fn landed(
    state: &StateStore,
    table: &TableName,
    landed: &quiver_connectors::Landed,
    description: Option<&str>,
) -> Result<i64, OrchestratorError> {
    version(
        state,
        table,
        &NewVersion {
            location: landed.location.clone(),
            rows: landed.rows,
            bytes: landed.bytes,
            description: description.map(String::from),
            ..Default::default()
        },
    )
}

/// Commits the shards a push source rewrote: each changed table's next version keeps its
/// other shards and swaps these, all tables at once.
pub(crate) fn shards(state: &StateStore, changes: &[ShardChange]) -> Result<(), OrchestratorError> {
    state.tables().commit_shards(changes)?;
    Ok(())
}
