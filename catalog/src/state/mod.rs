//! The state store: users, grants, tokens, the table registry, sync runs and audit, in the
//! embedded DuckDB file `state.duckdb` (one process) or in PostgreSQL (`storage.state`,
//! shared by every replica).
//!
//! Schema changes are numbered migrations, the same for both backends, applied in order on
//! open and recorded in `schema_migrations`. Every statement takes its values as
//! parameters.

mod copy;
pub mod db;
mod duck;
mod pg;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

pub use copy::CopyReport;
pub use db::{Backend, Timestamp};
pub(crate) use db::{Conn, Db, Row, params};

use crate::identity::{self, Principal};
use crate::{CatalogError, TableName};

/// Migrations, applied in order; index + 1 is the schema version. Never edit a released one.
const MIGRATIONS: &[&str] = &[
    // 1: identity and the table registry.
    r#"
    CREATE TABLE users (
        email          VARCHAR PRIMARY KEY,
        name           VARCHAR,
        password_hash  VARCHAR,
        active         BOOLEAN NOT NULL DEFAULT TRUE,
        created_at     TIMESTAMP NOT NULL DEFAULT current_timestamp
    );
    CREATE TABLE groups (
        name        VARCHAR PRIMARY KEY,
        created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
    );
    INSERT INTO groups (name) VALUES ('Admin'), ('Everyone');
    CREATE TABLE memberships (
        group_name  VARCHAR NOT NULL,
        email       VARCHAR NOT NULL,
        source      VARCHAR NOT NULL,
        created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (group_name, email)
    );
    CREATE TABLE tables (
        schema_name      VARCHAR NOT NULL,
        table_name       VARCHAR NOT NULL,
        description      VARCHAR,
        current_version  BIGINT,
        created_at       TIMESTAMP NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (schema_name, table_name)
    );
    CREATE TABLE table_versions (
        schema_name   VARCHAR NOT NULL,
        table_name    VARCHAR NOT NULL,
        version       BIGINT NOT NULL,
        location      VARCHAR NOT NULL,
        row_count     BIGINT NOT NULL,
        byte_count    BIGINT NOT NULL,
        committed_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (schema_name, table_name, version)
    );
    "#,
    // 2: access: grants, personal access tokens, the audit log.
    r#"
    CREATE SEQUENCE grant_ids START 1;
    CREATE TABLE grants (
        id            BIGINT PRIMARY KEY DEFAULT nextval('grant_ids'),
        group_name    VARCHAR NOT NULL,
        schema_name   VARCHAR NOT NULL,
        table_name    VARCHAR NOT NULL,   -- '*' for every table of the schema
        row_filter    VARCHAR,
        column_masks  VARCHAR NOT NULL,   -- JSON object: column -> SQL expression, or null to hide
        created_by    VARCHAR NOT NULL,
        created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
    );
    CREATE TABLE tokens (
        id            VARCHAR PRIMARY KEY,
        email         VARCHAR NOT NULL,
        name          VARCHAR NOT NULL,
        prefix        VARCHAR NOT NULL,
        hash          VARCHAR NOT NULL UNIQUE,
        created_at    BIGINT NOT NULL,     -- seconds since the epoch, like the other token times
        expires_at    BIGINT,
        last_used_at  BIGINT,
        revoked_at    BIGINT
    );
    CREATE SEQUENCE audit_ids START 1;
    CREATE TABLE audit (
        id           BIGINT PRIMARY KEY DEFAULT nextval('audit_ids'),
        occurred_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
        actor        VARCHAR NOT NULL,
        action       VARCHAR NOT NULL,
        target       VARCHAR,
        detail       VARCHAR,
        outcome      VARCHAR NOT NULL,
        statement    VARCHAR,
        tables       VARCHAR,
        row_count    BIGINT,
        byte_count   BIGINT,
        duration_ms  BIGINT
    );
    "#,
    // 3: OAuth client credentials for service accounts.
    r#"
    CREATE TABLE client_credentials (
        client_id    VARCHAR PRIMARY KEY,
        email        VARCHAR NOT NULL,     -- the user the client acts as
        name         VARCHAR NOT NULL,
        secret_hash  VARCHAR NOT NULL,
        created_at   BIGINT NOT NULL,
        revoked_at   BIGINT
    );
    "#,
    // 4: table definitions (connector, options, schedule), sync runs, version profiles.
    r#"
    CREATE TABLE table_definitions (
        schema_name  VARCHAR NOT NULL,
        table_name   VARCHAR NOT NULL,
        definition   VARCHAR NOT NULL,   -- JSON; secrets only as ${ENV} references
        origin       VARCHAR NOT NULL,   -- 'config' (quiver.yaml) or 'api'
        created_at   TIMESTAMP NOT NULL DEFAULT current_timestamp,
        PRIMARY KEY (schema_name, table_name)
    );
    CREATE SEQUENCE sync_run_ids START 1;
    CREATE TABLE sync_runs (
        id           BIGINT PRIMARY KEY DEFAULT nextval('sync_run_ids'),
        schema_name  VARCHAR NOT NULL,
        table_name   VARCHAR NOT NULL,
        trigger      VARCHAR NOT NULL,   -- 'schedule', 'manual' or 'retry'
        actor        VARCHAR,
        started_at   TIMESTAMP NOT NULL DEFAULT current_timestamp,
        ended_at     TIMESTAMP,
        status       VARCHAR NOT NULL,   -- 'running', 'succeeded', 'failed', 'interrupted'
        row_count    BIGINT,
        byte_count   BIGINT,
        version      BIGINT,
        error        VARCHAR
    );
    CREATE TABLE version_details (
        schema_name  VARCHAR NOT NULL,
        table_name   VARCHAR NOT NULL,
        version      BIGINT NOT NULL,
        watermark    VARCHAR,            -- incremental tables: largest watermark loaded
        profile      VARCHAR,            -- JSON: per-column statistics
        PRIMARY KEY (schema_name, table_name, version)
    );
    "#,
    // 5: sharded versions (a version listing its files, one per shard), webhook deliveries.
    r#"
    CREATE TABLE version_files (
        schema_name  VARCHAR NOT NULL,
        table_name   VARCHAR NOT NULL,
        version      BIGINT NOT NULL,
        shard        VARCHAR NOT NULL,   -- e.g. '2026-03', a month of Jira issues
        url          VARCHAR NOT NULL,   -- one parquet file; shared by versions until replaced
        row_count    BIGINT NOT NULL,
        byte_count   BIGINT NOT NULL,
        PRIMARY KEY (schema_name, table_name, version, shard)
    );
    CREATE TABLE webhook_deliveries (
        source           VARCHAR NOT NULL,   -- 'jira'
        delivery_id      VARCHAR NOT NULL,
        received_at      TIMESTAMP NOT NULL DEFAULT current_timestamp,
        event            VARCHAR NOT NULL,
        subject          VARCHAR NOT NULL,   -- what the event is about, e.g. an issue key
        detail           VARCHAR NOT NULL,   -- JSON the processor needs from the payload
        payload          VARCHAR NOT NULL,   -- object-store key of the raw body
        status           VARCHAR NOT NULL,   -- 'pending' or 'done'
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
        error            VARCHAR,
        processed_at     TIMESTAMP,
        PRIMARY KEY (source, delivery_id)
    );
    "#,
    // 6: ended sessions (signed out before they expire), and what each PAT was made with.
    r#"
    CREATE TABLE ended_sessions (
        jti         VARCHAR PRIMARY KEY,   -- the bearer token's unique id
        expires_at  BIGINT NOT NULL        -- when the token would have expired anyway
    );
    ALTER TABLE tokens ADD COLUMN origin VARCHAR;   -- 'pat:<id>' or 'client:<id>'; ends with it
    "#,
    // 7: a counter every change of what principals may see bumps, so other processes (the
    // replicas of a cluster, `quiver admin`) can tell their caches are stale.
    r#"
    CREATE TABLE state_generation (
        id          INTEGER PRIMARY KEY,   -- always 1
        generation  BIGINT NOT NULL
    );
    INSERT INTO state_generation VALUES (1, 1);
    "#,
    // 8: leases: which replica runs the cluster's background work.
    r#"
    CREATE TABLE leases (
        name        VARCHAR PRIMARY KEY,   -- 'background'
        holder      VARCHAR NOT NULL,      -- the replica's id
        expires_at  BIGINT NOT NULL        -- milliseconds since the epoch
    );
    "#,
    // 9: the cluster: replicas alive by their heartbeats, the work each one runs (so
    // per-user limits and cancellation hold across replicas), sign-in failures. (A run's
    // replica has a table of its own, and there are no indexes: DuckDB could not replay a
    // WAL holding this migration's first form, with `ALTER TABLE sync_runs` and two
    // indexes, after a crash.)
    r#"
    CREATE TABLE replicas (
        id          VARCHAR PRIMARY KEY,   -- random, per process
        advertise   VARCHAR,               -- grpc://host:port clients reach it at
        started_at  BIGINT NOT NULL,       -- milliseconds since the epoch
        seen_at     BIGINT NOT NULL        -- its last heartbeat, milliseconds
    );
    CREATE TABLE sync_run_replicas (
        run         BIGINT PRIMARY KEY,    -- sync_runs.id
        replica     VARCHAR NOT NULL       -- the replica running it
    );
    CREATE TABLE running_work (
        id          VARCHAR PRIMARY KEY,   -- random, per result stream
        replica     VARCHAR NOT NULL,      -- the replica streaming it
        principal   VARCHAR NOT NULL,      -- the user's e-mail
        query_id    VARCHAR NOT NULL,      -- the query streamed (for cancellation)
        cancel      BOOLEAN NOT NULL DEFAULT false
    );
    CREATE TABLE sign_in_failures (
        key         VARCHAR NOT NULL,      -- 'account:<email>' or 'address:<ip>'
        failed_at   BIGINT NOT NULL        -- milliseconds since the epoch
    );
    "#,
];

/// How often a process sharing the state database looks for others' changes.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// A new table version, ready to commit.
#[derive(Debug, Clone, Default)]
pub struct NewVersion {
    /// Object-store folder (URL with a trailing slash) holding the parquet files.
    pub location: String,
    /// Rows in the version.
    pub rows: i64,
    /// Bytes of parquet.
    pub bytes: i64,
    /// Description to set (kept when `None`).
    pub description: Option<String>,
    /// Incremental tables: the largest watermark value now loaded.
    pub watermark: Option<String>,
    /// Per-column statistics.
    pub profile: Option<serde_json::Value>,
    /// The sync run that produced it; marked succeeded in the same transaction.
    pub run: Option<i64>,
}

/// A committed, queryable table version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    /// `schema.table`.
    pub name: TableName,
    /// Free-text description shown in catalogs.
    pub description: Option<String>,
    /// Version number, 1 for the first publish.
    pub version: i64,
    /// Object-store folder (URL with a trailing slash) holding the version's parquet files.
    pub location: String,
    /// Rows in the version.
    pub rows: i64,
    /// Bytes of parquet in the version.
    pub bytes: i64,
    /// When the version was published (UTC, ISO 8601).
    pub committed_at: String,
}

/// The state store: the database Quiver keeps users, grants, tables and audit in.
pub struct StateStore {
    db: Arc<Db>,
    /// Bumped on every change that affects what a principal can see, here or (seen by the
    /// watcher) in another process sharing the database, so caches can tell.
    generation: Arc<AtomicU64>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("backend", &self.db.backend())
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl StateStore {
    /// Opens (creating when missing) the embedded state file and runs pending migrations.
    pub fn open(path: &Path) -> Result<Self, CatalogError> {
        Self::migrated(Db::Duck(duck::Db::open(path)?))
    }

    /// Connects to a PostgreSQL state database (`postgres://…`) and runs pending
    /// migrations; replicas starting together migrate one at a time.
    pub fn connect(url: &str) -> Result<Self, CatalogError> {
        Self::migrated(Db::Pg(Box::new(pg::Db::connect(url)?)))
    }

    /// The state named by `storage.state` (a PostgreSQL URL), or else the embedded file
    /// `state.duckdb` in `data_dir`.
    pub fn from_config(state: Option<&str>, data_dir: &Path) -> Result<Self, CatalogError> {
        match state {
            Some(url) => Self::connect(url),
            None => Self::open(&data_dir.join("state.duckdb")),
        }
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Self, CatalogError> {
        Self::migrated(Db::Duck(duck::Db::in_memory()?))
    }

    fn migrated(db: Db) -> Result<Self, CatalogError> {
        db.transaction(|conn| {
            if db.backend() == Backend::Postgres {
                // One replica at a time; the others find the work done.
                conn.query("SELECT pg_advisory_xact_lock(7283921)", params![])?;
            }
            conn.batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version INTEGER PRIMARY KEY,
                     applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)",
            )?;
            let applied: i64 = conn.query_row(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                params![],
                |r| r.get(0),
            )?;
            if applied as usize > MIGRATIONS.len() {
                return Err(CatalogError::State(format!(
                    "the state database is at schema version {applied}, newer than this Quiver ({}); upgrade Quiver",
                    MIGRATIONS.len()
                )));
            }
            for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
                let version = index as i64 + 1;
                conn.batch(sql)
                    .map_err(|e| CatalogError::State(format!("migration {version} failed: {e}")))?;
                conn.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)",
                    params![version],
                )?;
                tracing::info!(version, "state store migrated");
            }
            Ok(applied as usize)
        })
        .and_then(|applied| {
            // Schema changes go into the database file at once: DuckDB replays some DDL
            // from its WAL badly after a crash.
            if applied < MIGRATIONS.len() && db.backend() == Backend::DuckDb {
                db.conn()?.batch("CHECKPOINT")?;
            }
            Ok(())
        })?;
        let store = Self {
            db: Arc::new(db),
            generation: Arc::new(AtomicU64::new(1)),
        };
        if store.backend() == Backend::Postgres {
            store.watch_others()?;
        }
        Ok(store)
    }

    /// Follows the shared generation counter on a thread of its own (until the store is
    /// dropped), so changes made by other replicas reach this one's caches within
    /// [`WATCH_INTERVAL`].
    fn watch_others(&self) -> Result<(), CatalogError> {
        let db: Weak<Db> = Arc::downgrade(&self.db);
        let generation = self.generation.clone();
        let read = |db: &Db| -> Result<i64, CatalogError> {
            db.conn()?.query_row(
                "SELECT generation FROM state_generation WHERE id = 1",
                params![],
                |r| r.get(0),
            )
        };
        let mut seen = read(&self.db)?;
        std::thread::Builder::new()
            .name("quiver-state-watch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(WATCH_INTERVAL);
                    let Some(db) = db.upgrade() else { return };
                    match read(&db) {
                        Ok(now) if now != seen => {
                            seen = now;
                            generation.fetch_add(1, Ordering::AcqRel);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "cannot read the state generation"),
                    }
                }
            })
            .map_err(|e| CatalogError::Internal(format!("state watcher: {e}")))?;
        Ok(())
    }

    /// Which database holds the state.
    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    /// A connection for statements that need no transaction.
    pub(crate) fn conn(&self) -> Result<Conn<'_>, CatalogError> {
        self.db.conn()
    }

    /// Runs `work` in one transaction (see [`Db::transaction`]).
    pub(crate) fn transaction<T>(
        &self,
        work: impl FnMut(&Conn<'_>) -> Result<T, CatalogError>,
    ) -> Result<T, CatalogError> {
        self.db.transaction(work)
    }

    /// Runs `work` in one transaction holding the lock `key` (see [`Db::locked`]).
    pub(crate) fn locked<T>(
        &self,
        key: &str,
        work: impl FnOnce(&Conn<'_>) -> Result<T, CatalogError>,
    ) -> Result<T, CatalogError> {
        self.db.locked(key, work)
    }

    /// Current schema version of the state database.
    pub fn schema_version(&self) -> Result<i64, CatalogError> {
        self.conn()?.query_row(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            params![],
            |r| r.get(0),
        )
    }

    /// A number that changes whenever tables, users or grants change.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Tells this process's caches that a change committed (after [`Self::mark_changed`]
    /// in its transaction told the other processes').
    pub(crate) fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Records, inside the transaction making a change, that the change happened, for the
    /// other processes sharing the database.
    pub(crate) fn mark_changed(tx: &Conn<'_>) -> Result<(), CatalogError> {
        tx.execute(
            "UPDATE state_generation SET generation = generation + 1 WHERE id = 1",
            params![],
        )?;
        Ok(())
    }

    /// Runs `change` in one transaction, records it in the audit log as `actor` doing
    /// `action` on `target`, commits, and tells the caches. Either all of it happens or none.
    pub(crate) fn change<T>(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        mut change: impl FnMut(&Conn<'_>) -> Result<(T, serde_json::Value), CatalogError>,
    ) -> Result<T, CatalogError> {
        let value = self.transaction(|tx| {
            let (value, detail) = change(tx)?;
            Self::mark_changed(tx)?;
            let detail = (!detail.is_null()).then(|| detail.to_string());
            tx.execute(
                "INSERT INTO audit (actor, action, target, detail, outcome) VALUES ($1, $2, $3, $4, 'ok')",
                params![actor, action, target, detail],
            )?;
            Ok(value)
        })?;
        self.bump();
        tracing::info!(actor, action, target, "administrative change");
        Ok(value)
    }

    // ----- identity -------------------------------------------------------------------

    /// Creates `email` as an active administrator with `password`, unless the user exists.
    /// Returns whether it was created. An existing user is never overwritten.
    pub fn ensure_bootstrap_admin(
        &self,
        email: &str,
        password: &str,
    ) -> Result<bool, CatalogError> {
        let email = email.trim().to_lowercase();
        let hash = identity::hash_password(password)?;
        let created = self.transaction(|tx| {
            let exists = tx.query_opt(
                "SELECT email FROM users WHERE email = $1",
                params![email],
                |r| r.get::<String>(0),
            )?;
            if exists.is_some() {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO users (email, password_hash) VALUES ($1, $2)",
                params![email, hash],
            )?;
            tx.execute(
                "INSERT INTO memberships (group_name, email, source) VALUES ('Admin', $1, 'bootstrap')",
                params![email],
            )?;
            tx.execute(
                "INSERT INTO audit (actor, action, target, outcome) VALUES ('bootstrap', 'user.create', $1, 'ok')",
                params![email],
            )?;
            Self::mark_changed(tx)?;
            Ok(true)
        })?;
        if created {
            self.bump();
        }
        Ok(created)
    }

    /// Checks an e-mail and password. Unknown users, inactive users and wrong passwords all
    /// give `None` after the same amount of work, so the answer does not tell which it was.
    pub fn authenticate_password(
        &self,
        email: &str,
        password: &str,
    ) -> Result<Option<Principal>, CatalogError> {
        let email = email.trim().to_lowercase();
        let row: Option<(Option<String>, bool)> = self.conn()?.query_opt(
            "SELECT password_hash, active FROM users WHERE email = $1",
            params![email],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let (hash, active) = match row {
            Some((Some(hash), active)) => (hash, active),
            _ => (identity::dummy_hash().to_string(), false),
        };
        let ok = identity::verify_password(&hash, password);
        if ok && active {
            self.principal(&email)
        } else {
            Ok(None)
        }
    }

    /// The active principal named `email`, with its groups; `None` when unknown or inactive.
    pub fn principal(&self, email: &str) -> Result<Option<Principal>, CatalogError> {
        let conn = self.conn()?;
        let active: Option<bool> = conn.query_opt(
            "SELECT active FROM users WHERE email = $1",
            params![email],
            |r| r.get(0),
        )?;
        if active != Some(true) {
            return Ok(None);
        }
        let mut groups: Vec<String> = conn.query_map(
            "SELECT group_name FROM memberships WHERE email = $1 ORDER BY 1",
            params![email],
            |r| r.get(0),
        )?;
        if !groups.iter().any(|g| g == "Everyone") {
            groups.push("Everyone".into());
        }
        Ok(Some(Principal::new(email.to_string(), groups)))
    }

    // ----- table registry -------------------------------------------------------------

    /// Commits a new version of `table`, in one transaction, and returns its number.
    /// Readers see either the previous version or this one, never a mix.
    pub fn commit_version(&self, table: &TableName, new: &NewVersion) -> Result<i64, CatalogError> {
        let (schema, name) = (table.schema(), table.table());
        let description = new.description.as_deref();
        let version = self.transaction(|tx| {
            tx.execute(
                "INSERT INTO tables (schema_name, table_name, description) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                params![schema, name, description],
            )?;
            let version: i64 = tx.query_row(
                "SELECT coalesce(max(version), 0) + 1 FROM table_versions
                 WHERE schema_name = $1 AND table_name = $2",
                params![schema, name],
                |r| r.get(0),
            )?;
            tx.execute(
                "INSERT INTO table_versions (schema_name, table_name, version, location, row_count, byte_count)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                params![schema, name, version, new.location, new.rows, new.bytes],
            )?;
            tx.execute(
                "INSERT INTO version_details (schema_name, table_name, version, watermark, profile)
                 VALUES ($1, $2, $3, $4, $5)",
                params![
                    schema,
                    name,
                    version,
                    new.watermark,
                    new.profile.as_ref().map(|p| p.to_string())
                ],
            )?;
            tx.execute(
                "UPDATE tables SET current_version = $1, description = coalesce($2, description)
                 WHERE schema_name = $3 AND table_name = $4",
                params![version, description, schema, name],
            )?;
            // A run the cluster took for dead (its replica's heartbeats stopped) may have
            // lost its files to the sweep since: it publishes nothing.
            if let Some(run) = new.run
                && tx.execute(
                    "UPDATE sync_runs SET status = 'succeeded', ended_at = current_timestamp,
                            row_count = $1, byte_count = $2, version = $3
                     WHERE id = $4 AND status = 'running'",
                    params![new.rows, new.bytes, version, run],
                )? == 0
            {
                return Err(CatalogError::Conflict(format!(
                    "run {run} was marked interrupted (this server was out of touch with the state database); its version is not published"
                )));
            }
            Self::mark_changed(tx)?;
            Ok(version)
        })?;
        self.bump();
        tracing::info!(table = %table, version, rows = new.rows, bytes = new.bytes, "table version committed");
        Ok(version)
    }

    /// One table with a committed version.
    pub fn table(&self, name: &TableName) -> Result<TableEntry, CatalogError> {
        self.tables()?
            .into_iter()
            .find(|t| &t.name == name)
            .ok_or_else(|| CatalogError::NotFound(format!("no table `{name}`")))
    }

    /// Sets a table's description.
    pub fn set_table_description(
        &self,
        actor: &str,
        name: &TableName,
        description: Option<&str>,
    ) -> Result<TableEntry, CatalogError> {
        self.table(name)?;
        self.change(actor, "table.update", &name.to_string(), |tx| {
            tx.execute(
                "UPDATE tables SET description = $1 WHERE schema_name = $2 AND table_name = $3",
                params![description, name.schema(), name.table()],
            )?;
            Ok(((), serde_json::json!({ "description": description })))
        })?;
        self.table(name)
    }

    /// Removes a table from the registry: it stops being queryable at once. Its files stay
    /// in the object store (their locations are in the audit entry) until collected.
    pub fn delete_table(&self, actor: &str, name: &TableName) -> Result<(), CatalogError> {
        if self.table(name).is_err() && self.definition(name)?.is_none() {
            return Err(CatalogError::NotFound(format!("no table `{name}`")));
        }
        self.change(actor, "table.delete", &name.to_string(), |tx| {
            let locations: Vec<String> = tx.query_map(
                "SELECT location FROM table_versions WHERE schema_name = $1 AND table_name = $2
                 ORDER BY version",
                params![name.schema(), name.table()],
                |r| r.get(0),
            )?;
            for statement in [
                "DELETE FROM table_versions WHERE schema_name = $1 AND table_name = $2",
                "DELETE FROM version_files WHERE schema_name = $1 AND table_name = $2",
                "DELETE FROM tables WHERE schema_name = $1 AND table_name = $2",
                "DELETE FROM version_details WHERE schema_name = $1 AND table_name = $2",
                "DELETE FROM table_definitions WHERE schema_name = $1 AND table_name = $2",
            ] {
                tx.execute(statement, params![name.schema(), name.table()])?;
            }
            Ok(((), serde_json::json!({ "locations": locations })))
        })
    }

    /// Every table with a committed version, ordered by name.
    pub fn tables(&self) -> Result<Vec<TableEntry>, CatalogError> {
        self.conn()?.query_map(
            "SELECT t.schema_name, t.table_name, t.description, v.version, v.location,
                    v.row_count, v.byte_count, v.committed_at
             FROM tables t JOIN table_versions v
               ON v.schema_name = t.schema_name AND v.table_name = t.table_name
              AND v.version = t.current_version
             ORDER BY 1, 2",
            params![],
            |r| {
                Ok(TableEntry {
                    name: TableName::new(&r.get::<String>(0)?, &r.get::<String>(1)?)?,
                    description: r.get(2)?,
                    version: r.get(3)?,
                    location: r.get(4)?,
                    rows: r.get(5)?,
                    bytes: r.get(6)?,
                    committed_at: r.get::<Timestamp>(7)?.iso(),
                })
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_idempotent_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.duckdb");
        let store = StateStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
        drop(store);
        let store = StateStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
    }

    #[test]
    fn bootstrap_admin_is_created_once_and_never_overwritten() {
        let store = StateStore::in_memory().unwrap();
        assert!(
            store
                .ensure_bootstrap_admin("Ada@Example.com", "first-password")
                .unwrap()
        );
        assert!(
            !store
                .ensure_bootstrap_admin("ada@example.com", "second-password")
                .unwrap()
        );
        let p = store
            .authenticate_password("ada@example.com", "first-password")
            .unwrap()
            .expect("original password still works");
        assert!(p.is_admin());
        assert!(
            store
                .authenticate_password("ada@example.com", "second-password")
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .authenticate_password("bob@example.com", "x")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn versions_commit_in_order_and_only_the_current_one_is_listed() {
        let store = StateStore::in_memory().unwrap();
        let t: TableName = "tpch.nation".parse().unwrap();
        let g0 = store.generation();
        let v = |location: &str, rows, description: Option<&str>| NewVersion {
            location: location.into(),
            rows,
            bytes: 100,
            description: description.map(String::from),
            ..NewVersion::default()
        };
        assert_eq!(
            store
                .commit_version(&t, &v("file:///a/", 25, None))
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .commit_version(&t, &v("file:///b/", 26, Some("n")))
                .unwrap(),
            2
        );
        assert!(store.generation() > g0);
        let tables = store.tables().unwrap();
        assert_eq!(tables.len(), 1);
        assert_eq!(tables[0].version, 2);
        assert_eq!(tables[0].location, "file:///b/");
        assert_eq!(tables[0].description.as_deref(), Some("n"));
    }
}
