//! The orchestrator runs connectors and publishes what they land as new table versions.
//!
//! Publishing is one state-store transaction ([`quiver_catalog::StateStore::commit_version`]):
//! readers see the previous version until it commits and the new one after, never a mix.
//! Schedules, retries and garbage collection of old versions build on [`publish`].

use quiver_catalog::{CatalogError, StateStore, Storage, TableEntry, TableName};
use quiver_connectors::{ConnectorError, Landed, tpch};

/// Errors of the orchestrator.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// A connector failed; the previous version keeps serving.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// The state store or object store failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// Commits a landed run as the next version of `table`; returns the version number.
pub fn publish(
    state: &StateStore,
    table: &TableName,
    landed: &Landed,
    description: Option<&str>,
) -> Result<i64, OrchestratorError> {
    Ok(state.commit_version(
        table,
        &landed.location,
        landed.rows,
        landed.bytes,
        description,
    )?)
}

/// The description a demo table carries; it records the scale so a new scale regenerates.
fn demo_description(table: &str, scale: f64) -> String {
    format!("TPC-H {table} (demo data, scale {scale})")
}

/// Makes sure all eight TPC-H tables exist in schema `tpch` at `scale`, generating and
/// publishing the missing ones (first start) and reusing what is already there.
pub async fn ensure_demo_data(
    state: &StateStore,
    storage: &Storage,
    scale: f64,
) -> Result<Vec<TableEntry>, OrchestratorError> {
    let existing = state.tables()?;
    for table in tpch::TABLES {
        let name = TableName::new(tpch::SCHEMA, table)?;
        let description = demo_description(table, scale);
        let current = existing.iter().find(|t| t.name == name);
        if current.is_some_and(|t| t.description.as_deref() == Some(description.as_str())) {
            continue;
        }
        tracing::info!(table = %name, scale, "generating demo table");
        let landed = tpch::generate(storage, table, scale).await?;
        publish(state, &name, &landed, Some(&description))?;
    }
    Ok(state
        .tables()?
        .into_iter()
        .filter(|t| t.name.schema() == tpch::SCHEMA)
        .collect())
}
