//! Sharded tables: a version lists its parquet files, one per shard (a month of Jira issues,
//! say). A change rewrites only the shards it touches and commits a version listing the new
//! files beside the untouched ones, which are shared, never copied.
//!
//! The replacement happens inside the commit transaction, against the newest version, so
//! writers of different shards never undo each other's change; writers of one shard must
//! take turns (the Jira processor holds a lock per month from reading a shard to
//! committing it).

use crate::state::{Conn, params};

use super::Tables;
use crate::state::StateStore;
use crate::{CatalogError, TableName};

/// One shard's file in a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardFile {
    /// The shard's key, e.g. `2026-03`.
    pub shard: String,
    /// URL of the parquet file.
    pub url: String,
    /// Rows in the file.
    pub rows: i64,
    /// Bytes of the file.
    pub bytes: i64,
}

/// New files for some shards of one table.
#[derive(Debug, Clone)]
pub struct ShardChange {
    /// The table.
    pub table: TableName,
    /// The table's folder URL (trailing slash), recorded as the version's location.
    pub location: String,
    /// Description to set (kept when `None`).
    pub description: Option<String>,
    /// Files replacing (or adding) their shards; other shards stay as they are.
    pub files: Vec<ShardFile>,
}

impl Tables<'_> {
    /// Commits a new version of each changed table, all in one transaction (readers see
    /// every table before the change or every table after it). Returns the versions.
    pub fn commit_shards(&self, changes: &[ShardChange]) -> Result<Vec<i64>, CatalogError> {
        let versions = self.0.transaction(|tx| {
            let mut versions = Vec::new();
            for change in changes.iter().filter(|c| !c.files.is_empty()) {
                let (schema, name) = (change.table.schema(), change.table.table());
                tx.execute(
                    "INSERT INTO tables (schema_name, table_name, description) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                    params![schema, name, change.description],
                )?;
                let (current, version): (Option<i64>, i64) = tx.query_row(
                    "SELECT (SELECT current_version FROM tables WHERE schema_name = $1 AND table_name = $2),
                            coalesce(max(version), 0) + 1
                     FROM table_versions WHERE schema_name = $1 AND table_name = $2",
                    params![schema, name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                carry_files(tx, &change.table, current, version)?;
                for file in &change.files {
                    tx.execute(
                        "DELETE FROM version_files
                         WHERE schema_name = $1 AND table_name = $2 AND version = $3 AND shard = $4",
                        params![schema, name, version, file.shard],
                    )?;
                }
                publish_listed(
                    tx,
                    &change.table,
                    version,
                    &change.location,
                    &change.files,
                    change.description.as_deref(),
                )?;
                versions.push(version);
            }
            StateStore::mark_changed(tx)?;
            Ok(versions)
        })?;
        self.0.bump();
        for (change, version) in changes.iter().zip(&versions) {
            let shards: Vec<&str> = change.files.iter().map(|f| f.shard.as_str()).collect();
            tracing::info!(table = %change.table, version, ?shards, "sharded version committed");
        }
        Ok(versions)
    }

    /// The files of a version of a sharded table, by shard; empty for a folder version.
    pub fn shard_files(
        &self,
        table: &TableName,
        version: i64,
    ) -> Result<Vec<ShardFile>, CatalogError> {
        let conn = self.0.conn()?;
        let files = conn.query_map(
            "SELECT shard, url, row_count, byte_count FROM version_files
             WHERE schema_name = $1 AND table_name = $2 AND version = $3 ORDER BY shard",
            params![table.schema(), table.table(), version],
            |r| {
                Ok(ShardFile {
                    shard: r.get(0)?,
                    url: r.get(1)?,
                    rows: r.get(2)?,
                    bytes: r.get(3)?,
                })
            },
        )?;
        Ok(files)
    }

    /// The files of the current version of a sharded table (none before its first commit).
    pub fn current_shards(&self, table: &TableName) -> Result<Vec<ShardFile>, CatalogError> {
        match self.get(table) {
            Ok(entry) => self.shard_files(table, entry.version),
            Err(CatalogError::NotFound(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

/// Lists version `from`'s files (none when `None`) for version `to` of `table` too: shared,
/// never copied.
pub(super) fn carry_files(
    tx: &Conn<'_>,
    table: &TableName,
    from: Option<i64>,
    to: i64,
) -> Result<(), CatalogError> {
    tx.execute(
        "INSERT INTO version_files
         SELECT schema_name, table_name, $1, shard, url, row_count, byte_count
         FROM version_files WHERE schema_name = $2 AND table_name = $3 AND version = $4",
        params![to, table.schema(), table.table(), from],
    )?;
    Ok(())
}

/// Lists `files` for `version` of `table` beside those carried over, and makes it the
/// table's current version at `location`, with `description` when one is given. Returns the
/// version's rows and bytes, summed over all its files.
pub(super) fn publish_listed(
    tx: &Conn<'_>,
    table: &TableName,
    version: i64,
    location: &str,
    files: &[ShardFile],
    description: Option<&str>,
) -> Result<(i64, i64), CatalogError> {
    let (schema, name) = (table.schema(), table.table());
    for file in files {
        tx.execute(
            "INSERT INTO version_files VALUES ($1, $2, $3, $4, $5, $6, $7)",
            params![
                schema, name, version, file.shard, file.url, file.rows, file.bytes
            ],
        )?;
    }
    let (rows, bytes): (i64, i64) = tx.query_row(
        "SELECT coalesce(sum(row_count), 0)::BIGINT, coalesce(sum(byte_count), 0)::BIGINT
         FROM version_files WHERE schema_name = $1 AND table_name = $2 AND version = $3",
        params![schema, name, version],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    super::insert_version(
        tx,
        table,
        (version, location, rows, bytes),
        &super::VersionDetails::default(),
        description,
    )?;
    Ok((rows, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(shard: &str, url: &str, rows: i64) -> ShardFile {
        ShardFile {
            shard: shard.into(),
            url: url.into(),
            rows,
            bytes: rows * 10,
        }
    }

    fn change(table: &TableName, files: Vec<ShardFile>) -> ShardChange {
        ShardChange {
            table: table.clone(),
            location: "file:///t/".into(),
            description: None,
            files,
        }
    }

    #[test]
    fn shards_are_replaced_one_by_one_and_shared_files_outlive_their_versions() {
        let store = StateStore::in_memory().unwrap();
        let issues: TableName = "jira.issues".parse().unwrap();
        let comments: TableName = "jira.comments".parse().unwrap();
        let versions = store
            .tables()
            .commit_shards(&[
                change(
                    &issues,
                    vec![file("2026-01", "u1", 2), file("2026-02", "u2", 3)],
                ),
                change(&comments, vec![file("2026-01", "c1", 1)]),
            ])
            .unwrap();
        assert_eq!(versions, vec![1, 1]);
        store
            .tables()
            .commit_shards(&[change(&issues, vec![file("2026-02", "u3", 4)])])
            .unwrap();
        assert_eq!(
            store.tables().current_shards(&issues).unwrap(),
            vec![file("2026-01", "u1", 2), file("2026-02", "u3", 4)]
        );
        let entry = store.tables().get(&issues).unwrap();
        assert_eq!((entry.version, entry.rows, entry.bytes), (2, 6, 60));
        assert_eq!(store.tables().current_shards(&comments).unwrap().len(), 1);

        // Version 1's own file goes with it; the shared one stays.
        assert_eq!(
            store.tables().forget_version(&issues, 1).unwrap(),
            vec!["u2"]
        );
        let known = store.tables().version_locations().unwrap();
        assert!(known.contains("u1") && known.contains("u3") && !known.contains("u2"));
    }
}
