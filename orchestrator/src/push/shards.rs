//! Writing the tables: per shard, read the current file of each table, drop the changed
//! items' old rows, add their new ones, write a new file, and commit every table in one
//! transaction. A lock per shard keeps two writers of one shard from overwriting each
//! other; different shards commit in parallel (each commit swaps only its own files).

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
use quiver_connectors::push::{Held, HeldItems, ItemRows, Target};
use quiver_connectors::sink::encode_parquet;
use serde_json::Value;

use super::{FETCHES, PushSync};
use crate::OrchestratorError;

/// The head table's index in the source's tables.
const HEAD: usize = 0;

/// What happened to one item.
#[derive(Debug, Clone)]
pub(super) enum Change {
    /// Its rows in every table, as the source has it now.
    Upsert(ItemRows),
    /// Only its head row (the refresh).
    Head {
        id: String,
        shard: String,
        row: Value,
    },
    /// Gone from the source: removed from every table.
    Delete { id: String, shard: String },
}

impl Change {
    fn shard(&self) -> &str {
        match self {
            Change::Upsert(rows) => &rows.shard,
            Change::Head { shard, .. } | Change::Delete { shard, .. } => shard,
        }
    }

    fn id(&self) -> &str {
        match self {
            Change::Upsert(rows) => &rows.id,
            Change::Head { id, .. } | Change::Delete { id, .. } => id,
        }
    }
}

impl PushSync {
    /// Fetches items (`deleted` ones are removed without asking) and applies what could be
    /// fetched; returns the items that could not be, with the reason.
    pub(super) async fn refetch(
        &self,
        targets: Vec<(Target, bool)>,
    ) -> Result<HashMap<String, String>, OrchestratorError> {
        let fetched: Vec<(Target, Result<Option<ItemRows>, OrchestratorError>)> =
            futures::stream::iter(targets)
                .map(|(target, deleted)| async move {
                    if deleted {
                        return (target, Ok(None));
                    }
                    let rows = self.source.fetch(&target).await.map_err(Into::into);
                    (target, rows)
                })
                .buffer_unordered(FETCHES)
                .collect()
                .await;
        let mut changes = Vec::new();
        let mut unplaced = Vec::new();
        let mut failed = HashMap::new();
        for (target, rows) in fetched {
            match (rows, target.id, target.shard) {
                (Err(e), _, _) => {
                    failed.insert(target.reference, e.to_string());
                }
                (Ok(Some(rows)), _, _) => changes.push(Change::Upsert(rows)),
                (Ok(None), Some(id), Some(shard)) => changes.push(Change::Delete { id, shard }),
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
                        shard: h.shard.clone(),
                    });
                }
            }
        }
        self.apply(changes).await?;
        Ok(failed)
    }

    /// [`Self::refetch`] for jobs: what could be fetched is applied, then any failure fails
    /// the job, naming how many items and the first reason.
    pub(super) async fn refetch_all(
        &self,
        targets: Vec<(Target, bool)>,
    ) -> Result<(), OrchestratorError> {
        let failed = self.refetch(targets).await?;
        match failed.iter().next() {
            None => Ok(()),
            Some((item, error)) => Err(OrchestratorError::Connector(
                quiver_connectors::ConnectorError::Source(format!(
                    "{} item(s) could not be read from {} (the rest were loaded); {item}: {error}",
                    failed.len(),
                    self.name()
                )),
            )),
        }
    }

    /// Rewrites the shards the changes touch, shard by shard (shards in parallel).
    pub(super) async fn apply(&self, changes: Vec<Change>) -> Result<(), OrchestratorError> {
        let mut by_shard: BTreeMap<String, Vec<Change>> = BTreeMap::new();
        for change in changes {
            by_shard
                .entry(change.shard().to_string())
                .or_default()
                .push(change);
        }
        futures::future::try_join_all(
            by_shard
                .into_iter()
                .map(|(shard, changes)| self.rewrite_shard(shard, changes)),
        )
        .await?;
        Ok(())
    }

    async fn rewrite_shard(
        &self,
        shard: String,
        changes: Vec<Change>,
    ) -> Result<(), OrchestratorError> {
        let lock = self
            .shards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(shard.clone())
            .or_default()
            .clone();
        let _turn = lock.lock().await;
        self.writing.fetch_add(1, Ordering::AcqRel);
        let result = self.rewrite_locked(&shard, &changes).await;
        self.writing.fetch_sub(1, Ordering::AcqRel);
        result
    }

    async fn rewrite_locked(
        &self,
        shard: &str,
        changes: &[Change],
    ) -> Result<(), OrchestratorError> {
        let id_column = self.source.head().id;
        let mut commit = Vec::new();
        for (index, table) in self.tables().into_iter().enumerate() {
            let replaced: HashSet<&str> = changes
                .iter()
                .filter(|c| index == HEAD || !matches!(c, Change::Head { .. }))
                .map(Change::id)
                .collect();
            if replaced.is_empty() {
                continue;
            }
            let new_rows: Vec<Value> = changes
                .iter()
                .flat_map(|c| match c {
                    Change::Upsert(rows) => rows.tables[index].clone(),
                    Change::Head { row, .. } if index == HEAD => vec![row.clone()],
                    _ => Vec::new(),
                })
                .collect();
            let current = self.state.tables().current_shards(&table)?;
            let file = current.iter().find(|f| f.shard == shard);
            let mut batches = Vec::new();
            let mut dropped = 0;
            if let Some(file) = file {
                for batch in self.read(&file.url, None).await? {
                    let ids = batch
                        .column_by_name(id_column)
                        .ok_or_else(|| {
                            CatalogError::Internal(format!("{table} has no {id_column}"))
                        })?
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
            batches.push(self.source.batch(index, &new_rows)?);
            commit.push(ShardChange {
                location: self.storage.folder_url(&self.storage.table_prefix(&table)),
                // Described when first published; an admin's later description stays.
                description: current
                    .is_empty()
                    .then(|| self.source.tables()[index].description.to_string()),
                files: vec![self.write(&table, shard, &batches).await?],
                table,
            });
        }
        crate::publish::shards(&self.state, &commit)?;
        Ok(())
    }

    async fn write(
        &self,
        table: &TableName,
        shard: &str,
        batches: &[RecordBatch],
    ) -> Result<ShardFile, OrchestratorError> {
        let schema = batches
            .first()
            .map(|b| b.schema())
            .ok_or_else(|| CatalogError::Internal("no batches to write".into()))?;
        // The layout every landed file has (compression, row groups, dictionaries).
        let (buffer, rows) =
            encode_parquet::<CatalogError>(schema, batches.iter().cloned().map(Ok))?;
        let key = self
            .storage
            .table_prefix(table)
            .join(shard)
            .join(format!("{}.parquet", uuid::Uuid::new_v4().simple()));
        let bytes = buffer.len();
        self.storage
            .store()
            .put(&key, PutPayload::from(buffer))
            .await
            .map_err(|e| CatalogError::Storage(format!("writing {key}: {e}")))?;
        self.storage.sync_file(&key).await?;
        Ok(ShardFile {
            shard: shard.to_string(),
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

    /// Every item Quiver holds, by id (from the head table).
    pub(super) async fn held(&self) -> Result<HeldItems, OrchestratorError> {
        let head = self.source.head();
        let mut out = HashMap::new();
        for file in self.state.tables().current_shards(&self.head_table())? {
            let columns = [head.id, head.key, head.shard, head.updated, head.watched];
            for batch in self.read(&file.url, Some(&columns)).await? {
                let text = |name: &str| {
                    batch
                        .column_by_name(name)
                        .map(|c| c.as_string::<i32>().clone())
                };
                let (Some(ids), Some(keys), Some(shards), Some(watched)) = (
                    text(head.id),
                    text(head.key),
                    text(head.shard),
                    text(head.watched),
                ) else {
                    continue;
                };
                let updated = batch
                    .column_by_name(head.updated)
                    .map(|c| c.as_primitive::<TimestampMicrosecondType>().clone());
                for i in 0..batch.num_rows() {
                    out.insert(
                        ids.value(i).to_string(),
                        Held {
                            key: keys.value(i).to_string(),
                            shard: shards.value(i).to_string(),
                            updated: updated
                                .as_ref()
                                .filter(|u| u.is_valid(i))
                                .map(|u| u.value(i)),
                            watched: watched.is_valid(i).then(|| watched.value(i).to_string()),
                        },
                    );
                }
            }
        }
        Ok(out)
    }
}
