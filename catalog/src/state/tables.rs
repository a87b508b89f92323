//! What Quiver stores about tables: the registry of committed versions (this file), their
//! definitions ([`definitions`]), sync runs and retention ([`runs`]), and sharded tables'
//! files ([`shards`]).

mod definitions;
mod runs;
mod shards;
mod written;

pub use definitions::{DefinedIn, Definition};
pub use runs::{ExpiredVersion, RunHistory, SyncRun};
pub use shards::{ShardChange, ShardFile};
pub use written::{PERSONAL_PREFIX, WriteCommit, WriteMode, Written};

use super::{Conn, StateStore, Timestamp, params};
use crate::{CatalogError, TableName};

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

/// The tables (see [`StateStore::tables`]).
pub struct Tables<'a>(pub(super) &'a StateStore);

impl Tables<'_> {
    /// Commits a new version of `table`, in one transaction, and returns its number.
    /// Readers see either the previous version or this one, never a mix.
    pub fn commit_version(&self, table: &TableName, new: &NewVersion) -> Result<i64, CatalogError> {
        let (schema, name) = (table.schema(), table.table());
        let description = new.description.as_deref();
        let version = self.0.transaction(|tx| {
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
            let details = VersionDetails {
                watermark: new.watermark.as_deref(),
                profile: new.profile.as_ref().map(|p| p.to_string()),
            };
            insert_version(
                tx,
                table,
                (version, &new.location, new.rows, new.bytes),
                &details,
                description,
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
            StateStore::mark_changed(tx)?;
            Ok(version)
        })?;
        self.0.bump();
        tracing::info!(table = %table, version, rows = new.rows, bytes = new.bytes, "table version committed");
        Ok(version)
    }

    /// One table with a committed version.
    pub fn get(&self, name: &TableName) -> Result<TableEntry, CatalogError> {
        self.entries(
            "WHERE t.schema_name = $1 AND t.table_name = $2",
            params![name.schema(), name.table()],
        )?
        .pop()
        .ok_or_else(|| CatalogError::NotFound(format!("no table `{name}`")))
    }

    /// Sets a table's description.
    pub fn set_table_description(
        &self,
        actor: &str,
        name: &TableName,
        description: Option<&str>,
    ) -> Result<TableEntry, CatalogError> {
        self.get(name)?;
        self.0
            .change(actor, "table.update", &name.to_string(), |tx| {
                tx.execute(
                    "UPDATE tables SET description = $1 WHERE schema_name = $2 AND table_name = $3",
                    params![description, name.schema(), name.table()],
                )?;
                Ok(((), serde_json::json!({ "description": description })))
            })?;
        self.get(name)
    }

    /// Removes a table from the registry: it stops being queryable at once. Its files stay
    /// in the object store (their locations are in the audit entry) until collected.
    pub fn delete_table(&self, actor: &str, name: &TableName) -> Result<(), CatalogError> {
        if self.get(name).is_err() && self.definition(name)?.is_none() {
            return Err(CatalogError::NotFound(format!("no table `{name}`")));
        }
        self.0
            .change(actor, "table.delete", &name.to_string(), |tx| {
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
                    "DELETE FROM written_tables WHERE schema_name = $1 AND table_name = $2",
                ] {
                    tx.execute(statement, params![name.schema(), name.table()])?;
                }
                Ok(((), serde_json::json!({ "locations": locations })))
            })
    }

    /// Every table with a committed version, ordered by name.
    pub fn list(&self) -> Result<Vec<TableEntry>, CatalogError> {
        self.entries("", params![])
    }

    /// The tables with a committed version that `filter` (a `WHERE` clause on `t`, the
    /// `tables` row, taking `values`) keeps, ordered by name.
    fn entries(
        &self,
        filter: &str,
        values: crate::state::value::Params<'_>,
    ) -> Result<Vec<TableEntry>, CatalogError> {
        self.0.conn()?.query_map(
            &format!(
                "SELECT t.schema_name, t.table_name, t.description, v.version, v.location,
                        v.row_count, v.byte_count, v.committed_at
                 FROM tables t JOIN table_versions v
                   ON v.schema_name = t.schema_name AND v.table_name = t.table_name
                  AND v.version = t.current_version
                 {filter}
                 ORDER BY 1, 2"
            ),
            values,
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

/// What a version records beyond its files: an incremental table's watermark and the
/// column profile (both filled in later for listed versions).
#[derive(Debug, Default)]
pub(super) struct VersionDetails<'a> {
    pub(super) watermark: Option<&'a str>,
    pub(super) profile: Option<String>,
}

/// Records `version` (at `location`, with its row and byte counts) of `table` and makes it
/// current, in the caller's transaction: the one place a version is published.
pub(super) fn insert_version(
    tx: &Conn<'_>,
    table: &TableName,
    (version, location, rows, bytes): (i64, &str, i64, i64),
    details: &VersionDetails<'_>,
    description: Option<&str>,
) -> Result<(), CatalogError> {
    let (schema, name) = (table.schema(), table.table());
    tx.execute(
        "INSERT INTO table_versions (schema_name, table_name, version, location, row_count, byte_count)
         VALUES ($1, $2, $3, $4, $5, $6)",
        params![schema, name, version, location, rows, bytes],
    )?;
    tx.execute(
        "INSERT INTO version_details (schema_name, table_name, version, watermark, profile)
         VALUES ($1, $2, $3, $4, $5)",
        params![schema, name, version, details.watermark, details.profile],
    )?;
    tx.execute(
        "UPDATE tables SET current_version = $1, description = coalesce($2, description)
         WHERE schema_name = $3 AND table_name = $4",
        params![version, description, schema, name],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
                .tables()
                .commit_version(&t, &v("file:///a/", 25, None))
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .tables()
                .commit_version(&t, &v("file:///b/", 26, Some("n")))
                .unwrap(),
            2
        );
        assert!(store.generation() > g0);
        let tables = store.tables().list().unwrap();
        assert_eq!(tables.len(), 1);
        assert_eq!(tables[0].version, 2);
        assert_eq!(tables[0].location, "file:///b/");
        assert_eq!(tables[0].description.as_deref(), Some("n"));
    }
}
