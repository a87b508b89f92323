//! The state store: what Quiver keeps about identities, access, tables, the audit log,
//! webhook deliveries and the cluster, in the embedded DuckDB file `state.duckdb` (one
//! process) or in PostgreSQL (`storage.state`, shared by every replica).
//!
//! Each kind of thing is one repository, one file: [`identity`] (users, groups,
//! memberships, tokens, service accounts, sessions), [`access`] (grants), [`tables`]
//! (versions, definitions, sync runs, shards), [`audit`], [`webhooks`] and [`cluster`]
//! (replicas, running work, leases), reached as `state.identity()`, `state.access()`, ….
//! They write their statements once, for both backends ([`db`]); schema changes are the
//! numbered [`migrations`]. Every statement takes its values as parameters.

pub mod access;
pub mod audit;
pub mod cluster;
mod copy;
pub(crate) mod db;
mod duck;
pub mod governance;
pub mod identity;
mod migrations;
mod pg;
pub mod tables;
pub(crate) mod value;
pub mod webhooks;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

pub use copy::CopyReport;
pub use db::Backend;
pub(crate) use db::{Conn, Db};
pub use value::Timestamp;
pub(crate) use value::{Row, params};

pub use access::Access;
pub use audit::Audit;
pub use cluster::Cluster;
pub use governance::Governance;
pub use identity::Identity;
pub use tables::{NewVersion, TableEntry, Tables};
pub use webhooks::Webhooks;

use crate::CatalogError;
use migrations::MIGRATIONS;

/// The PostgreSQL channel every committed change is announced on.
const CHANGES_CHANNEL: &str = "quiver_state_changed";

/// How often a process sharing the state database looks for others' changes while it
/// cannot listen for them.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// The state store: the database Quiver keeps users, grants, tables and audit in.
pub struct StateStore {
    /// Query records on their way to the audit log (dropped first: it drains the queue).
    queries: audit::QueryQueue,
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
        let db = Arc::new(db);
        let store = Self {
            queries: audit::QueryQueue::new(&db),
            db,
            generation: Arc::new(AtomicU64::new(1)),
        };
        if store.backend() == Backend::Postgres {
            store.watch_others()?;
        }
        Ok(store)
    }

    /// Tells this process's caches about changes other processes sharing the database
    /// make, until the store is dropped: a notification on [`CHANGES_CHANNEL`] arrives as
    /// the change commits; while the listening connection is down, the shared generation
    /// counter is polled every [`WATCH_INTERVAL`] instead.
    fn watch_others(&self) -> Result<(), CatalogError> {
        let Db::Pg(pg) = self.db.as_ref() else {
            return Ok(());
        };
        let listening = Arc::new(AtomicBool::new(false));
        let generation = self.generation.clone();
        pg.listen(
            CHANGES_CHANNEL,
            move |notified| {
                generation.fetch_add(1, Ordering::AcqRel);
                if notified {
                    metrics::counter!("quiver_state_notifications_total").increment(1);
                }
            },
            listening.clone(),
        );
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
                    if listening.load(Ordering::Acquire) {
                        continue;
                    }
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

    /// Users, groups, memberships, tokens, service accounts and sessions.
    pub fn identity(&self) -> Identity<'_> {
        Identity(self)
    }

    /// Grants.
    pub fn access(&self) -> Access<'_> {
        Access(self)
    }

    /// Table versions, definitions, sync runs and shards.
    pub fn tables(&self) -> Tables<'_> {
        Tables(self)
    }

    /// Tags and policies.
    pub fn governance(&self) -> Governance<'_> {
        Governance(self)
    }

    /// The audit log.
    pub fn audit(&self) -> Audit<'_> {
        Audit(self)
    }

    /// Received webhook deliveries.
    pub fn webhooks(&self) -> Webhooks<'_> {
        Webhooks(self)
    }

    /// Replicas, the work they run, and leases.
    pub fn cluster(&self) -> Cluster<'_> {
        Cluster(self)
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
        if tx.backend() == Backend::Postgres {
            // Delivered to the listeners when the transaction commits, not before.
            tx.execute("SELECT pg_notify($1, '')", params![CHANGES_CHANNEL])?;
        }
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

    /// An upgrade from a state at any earlier schema version (what an older release left)
    /// keeps its users, memberships and tables; a state newer than this binary is refused
    /// with what to do, and left as it was.
    #[test]
    fn older_states_upgrade_in_place_and_newer_ones_are_refused() {
        for older in 1..=MIGRATIONS.len() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.duckdb");
            {
                let db = Db::Duck(duck::Db::open(&path).unwrap());
                let conn = db.conn().unwrap();
                conn.batch("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)")
                    .unwrap();
                for (index, sql) in MIGRATIONS[..older].iter().enumerate() {
                    conn.batch(sql).unwrap();
                    conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)",
                        params![index as i64 + 1],
                    )
                    .unwrap();
                }
                conn.batch(
                    "INSERT INTO users (email, password_hash) VALUES ('ada@example.com', NULL);
                     INSERT INTO memberships (group_name, email, source) VALUES ('Admin', 'ada@example.com', 'admin');
                     INSERT INTO tables (schema_name, table_name, current_version) VALUES ('s', 't', 1);
                     INSERT INTO table_versions (schema_name, table_name, version, location, row_count, byte_count)
                     VALUES ('s', 't', 1, 'file:///v1/', 3, 10);
                     CHECKPOINT;",
                )
                .unwrap();
            }
            let store = StateStore::open(&path).unwrap();
            assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
            let users = store.identity().users().unwrap();
            assert_eq!(users.len(), 1, "from version {older}");
            assert!(users[0].groups.iter().any(|g| g == "Admin"));
            let tables = store.tables().list().unwrap();
            assert_eq!(
                (tables.len(), tables[0].rows),
                (1, 3),
                "from version {older}"
            );
        }

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.duckdb");
        StateStore::open(&path)
            .unwrap()
            .conn()
            .unwrap()
            .execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                params![MIGRATIONS.len() as i64 + 1],
            )
            .unwrap();
        let refused = StateStore::open(&path).unwrap_err().to_string();
        assert!(
            refused.contains("newer than this Quiver") && refused.contains("upgrade Quiver"),
            "{refused}"
        );
        let conn = duck::Db::open(&path).unwrap();
        let version: i64 = Db::Duck(conn)
            .conn()
            .unwrap()
            .query_row(
                "SELECT max(version) FROM schema_migrations",
                params![],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64 + 1);
    }

    #[test]
    fn bootstrap_admin_is_created_once_and_never_overwritten() {
        let store = StateStore::in_memory().unwrap();
        assert!(
            store
                .identity()
                .ensure_bootstrap_admin("Ada@Example.com", "first-password")
                .unwrap()
        );
        assert!(
            !store
                .identity()
                .ensure_bootstrap_admin("ada@example.com", "second-password")
                .unwrap()
        );
        let p = store
            .identity()
            .authenticate_password("ada@example.com", "first-password")
            .unwrap()
            .expect("original password still works");
        assert!(p.is_admin());
        assert!(
            store
                .identity()
                .authenticate_password("ada@example.com", "second-password")
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .identity()
                .authenticate_password("bob@example.com", "x")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn embedded_reads_and_single_writes_do_not_wait_for_a_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(StateStore::open(&dir.path().join("state.duckdb")).unwrap());
        store
            .identity()
            .ensure_bootstrap_admin("root@example.com", "root-password")
            .unwrap();
        let (entered, in_transaction) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || {
                store.transaction(|tx| {
                    tx.execute(
                        "UPDATE users SET name = 'Root' WHERE email = $1",
                        params!["root@example.com"],
                    )?;
                    entered.send(()).unwrap();
                    released.recv().unwrap();
                    Ok(())
                })
            })
        };
        in_transaction.recv().unwrap();
        let (answered, answer) = std::sync::mpsc::channel();
        let reader = {
            let store = store.clone();
            std::thread::spawn(move || {
                let name = store.identity().users().unwrap()[0].name.clone();
                store
                    .audit()
                    .record_event("t", "probe", None, "ok")
                    .unwrap();
                answered.send(name).unwrap();
            })
        };
        let seen = answer
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a read and an audit insert answer while a transaction is open");
        assert_eq!(
            seen, None,
            "the open transaction's change is not visible yet"
        );
        release.send(()).unwrap();
        writer.join().unwrap().unwrap();
        reader.join().unwrap();
        assert_eq!(
            store.identity().users().unwrap()[0].name.as_deref(),
            Some("Root")
        );
    }

    #[test]
    fn embedded_concurrent_changes_all_land() {
        let store = Arc::new(StateStore::in_memory().unwrap());
        let threads: Vec<_> = (0..6)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..15 {
                        let email = format!("u{t}-{i}@example.com");
                        store
                            .identity()
                            .create_user("t", &email, None, None)
                            .unwrap();
                        store
                            .audit()
                            .record_event(&email, "probe", None, "ok")
                            .unwrap();
                        assert!(store.identity().principal(&email).unwrap().is_some());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(store.identity().users().unwrap().len(), 90);
        let count = |action: &str| {
            store
                .audit()
                .log(&audit::AuditQuery {
                    action: Some(action.into()),
                    limit: Some(1000),
                    ..Default::default()
                })
                .unwrap()
                .len()
        };
        assert_eq!(count("user.create"), 90);
        assert_eq!(count("probe"), 90);
    }
}
