//! `quiver state …`: moving an installation's state between databases.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use quiver_catalog::StateStore;

/// Arguments of `quiver state`.
#[derive(Debug, Args)]
pub struct StateArgs {
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
}

/// Runs a state command.
pub fn run(args: StateArgs) -> anyhow::Result<()> {
    match args.command {
        StateCommand::Migrate { from, to } => {
            if !from.exists() {
                bail!("no state file at {}", from.display());
            }
            let source = StateStore::open(&from)
                .with_context(|| format!("cannot open {}", from.display()))?;
            let target = StateStore::connect(&to)?;
            let report = source.copy_into(&target)?;
            for (table, rows) in &report {
                println!("{table:>20}  {rows} rows");
            }
            println!(
                "copied {} into the PostgreSQL state; set `storage.state` to it and start the servers",
                from.display()
            );
            Ok(())
        }
    }
}
