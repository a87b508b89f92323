//! The history of sync runs, and which old versions have outlived their retention.

use std::collections::HashSet;
use std::time::Duration;

use super::Tables;
use crate::state::cluster::REPLICA_TIMEOUT;
use crate::state::{Row, Timestamp, params};

use crate::{CatalogError, TableName};

/// One sync run.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncRun {
    /// Run id.
    pub id: i64,
    /// `schema.table`.
    pub table: String,
    /// `schedule`, `manual` or `retry`.
    pub trigger: String,
    /// Who asked (manual runs).
    pub actor: Option<String>,
    /// When it started (UTC, ISO 8601).
    pub started_at: String,
    /// When it ended, if it has.
    pub ended_at: Option<String>,
    /// `running`, `succeeded`, `failed` or `interrupted` (the server stopped during it).
    pub status: String,
    /// Rows in the version it published.
    pub rows: Option<i64>,
    /// Parquet bytes it wrote.
    pub bytes: Option<i64>,
    /// The version it published.
    pub version: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// What the scheduler needs to know about a table's recent runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunHistory {
    /// Start of the last successful run (seconds since the epoch).
    pub last_success: Option<i64>,
    /// Failed runs since then.
    pub failures: u32,
    /// End of the last failed run (seconds since the epoch).
    pub last_failure: Option<i64>,
}

/// A version past its retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredVersion {
    /// Its table.
    pub table: TableName,
    /// Its number.
    pub version: i64,
    /// Its folder.
    pub location: String,
}

const RUN_COLUMNS: &str = "id, schema_name || '.' || table_name, trigger, actor,
    started_at, ended_at, status, row_count, byte_count, version, error";

fn run_from_row(r: &Row) -> Result<SyncRun, CatalogError> {
    Ok(SyncRun {
        id: r.get(0)?,
        table: r.get(1)?,
        trigger: r.get(2)?,
        actor: r.get(3)?,
        started_at: r.get::<Timestamp>(4)?.iso(),
        ended_at: r.get::<Option<Timestamp>>(5)?.map(Timestamp::iso),
        status: r.get(6)?,
        rows: r.get(7)?,
        bytes: r.get(8)?,
        version: r.get(9)?,
        error: r.get(10)?,
    })
}

impl Tables<'_> {
    /// Records the start of a run on `replica`; returns its id. A table whose sync is
    /// running on a live replica (this one or another sharing the state) is a conflict.
    pub fn start_run(
        &self,
        table: &TableName,
        trigger: &str,
        actor: Option<&str>,
        replica: &str,
    ) -> Result<i64, CatalogError> {
        let live = Timestamp::now().minus(REPLICA_TIMEOUT).millis();
        self.0.transaction(|tx| {
            let running: Option<i64> = tx.query_opt(
                "SELECT s.id FROM sync_runs s
                   JOIN sync_run_replicas o ON o.run = s.id
                   JOIN replicas r ON r.id = o.replica
                 WHERE s.schema_name = $1 AND s.table_name = $2 AND s.status = 'running'
                   AND r.seen_at > $3",
                params![table.schema(), table.table(), live],
                |r| r.get(0),
            )?;
            if let Some(run) = running {
                return Err(CatalogError::Conflict(format!(
                    "a sync of `{table}` is already running (run {run})"
                )));
            }
            insert_run(tx, table, trigger, actor, replica)
        })
    }

    /// Records a failed run; the table keeps its previous version.
    pub fn fail_run(&self, run: i64, error: &str) -> Result<(), CatalogError> {
        self.0.conn()?.execute(
            "UPDATE sync_runs SET status = 'failed', ended_at = current_timestamp, error = $1
             WHERE id = $2",
            params![error, run],
        )?;
        Ok(())
    }

    /// Marks a run that committed its versions itself (a Jira job) as succeeded.
    pub fn succeed_run(&self, run: i64, rows: i64) -> Result<(), CatalogError> {
        self.0.conn()?.execute(
            "UPDATE sync_runs SET status = 'succeeded', ended_at = current_timestamp, row_count = $1
             WHERE id = $2",
            params![rows, run],
        )?;
        Ok(())
    }

    /// Marks runs left `running` by a process that stopped as interrupted: every one
    /// (`all`, at the start of the one process of an embedded state) or those of replicas
    /// no longer alive (the leader of a cluster, on every tick); returns their tables.
    pub fn interrupt_runs(&self, all: bool) -> Result<Vec<TableName>, CatalogError> {
        let live = Timestamp::now().minus(REPLICA_TIMEOUT).millis();
        let tables: Vec<(String, String)> = self.0.conn()?.query_map(
            "UPDATE sync_runs SET status = 'interrupted', ended_at = current_timestamp,
                    error = 'the server running the sync stopped; the previous version kept serving'
             WHERE status = 'running'
               AND ($1 OR id NOT IN (SELECT o.run FROM sync_run_replicas o
                                     JOIN replicas r ON r.id = o.replica
                                     WHERE r.seen_at > $2))
             RETURNING schema_name, table_name",
            params![all, live],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mut names: Vec<TableName> = tables
            .into_iter()
            .filter_map(|(schema, table)| TableName::new(&schema, &table).ok())
            .collect();
        names.sort_by_key(|t| t.to_string());
        names.dedup();
        Ok(names)
    }

    /// The largest run id handed out so far (0 before the first); a run started later has a
    /// larger one.
    pub fn last_run(&self) -> Result<i64, CatalogError> {
        self.0.conn()?.query_row(
            "SELECT coalesce(max(id), 0) FROM sync_runs",
            params![],
            |r| r.get(0),
        )
    }

    /// The tables with a run still `running` or started after run `after`: files listed
    /// since [`Self::last_run`] said `after` may belong to them, so a sweep leaves them.
    pub fn tables_in_use(&self, after: i64) -> Result<HashSet<TableName>, CatalogError> {
        let tables: Vec<(String, String)> = self.0.conn()?.query_map(
            "SELECT DISTINCT schema_name, table_name FROM sync_runs
             WHERE status = 'running' OR id > $1",
            params![after],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(tables
            .into_iter()
            .filter_map(|(schema, table)| TableName::new(&schema, &table).ok())
            .collect())
    }

    /// Sync runs, newest first: of one table or all, before run id `before`, at most `limit`.
    pub fn sync_runs(
        &self,
        table: Option<&TableName>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<SyncRun>, CatalogError> {
        let conn = self.0.conn()?;
        let (schema, name) = match table {
            Some(t) => (Some(t.schema()), Some(t.table())),
            None => (None, None),
        };
        let runs = conn.query_map(
            &format!(
                "SELECT {RUN_COLUMNS} FROM sync_runs
                 WHERE ($1::VARCHAR IS NULL OR (schema_name = $1 AND table_name = $2))
                   AND ($3::BIGINT IS NULL OR id < $3)
                 ORDER BY id DESC LIMIT $4"
            ),
            params![schema, name, before, limit.clamp(1, 1000) as i64],
            run_from_row,
        )?;
        Ok(runs)
    }

    /// One run.
    pub fn sync_run(&self, id: i64) -> Result<SyncRun, CatalogError> {
        self.0
            .conn()?
            .query_opt(
                &format!("SELECT {RUN_COLUMNS} FROM sync_runs WHERE id = $1"),
                params![id],
                run_from_row,
            )?
            .ok_or_else(|| CatalogError::NotFound(format!("no sync run {id}")))
    }

    /// The last success and the failures since, for scheduling and backoff.
    pub fn run_history(&self, table: &TableName) -> Result<RunHistory, CatalogError> {
        let conn = self.0.conn()?;
        let (last_id, last_success): (Option<i64>, Option<Timestamp>) = conn.query_row(
            "SELECT max(id), max(started_at) FROM sync_runs
             WHERE schema_name = $1 AND table_name = $2 AND status = 'succeeded'",
            params![table.schema(), table.table()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let (failures, last_failure): (i64, Option<Timestamp>) = conn.query_row(
            "SELECT count(*), max(ended_at) FROM sync_runs
             WHERE schema_name = $1 AND table_name = $2 AND status IN ('failed', 'interrupted')
               AND id > coalesce($3, 0)",
            params![table.schema(), table.table(), last_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(RunHistory {
            last_success: last_success.map(Timestamp::unix),
            failures: failures as u32,
            last_failure: last_failure.map(Timestamp::unix),
        })
    }

    // ----- versions -------------------------------------------------------------------

    /// The watermark and profile stored with a version.
    pub fn version_details(
        &self,
        table: &TableName,
        version: i64,
    ) -> Result<(Option<String>, Option<serde_json::Value>), CatalogError> {
        let row: Option<(Option<String>, Option<String>)> = self.0.conn()?.query_opt(
            "SELECT watermark, profile FROM version_details
                 WHERE schema_name = $1 AND table_name = $2 AND version = $3",
            params![table.schema(), table.table(), version],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let (watermark, profile) = row.unwrap_or_default();
        Ok((
            watermark,
            profile.and_then(|p| serde_json::from_str(&p).ok()),
        ))
    }

    /// Versions replaced more than `retention` ago.
    pub fn expired_versions(
        &self,
        retention: Duration,
    ) -> Result<Vec<ExpiredVersion>, CatalogError> {
        let conn = self.0.conn()?;
        let rows: Vec<(String, String, i64, String)> = conn.query_map(
            "SELECT v.schema_name, v.table_name, v.version, v.location
             FROM table_versions v
             JOIN tables t ON t.schema_name = v.schema_name AND t.table_name = v.table_name
             JOIN table_versions n ON n.schema_name = v.schema_name
                  AND n.table_name = v.table_name AND n.version = v.version + 1
             WHERE v.version < t.current_version
               AND n.committed_at < $1
             ORDER BY 1, 2, 3",
            params![Timestamp::now().minus(retention)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        rows.into_iter()
            .map(|(schema, table, version, location)| {
                Ok(ExpiredVersion {
                    table: TableName::new(&schema, &table)?,
                    version,
                    location,
                })
            })
            .collect()
    }

    /// Forgets an expired version and returns what to remove next: its folder (a URL with a
    /// trailing slash) or, for a sharded version, its files no other version lists.
    pub fn forget_version(
        &self,
        table: &TableName,
        version: i64,
    ) -> Result<Vec<String>, CatalogError> {
        let key = params![table.schema(), table.table(), version];
        self.0.transaction(|tx| {
        let listed: i64 = tx.query_row(
            "SELECT count(*) FROM version_files
             WHERE schema_name = $1 AND table_name = $2 AND version = $3",
            key,
            |r| r.get(0),
        )?;
        let unused: Vec<String> = if listed > 0 {
            tx.query_map(
                "SELECT url FROM version_files f
                 WHERE schema_name = $1 AND table_name = $2 AND version = $3
                   AND NOT EXISTS (SELECT 1 FROM version_files o
                       WHERE o.schema_name = f.schema_name AND o.table_name = f.table_name
                         AND o.url = f.url AND o.version <> f.version)
                 ORDER BY url",
                key,
                |r| r.get(0),
            )?
        } else {
            tx.query_opt(
                "SELECT location FROM table_versions
                 WHERE schema_name = $1 AND table_name = $2 AND version = $3",
                key,
                |r| r.get(0),
            )?
            .into_iter()
            .collect()
        };
        for statement in [
            "DELETE FROM table_versions WHERE schema_name = $1 AND table_name = $2 AND version = $3",
            "DELETE FROM version_details WHERE schema_name = $1 AND table_name = $2 AND version = $3",
            "DELETE FROM version_files WHERE schema_name = $1 AND table_name = $2 AND version = $3",
        ] {
            tx.execute(statement, key)?;
        }
        Ok(unused)
        })
    }

    /// Every folder and listed file a version points at; anything else under `tables/` is
    /// an orphan.
    pub fn version_locations(&self) -> Result<HashSet<String>, CatalogError> {
        let conn = self.0.conn()?;
        let locations = conn.query_map(
            "SELECT location FROM table_versions UNION SELECT url FROM version_files",
            params![],
            |r| r.get(0),
        )?;
        Ok(locations.into_iter().collect())
    }
}

/// Records a run of `table` as running on `replica`; returns its id.
pub(super) fn insert_run(
    tx: &crate::state::Conn<'_>,
    table: &TableName,
    trigger: &str,
    actor: Option<&str>,
    replica: &str,
) -> Result<i64, CatalogError> {
    let run: i64 = tx.query_row(
        "INSERT INTO sync_runs (schema_name, table_name, trigger, actor, status)
         VALUES ($1, $2, $3, $4, 'running') RETURNING id",
        params![table.schema(), table.table(), trigger, actor],
        |r| r.get(0),
    )?;
    tx.execute(
        "INSERT INTO sync_run_replicas (run, replica) VALUES ($1, $2)",
        params![run, replica],
    )?;
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewVersion;
    use crate::state::StateStore;
    use crate::state::tables::definitions::tests::def;

    #[test]
    fn definitions_runs_and_retention() {
        let store = StateStore::in_memory().unwrap();
        let t: TableName = "sales.orders".parse().unwrap();
        store
            .tables()
            .define_table("admin@x.io", &t, &def("sales.orders"))
            .unwrap();
        assert!(matches!(
            store
                .tables()
                .define_table("admin@x.io", &t, &def("sales.orders")),
            Err(CatalogError::Conflict(_))
        ));
        let run = store
            .tables()
            .start_run(&t, "manual", Some("admin@x.io"), "r1")
            .unwrap();
        store.tables().fail_run(run, "boom").unwrap();
        let history = store.tables().run_history(&t).unwrap();
        assert_eq!((history.last_success, history.failures), (None, 1));

        let run = store
            .tables()
            .start_run(&t, "schedule", None, "r1")
            .unwrap();
        let new = NewVersion {
            location: "file:///v1/".into(),
            rows: 3,
            bytes: 10,
            watermark: Some("2026-01-01".into()),
            profile: Some(serde_json::json!({"id": {"nulls": 0}})),
            run: Some(run),
            ..NewVersion::default()
        };
        assert_eq!(store.tables().commit_version(&t, &new).unwrap(), 1);
        let done = store.tables().sync_run(run).unwrap();
        assert_eq!(
            (done.status.as_str(), done.version, done.rows),
            ("succeeded", Some(1), Some(3))
        );
        assert_eq!(store.tables().run_history(&t).unwrap().failures, 0);
        let (watermark, profile) = store.tables().version_details(&t, 1).unwrap();
        assert_eq!(watermark.as_deref(), Some("2026-01-01"));
        assert_eq!(profile.unwrap()["id"]["nulls"], 0);

        store
            .tables()
            .commit_version(
                &t,
                &NewVersion {
                    location: "file:///v2/".into(),
                    run: None,
                    ..new.clone()
                },
            )
            .unwrap();
        assert!(
            store
                .tables()
                .expired_versions(Duration::from_secs(3600))
                .unwrap()
                .is_empty()
        );
        let expired = store.tables().expired_versions(Duration::ZERO).unwrap();
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].location, "file:///v1/");
        assert_eq!(
            store.tables().forget_version(&t, 1).unwrap(),
            vec!["file:///v1/"]
        );
        assert_eq!(
            store.tables().version_locations().unwrap(),
            HashSet::from(["file:///v2/".to_string()])
        );

        let running = store
            .tables()
            .start_run(&t, "schedule", None, "r1")
            .unwrap();
        assert_eq!(
            store.tables().interrupt_runs(true).unwrap(),
            vec![t.clone()]
        );
        assert_eq!(
            store.tables().sync_run(running).unwrap().status,
            "interrupted"
        );
        assert_eq!(
            store.tables().sync_runs(Some(&t), None, 10).unwrap().len(),
            3
        );
        assert_eq!(
            store
                .tables()
                .sync_runs(None, Some(running), 10)
                .unwrap()
                .len(),
            2
        );

        // A run on a live replica holds the table; once its replica is gone, the leader's
        // sweep interrupts it.
        let r1 = crate::state::cluster::Replica {
            id: "r1".into(),
            advertise: None,
        };
        store.cluster().beat(&r1).unwrap();
        let live = store.tables().start_run(&t, "manual", None, "r1").unwrap();
        assert!(matches!(
            store.tables().start_run(&t, "manual", None, "r2"),
            Err(CatalogError::Conflict(_))
        ));
        assert!(
            store.tables().interrupt_runs(false).unwrap().is_empty(),
            "its replica lives"
        );
        store.cluster().leave("r1").unwrap();
        assert_eq!(
            store.tables().interrupt_runs(false).unwrap(),
            vec![t.clone()]
        );
        assert_eq!(store.tables().sync_run(live).unwrap().status, "interrupted");
        // The fenced-off run (its replica may yet be alive behind a partition, its files
        // swept) publishes nothing: the table stays at the version it had.
        let current = store.tables().get(&t).unwrap().version;
        let zombie = NewVersion {
            location: "file:///zombie/".into(),
            run: Some(live),
            ..new.clone()
        };
        assert!(matches!(
            store.tables().commit_version(&t, &zombie),
            Err(CatalogError::Conflict(_))
        ));
        assert_eq!(store.tables().get(&t).unwrap().version, current);
        assert!(
            !store
                .tables()
                .version_locations()
                .unwrap()
                .contains("file:///zombie/")
        );

        store.tables().delete_table("admin@x.io", &t).unwrap();
        assert!(store.tables().definitions().unwrap().is_empty());
    }
}
