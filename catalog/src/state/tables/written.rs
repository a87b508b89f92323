//! Tables users write (ingest, `CREATE TABLE`, `INSERT`): each write is one version listing
//! its parquet files, committed in one transaction like a sync's. An append lists the
//! previous version's files (shared, never copied) and its own; a replace lists only its
//! own, and loses to any other change committed since it began.
//!
//! Also the personal schemas: each user's, created on their first write, under a name that
//! is kept when anything else about the user changes.

use std::collections::{BTreeMap, HashMap};

use super::shards::{carry_files, publish_listed};
use super::{ShardFile, Tables};
use crate::state::params;
use crate::{CatalogError, TableName};

/// How a write changes its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// A new table; refused when one of that name exists.
    Create,
    /// Rows added to an existing table.
    Append,
    /// The table's rows replaced (created when missing). `base` is the version the writer
    /// started from (`None`: no table then): if another change was committed since, the
    /// write is refused as aborted, so of two replaces one wins and the other is told.
    Replace {
        /// The current version when the write began.
        base: Option<i64>,
    },
}

/// One write, ready to commit.
#[derive(Debug, Clone)]
pub struct WriteCommit {
    /// The table, as stored (a personal schema under its own name).
    pub table: TableName,
    /// How the version relates to the previous one.
    pub mode: WriteMode,
    /// The run folder the files were written into (trailing slash).
    pub location: String,
    /// The files written.
    pub files: Vec<ShardFile>,
    /// The run recorded for the write (see [`Tables::start_write`]), marked succeeded.
    pub run: i64,
    /// Audit detail: what the write read, the statement, the client.
    pub detail: serde_json::Value,
}

/// What a committed write made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The new version.
    pub version: i64,
    /// Rows the write added.
    pub rows: i64,
    /// Rows of the table now.
    pub table_rows: i64,
}

/// Schemas that hold users' personal tables start with this.
pub const PERSONAL_PREFIX: &str = "home_";

impl Tables<'_> {
    /// Records a write of `table` by `actor` as running on `replica`, so the sweep leaves
    /// its files alone and a dead replica's write is marked interrupted. Writes of one
    /// table may run side by side (unlike syncs).
    pub fn start_write(
        &self,
        table: &TableName,
        actor: &str,
        replica: &str,
    ) -> Result<i64, CatalogError> {
        self.0
            .transaction(|tx| super::runs::insert_run(tx, table, "write", Some(actor), replica))
    }

    /// Commits a write as the table's next version, audited as `actor` with its lineage.
    pub fn commit_write(&self, actor: &str, write: &WriteCommit) -> Result<Written, CatalogError> {
        let (schema, name) = (write.table.schema(), write.table.table());
        let added: i64 = write.files.iter().map(|f| f.rows).sum();
        let mut detail = write.detail.clone();
        let written = self.0.change(actor, "table.write", &write.table.to_string(), |tx| {
            let created = tx.execute(
                "INSERT INTO tables (schema_name, table_name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                params![schema, name],
            )? == 1;
            if created {
                tx.execute(
                    "INSERT INTO written_tables (schema_name, table_name, created_by) VALUES ($1, $2, $3)",
                    params![schema, name, actor],
                )?;
            }
            // Takes the table's row, so writers of one table commit one after the other.
            tx.execute(
                "UPDATE tables SET current_version = current_version
                 WHERE schema_name = $1 AND table_name = $2",
                params![schema, name],
            )?;
            let (current, version): (Option<i64>, i64) = tx.query_row(
                "SELECT (SELECT current_version FROM tables WHERE schema_name = $1 AND table_name = $2),
                        coalesce(max(version), 0) + 1
                 FROM table_versions WHERE schema_name = $1 AND table_name = $2",
                params![schema, name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            match write.mode {
                WriteMode::Create if current.is_some() => {
                    return Err(CatalogError::AlreadyExists(format!(
                        "table `{}` already exists (append to it, or replace it)",
                        write.table
                    )));
                }
                WriteMode::Append if current.is_none() => {
                    return Err(CatalogError::NotFound(format!("no table `{}`", write.table)));
                }
                WriteMode::Replace { base } if base != current => {
                    return Err(CatalogError::Aborted(format!(
                        "table `{}` changed while you wrote it (now version {}); try again",
                        write.table,
                        current.unwrap_or(0)
                    )));
                }
                WriteMode::Append => carry_files(tx, &write.table, current, version)?,
                _ => {}
            }
            let (rows, _) =
                publish_listed(tx, &write.table, version, &write.location, &write.files, None)?;
            let written_bytes: i64 = write.files.iter().map(|f| f.bytes).sum();
            if tx.execute(
                "UPDATE sync_runs SET status = 'succeeded', ended_at = current_timestamp,
                        row_count = $1, byte_count = $2, version = $3
                 WHERE id = $4 AND status = 'running'",
                params![added, written_bytes, version, write.run],
            )? == 0
            {
                return Err(CatalogError::Conflict(format!(
                    "the write of `{}` was marked interrupted (this server was out of touch with the state database); nothing was published",
                    write.table
                )));
            }
            if let Some(object) = detail.as_object_mut() {
                object.insert("version".into(), version.into());
                object.insert("rows".into(), added.into());
                object.insert("bytes".into(), written_bytes.into());
            }
            Ok((
                Written {
                    version,
                    rows: added,
                    table_rows: rows,
                },
                detail.clone(),
            ))
        })?;
        tracing::info!(table = %write.table, version = written.version, rows = added, actor, "write committed");
        Ok(written)
    }

    /// Whether `table` was made by a user's write (not by a sync or the demo).
    pub fn is_written(&self, table: &TableName) -> Result<bool, CatalogError> {
        Ok(self
            .0
            .conn()?
            .query_opt(
                "SELECT 1 FROM written_tables WHERE schema_name = $1 AND table_name = $2",
                params![table.schema(), table.table()],
                |r| r.get::<i32>(0),
            )?
            .is_some())
    }

    /// Puts `remark` on `column` of the written table `table` (on the table itself when
    /// `column` is `None`); `None` removes it.
    pub fn set_remark(
        &self,
        actor: &str,
        table: &TableName,
        column: Option<&str>,
        remark: Option<&str>,
    ) -> Result<(), CatalogError> {
        let detail = serde_json::json!({ "column": column, "remark": remark });
        self.0
            .change(actor, "table.comment", &table.to_string(), |tx| {
                let (schema, name) = (table.schema(), table.table());
                let Some(column) = column else {
                    tx.execute(
                        "UPDATE tables SET description = $1 WHERE schema_name = $2 AND table_name = $3",
                        params![remark, schema, name],
                    )?;
                    return Ok(((), detail.clone()));
                };
                let stored: Option<Option<String>> = tx.query_opt(
                    "SELECT remarks FROM written_tables WHERE schema_name = $1 AND table_name = $2",
                    params![schema, name],
                    |r| r.get(0),
                )?;
                let Some(stored) = stored else {
                    return Err(CatalogError::NotFound(format!("no written table `{table}`")));
                };
                let mut remarks = parse_remarks(stored.as_deref());
                match remark {
                    Some(remark) => remarks.insert(column.to_string(), remark.to_string()),
                    None => remarks.remove(column),
                };
                tx.execute(
                    "UPDATE written_tables SET remarks = $1 WHERE schema_name = $2 AND table_name = $3",
                    params![serde_json::to_string(&remarks).unwrap_or_default(), schema, name],
                )?;
                Ok(((), detail.clone()))
            })
    }

    /// The remarks on every table's columns: from the definitions of synced tables, and
    /// those users put on the tables they wrote.
    pub fn column_remarks(
        &self,
    ) -> Result<HashMap<TableName, BTreeMap<String, String>>, CatalogError> {
        let mut all: HashMap<_, _> = self
            .definitions()?
            .into_iter()
            .map(|d| {
                let remarks = d
                    .def
                    .columns
                    .iter()
                    .filter_map(|(c, def)| Some((c.clone(), def.description()?.to_string())))
                    .collect();
                (d.name, remarks)
            })
            .collect();
        let written: Vec<(String, String, String)> = self.0.conn()?.query_map(
            "SELECT schema_name, table_name, remarks FROM written_tables WHERE remarks IS NOT NULL",
            params![],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        for (schema, table, remarks) in written {
            all.insert(
                TableName::new(&schema, &table)?,
                parse_remarks(Some(&remarks)),
            );
        }
        Ok(all)
    }

    /// A table of `schema` that users did not write (a synced or demo table), if any.
    pub fn kept_by_syncs(&self, schema: &str) -> Result<Option<TableName>, CatalogError> {
        let defined = self
            .definitions()?
            .into_iter()
            .map(|d| d.name)
            .find(|name| name.schema() == schema);
        if defined.is_some() {
            return Ok(defined);
        }
        self.0
            .conn()?
            .query_opt(
                "SELECT t.table_name FROM tables t
                 WHERE t.schema_name = $1 AND NOT EXISTS (SELECT 1 FROM written_tables w
                   WHERE w.schema_name = t.schema_name AND w.table_name = t.table_name)
                 ORDER BY 1",
                params![schema],
                |r| r.get::<String>(0),
            )?
            .map(|table| TableName::new(schema, &table))
            .transpose()
    }

    /// The personal schema of `email`, if they have written anything yet.
    pub fn personal_schema(&self, email: &str) -> Result<Option<String>, CatalogError> {
        self.0.conn()?.query_opt(
            "SELECT schema_name FROM personal_schemas WHERE email = $1",
            params![email],
            |r| r.get(0),
        )
    }

    /// Every personal schema and its owner.
    pub fn personal_schemas(&self) -> Result<Vec<(String, String)>, CatalogError> {
        self.0.conn()?.query_map(
            "SELECT schema_name, email FROM personal_schemas ORDER BY 1",
            params![],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// The personal schema of `email`, named on first use `home_<local part>` (letters,
    /// digits and `_`; `_2`, `_3`, … when taken). The name stays the user's for good.
    pub fn claim_personal_schema(&self, email: &str) -> Result<String, CatalogError> {
        if let Some(schema) = self.personal_schema(email)? {
            return Ok(schema);
        }
        let local = email.split('@').next().unwrap_or(email);
        let mut base: String = local
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9') => c,
                _ => '_',
            })
            .collect();
        base.truncate(48);
        let base = format!("{PERSONAL_PREFIX}{}", base.trim_matches('_'));
        self.0.transaction(|tx| {
            if let Some(schema) = tx.query_opt(
                "SELECT schema_name FROM personal_schemas WHERE email = $1",
                params![email],
                |r| r.get::<String>(0),
            )? {
                return Ok(schema);
            }
            let mut n = 1;
            loop {
                let name = if n == 1 {
                    base.clone()
                } else {
                    format!("{base}_{n}")
                };
                if tx.execute(
                    "INSERT INTO personal_schemas (schema_name, email) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                    params![name, email],
                )? == 1
                {
                    return Ok(name);
                }
                n += 1;
            }
        })
    }

    /// The current version of a written table that has no profile yet, with its files'
    /// URLs (the orchestrator profiles written tables after the fact).
    pub fn unprofiled_write(&self) -> Result<Option<(TableName, i64, Vec<String>)>, CatalogError> {
        let found: Option<(String, String, i64)> = self.0.conn()?.query_opt(
            "SELECT t.schema_name, t.table_name, t.current_version
             FROM tables t
             JOIN written_tables w ON w.schema_name = t.schema_name AND w.table_name = t.table_name
             JOIN version_details d ON d.schema_name = t.schema_name
              AND d.table_name = t.table_name AND d.version = t.current_version
             WHERE d.profile IS NULL
             ORDER BY 1, 2",
            params![],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let Some((schema, table, version)) = found else {
            return Ok(None);
        };
        let table = TableName::new(&schema, &table)?;
        let files = self
            .shard_files(&table, version)?
            .into_iter()
            .map(|f| f.url)
            .collect();
        Ok(Some((table, version, files)))
    }

    /// Stores the profile of a version made before its profile was known.
    pub fn set_profile(
        &self,
        table: &TableName,
        version: i64,
        profile: &serde_json::Value,
    ) -> Result<(), CatalogError> {
        self.0.conn()?.execute(
            "UPDATE version_details SET profile = $1
             WHERE schema_name = $2 AND table_name = $3 AND version = $4",
            params![profile.to_string(), table.schema(), table.table(), version],
        )?;
        Ok(())
    }

    /// Rows and bytes of the tables of `schema` (for quotas).
    pub fn schema_usage(&self, schema: &str) -> Result<(i64, i64), CatalogError> {
        self.0.conn()?.query_row(
            "SELECT count(*), coalesce(sum(v.byte_count), 0)::BIGINT
             FROM tables t JOIN table_versions v ON v.schema_name = t.schema_name
              AND v.table_name = t.table_name AND v.version = t.current_version
             WHERE t.schema_name = $1",
            params![schema],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }
}

/// Remarks as stored (a JSON object of column to remark); anything else reads as none.
fn parse_remarks(stored: Option<&str>) -> BTreeMap<String, String> {
    stored
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateStore;

    fn file(shard: &str, rows: i64) -> ShardFile {
        ShardFile {
            shard: shard.into(),
            url: format!("file:///t/{shard}"),
            rows,
            bytes: rows * 10,
        }
    }

    #[test]
    fn appends_share_files_and_replaces_race_to_one_winner() {
        let store = StateStore::in_memory().unwrap();
        let t: TableName = "sandbox.scores".parse().unwrap();
        let tables = store.tables();
        let commit = |mode, files: Vec<ShardFile>| {
            let run = tables.start_write(&t, "a@x.io", "r1").unwrap();
            tables.commit_write(
                "a@x.io",
                &WriteCommit {
                    table: t.clone(),
                    mode,
                    location: "file:///t/".into(),
                    files,
                    run,
                    detail: serde_json::json!({}),
                },
            )
        };
        assert!(matches!(
            commit(WriteMode::Append, vec![file("a", 1)]),
            Err(CatalogError::NotFound(_))
        ));
        let w = commit(WriteMode::Create, vec![file("a", 2)]).unwrap();
        assert_eq!((w.version, w.table_rows), (1, 2));
        assert!(matches!(
            commit(WriteMode::Create, vec![file("b", 2)]),
            Err(CatalogError::AlreadyExists(_))
        ));
        let w = commit(WriteMode::Append, vec![file("b", 3)]).unwrap();
        assert_eq!((w.version, w.rows, w.table_rows), (2, 3, 5));
        assert_eq!(tables.shard_files(&t, 2).unwrap().len(), 2);
        // Two replaces that both began at version 2: the first wins, the second is told.
        let w = commit(WriteMode::Replace { base: Some(2) }, vec![file("c", 7)]).unwrap();
        assert_eq!((w.version, w.table_rows), (3, 7));
        assert!(matches!(
            commit(WriteMode::Replace { base: Some(2) }, vec![file("d", 1)]),
            Err(CatalogError::Aborted(_))
        ));
        assert_eq!(tables.get(&t).unwrap().rows, 7);
        assert!(tables.is_written(&t).unwrap());
        assert_eq!(tables.kept_by_syncs("sandbox").unwrap(), None);
    }

    #[test]
    fn personal_schemas_are_named_once() {
        let store = StateStore::in_memory().unwrap();
        let tables = store.tables();
        assert_eq!(tables.personal_schema("ann.lee@x.io").unwrap(), None);
        let first = tables.claim_personal_schema("ann.lee@x.io").unwrap();
        assert_eq!(first, "home_ann_lee");
        assert_eq!(tables.claim_personal_schema("ann.lee@x.io").unwrap(), first);
        assert_eq!(
            tables.claim_personal_schema("ann.lee@y.io").unwrap(),
            "home_ann_lee_2"
        );
    }
}
