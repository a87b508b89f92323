//! Writing the tables: per month, read the current shard of each table, drop the changed
//! issues' old rows, add their new ones, write a new file, and commit all six tables in one
//! transaction. A lock per month keeps two writers of one month from overwriting each
//! other; different months commit in parallel (each commit swaps only its own shards).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::ProjectionMask;
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
use quiver_catalog::state::tables::{ShardChange, ShardFile};
use quiver_catalog::{CatalogError, TableName};
use quiver_connectors::jira::tables::{ISSUES, to_batch};
use quiver_connectors::jira::{IssueRows, TABLES, issue_rows};
use quiver_connectors::sink::encode_parquet;
use serde_json::Value;

use super::{FETCHES, JiraSync, SCHEMA, Target};
use crate::OrchestratorError;

/// What happened to one issue.
#[derive(Debug, Clone)]
pub(super) enum Change {
    /// Its rows in every table, as Jira has it now.
    Upsert(IssueRows),
    /// Only its `issues` row (SLA refresh).
    Head {
        id: String,
        month: String,
        row: Value,
    },
    /// Gone from Jira: removed from every table.
    Delete { id: String, month: String },
}

impl Change {
    fn month(&self) -> &str {
        match self {
            Change::Upsert(rows) => &rows.month,
            Change::Head { month, .. } | Change::Delete { month, .. } => month,
        }
    }

    fn id(&self) -> &str {
        match self {
            Change::Upsert(rows) => &rows.issue_id,
            Change::Head { id, .. } | Change::Delete { id, .. } => id,
        }
    }
}

/// What Quiver holds about an issue (from the `issues` table).
#[derive(Debug, Clone)]
pub(super) struct Held {
    pub(super) key: String,
    pub(super) month: String,
    pub(super) updated: Option<i64>,
    pub(super) sla: Option<String>,
}

impl JiraSync {
    /// Fetches issues (`deleted` ones are removed without asking) and applies what could be
    /// fetched; returns the issues that could not be, with the reason.
    pub(super) async fn refetch(
        &self,
        targets: Vec<(Target, bool)>,
    ) -> Result<HashMap<String, String>, OrchestratorError> {
        let fetched: Vec<(Target, Result<Option<IssueRows>, OrchestratorError>)> =
            futures::stream::iter(targets)
                .map(|(target, deleted)| async move {
                    if deleted {
                        return (target, Ok(None));
                    }
                    let rows = async {
                        let issue = self.client.issue(&target.reference).await?;
                        Ok(issue.as_ref().map(issue_rows).transpose()?)
                    }
                    .await;
                    (target, rows)
                })
                .buffer_unordered(FETCHES)
                .collect()
                .await;
        let mut changes = Vec::new();
        let mut unplaced = Vec::new();
        let mut failed = HashMap::new();
        for (target, rows) in fetched {
            match (rows, target.id, target.month) {
                (Err(e), _, _) => {
                    failed.insert(target.reference, e.to_string());
                }
                (Ok(Some(rows)), _, _) => changes.push(Change::Upsert(rows)),
                (Ok(None), Some(id), Some(month)) => changes.push(Change::Delete { id, month }),
                (Ok(None), id, _) => unplaced.push((target.reference, id)),
            }
        }
        if !unplaced.is_empty() {
            // Deleted, and the payload did not say where it was: look it up in our tables.
            let held = self.held().await?;
            for (reference, id) in unplaced {
                let found = held.iter().find(|(held_id, h)| {
                    Some(*held_id) == id.as_ref() || **held_id == reference || h.key == reference
                });
                if let Some((id, h)) = found {
                    changes.push(Change::Delete {
                        id: id.clone(),
                        month: h.month.clone(),
                    });
                }
            }
        }
        self.apply(changes).await?;
        Ok(failed)
    }

    /// [`Self::refetch`] for jobs: what could be fetched is applied, then any failure fails
    /// the job, naming how many issues and the first reason.
    pub(super) async fn refetch_all(
        &self,
        targets: Vec<(Target, bool)>,
    ) -> Result<(), OrchestratorError> {
        let failed = self.refetch(targets).await?;
        match failed.iter().next() {
            None => Ok(()),
            Some((issue, error)) => Err(OrchestratorError::Connector(
                quiver_connectors::ConnectorError::Source(format!(
                    "{} issue(s) could not be read from Jira (the rest were loaded); {issue}: {error}",
                    failed.len()
                )),
            )),
        }
    }

    /// Rewrites the shards the changes touch, month by month (months in parallel).
    pub(super) async fn apply(&self, changes: Vec<Change>) -> Result<(), OrchestratorError> {
        let mut by_month: BTreeMap<String, Vec<Change>> = BTreeMap::new();
        for change in changes {
            by_month
                .entry(change.month().to_string())
                .or_default()
                .push(change);
        }
        futures::future::try_join_all(
            by_month
                .into_iter()
                .map(|(month, changes)| self.rewrite_month(month, changes)),
        )
        .await?;
        Ok(())
    }

    async fn rewrite_month(
        &self,
        month: String,
        changes: Vec<Change>,
    ) -> Result<(), OrchestratorError> {
        let lock = self
            .months
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(month.clone())
            .or_default()
            .clone();
        let _turn = lock.lock().await;
        self.writing.fetch_add(1, Ordering::AcqRel);
        let result = self.rewrite_locked(&month, &changes).await;
        self.writing.fetch_sub(1, Ordering::AcqRel);
        result
    }

    async fn rewrite_locked(
        &self,
        month: &str,
        changes: &[Change],
    ) -> Result<(), OrchestratorError> {
        let mut commit = Vec::new();
        for (index, table) in Self::tables().into_iter().enumerate() {
            let replaced: HashSet<&str> = changes
                .iter()
                .filter(|c| index == ISSUES || !matches!(c, Change::Head { .. }))
                .map(Change::id)
                .collect();
            if replaced.is_empty() {
                continue;
            }
            let new_rows: Vec<Value> = changes
                .iter()
                .flat_map(|c| match c {
                    Change::Upsert(rows) => rows.tables[index].clone(),
                    Change::Head { row, .. } if index == ISSUES => vec![row.clone()],
                    _ => Vec::new(),
                })
                .collect();
            let current = self.state.tables().current_shards(&table)?;
            let file = current.iter().find(|f| f.shard == month);
            let mut batches = Vec::new();
            let mut dropped = 0;
            if let Some(file) = file {
                for batch in self.read(&file.url, None).await? {
                    let ids = batch
                        .column_by_name("issue_id")
                        .ok_or_else(|| CatalogError::Internal(format!("{table} has no issue_id")))?
                        .as_string::<i32>();
                    let keep: BooleanArray = ids
                        .iter()
                        .map(|id| Some(!id.is_some_and(|id| replaced.contains(id))))
                        .collect();
                    dropped += keep.false_count();
                    batches.push(arrow::compute::filter_record_batch(&batch, &keep)?);
                }
            }
            // Unchanged shards are not rewritten; a table gets its first shard even if empty.
            if dropped == 0 && new_rows.is_empty() && !current.is_empty() {
                continue;
            }
            batches.push(to_batch(index, &new_rows)?);
            commit.push(ShardChange {
                location: self.storage.folder_url(&self.storage.table_prefix(&table)),
                // Described when first published; an admin's later description stays.
                description: current
                    .is_empty()
                    .then(|| description(TABLES[index]).to_string()),
                files: vec![self.write(&table, month, &batches).await?],
                table,
            });
        }
        self.state.tables().commit_shards(&commit)?;
        Ok(())
    }

    async fn write(
        &self,
        table: &TableName,
        month: &str,
        batches: &[RecordBatch],
    ) -> Result<ShardFile, OrchestratorError> {
        let schema = batches
            .first()
            .map(|b| b.schema())
            .ok_or_else(|| CatalogError::Internal("no batches to write".into()))?;
        // The layout every landed file has (compression, row groups, dictionaries).
        let (buffer, rows) = encode_parquet(schema, batches.iter().cloned().map(Ok))?;
        let key = self
            .storage
            .table_prefix(table)
            .join(month)
            .join(format!("{}.parquet", uuid::Uuid::new_v4().simple()));
        let bytes = buffer.len();
        self.storage
            .store()
            .put(&key, PutPayload::from(buffer))
            .await
            .map_err(|e| CatalogError::Storage(format!("writing {key}: {e}")))?;
        self.storage.sync_file(&key).await?;
        Ok(ShardFile {
            shard: month.to_string(),
            url: self.storage.file_url(&key),
            rows,
            bytes: bytes as i64,
        })
    }

    /// A shard file's batches, all columns or those named.
    async fn read(
        &self,
        url: &str,
        columns: Option<&[&str]>,
    ) -> Result<Vec<RecordBatch>, OrchestratorError> {
        let key = self
            .storage
            .prefix_of(url)
            .ok_or_else(|| CatalogError::Storage(format!("{url} is outside the object store")))?;
        let reader = ParquetObjectReader::new(self.storage.store().clone(), key);
        let mut builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
        if let Some(columns) = columns {
            let mask = ProjectionMask::columns(builder.parquet_schema(), columns.iter().copied());
            builder = builder.with_projection(mask);
        }
        Ok(builder.build()?.try_collect().await?)
    }

    /// Every issue Quiver holds, by id.
    pub(super) async fn held(&self) -> Result<HashMap<String, Held>, OrchestratorError> {
        let table = TableName::new(SCHEMA, TABLES[ISSUES])?;
        let mut out = HashMap::new();
        for file in self.state.tables().current_shards(&table)? {
            let columns = ["issue_id", "issue_key", "issue_month", "updated", "sla"];
            for batch in self.read(&file.url, Some(&columns)).await? {
                let text = |name: &str| {
                    batch
                        .column_by_name(name)
                        .map(|c| c.as_string::<i32>().clone())
                };
                let (Some(ids), Some(keys), Some(months), Some(slas)) = (
                    text("issue_id"),
                    text("issue_key"),
                    text("issue_month"),
                    text("sla"),
                ) else {
                    continue;
                };
                let updated = batch
                    .column_by_name("updated")
                    .map(|c| c.as_primitive::<TimestampMicrosecondType>().clone());
                for i in 0..batch.num_rows() {
                    out.insert(
                        ids.value(i).to_string(),
                        Held {
                            key: keys.value(i).to_string(),
                            month: months.value(i).to_string(),
                            updated: updated
                                .as_ref()
                                .filter(|u| u.is_valid(i))
                                .map(|u| u.value(i)),
                            sla: slas.is_valid(i).then(|| slas.value(i).to_string()),
                        },
                    );
                }
            }
        }
        Ok(out)
    }
}

/// What each table holds, for catalogs.
fn description(table: &str) -> &'static str {
    match table {
        "issues" => "Jira issues, one row each (kept current by webhook)",
        "comments" => "Jira issue comments",
        "attachments" => "Jira issue attachments (metadata and download URL)",
        "changelog" => "Jira issue history, one row per changed field",
        "issuelinks" => "Links between Jira issues, from each side",
        "remote_links" => "Jira issues' links to other systems",
        _ => "Jira",
    }
}
