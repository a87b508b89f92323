//! Copying a whole state from one database to another: an installation's embedded file
//! into the PostgreSQL database a cluster will share (`quiver state migrate`), and backups
//! into a state file of their own and back (`quiver state backup` / `restore`).

use std::path::Path;

use super::db::Backend;
use super::value::Param;
use super::{StateStore, params};
use crate::CatalogError;

/// Every table of the state, parents first. `schema_migrations` and `state_generation`
/// belong to the target and are not copied.
const TABLES: &[&str] = &[
    "users",
    "groups",
    "memberships",
    "user_attributes",
    "tables",
    "table_versions",
    "version_details",
    "version_files",
    "table_definitions",
    "written_tables",
    "personal_schemas",
    "grants",
    "tags",
    "policies",
    "server_keys",
    "tokens",
    "client_credentials",
    "ended_sessions",
    "sync_runs",
    "webhook_deliveries",
    "audit",
];

/// Sequences and the column they number, advanced past the copied rows.
const SEQUENCES: &[(&str, &str, &str)] = &[
    ("grant_ids", "grants", "id"),
    ("audit_ids", "audit", "id"),
    ("sync_run_ids", "sync_runs", "id"),
];

/// Rows copied, per table.
pub type CopyReport = Vec<(&'static str, usize)>;

impl StateStore {
    /// Copies every row of this state, as of one moment (it may be in use), into `target`,
    /// in one transaction there. Refuses a target that holds anything but the groups every
    /// new state starts with.
    pub fn copy_into(&self, target: &StateStore) -> Result<CopyReport, CatalogError> {
        // One transaction reads every table from one snapshot (serializable on PostgreSQL).
        let data = self.transaction(|tx| {
            let mut data = Vec::new();
            for table in TABLES {
                data.push((
                    *table,
                    tx.query(&format!("SELECT * FROM {table}"), params![])?,
                ));
            }
            Ok(data)
        })?;
        target.transaction(|tx| {
            for table in TABLES {
                let rows: i64 = tx.query_row(
                    &format!("SELECT count(*) FROM {table} WHERE {}", seeded(table)),
                    params![],
                    |r| r.get(0),
                )?;
                if rows > 0 {
                    return Err(CatalogError::Conflict(format!(
                        "the target state is not empty (its `{table}` has {rows} rows); migrate into a new, empty database"
                    )));
                }
            }
            tx.execute("DELETE FROM groups", params![])?;
            let mut report = Vec::new();
            for (table, rows) in &data {
                for row in rows {
                    let placeholders: Vec<String> =
                        (1..=row.0.len()).map(|i| format!("${i}")).collect();
                    let values: Vec<&dyn Param> = row.0.iter().map(|v| v as &dyn Param).collect();
                    tx.execute(
                        &format!("INSERT INTO {table} VALUES ({})", placeholders.join(", ")),
                        &values,
                    )?;
                }
                report.push((*table, rows.len()));
            }
            for (sequence, table, column) in SEQUENCES {
                let next: i64 = tx.query_row(
                    &format!("SELECT coalesce(max({column}), 0) + 1 FROM {table}"),
                    params![],
                    |r| r.get(0),
                )?;
                match target.backend() {
                    Backend::Postgres => {
                        tx.query(
                            &format!("SELECT setval('{sequence}', $1, false)"),
                            params![next],
                        )?;
                    }
                    // DuckDB has no setval: draw numbers until past the copied rows.
                    Backend::DuckDb => {
                        tx.query(
                            &format!("SELECT max(nextval('{sequence}')) FROM range($1)"),
                            params![next - 1],
                        )?;
                    }
                }
            }
            StateStore::mark_changed(tx)?;
            Ok(report)
        })
    }
}

impl StateStore {
    /// Writes a consistent copy of this state into a new state file at `path` (which must
    /// not exist), at this binary's schema version.
    pub fn backup_to(&self, path: &Path) -> Result<CopyReport, CatalogError> {
        if path.exists() {
            return Err(CatalogError::Conflict(format!(
                "{} exists; back up into a new file",
                path.display()
            )));
        }
        let target = StateStore::open(path)?;
        let report = self.copy_into(&target)?;
        target.conn()?.batch("CHECKPOINT")?;
        Ok(report)
    }

    /// Rows per table, as [`StateStore::copy_into`] reports them.
    pub fn row_counts(&self) -> Result<CopyReport, CatalogError> {
        let conn = self.conn()?;
        TABLES
            .iter()
            .map(|table| {
                let rows: i64 =
                    conn.query_row(&format!("SELECT count(*) FROM {table}"), params![], |r| {
                        r.get(0)
                    })?;
                Ok((*table, rows as usize))
            })
            .collect()
    }
}

/// The rows of `table` that a new state does not start with.
fn seeded(table: &str) -> &'static str {
    if table == "groups" {
        "name NOT IN ('Admin', 'Everyone')"
    } else {
        "TRUE"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NewVersion, TableName};

    #[test]
    fn a_state_copies_whole_and_only_into_an_empty_one() {
        let source = StateStore::in_memory().unwrap();
        source
            .identity()
            .ensure_bootstrap_admin("ada@example.com", "a-long-password")
            .unwrap();
        source
            .identity()
            .create_group("ada@example.com", "analysts")
            .unwrap();
        let t: TableName = "s.t".parse().unwrap();
        source
            .tables()
            .commit_version(
                &t,
                &NewVersion {
                    location: "file:///x/".into(),
                    rows: 3,
                    ..NewVersion::default()
                },
            )
            .unwrap();

        let target = StateStore::in_memory().unwrap();
        let report = source.copy_into(&target).unwrap();
        assert!(report.contains(&("users", 1)) && report.contains(&("groups", 3)));
        assert!(
            target
                .identity()
                .authenticate_password("ada@example.com", "a-long-password")
                .unwrap()
                .is_some_and(|p| p.is_admin())
        );
        assert_eq!(target.tables().list().unwrap()[0].rows, 3);
        // New rows number on past the copied ones.
        target
            .identity()
            .create_group("ada@example.com", "ops")
            .unwrap();
        let ids: Vec<i64> = target
            .audit()
            .log(&Default::default())
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(
            ids.len(),
            ids.iter().collect::<std::collections::HashSet<_>>().len()
        );

        let again = source.copy_into(&target).unwrap_err();
        assert!(
            matches!(&again, CatalogError::Conflict(m) if m.contains("not empty")),
            "{again}"
        );
    }
}
