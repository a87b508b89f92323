//! `quiver sync TABLE`: run one sync now, with a progress bar on a terminal.
//!
//! With the server stopped, the sync runs in this process on the state file. While the
//! server runs (it holds the state file), the sync is started through its HTTP API with an
//! admin token from `QUIVER_TOKEN`, and followed until it ends.
//!
//! For Jira's tables (`jira.*`) a sync is the consistency check; `--backfill --jql Q` loads
//! every issue `Q` matches instead, with a progress bar over Jira's count.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use quiver_catalog::{CatalogError, StateStore, TableName};
use quiver_config::Config;
use quiver_orchestrator::Trigger;

/// `quiver sync` arguments.
#[derive(Debug, Args)]
pub(crate) struct SyncArgs {
    /// The table to sync, `schema.table`.
    table: String,
    /// Configuration file (default: quiver.yaml if present).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory (overrides the file).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Jira tables: load history (every issue `--jql` matches) instead of checking.
    #[arg(long, requires = "jql")]
    backfill: bool,
    /// With `--backfill`: which issues, e.g. `project = ABC`.
    #[arg(long, requires = "backfill")]
    jql: Option<String>,
}

impl SyncArgs {
    /// The configuration file given, if any.
    pub(crate) fn config(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }
}

/// The rows/bytes line shown while a sync runs.
fn spinner(table: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed}]")
            .expect("static template"),
    );
    bar.set_prefix(table.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn progress_message(rows: u64, bytes: u64) -> String {
    format!(
        "{rows} rows, {} written",
        quiver_config::ByteSize::b(bytes).display().iec()
    )
}

/// Runs `quiver sync`; returns whether the sync succeeded.
pub(crate) fn run(args: SyncArgs, mut config: Config) -> anyhow::Result<bool> {
    if let Some(dir) = &args.data_dir {
        config.storage.data_dir = dir.clone();
    }
    let table: TableName = args.table.parse()?;
    let pushed = quiver_connectors::PUSH_SOURCES
        .iter()
        .any(|(source, _)| *source == table.schema());
    if args.backfill && !pushed {
        bail!("--backfill applies to Jira tables (jira.*), not `{table}`");
    }
    let jql = args.jql.clone().filter(|_| args.backfill);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let data_dir = config.storage.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let state = match StateStore::from_config(config.storage.state.as_deref(), &data_dir) {
        Ok(state) => Arc::new(state),
        Err(CatalogError::StateLocked(_)) => {
            return runtime.block_on(through_server(&config, &table, jql.as_deref()));
        }
        Err(e) => return Err(e.into()),
    };
    // A replica of its own while it syncs, so a cluster's leader sees the run is alive.
    let replica = quiver_catalog::state::cluster::Replica::new(None);
    let outcome = runtime.block_on(async {
        let stop = tokio_util::sync::CancellationToken::new();
        let heartbeat = quiver_catalog::state::cluster::keep_alive(
            state.clone(),
            replica.clone(),
            stop.clone().cancelled_owned(),
        )
        .await?;
        let outcome = sync_here(&config, &state, &replica, &table, jql).await;
        stop.cancel();
        heartbeat.await?;
        outcome
    });
    drop(runtime);
    outcome
}

/// Runs the sync in this process (as replica `replica` of the state).
async fn sync_here(
    config: &Config,
    state: &Arc<StateStore>,
    replica: &quiver_catalog::state::cluster::Replica,
    table: &TableName,
    jql: Option<String>,
) -> anyhow::Result<bool> {
    let storage = crate::server::open_storage(config)?;
    let engine = crate::server::open_engine(config, state, &storage, None)?;
    let orchestrator =
        crate::server::new_orchestrator(config, state, &storage, &engine, &replica.id)?;
    orchestrator.recover(&config.tables).await?;
    if let Some(jql) = jql {
        return Ok(report(
            &backfill(&orchestrator, table.schema(), jql).await?.into(),
        ));
    }
    let bar = spinner(&table.to_string());
    let progress = std::sync::Mutex::new(None);
    let ticker = async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(p) = progress.lock().unwrap().as_ref() {
                let p: &Arc<quiver_connectors::sink::Progress> = p;
                bar.set_message(progress_message(p.rows(), p.bytes()));
            }
        }
    };
    let sync = orchestrator.run(table, Trigger::Manual("cli".into()), |running| {
        *progress.lock().unwrap() = Some(running.progress.clone());
    });
    let run = tokio::select! {
        run = sync => run?,
        _ = ticker => unreachable!("the ticker never ends"),
    };
    bar.finish_and_clear();
    Ok(report(&run.into()))
}

/// Runs a backfill of push source `source` with a progress bar over its (approximate)
/// issue count.
async fn backfill(
    orchestrator: &quiver_orchestrator::Orchestrator,
    source: &str,
    jql: String,
) -> anyhow::Result<quiver_catalog::state::tables::SyncRun> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} issues [{elapsed}, {eta} left]",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("{source} backfill"));
    bar.enable_steady_tick(Duration::from_millis(200));
    let run = orchestrator
        .run_push(
            source,
            quiver_orchestrator::PushJob::Backfill(jql),
            Trigger::Manual("cli".into()),
            |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            },
        )
        .await?;
    bar.finish_and_clear();
    Ok(run)
}

/// Prints the outcome of a run; returns whether it succeeded.
fn report(run: &quiver_admin::api::tables::SyncRun) -> bool {
    if run.status == "succeeded" && run.version.is_none() {
        // A push source's job: it commits versions as it goes and counts issues.
        println!(
            "{}: succeeded, {} issues loaded or repaired (run {})",
            run.table,
            run.rows.unwrap_or_default(),
            run.id
        );
        true
    } else if run.status == "succeeded" {
        println!(
            "{}: version {} published, {} rows, {} (run {})",
            run.table,
            run.version.unwrap_or_default(),
            run.rows.unwrap_or_default(),
            quiver_config::ByteSize::b(run.bytes.unwrap_or_default() as u64)
                .display()
                .iec(),
            run.id
        );
        true
    } else {
        eprintln!(
            "{}: sync {} (run {}): {}\nThe previous version keeps serving.",
            run.table,
            run.status,
            run.id,
            run.error.as_deref().unwrap_or("no error recorded")
        );
        false
    }
}

/// Starts the sync through the running server's API and follows it.
async fn through_server(
    config: &Config,
    table: &TableName,
    jql: Option<&str>,
) -> anyhow::Result<bool> {
    let server = crate::remote::Remote::new(
        config,
        "sync",
        &format!("call POST /api/admin/tables/{table}/sync"),
    )?;
    let started = server
        .post(
            &format!("/api/admin/tables/{table}/sync"),
            Some(serde_json::json!({ "jql": jql })),
        )
        .await?;
    let body: serde_json::Value =
        serde_json::from_slice(&started.bytes().await?).unwrap_or_default();
    let run_id = body["run"].as_i64().unwrap_or_default();
    let bar = spinner(&table.to_string());
    let deadline = Instant::now() + Duration::from_secs(24 * 3600);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let runs: Vec<quiver_admin::api::tables::SyncRun> = server
            .get(&format!("/api/admin/syncs?before={}&limit=1", run_id + 1))
            .await?;
        let Some(run) = runs.into_iter().find(|r| r.id == run_id) else {
            bail!("run {run_id} disappeared from the history");
        };
        if run.status != "running" || Instant::now() > deadline {
            bar.finish_and_clear();
            return Ok(report(&run));
        }
        bar.set_message(progress_message(
            run.rows.unwrap_or_default() as u64,
            run.bytes.unwrap_or_default() as u64,
        ));
    }
}
