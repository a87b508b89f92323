//! A profile per column of a new version: nulls, an estimate of distinct values, min and max,
//! and the most common values of low-cardinality columns. Computed once after each sync and
//! stored with the version, so catalogs can show it without scanning.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type, UInt64Type};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use serde_json::{Value, json};

use crate::OrchestratorError;

/// Profiles the current version of one written table that has none yet (users' writes
/// commit without one, so a write's latency is the write's alone); `false` when none is
/// left. The leader calls it between other work.
pub(crate) async fn profile_a_write(
    orchestrator: &crate::Orchestrator,
) -> Result<bool, OrchestratorError> {
    let state = orchestrator.state.clone();
    let found = tokio::task::spawn_blocking(move || state.tables().unprofiled_write())
        .await
        .map_err(|e| quiver_catalog::CatalogError::Internal(e.to_string()))??;
    let Some((table, version, files)) = found else {
        return Ok(false);
    };
    // The engine's runtime knows the object store.
    let session = orchestrator
        .engine
        .session(&crate::sync::sync_principal())
        .await?;
    let ctx = SessionContext::new_with_config_rt(Default::default(), session.runtime_env());
    let profile = profile(&ctx, files).await?;
    orchestrator
        .state
        .tables()
        .set_profile(&table, version, &profile)?;
    tracing::info!(table = %table, version, "written table profiled");
    Ok(true)
}

/// Columns with at most this many distinct values get their top values listed.
const TOP_VALUES_UP_TO: u64 = 1000;
/// How many top values are listed.
const TOP_VALUES: usize = 5;

fn orderable(data_type: &DataType) -> bool {
    data_type.is_numeric()
        || data_type.is_temporal()
        || matches!(
            data_type,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Boolean
        )
}

/// Profiles the parquet at `locations` (a version's folder, or its files).
pub(crate) async fn profile(
    ctx: &SessionContext,
    locations: Vec<String>,
) -> Result<Value, OrchestratorError> {
    let frame = ctx
        .read_parquet(locations, ParquetReadOptions::default())
        .await?;
    let schema = frame.schema().inner().clone();
    let table = format!("profile_{}", uuid_like());
    ctx.register_table(&table, frame.into_view())?;

    let mut aggregates = vec!["count(*)".to_string()];
    for field in schema.fields() {
        let c = quote(field.name());
        aggregates.push(format!("count({c})"));
        if orderable(field.data_type()) {
            aggregates.push(format!("approx_distinct(CAST({c} AS VARCHAR))"));
            aggregates.push(format!("CAST(min({c}) AS VARCHAR)"));
            aggregates.push(format!("CAST(max({c}) AS VARCHAR)"));
        }
    }
    let batches = ctx
        .sql(&format!("SELECT {} FROM {table}", aggregates.join(", ")))
        .await?
        .collect()
        .await?;
    let batch = &batches[0];
    let number = |i: usize| -> u64 {
        let column = batch.column(i);
        match column.data_type() {
            DataType::Int64 => column.as_primitive::<Int64Type>().value(0) as u64,
            DataType::UInt64 => column.as_primitive::<UInt64Type>().value(0),
            _ => 0,
        }
    };
    let text = |i: usize| -> Value {
        let Ok(column) = arrow::compute::cast(batch.column(i), &DataType::Utf8) else {
            return Value::Null;
        };
        let column = column.as_string::<i32>();
        if column.is_null(0) {
            Value::Null
        } else {
            Value::String(column.value(0).to_string())
        }
    };
    let rows = number(0);
    let mut columns = Vec::new();
    let mut i = 1;
    for field in schema.fields() {
        let non_null = number(i);
        i += 1;
        let mut column = json!({
            "name": field.name(),
            "type": field.data_type().to_string(),
            "nulls": rows - non_null,
        });
        if orderable(field.data_type()) {
            let distinct = number(i);
            column["distinct"] = json!(distinct);
            column["min"] = text(i + 1);
            column["max"] = text(i + 2);
            i += 3;
            if distinct <= TOP_VALUES_UP_TO && non_null > 0 {
                column["top"] = top_values(ctx, &table, field.name()).await?;
            }
        }
        columns.push(column);
    }
    ctx.deregister_table(&table)?;
    Ok(json!({ "rows": rows, "columns": columns }))
}

async fn top_values(
    ctx: &SessionContext,
    table: &str,
    column: &str,
) -> Result<Value, OrchestratorError> {
    let c = quote(column);
    let batches = ctx
        .sql(&format!(
            "SELECT CAST({c} AS VARCHAR) AS v, count(*) AS n FROM {table} WHERE {c} IS NOT NULL
             GROUP BY {c} ORDER BY n DESC, v LIMIT {TOP_VALUES}"
        ))
        .await?
        .collect()
        .await?;
    let mut out = Vec::new();
    for batch in batches {
        let values = arrow::compute::cast(batch.column(0), &DataType::Utf8)?;
        let values = values.as_string::<i32>();
        let counts = batch.column(1).as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            out.push(json!({ "value": values.value(row), "count": counts.value(row) }));
        }
    }
    Ok(Value::Array(out))
}

/// The profiled maximum of `column`, as text (the incremental watermark).
pub(crate) fn max_of(profile: &Value, column: &str) -> Option<String> {
    profile["columns"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == column)?
        .get("max")?
        .as_str()
        .map(String::from)
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Double-quotes an identifier for DataFusion SQL.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
