//! The `quiver` command line: `serve`, `demo`, `check-config`, `admin`.
//!
//! This is the only place that reads the environment and the configuration file; it wires
//! the libraries together with shared `Arc`s and runs the Flight SQL and HTTP listeners in
//! one process until Ctrl-C or SIGTERM.

mod admin;
mod remote;
mod server;
mod state;
mod sync;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use quiver_config::{BootstrapAdmin, Config, LogFormat};

/// Quiver: an Arrow Flight SQL data server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Flight SQL server and the HTTP sidecar.
    Serve(ServeArgs),
    /// Run the server with the TPC-H demo dataset (generated on first start).
    Demo {
        #[command(flatten)]
        serve: ServeArgs,
        /// TPC-H scale factor (1 ≈ 6 million lineitem rows). Default: `demo.scale` (0.1).
        #[arg(long)]
        scale: Option<f64>,
    },
    /// Manage users, groups, grants and tokens (on the embedded state file while the server
    /// is stopped; on a PostgreSQL state at any time).
    Admin(admin::AdminArgs),
    /// Back up, restore, or move the state to PostgreSQL (`quiver state backup DIR`,
    /// `restore DIR`, `migrate --from … --to postgres://…`).
    State(state::StateArgs),
    /// Sync one table now (through the running server when it is up; needs QUIVER_TOKEN).
    Sync(sync::SyncArgs),
    /// Validate a configuration file and print every problem found.
    CheckConfig {
        /// Configuration file (default: quiver.yaml if present).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Configuration file (default: quiver.yaml if present, else built-in defaults).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Flight SQL listen address, e.g. 0.0.0.0:50051 (overrides the file).
    #[arg(long)]
    flight_listen: Option<std::net::SocketAddr>,
    /// HTTP listen address, e.g. 0.0.0.0:8080 (overrides the file).
    #[arg(long)]
    http_listen: Option<std::net::SocketAddr>,
    /// Data directory for the state file and local table data (overrides the file).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Credentials `quiver demo` uses when none are configured.
const DEMO_ADMIN_EMAIL: &str = "admin@example.com";
const DEMO_ADMIN_PASSWORD: &str = "quiver-demo";

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::CheckConfig { config } => {
            let path = config_path(config.as_deref());
            match load_config(path.as_deref()) {
                Ok(_) => {
                    match &path {
                        Some(p) => println!("{}: ok", p.display()),
                        None => println!("no configuration file; the built-in defaults are valid"),
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e:#}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Admin(args) => {
            let config = load_config(config_path(args.config()).as_deref())?;
            admin::run(args, config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::State(args) => {
            state::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync(args) => {
            let config = load_config(config_path(args.config()).as_deref())?;
            init_logging(&config);
            Ok(if sync::run(args, config)? {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Serve(args) => {
            let config = resolve(&args, false)?;
            server::run(config, None)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { serve, scale } => {
            let mut config = resolve(&serve, true)?;
            if let Some(scale) = scale {
                config.demo.scale = scale;
                let issues = config.validate();
                if !issues.is_empty() {
                    anyhow::bail!(quiver_config::ConfigError(issues));
                }
            }
            let scale = config.demo.scale;
            server::run(config, Some(scale))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The file to read: the one given, else `quiver.yaml` when it exists.
fn config_path(given: Option<&Path>) -> Option<PathBuf> {
    match given {
        Some(p) => Some(p.to_path_buf()),
        None => Some(PathBuf::from("quiver.yaml")).filter(|p| p.exists()),
    }
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let Some(path) = path else {
        let mut config = Config::default();
        config.apply_env(|name| std::env::var(name).ok());
        return Ok(config);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read configuration file {}", path.display()))?;
    Config::parse_with(&text, |name| std::env::var(name).ok(), connector_issues)
        .with_context(|| format!("invalid configuration file {}", path.display()))
}

/// The connectors' own checks (options, schedules), which live above the config crate.
fn connector_issues(config: &Config) -> Vec<quiver_config::ConfigIssue> {
    config
        .tables
        .iter()
        .enumerate()
        .flat_map(|(i, def)| {
            quiver_orchestrator::validate(def)
                .into_iter()
                .filter(|p| !def.problems().contains(p))
                .map(move |p| quiver_config::ConfigIssue {
                    location: quiver_config::Location::Key(format!("tables[{i}].{}", p.field)),
                    message: p.message,
                })
        })
        .collect()
}

/// Loads the configuration and applies flags and the bootstrap-admin environment variables.
fn resolve(args: &ServeArgs, demo: bool) -> anyhow::Result<Config> {
    let mut config = load_config(config_path(args.config.as_deref()).as_deref())?;
    if let Some(addr) = args.flight_listen {
        config.server.flight_listen = addr;
    }
    if let Some(addr) = args.http_listen {
        config.server.http_listen = addr;
    }
    if let Some(dir) = &args.data_dir {
        config.storage.data_dir = dir.clone();
    }
    if config.auth.bootstrap_admin.is_none() {
        let email = std::env::var("QUIVER_ADMIN_EMAIL").ok();
        let password = std::env::var("QUIVER_ADMIN_PASSWORD").ok();
        config.auth.bootstrap_admin = match (email, password) {
            (Some(email), Some(password)) => Some(BootstrapAdmin { email, password }),
            (None, None) if demo => Some(BootstrapAdmin {
                email: DEMO_ADMIN_EMAIL.into(),
                password: DEMO_ADMIN_PASSWORD.into(),
            }),
            (None, None) => None,
            _ => anyhow::bail!("set both QUIVER_ADMIN_EMAIL and QUIVER_ADMIN_PASSWORD, or neither"),
        };
    }
    let issues = config.validate();
    if !issues.is_empty() {
        anyhow::bail!(quiver_config::ConfigError(issues));
    }
    init_logging(&config);
    Ok(config)
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.logging.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.logging.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
