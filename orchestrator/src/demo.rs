//! The TPC-H demo tables in schema `tpch`, generated once per scale.

use quiver_catalog::{StateStore, Storage, TableEntry, TableName};
use quiver_connectors::tpch;

use crate::{OrchestratorError, publish};

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
    let existing = state.tables().list()?;
    for table in tpch::TABLES {
        let name = TableName::new(tpch::SCHEMA, table)?;
        let description = demo_description(table, scale);
        let current = existing.iter().find(|t| t.name == name);
        if current.is_some_and(|t| t.description.as_deref() == Some(description.as_str())) {
            continue;
        }
        tracing::info!(table = %name, scale, "generating demo table");
        let landed = tpch::generate(storage, table, scale).await?;
        publish::landed(state, &name, &landed, Some(&description))?;
    }
    Ok(state
        .tables()
        .list()?
        .into_iter()
        .filter(|t| t.name.schema() == tpch::SCHEMA)
        .collect())
}
