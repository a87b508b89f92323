//! `quiver serve` / `quiver demo`: open the state, prepare data, bind both listeners, run
//! until a shutdown signal, then drain.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use quiver_catalog::auth::authenticator::Authenticator;
use quiver_catalog::auth::principal::ADMIN_GROUP;
use quiver_catalog::engine::distributed::Distribution;
use quiver_catalog::state::cluster::{self, Replica};
use quiver_catalog::{EngineOptions, QueryEngine, QueryLimits, StateStore, Storage, TokenSigner};
use quiver_config::{Config, Distributed};
use quiver_connectors::remote::RemoteSources;
use quiver_flight::stream::ResultLimits;
use quiver_flight::{FlightOptions, QuiverFlightSql};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Runs the server; `demo_scale` also makes sure the TPC-H demo data exists.
pub(crate) fn run(config: Config, demo_scale: Option<f64>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("quiver")
        // User statements are planned and run on the query runtime (large stacks); this
        // one serves requests, and drops what they leave behind.
        .thread_stack_size(16 * 1024 * 1024)
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(config, demo_scale))
}

async fn serve(config: Config, demo_scale: Option<f64>) -> anyhow::Result<()> {
    // Listeners first: a port in use is reported before minutes of demo data generation.
    let flight_listener = TcpListener::bind(config.server.flight_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (server.flight_listen)",
                config.server.flight_listen
            )
        })?;
    let http_listener = TcpListener::bind(config.server.http_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (server.http_listen)",
                config.server.http_listen
            )
        })?;
    let flight_addr = flight_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;

    let data_dir = &config.storage.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let secret = load_secret(&config, data_dir)?;

    let state = Arc::new(StateStore::from_config(
        config.storage.state.as_deref(),
        data_dir,
    )?);
    let storage = open_storage(&config)?;

    if let Some(admin) = &config.auth.bootstrap_admin
        && state
            .identity()
            .ensure_bootstrap_admin(&admin.email, &admin.password)?
    {
        tracing::info!(user = %admin.email, "bootstrap admin created");
    }
    warn_without_admin(&state)?;

    if let Some(scale) = demo_scale {
        eprintln!("Preparing TPC-H demo data at scale {scale} (generated once, then reused)…");
        let tables = quiver_orchestrator::ensure_demo_data(&state, &storage, scale).await?;
        let rows: i64 = tables.iter().map(|t| t.rows).sum();
        eprintln!(
            "Demo data ready: {} tables, {rows} rows in schema tpch.",
            tables.len()
        );
    }

    // This process among the replicas sharing the state: alive while it beats.
    let replica = Replica::new(config.server.advertise.clone());
    let alive = CancellationToken::new();
    let heartbeat = cluster::keep_alive(
        state.clone(),
        replica.clone(),
        alive.clone().cancelled_owned(),
    )
    .await?;

    // On a cluster, every advertised replica runs distributed stages; with
    // `query.distributed: auto` it also spreads the large statements it receives.
    let ca = match config.server.tls.as_ref().and_then(|t| t.ca.as_ref()) {
        Some(path) => Some(std::fs::read(path).with_context(|| {
            format!(
                "cannot read the cluster's CA {} (server.tls.ca)",
                path.display()
            )
        })?),
        None => None,
    };
    let distribution = (state.cluster().is_shared() && replica.advertise.is_some()).then(|| {
        let threshold = config.query.distributed_threshold.as_u64() as usize;
        Arc::new(Distribution::new(
            &secret,
            (config.query.distributed == Distributed::Auto).then_some(threshold),
            ca,
        ))
    });
    let engine = open_engine(&config, &state, &storage, distribution)?;
    let orchestrator = Arc::new(new_orchestrator(
        &config,
        &state,
        &storage,
        &engine,
        &replica.id,
    )?);
    orchestrator
        .recover(&config.tables)
        .await
        .context("cannot prepare the table definitions")?;
    state
        .governance()
        .sync_config(&config.tables, &config.governance.policies)
        .context("cannot store the configuration's tags and policies")?;
    let tokens = TokenSigner::new(&secret, config.auth.token_lifetime);
    let auth = Arc::new(Authenticator::new(state.clone(), tokens));
    let flight = QuiverFlightSql::new(
        engine.clone(),
        &secret,
        FlightOptions {
            query_timeout: config.query.timeout,
            ticket_lifetime: config.auth.ticket_lifetime,
            max_message_size: config.query.max_message_size.as_u64() as usize,
            compression: config.query.compression,
            max_concurrent_per_user: config.query.max_concurrent_per_user,
            result_limits: ResultLimits {
                max_rows: config.query.max_result_rows,
                max_bytes: config.query.max_result_bytes.map(|b| b.as_u64()),
            },
            max_parameter_bytes: config.query.max_parameter_bytes.as_u64() as usize,
            max_prepared_per_user: config.query.max_prepared_per_user,
            prepared_idle: config.query.prepared_statement_idle,
            replica: replica.clone(),
            // Large plain scans come in parts unless statements stay where they arrive.
            parts_min_bytes: (config.query.distributed == Distributed::Auto)
                .then_some(config.query.distributed_threshold.as_u64() as usize),
        },
        auth.clone(),
    );

    // Handlers are installed before the addresses are printed, so a supervisor that signals
    // as soon as it sees them gets a graceful shutdown.
    let shutdown = CancellationToken::new();
    let signals = Signals::install()?;
    tokio::spawn(signals.wait(shutdown.clone()));

    let scheme = if config.server.tls.is_some() {
        "grpc+tls"
    } else {
        "grpc"
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "Quiver {} is running.", env!("CARGO_PKG_VERSION"))?;
    writeln!(
        out,
        "  Flight SQL: {scheme}://{}",
        display_addr(flight_addr)
    )?;
    writeln!(out, "  HTTP:       http://{}", display_addr(http_addr))?;
    // The password is printed for the demo only: a real server's banner ends up in logs.
    match (&config.auth.bootstrap_admin, demo_scale) {
        (Some(admin), Some(_)) => {
            writeln!(out, "  Admin:      {} / {}", admin.email, admin.password)?;
            writeln!(
                out,
                "              (an admin that already existed keeps its password)"
            )?;
        }
        (Some(admin), None) => writeln!(out, "  Admin:      {}", admin.email)?,
        (None, _) => {}
    }
    writeln!(out, "Press Ctrl-C to stop.")?;
    out.flush()?;
    drop(out);
    tracing::info!(flight = %flight_addr, http = %http_addr, "listening");

    let tls = config
        .server
        .tls
        .as_ref()
        .map(|t| (t.cert.as_path(), t.key.as_path()));
    let flight_url = format!("{scheme}://{}", display_addr(flight_addr));
    let http_app = quiver_admin::app(quiver_admin::AppState {
        flight_url,
        state: state.clone(),
        engine: engine.clone(),
        orchestrator: orchestrator.clone(),
        auth,
        sessions: Arc::new(quiver_admin::session::Sessions::new(&secret)),
        metrics: install_metrics(),
        public_metrics: config.server.public_metrics,
        oidc: Arc::new(quiver_admin::oidc::Oidc::new(
            config.auth.oidc.clone(),
            &config
                .server
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", display_addr(http_addr))),
        )),
    });
    let scheduler = tokio::spawn(orchestrator.clone().run_scheduler(shutdown.clone()));
    let watcher = tokio::spawn(
        flight
            .clone()
            .watch_cluster(shutdown.clone().cancelled_owned()),
    );
    let http_shutdown = shutdown.clone();
    let http = tokio::spawn(quiver_admin::serve(http_listener, http_app, async move {
        http_shutdown.cancelled().await
    }));
    let flight_result = quiver_flight::serve(
        flight_listener,
        flight,
        tls,
        shutdown.clone().cancelled_owned(),
    )
    .await;
    shutdown.cancel();
    http.await.context("HTTP server task failed")??;
    scheduler.await.context("scheduler task failed")?;
    watcher.await.context("cluster watcher task failed")?;
    // Last: the runs the scheduler just marked interrupted were this replica's.
    alive.cancel();
    heartbeat.await.context("heartbeat task failed")?;
    // The last queries' audit rows are written before the process ends.
    let audit = state.clone();
    tokio::task::spawn_blocking(move || audit.audit().flush(Duration::from_secs(10))).await?;
    flight_result?;
    tracing::info!("stopped");
    Ok(())
}

/// A state without an active administrator serves, but nobody can manage it: say so, and how
/// to make one, rather than leave the operator guessing why no one can sign in.
fn warn_without_admin(state: &StateStore) -> anyhow::Result<()> {
    let admins = state
        .identity()
        .users()?
        .into_iter()
        .filter(|u| u.active && u.groups.iter().any(|g| g == ADMIN_GROUP))
        .count();
    if admins == 0 {
        tracing::warn!(
            "no active administrator: nobody can manage users and grants. Start once with \
             QUIVER_ADMIN_EMAIL and QUIVER_ADMIN_PASSWORD set (or auth.bootstrap_admin), or, \
             with the server stopped, run `quiver admin user add EMAIL --password-stdin` and \
             `quiver admin member add Admin EMAIL`"
        );
    }
    Ok(())
}

/// Installs the Prometheus recorder behind `/metrics`; `None` (and a warning) if another
/// recorder is already installed.
fn install_metrics() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("quiver_query_duration_seconds".into()),
            &[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ],
        )
        .ok()?;
    match builder.install_recorder() {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!(error = %e, "metrics are not recorded");
            None
        }
    }
}

/// The query engine with the `query` section's limits, spilling into `data_dir/spill`.
pub(crate) fn open_engine(
    config: &Config,
    state: &Arc<StateStore>,
    storage: &Storage,
    distribution: Option<Arc<Distribution>>,
) -> anyhow::Result<Arc<QueryEngine>> {
    Ok(Arc::new(QueryEngine::new(
        state.clone(),
        storage,
        EngineOptions {
            memory_limit: config.query.memory_limit.as_u64() as usize,
            memory_limit_per_user: config.query.memory_limit_per_user.as_u64() as usize,
            spill_dir: config.storage.data_dir.join("spill"),
            max_spill_bytes: config.query.memory_limit.as_u64().saturating_mul(8),
            batch_size: config.query.batch_size,
            limits: QueryLimits {
                max_sql_length: config.query.max_sql_length.as_u64() as usize,
                max_expression_depth: config.query.max_expression_depth,
                max_plan_nodes: config.query.max_plan_nodes,
            },
            query_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            distribution,
            acceleration_memory: config.query.acceleration_memory.as_u64() as usize,
            results_cache_memory: config.query.results_cache_memory.as_u64() as usize,
            remote_sources: Some(Arc::new(RemoteSources::new(config.sync.clone()))),
            writes: write_options(&config.write),
        },
    )?))
}

/// The engine's view of the `write` section.
pub(crate) fn write_options(
    write: &quiver_config::WriteConfig,
) -> quiver_catalog::engine::WriteOptions {
    quiver_catalog::engine::WriteOptions {
        personal_schemas: write.personal_schemas,
        quota_per_user: write.quota_per_user.map_or(0, |b| b.as_u64()),
        quota_per_schema: write.quota_per_schema.map_or(0, |b| b.as_u64()),
        schema_quotas: write
            .schema_quotas
            .iter()
            .map(|(schema, quota)| (schema.clone(), quota.as_u64()))
            .collect(),
        max_write_bytes: write.max_write_bytes.as_u64(),
        max_write_rows: write.max_write_rows.unwrap_or(0),
        max_tables_per_schema: write.max_tables_per_schema,
    }
}

/// The orchestrator with the `sync` section's settings, downloading into `data_dir/scratch`,
/// keeping the tables of the push sources configured (`jira:`).
pub(crate) fn new_orchestrator(
    config: &Config,
    state: &Arc<StateStore>,
    storage: &Storage,
    engine: &Arc<QueryEngine>,
    replica: &str,
) -> anyhow::Result<quiver_orchestrator::Orchestrator> {
    let orchestrator = quiver_orchestrator::Orchestrator::new(
        state.clone(),
        storage.clone(),
        engine.clone(),
        config.sync.clone(),
        config.storage.data_dir.join("scratch"),
        replica.to_string(),
    );
    Ok(quiver_connectors::push_sources(config)?
        .into_iter()
        .fold(orchestrator, |o, source| o.with_push(source)))
}

/// The object store for table data: the configured URL, else `data_dir/objects`.
pub(crate) fn open_storage(config: &Config) -> anyhow::Result<Storage> {
    Ok(match &config.storage.object_store {
        // Remote stores take their credentials from the usual AWS_* variables.
        Some(url) => Storage::open(
            url,
            std::env::vars()
                .filter(|(k, _)| k.starts_with("AWS_"))
                .map(|(k, v)| (k.to_ascii_lowercase(), v)),
        )?,
        None => Storage::local(&config.storage.data_dir.join("objects"))?,
    })
}

/// A wildcard bind is reachable on loopback; print an address a client can use.
fn display_addr(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// The signing secret: from the config, else generated once into `data_dir/secret.key`.
fn load_secret(config: &Config, data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &config.auth.jwt_secret {
        return Ok(secret.as_bytes().to_vec());
    }
    let path = data_dir.join("secret.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .with_context(|| {
                format!(
                    "{} is corrupt; delete it to generate a new one",
                    path.display()
                )
            });
    }
    let secret: [u8; 32] = rand::random();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(
        base64::engine::general_purpose::STANDARD
            .encode(secret)
            .as_bytes(),
    )?;
    file.sync_all()?;
    Ok(secret.to_vec())
}

/// Ctrl-C and (on Unix) SIGTERM.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot install the SIGTERM handler")?,
        })
    }

    /// Waits for either signal, then asks everything to shut down.
    async fn wait(mut self, shutdown: CancellationToken) {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        tokio::select! {
            _ = ctrl_c => {},
            _ = self.term.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down: finishing in-flight requests");
        shutdown.cancel();
    }
}
