//! One sync: read the source, land it as parquet in a fresh run folder, merge it into the
//! current version (incremental mode), profile it, and commit it in one transaction.
//!
//! Until the commit nothing is visible; if anything fails, the run folders are removed and
//! the previous version keeps serving.

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, SchemaRef};
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use futures::{StreamExt, TryStreamExt};
use quiver_catalog::{CatalogError, NewVersion, Principal, TableName};
use quiver_config::{SyncMode, TableDef};
use quiver_connectors::{Batches, ConnectorError, Landed, ParquetSink, ReadRequest};

use crate::profile::{self, quote};
use crate::{Orchestrator, OrchestratorError, Running, publish};

/// How often a long sync logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The identity syncs read other tables as (the `sql` connector): an administrator.
pub(crate) fn sync_principal() -> Principal {
    Principal::new("sync@quiver.internal".into(), vec!["Admin".into()])
}

/// Runs one sync of `table`; returns the committed version.
pub(crate) async fn run(
    orchestrator: &Orchestrator,
    table: &TableName,
    def: &TableDef,
    running: &Running,
) -> Result<i64, OrchestratorError> {
    let connector = quiver_connectors::connector(&def.connector)
        .ok_or_else(|| OrchestratorError::Invalid(crate::validate(def)))?;
    let options = quiver_connectors::options::resolve(&def.options)?;
    let session = orchestrator.engine.session(&sync_principal()).await?;
    let previous = orchestrator.state.tables().get(table).ok();
    let incremental = def.mode == SyncMode::Incremental;
    let remote = def.mode == SyncMode::Remote;
    let (since, changed_since) = match (&previous, incremental) {
        (Some(prev), true) => (
            orchestrator
                .state
                .tables()
                .version_details(table, prev.version)?
                .0,
            orchestrator.state.tables().run_history(table)?.last_success,
        ),
        _ => (None, None),
    };
    let watermark = def.watermark.as_deref();

    std::fs::create_dir_all(&orchestrator.scratch).map_err(|e| {
        CatalogError::Storage(format!(
            "cannot create {}: {e}",
            orchestrator.scratch.display()
        ))
    })?;
    let scratch = tempfile::Builder::new()
        .prefix("sync-")
        .tempdir_in(&orchestrator.scratch)
        .map_err(|e| CatalogError::Storage(format!("scratch directory: {e}")))?;

    let logger = tokio::spawn(log_progress(table.clone(), running.clone()));
    let started = std::time::Instant::now();
    let landed = async {
        let batches = match connector.remote().filter(|_| remote) {
            // A remote table's version is its schema: an empty file, no rows copied.
            Some(source) => Batches {
                schema: source.schema(&options, &orchestrator.options).await?,
                stream: futures::stream::empty().boxed(),
            },
            None => {
                connector
                    .read(ReadRequest {
                        options: &options,
                        since: watermark.zip(since.as_deref()),
                        changed_since,
                        scratch: scratch.path(),
                        session: &session,
                        sync: &orchestrator.options,
                    })
                    .await?
            }
        };
        let sink = ParquetSink::new(&orchestrator.storage, table);
        sink.write_stream(batches.schema, batches.stream, &running.progress)
            .await
    }
    .await;
    logger.abort();
    let mut landed = landed?;
    tracing::info!(table = %table, run = running.run, rows = landed.rows, bytes = landed.bytes, files = landed.files.len(), land_seconds = started.elapsed().as_secs_f64(), "landed");
    let mut config = SessionConfig::new();
    // Plain Utf8, as the engine reads: a merge compares old and new column types.
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    let work = SessionContext::new_with_config_rt(config, session.runtime_env());

    if incremental {
        let delta = landed.clone();
        let merged = merge(
            orchestrator,
            &work,
            table,
            def,
            previous.as_ref(),
            &delta,
            since.as_deref(),
        )
        .await;
        remove_folder(orchestrator, &delta.location).await;
        landed = merged?;
    }

    let result = async {
        // A remote table has no rows of its own to profile.
        let profile = if remote {
            None
        } else {
            Some(profile::profile(&work, vec![landed.location.clone()]).await?)
        };
        let new_watermark = match watermark {
            Some(column) => profile
                .as_ref()
                .and_then(|p| profile::max_of(p, column))
                .or(since),
            None => None,
        };
        publish::version(
            &orchestrator.state,
            table,
            &NewVersion {
                location: landed.location.clone(),
                rows: landed.rows,
                bytes: landed.bytes,
                description: def.description.clone(),
                watermark: new_watermark,
                profile,
                run: Some(running.run),
            },
        )
    }
    .await;
    if result.is_err() {
        remove_folder(orchestrator, &landed.location).await;
    }
    result
}

/// Logs rows and bytes every few seconds while a sync runs.
async fn log_progress(table: TableName, running: Running) {
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        tracing::info!(table = %table, run = running.run, rows = running.progress.rows(), bytes = running.progress.bytes(), "sync progress");
    }
}

/// Deletes a run folder that will not be committed (best effort; the next start sweeps).
async fn remove_folder(orchestrator: &Orchestrator, location: &str) {
    if let Some(prefix) = orchestrator.storage.prefix_of(location)
        && let Err(e) = crate::retention::delete_prefix(&orchestrator.storage, &prefix).await
    {
        tracing::warn!(folder = location, error = %e, "cannot remove an unpublished folder");
    }
}

/// Single-quotes a string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Merges the landed delta into the current version by primary key: a delta row replaces the
/// row with the same key (the newest by watermark wins within the delta), other rows stay.
/// Columns new in the source are added (empty in old rows); a column whose type changed fails
/// the sync.
async fn merge(
    orchestrator: &Orchestrator,
    ctx: &SessionContext,
    table: &TableName,
    def: &TableDef,
    previous: Option<&quiver_catalog::TableEntry>,
    delta: &Landed,
    since: Option<&str>,
) -> Result<Landed, OrchestratorError> {
    let watermark = def.watermark.as_deref().unwrap_or_default();
    ctx.register_parquet("delta", &delta.location, ParquetReadOptions::default())
        .await?;
    let delta_schema: SchemaRef = ctx.table("delta").await?.schema().inner().clone();
    for column in def.primary_key.iter().chain([&watermark.to_string()]) {
        if delta_schema.field_with_name(column).is_err() {
            return Err(ConnectorError::Source(format!(
                "the source has no column `{column}` (named in the table's {})",
                if column == watermark {
                    "watermark"
                } else {
                    "primary_key"
                }
            ))
            .into());
        }
    }
    let wm_type = delta_schema
        .field_with_name(watermark)
        .map(|f| f.data_type().clone())
        .unwrap_or(DataType::Utf8);
    let filter = match since {
        Some(since) => format!(
            "WHERE {} > arrow_cast({}, {})",
            quote(watermark),
            literal(since),
            literal(&wm_type.to_string())
        ),
        None => String::new(),
    };
    let keys: Vec<String> = def.primary_key.iter().map(|k| quote(k)).collect();
    let fresh = format!(
        "SELECT *, row_number() OVER (PARTITION BY {} ORDER BY {} DESC) AS __quiver_rank FROM delta {filter}",
        keys.join(", "),
        quote(watermark)
    );

    let sql = match previous {
        None => {
            let columns: Vec<String> = delta_schema
                .fields()
                .iter()
                .map(|f| quote(f.name()))
                .collect();
            format!(
                "SELECT {} FROM ({fresh}) WHERE __quiver_rank = 1",
                columns.join(", ")
            )
        }
        Some(prev) => {
            ctx.register_parquet("previous", &prev.location, ParquetReadOptions::default())
                .await?;
            let prev_schema: SchemaRef = ctx.table("previous").await?.schema().inner().clone();
            let mut output: Vec<(String, DataType)> = Vec::new();
            for field in prev_schema.fields() {
                if let Ok(new) = delta_schema.field_with_name(field.name())
                    && new.data_type() != field.data_type()
                {
                    return Err(OrchestratorError::SchemaChange(format!(
                        "column `{}` changed type from {} to {} in the source; the previous version keeps serving (a full sync, or a new table, takes the new type)",
                        field.name(),
                        field.data_type(),
                        new.data_type()
                    )));
                }
                output.push((field.name().clone(), field.data_type().clone()));
            }
            for field in delta_schema.fields() {
                if prev_schema.field_with_name(field.name()).is_err() {
                    tracing::info!(table = %table, column = %field.name(), "new column in the source");
                    output.push((field.name().clone(), field.data_type().clone()));
                }
            }
            let select = |schema: &SchemaRef| -> String {
                output
                    .iter()
                    .map(|(name, data_type)| {
                        if schema.field_with_name(name).is_ok() {
                            quote(name)
                        } else {
                            format!(
                                "arrow_cast(NULL, {}) AS {}",
                                literal(&data_type.to_string()),
                                quote(name)
                            )
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let matches: Vec<String> = keys.iter().map(|k| format!("f.{k} = p.{k}")).collect();
            format!(
                "SELECT {} FROM previous p WHERE NOT EXISTS (SELECT 1 FROM ({fresh}) f WHERE {})
                 UNION ALL
                 SELECT {} FROM ({fresh}) WHERE __quiver_rank = 1",
                select(&prev_schema),
                matches.join(" AND "),
                select(&delta_schema),
            )
        }
    };
    let frame = ctx.sql(&sql).await?;
    let stream = frame.execute_stream().await?;
    let progress = Arc::new(quiver_connectors::sink::Progress::default());
    let merged = ParquetSink::new(&orchestrator.storage, table)
        .write_stream(
            stream.schema(),
            stream.map_err(ConnectorError::from),
            &progress,
        )
        .await?;
    Ok(merged)
}
