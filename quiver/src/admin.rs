//! `quiver admin …`: the break-glass path. Works directly on the state file while the server
//! is stopped (DuckDB lets one process write it), with the same validation and audit as the
//! HTTP API; while the server runs it says so and points at the API.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use quiver_catalog::state::access::{NewGrant, Privilege};
use quiver_catalog::state::audit::AuditQuery;
use quiver_catalog::state::identity::{AttributeValue, MembershipSource, UserUpdate};
use quiver_catalog::{EngineOptions, QueryEngine, StateStore};
use quiver_config::Config;

/// Who the audit log names for changes made here.
const ACTOR: &str = "quiver admin";

#[derive(Debug, Args)]
pub(crate) struct AdminArgs {
    /// Configuration file (default: quiver.yaml if present).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Data directory holding state.duckdb (overrides the file).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Add, change, list and remove users.
    #[command(subcommand)]
    User(UserCommand),
    /// Add, list and remove groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Add and remove group members.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Grant a table (`schema.table`) or a schema (`schema.*`) to a group.
    Grant {
        /// `schema.table` or `schema.*`.
        table: String,
        /// The group receiving the grant.
        #[arg(long)]
        group: String,
        /// Only rows where this SQL condition holds, e.g. "region = 'EU'".
        #[arg(long)]
        row_filter: Option<String>,
        /// Replace a column's values: `COLUMN=SQL`, e.g. "email=left(email, 2) || '***'".
        #[arg(long = "mask", value_name = "COLUMN=SQL")]
        masks: Vec<String>,
        /// Hide a column entirely.
        #[arg(long = "hide", value_name = "COLUMN")]
        hidden: Vec<String>,
        /// Let the group also create, replace, append to and drop tables (a whole schema,
        /// `schema.*`, that no sync keeps tables in).
        #[arg(long)]
        write: bool,
    },
    /// Remove a grant by id (see `grants`).
    Revoke {
        /// Grant id.
        id: i64,
    },
    /// List grants.
    Grants,
    /// Create, list and revoke personal access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show the newest audit log entries.
    Audit {
        /// How many entries.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only this action (e.g. `query`, `login`, `grant.create`).
        #[arg(long)]
        action: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user; with --password-stdin the password is read from standard input.
    Add {
        email: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password, read from standard input.
    Password { email: String },
    /// Deactivate a user: sign-in and tokens stop working at once.
    Deactivate { email: String },
    /// Activate a user again.
    Activate { email: String },
    /// Delete a user with memberships and tokens.
    Delete { email: String },
    /// Set a user attribute, read in conditions as `user_attribute('NAME')`: one value,
    /// several (a list), or none to remove it.
    SetAttribute {
        email: String,
        name: String,
        values: Vec<String>,
    },
    /// List users.
    List,
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// Add a group.
    Add { name: String },
    /// Remove a group with its memberships and grants.
    Remove { name: String },
    /// List groups.
    List,
}

#[derive(Debug, Subcommand)]
enum MemberCommand {
    /// Add a user to a group.
    Add { group: String, email: String },
    /// Remove a user from a group.
    Remove { group: String, email: String },
    /// List a group's members.
    List { group: String },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token for a user; it is printed once.
    Create {
        email: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// Revoke a token by id.
    Revoke { id: String },
    /// List a user's tokens.
    List { email: String },
}

impl AdminArgs {
    /// The configuration file given, if any.
    pub(crate) fn config(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }
}

/// Runs an admin command.
pub(crate) fn run(args: AdminArgs, config: Config) -> anyhow::Result<()> {
    let mut config = config;
    if let Some(dir) = args.data_dir {
        config.storage.data_dir = dir;
    }
    let data_dir = config.storage.data_dir.clone();
    let path = data_dir.join("state.duckdb");
    if config.storage.state.is_none() && !path.exists() {
        bail!(
            "no state file at {}; start the server once (or pass --data-dir)",
            path.display()
        );
    }
    // On PostgreSQL this works beside running servers; the embedded file only while none runs.
    let state = Arc::new(StateStore::from_config(
        config.storage.state.as_deref(),
        &data_dir,
    )?);
    match args.command {
        AdminCommand::User(cmd) => user(&state, cmd),
        AdminCommand::Group(cmd) => group(&state, cmd),
        AdminCommand::Member(cmd) => member(&state, cmd),
        AdminCommand::Grant {
            table,
            group,
            row_filter,
            masks,
            hidden,
            write,
        } => {
            let mut column_masks = BTreeMap::new();
            for mask in masks {
                let (column, expr) = mask.split_once('=').with_context(|| {
                    format!("--mask `{mask}` should be COLUMN=SQL, e.g. email='***'")
                })?;
                column_masks.insert(column.trim().to_string(), Some(expr.trim().to_string()));
            }
            for column in hidden {
                column_masks.insert(column, None);
            }
            let grant = NewGrant {
                group,
                table,
                row_filter,
                column_masks,
                privilege: if write {
                    Privilege::Write
                } else {
                    Privilege::Read
                },
            };
            let storage = crate::server::open_storage(&config)?;
            let engine = QueryEngine::new(
                state.clone(),
                &storage,
                EngineOptions {
                    memory_limit: 256 << 20,
                    memory_limit_per_user: 256 << 20,
                    spill_dir: data_dir.join("spill"),
                    max_spill_bytes: 1 << 30,
                    batch_size: 8192,
                    limits: Default::default(),
                    query_threads: 1,
                    distribution: None,
                    acceleration_memory: 0,
                    results_cache_memory: 0,
                    remote_sources: None,
                    writes: crate::server::write_options(&config.write),
                },
            )?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let grant = runtime.block_on(engine.create_grant(ACTOR, &grant))?;
            println!(
                "grant {} created: {} to {}",
                grant.id, grant.table, grant.group
            );
            Ok(())
        }
        AdminCommand::Revoke { id } => {
            state.access().revoke_grant(ACTOR, id)?;
            println!("grant {id} revoked");
            Ok(())
        }
        AdminCommand::Grants => {
            for g in state.access().grants()? {
                let masks: Vec<String> = g
                    .column_masks
                    .iter()
                    .map(|(c, m)| match m {
                        Some(m) => format!("{c}={m}"),
                        None => format!("{c} hidden"),
                    })
                    .collect();
                println!(
                    "{:>4}  {:<20} {:<24} filter: {}  masks: {}",
                    g.id,
                    g.group,
                    g.table.to_string(),
                    g.row_filter.as_deref().unwrap_or("-"),
                    if masks.is_empty() {
                        "-".to_string()
                    } else {
                        masks.join(", ")
                    }
                );
            }
            Ok(())
        }
        AdminCommand::Token(cmd) => token(&state, cmd),
        AdminCommand::Audit { limit, action } => {
            let entries = state.audit().log(&AuditQuery {
                limit: Some(limit),
                action,
                ..Default::default()
            })?;
            for e in entries.iter().rev() {
                let what = e.statement.as_deref().or(e.target.as_deref()).unwrap_or("");
                println!(
                    "{}  {:<24} {:<14} {:<8} {}",
                    e.at, e.actor, e.action, e.outcome, what
                );
            }
            Ok(())
        }
    }
}

fn read_password() -> anyhow::Result<String> {
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprint!("Password: ");
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        bail!("no password given on standard input");
    }
    Ok(password)
}

fn user(state: &StateStore, cmd: UserCommand) -> anyhow::Result<()> {
    let set = |email: &str, update: UserUpdate, done: &str| -> anyhow::Result<()> {
        let user = state.identity().update_user(ACTOR, email, &update)?;
        println!("{}: {done}", user.email);
        Ok(())
    };
    match cmd {
        UserCommand::Add {
            email,
            name,
            password_stdin,
        } => {
            let password = password_stdin.then(read_password).transpose()?;
            let user = state.identity().create_user(
                ACTOR,
                &email,
                name.as_deref(),
                password.as_deref(),
            )?;
            println!("user {} added", user.email);
        }
        UserCommand::Password { email } => {
            let password = read_password()?;
            set(
                &email,
                UserUpdate {
                    password: Some(password),
                    ..Default::default()
                },
                "password set",
            )?;
        }
        UserCommand::Deactivate { email } => set(
            &email,
            UserUpdate {
                active: Some(false),
                ..Default::default()
            },
            "deactivated",
        )?,
        UserCommand::Activate { email } => set(
            &email,
            UserUpdate {
                active: Some(true),
                ..Default::default()
            },
            "activated",
        )?,
        UserCommand::Delete { email } => {
            state.identity().delete_user(ACTOR, &email)?;
            println!("user {email} deleted");
        }
        UserCommand::SetAttribute {
            email,
            name,
            mut values,
        } => {
            let mut attributes = state.identity().attributes(&email)?;
            match values.len() {
                0 => attributes.remove(&name),
                1 => attributes.insert(name.clone(), AttributeValue::One(values.remove(0))),
                _ => attributes.insert(name.clone(), AttributeValue::Many(values)),
            };
            state
                .identity()
                .set_attributes(ACTOR, &email, &attributes)?;
            println!("{email}: attribute {name} set");
        }
        UserCommand::List => {
            for u in state.identity().users()? {
                println!(
                    "{:<32} {:<8} {}",
                    u.email,
                    if u.active { "active" } else { "inactive" },
                    u.groups.join(", ")
                );
            }
        }
    }
    Ok(())
}

fn group(state: &StateStore, cmd: GroupCommand) -> anyhow::Result<()> {
    match cmd {
        GroupCommand::Add { name } => {
            state.identity().create_group(ACTOR, &name)?;
            println!("group {name} added");
        }
        GroupCommand::Remove { name } => {
            state.identity().delete_group(ACTOR, &name)?;
            println!("group {name} removed");
        }
        GroupCommand::List => {
            for name in state.identity().groups()? {
                println!("{name}");
            }
        }
    }
    Ok(())
}

fn member(state: &StateStore, cmd: MemberCommand) -> anyhow::Result<()> {
    match cmd {
        MemberCommand::Add { group, email } => {
            state
                .identity()
                .add_member(ACTOR, &group, &email, MembershipSource::Admin)?;
            println!("{email} added to {group}");
        }
        MemberCommand::Remove { group, email } => {
            state.identity().remove_member(ACTOR, &group, &email)?;
            println!("{email} removed from {group}");
        }
        MemberCommand::List { group } => {
            for m in state.identity().members(&group)? {
                println!("{:<32} {}", m.email, m.source);
            }
        }
    }
    Ok(())
}

fn token(state: &StateStore, cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create {
            email,
            name,
            expires_in_days,
        } => {
            let (info, secret) =
                state
                    .identity()
                    .create_token(ACTOR, &email, &name, expires_in_days, None)?;
            eprintln!(
                "token {} ({}) created for {}; it is shown once:",
                info.id, info.name, info.email
            );
            println!("{secret}");
        }
        TokenCommand::Revoke { id } => {
            state.identity().revoke_token(ACTOR, None, &id)?;
            println!("token {id} revoked");
        }
        TokenCommand::List { email } => {
            for t in state.identity().tokens(&email)? {
                println!(
                    "{}  {:<14} {:<20} {}",
                    t.id,
                    t.prefix,
                    t.name,
                    if t.revoked { "revoked" } else { "active" }
                );
            }
        }
    }
    Ok(())
}
