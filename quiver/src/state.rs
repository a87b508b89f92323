//! `quiver state …`: moving an installation's state between databases, and backing it up.
//!
//! A backup is a folder: `state.duckdb` (a state file holding every row, at this binary's
//! schema version), `secret.key` (the signing key, when the data directory holds it) and
//! `manifest.json` (what was copied, from where, when). The table data stays in the object
//! store, which is backed up on its own (the state names the folders of the versions).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use quiver_catalog::{CatalogError, CopyReport, StateStore};
use quiver_config::Config;

/// Arguments of `quiver state`.
#[derive(Debug, Args)]
pub(crate) struct StateArgs {
    #[command(subcommand)]
    command: StateCommand,
}

#[derive(Debug, Subcommand)]
enum StateCommand {
    /// Copy a state file into a new, empty PostgreSQL database (stop the server first).
    Migrate {
        /// The embedded state file, e.g. quiver-data/state.duckdb.
        #[arg(long)]
        from: PathBuf,
        /// The PostgreSQL database to fill: postgres://user:password@host:port/db (or set
        /// QUIVER_STATE and leave this out).
        #[arg(long, env = "QUIVER_STATE", hide_env_values = true)]
        to: String,
    },
    /// Save a consistent copy of the state into a new folder, also while the server runs
    /// (through its HTTP API with QUIVER_TOKEN when it holds the embedded state file).
    Backup {
        /// The folder to create.
        dir: PathBuf,
        #[command(flatten)]
        at: Installation,
    },
    /// Load a backup into an empty state (a new data directory or database; server stopped).
    Restore {
        /// A folder written by `quiver state backup`.
        dir: PathBuf,
        #[command(flatten)]
        at: Installation,
    },
}

/// Which installation: its configuration file and data directory.
#[derive(Debug, Args)]
struct Installation {
    /// Configuration file (default: quiver.yaml if present).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory (overrides the file).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl Installation {
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = crate::load_config(crate::config_path(self.config.as_deref()).as_deref())?;
        if let Some(dir) = &self.data_dir {
            config.storage.data_dir = dir.clone();
        }
        Ok(config)
    }
}

/// Runs a state command.
pub(crate) fn run(args: StateArgs) -> anyhow::Result<()> {
    match args.command {
        StateCommand::Migrate { from, to } => {
            if !from.exists() {
                bail!("no state file at {}", from.display());
            }
            let source = StateStore::open(&from)
                .with_context(|| format!("cannot open {}", from.display()))?;
            let target = StateStore::connect(&to)?;
            print_report(&source.copy_into(&target)?);
            println!(
                "copied {} into the PostgreSQL state; set `storage.state` to it and start the servers",
                from.display()
            );
            Ok(())
        }
        StateCommand::Backup { dir, at } => backup(&dir, &at.config()?),
        StateCommand::Restore { dir, at } => restore(&dir, &at.config()?),
    }
}

fn print_report(report: &CopyReport) {
    for (table, rows) in report {
        println!("{table:>20}  {rows} rows");
    }
}

const STATE_FILE: &str = "state.duckdb";
const SECRET_FILE: &str = "secret.key";
const MANIFEST_FILE: &str = "manifest.json";

fn backup(dir: &Path, config: &Config) -> anyhow::Result<()> {
    if dir.exists() && dir.read_dir()?.next().is_some() {
        bail!("{} is not empty; back up into a new folder", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file = dir.join(STATE_FILE);
    let data_dir = &config.storage.data_dir;
    let written = match StateStore::from_config(config.storage.state.as_deref(), data_dir) {
        Ok(state) => state
            .backup_to(&file)
            .map(drop)
            .map_err(anyhow::Error::from),
        Err(CatalogError::StateLocked(_)) => download_backup(config, &file),
        Err(e) => Err(e.into()),
    };
    // The report is read back from the backup itself: it opens, and holds what it says.
    let read_back = written.and_then(|()| {
        let copy = StateStore::open(&file)?;
        Ok((copy.row_counts()?, copy.schema_version()?))
    });
    let (report, schema_version) = match read_back {
        Ok(read) => read,
        Err(e) => {
            // Nothing half-written is left to be mistaken for a backup.
            let _ = std::fs::remove_dir_all(dir);
            return Err(e);
        }
    };
    let secret = data_dir.join(SECRET_FILE);
    let with_secret = config.auth.jwt_secret.is_none() && secret.exists();
    if with_secret {
        copy_private(&secret, &dir.join(SECRET_FILE))?;
    }
    let manifest = serde_json::json!({
        "quiver": env!("CARGO_PKG_VERSION"),
        "schema_version": schema_version,
        "created_at": chrono_now(),
        "state": if config.storage.state.is_some() { "postgres" } else { "embedded" },
        "object_store": object_store(config),
        "secret_key": with_secret,
        "rows": report.iter().map(|(t, n)| (t.to_string(), (*n).into())).collect::<serde_json::Map<_, _>>(),
    });
    std::fs::write(
        dir.join(MANIFEST_FILE),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )?;
    print_report(&report);
    println!(
        "backed up the state into {}; back up the object store ({}) too: the state names its table versions' folders",
        dir.display(),
        object_store(config)
    );
    Ok(())
}

/// The backup from the running server that holds the embedded state file.
fn download_backup(config: &Config, file: &Path) -> anyhow::Result<()> {
    let server = crate::remote::Remote::new(config, "back up", "stop it first")?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            use tokio::io::AsyncWriteExt;
            let mut response = server.post("/api/admin/state/backup", None).await?;
            let mut out = tokio::fs::File::create(file).await?;
            while let Some(chunk) = response.chunk().await? {
                out.write_all(&chunk).await?;
            }
            out.sync_all().await?;
            Ok(())
        })
}

fn restore(dir: &Path, config: &Config) -> anyhow::Result<()> {
    let file = dir.join(STATE_FILE);
    if !file.exists() {
        bail!(
            "{} holds no {STATE_FILE}; pass a folder written by `quiver state backup`",
            dir.display()
        );
    }
    let data_dir = &config.storage.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    // A copy is opened (and, from an older Quiver, migrated), never the backup itself.
    let scratch = tempfile_in(data_dir)?;
    std::fs::copy(&file, &scratch.0)?;
    let backup = StateStore::open(&scratch.0)
        .with_context(|| format!("cannot open the backup {}", file.display()))?;
    let target = match StateStore::from_config(config.storage.state.as_deref(), data_dir) {
        Err(CatalogError::StateLocked(_)) => {
            bail!("the server is running (it holds the state file): stop it, then restore")
        }
        other => other?,
    };
    let report = backup.copy_into(&target).map_err(|e| match e {
        CatalogError::Conflict(m) => anyhow::anyhow!(
            "{m}: restore into a new data directory (--data-dir) or database (storage.state)"
        ),
        e => e.into(),
    })?;
    let secret = data_dir.join(SECRET_FILE);
    let saved = dir.join(SECRET_FILE);
    if saved.exists() && config.auth.jwt_secret.is_none() {
        if !secret.exists() {
            copy_private(&saved, &secret)?;
        } else if std::fs::read(&secret)? != std::fs::read(&saved)? {
            eprintln!(
                "warning: kept the data directory's own {SECRET_FILE}; sign-ins from before the backup end"
            );
        }
    }
    print_report(&report);
    println!(
        "restored {} into {}; the table versions it names must be in the object store ({})",
        dir.display(),
        config
            .storage
            .state
            .as_deref()
            .map_or_else(|| data_dir.join(STATE_FILE).display().to_string(), redact),
        object_store(config)
    );
    Ok(())
}

/// A file `secret.key` may hold: readable by its owner alone.
fn copy_private(from: &Path, to: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(
        &mut options
            .open(to)
            .with_context(|| format!("cannot create {}", to.display()))?,
        &bytes,
    )?;
    Ok(())
}

/// A state file path in `dir` that is removed (with its WAL) when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_file(self.0.with_extension("duckdb.wal"));
    }
}

fn tempfile_in(dir: &Path) -> anyhow::Result<Scratch> {
    Ok(Scratch(dir.join(format!(
        "restoring-{:016x}.duckdb",
        rand::random::<u64>()
    ))))
}

fn object_store(config: &Config) -> String {
    config.storage.object_store.clone().unwrap_or_else(|| {
        config
            .storage
            .data_dir
            .join("objects")
            .display()
            .to_string()
    })
}

/// A database URL without its password.
fn redact(url: &str) -> String {
    match url.split_once("://").and_then(|(scheme, rest)| {
        let (credentials, host) = rest.split_once('@')?;
        let user = credentials.split(':').next()?;
        Some(format!("{scheme}://{user}@{host}"))
    }) {
        Some(url) => url,
        None => url.to_string(),
    }
}

fn chrono_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
