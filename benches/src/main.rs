//! The in-process reference of the end-to-end benchmark (`benches/run.py`): DataFusion of
//! the same version, with its default settings, run in one process on parquet files.
//!
//! `quiver-bench-datafusion <tables-dir> <runs>` prints one JSON object of median seconds
//! per query of `benches/queries.json`. `<tables-dir>` holds either Quiver's landed layout
//! (`<table>/<run-id>/part-*.parquet`) or `tpchgen-cli parquet`'s (`<table>.parquet`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::StreamExt;

/// The queries measured, by name; `benches/run.py` runs the same file through Quiver.
const QUERIES: &str = include_str!("../queries.json");

/// The TPC-H tables the queries read.
const TABLES: [&str; 3] = ["lineitem", "orders", "customer"];

/// Where `table` is: `tpchgen-cli`'s one file, or the one run folder of Quiver's layout
/// (the demo generator publishes exactly one per table).
fn table_path(tables: &Path, table: &str) -> anyhow::Result<String> {
    let file = tables.join(format!("{table}.parquet"));
    if file.is_file() {
        return Ok(file.display().to_string());
    }
    let dir = tables.join(table);
    let folder: PathBuf = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .with_context(|| format!("no run folder under {}", dir.display()))?;
    Ok(format!("{}/", folder.display()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let tables = PathBuf::from(
        args.next()
            .context("usage: quiver-bench-datafusion <tables-dir> <runs>")?,
    );
    let runs: usize = args.next().map_or(Ok(5), |r| r.parse())?;

    let ctx = SessionContext::new();
    ctx.sql("CREATE SCHEMA tpch").await?.collect().await?;
    for table in TABLES {
        ctx.register_parquet(
            format!("tpch.{table}"),
            table_path(&tables, table)?,
            ParquetReadOptions::default(),
        )
        .await?;
    }

    let queries: serde_json::Map<String, serde_json::Value> = serde_json::from_str(QUERIES)?;
    let mut out = serde_json::Map::new();
    for (name, sql) in &queries {
        let sql = sql.as_str().context("query text")?;
        let mut times = Vec::with_capacity(runs);
        let mut rows = 0;
        for _ in 0..runs {
            let started = Instant::now();
            let mut stream = ctx.sql(sql).await?.execute_stream().await?;
            rows = 0;
            while let Some(batch) = stream.next().await {
                rows += batch?.num_rows();
            }
            times.push(started.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        out.insert(
            name.clone(),
            serde_json::json!({"median_s": times[times.len() / 2], "rows": rows}),
        );
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}
