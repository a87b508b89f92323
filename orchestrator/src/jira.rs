//! Jira: webhook deliveries in, six tables of schema `jira` out, in monthly shards.
//!
//! - [`JiraSync::receive`] (called by the webhook after the signature check) stores the
//!   raw body in the object store, then records the delivery in the state store; a
//!   delivery id seen before has no effect. Only then does the webhook answer.
//! - The processor ([`JiraSync::run`]) takes due deliveries in batches, fetches each issue
//!   they name in full, and rewrites the shards (months) they touch: per month it reads the
//!   current shard of each table, drops the issues' old rows, adds the new ones, writes a
//!   new file and commits all six tables in one transaction. A lock per month keeps two
//!   writers of one month from overwriting each other; different months commit in
//!   parallel (the commit swaps only its own shards). A failure leaves the deliveries
//!   pending, retried with a growing pause; a crash before they are marked done only means
//!   they are processed again, which replaces the same rows with the same rows.
//! - Jobs: [`JiraSync::backfill`] loads a JQL's issues page by page;
//!   [`JiraSync::check_consistency`] compares Jira's issue list with ours and repairs the
//!   difference; [`JiraSync::refresh_sla`] re-reads open issues' SLA fields.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use quiver_catalog::webhooks::{Delivery, NewDelivery};
use quiver_catalog::{CatalogError, ShardChange, ShardFile, StateStore, Storage, TableName};
use quiver_config::JiraConfig;
use quiver_connectors::jira::tables::{ISSUES, issue_row, to_batch};
use quiver_connectors::jira::{IssueRows, JiraClient, TABLES, is_issue_key, issue_rows};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::OrchestratorError;

/// The schema the six tables live in, and the webhook source name.
pub const SCHEMA: &str = "jira";
/// Deliveries taken per batch.
const BATCH: usize = 500;
/// Issues fetched from Jira at once.
const FETCHES: usize = 8;
/// How long a processed delivery (its id, for de-duplication, and its raw body) is kept.
const KEEP_DELIVERIES: Duration = Duration::from_secs(7 * 86400);

/// A webhook delivery that was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The delivery id (Jira's, or the body's hash when Jira sent none).
    pub id: String,
    /// `false` when this delivery had been received before (a retry): it has no effect.
    pub new: bool,
}

/// What happened to one issue.
#[derive(Debug, Clone)]
enum Change {
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

/// An issue a delivery names: its key or id, and what the payload told about it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Target {
    /// Key (`ABC-1`) or id (`10001`), as the REST API accepts either.
    reference: String,
    id: Option<String>,
    month: Option<String>,
}

/// What Quiver holds about an issue (from the `issues` table).
#[derive(Debug, Clone)]
struct Held {
    key: String,
    month: String,
    updated: Option<i64>,
    sla: Option<String>,
}

/// Outcome of a consistency check.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Repair {
    /// Issues in Jira's list.
    pub checked: usize,
    /// Issues re-fetched because they were missing or older than Jira's.
    pub refetched: usize,
    /// Issues removed because Jira no longer has them.
    pub removed: usize,
}

/// The Jira tables' writer.
pub struct JiraSync {
    config: JiraConfig,
    client: JiraClient,
    state: Arc<StateStore>,
    storage: Storage,
    /// How long replaced versions stay readable (`sync.retention`).
    retention: Duration,
    /// One lock per month: held from reading a shard to committing its replacement.
    months: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Shard writes in flight (their files are not committed yet: not orphans).
    writing: AtomicUsize,
    wake: tokio::sync::Notify,
}

impl std::fmt::Debug for JiraSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JiraSync")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl JiraSync {
    /// A writer for the site in `config`; replaced versions are removed after `retention`.
    pub fn new(
        config: JiraConfig,
        state: Arc<StateStore>,
        storage: Storage,
        retention: Duration,
    ) -> Result<Self, OrchestratorError> {
        let client = JiraClient::new(&config.url, &config.email, &config.api_token)?;
        Ok(Self {
            config,
            client,
            state,
            storage,
            retention,
            months: Mutex::default(),
            writing: AtomicUsize::new(0),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// The configuration (the webhook reads its secret and size limit).
    pub fn config(&self) -> &JiraConfig {
        &self.config
    }

    /// Whether shard files are being written (the orphan sweep leaves `jira` alone then).
    pub fn is_writing(&self) -> bool {
        self.writing.load(Ordering::Acquire) > 0
    }

    /// The six tables.
    pub fn tables() -> Vec<TableName> {
        TABLES
            .iter()
            .map(|t| TableName::new(SCHEMA, t).expect("static names"))
            .collect()
    }

    // ----- receiving ------------------------------------------------------------------

    /// Accepts a delivery whose signature was verified: checks the payload, stores it, and
    /// records it once. `id` is Jira's `X-Atlassian-Webhook-Identifier`.
    pub async fn receive(
        &self,
        id: Option<&str>,
        body: &[u8],
    ) -> Result<Received, OrchestratorError> {
        let payload: Value = serde_json::from_slice(body).map_err(|e| {
            OrchestratorError::BadPayload(format!("the body is not valid JSON: {e}"))
        })?;
        let event = payload["webhookEvent"]
            .as_str()
            .unwrap_or("unknown")
            .to_string();
        let targets = targets_of(&payload)?;
        let id = match id.map(str::trim).filter(|i| !i.is_empty()) {
            Some(i) if i.len() <= 128 && i.chars().all(|c| c.is_ascii_graphic()) => i.to_string(),
            Some(_) => {
                return Err(OrchestratorError::BadPayload(
                    "X-Atlassian-Webhook-Identifier must be at most 128 printable characters"
                        .into(),
                ));
            }
            None => format!("sha256:{:x}", Sha256::digest(body)),
        };
        let key = self
            .storage
            .inbox_prefix(SCHEMA)
            .join(format!("{:x}.json", Sha256::digest(id.as_bytes())));
        self.storage
            .store()
            .put(&key, PutPayload::from(bytes::Bytes::copy_from_slice(body)))
            .await
            .map_err(|e| CatalogError::Storage(format!("storing the delivery: {e}")))?;
        self.storage.sync_file(&key).await?;
        let subject = targets
            .iter()
            .map(|t| t.reference.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let new = self.state.record_delivery(&NewDelivery {
            source: SCHEMA.into(),
            id: id.clone(),
            event: event.clone(),
            subject: subject.clone(),
            detail: json!({ "targets": targets, "deleted": event == "jira:issue_deleted" }),
            payload: key.to_string(),
        })?;
        metrics::counter!("quiver_webhook_deliveries_total", "source" => "jira", "outcome" => if new { "accepted" } else { "duplicate" })
            .increment(1);
        tracing::info!(delivery = %id, event, issues = subject, new, "jira delivery received");
        if new {
            self.wake.notify_one();
        }
        Ok(Received { id, new })
    }

    // ----- processing -----------------------------------------------------------------

    /// Processes deliveries as they arrive (and those left pending by a restart), and runs
    /// the consistency check and the SLA refresh on their intervals, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let jobs = {
            let this = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { this.run_jobs(shutdown).await })
        };
        loop {
            loop {
                match self.process_due().await {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "jira deliveries");
                        break;
                    }
                }
            }
            if let Ok(counts) = self.state.delivery_counts(SCHEMA) {
                metrics::gauge!("quiver_webhook_deliveries_pending", "source" => "jira")
                    .set(counts.pending as f64);
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                // Postponed deliveries come due without a wake-up.
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
        jobs.abort();
    }

    async fn run_jobs(&self, shutdown: CancellationToken) {
        let mut consistency = tokio::time::interval(self.config.consistency_check);
        let mut sla = tokio::time::interval(self.config.sla_refresh);
        let mut prune = tokio::time::interval(Duration::from_secs(3600));
        // The first tick of an interval is immediate: start after one period instead.
        consistency.tick().await;
        sla.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = consistency.tick() => match self.check_consistency().await {
                    Ok(r) => tracing::info!(checked = r.checked, refetched = r.refetched, removed = r.removed, "jira consistency check"),
                    Err(e) => tracing::warn!(error = %e, "jira consistency check failed"),
                },
                _ = sla.tick() => match self.refresh_sla().await {
                    Ok(n) => tracing::info!(issues = n, "jira SLA refresh"),
                    Err(e) => tracing::warn!(error = %e, "jira SLA refresh failed"),
                },
                _ = prune.tick() => if let Err(e) = self.prune_deliveries().await {
                    tracing::warn!(error = %e, "pruning old jira deliveries");
                },
            }
        }
    }

    /// Forgets deliveries processed more than a week ago and removes their raw bodies.
    async fn prune_deliveries(&self) -> Result<(), OrchestratorError> {
        let payloads = self.state.forget_deliveries(SCHEMA, KEEP_DELIVERIES)?;
        let keys = futures::stream::iter(
            payloads
                .into_iter()
                .map(|p| Ok(object_store::path::Path::from(p))),
        )
        .boxed();
        let removed = self
            .storage
            .store()
            .delete_stream(keys)
            .filter(|r| {
                let gone = !matches!(r, Err(object_store::Error::NotFound { .. }));
                async move { gone }
            })
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| CatalogError::Storage(format!("removing old deliveries: {e}")))?;
        if !removed.is_empty() {
            tracing::info!(deliveries = removed.len(), "removed old jira deliveries");
        }
        Ok(())
    }

    /// Processes one batch of due deliveries; returns how many were taken.
    pub async fn process_due(&self) -> Result<usize, OrchestratorError> {
        let due = self.state.due_deliveries(SCHEMA, BATCH)?;
        if due.is_empty() {
            return Ok(0);
        }
        // Each issue once, however many deliveries name it: Jira is asked for its state now.
        let mut targets: BTreeMap<String, (Target, bool)> = BTreeMap::new();
        for delivery in &due {
            let deleted = delivery.detail["deleted"] == json!(true);
            for target in delivery_targets(delivery) {
                let entry = targets
                    .entry(target.reference.clone())
                    .or_insert((target, false));
                entry.1 |= deleted;
            }
        }
        // An issue Jira will not serve (now) holds back only the deliveries naming it.
        let (done, postponed): (Vec<&Delivery>, Vec<(&Delivery, String)>) =
            match self.refetch(targets.into_values().collect()).await {
                Ok(failed) => {
                    let mut done = Vec::new();
                    let mut postponed = Vec::new();
                    for delivery in &due {
                        let error = delivery_targets(delivery)
                            .iter()
                            .find_map(|t| failed.get(&t.reference).cloned());
                        match error {
                            Some(error) => postponed.push((delivery, error)),
                            None => done.push(delivery),
                        }
                    }
                    (done, postponed)
                }
                Err(e) => (Vec::new(), due.iter().map(|d| (d, e.to_string())).collect()),
            };
        let ids: Vec<String> = done.iter().map(|d| d.id.clone()).collect();
        self.state.finish_deliveries(SCHEMA, &ids)?;
        metrics::counter!("quiver_webhook_deliveries_processed_total", "source" => "jira")
            .increment(ids.len() as u64);
        for (delivery, error) in &postponed {
            let pause = Duration::from_secs(5)
                .saturating_mul(2u32.saturating_pow(delivery.attempts.clamp(0, 7) as u32));
            tracing::warn!(delivery = %delivery.id, issues = %delivery.subject, error = %error, retry_in = ?pause, "jira delivery postponed");
            self.state
                .postpone_delivery(SCHEMA, &delivery.id, error, pause)?;
        }
        if !ids.is_empty() {
            crate::retention::expire(&self.state, &self.storage, self.retention).await?;
        }
        Ok(due.len())
    }

    /// Fetches issues (`deleted` ones are removed without asking) and applies what could be
    /// fetched; returns the issues that could not be, with the reason.
    async fn refetch(
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
    async fn refetch_all(&self, targets: Vec<(Target, bool)>) -> Result<(), OrchestratorError> {
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
    async fn apply(&self, changes: Vec<Change>) -> Result<(), OrchestratorError> {
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
            let current = self.state.current_shards(&table)?;
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
        self.state.commit_shards(&commit)?;
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
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let mut buffer = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut buffer, schema, Some(props))?;
        let mut rows = 0;
        for batch in batches {
            rows += batch.num_rows();
            writer.write(batch)?;
        }
        writer.close()?;
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
            rows: rows as i64,
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
    async fn held(&self) -> Result<HashMap<String, Held>, OrchestratorError> {
        let table = TableName::new(SCHEMA, TABLES[ISSUES])?;
        let mut out = HashMap::new();
        for file in self.state.current_shards(&table)? {
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

    // ----- jobs -----------------------------------------------------------------------

    /// Loads every issue matching `jql`, page by page; `progress(done, total)` after each
    /// page (`total` is Jira's approximate count). Returns how many issues were loaded.
    pub async fn backfill(
        &self,
        jql: &str,
        progress: impl Fn(u64, u64),
    ) -> Result<u64, OrchestratorError> {
        let total = self.client.count(jql).await?;
        progress(0, total);
        let mut done = 0u64;
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .search(jql, &["created"], token.as_deref())
                .await?;
            let targets: Vec<(Target, bool)> = page
                .issues
                .iter()
                .filter_map(|i| {
                    let reference = i["key"].as_str().or(i["id"].as_str())?.to_string();
                    Some((
                        Target {
                            reference,
                            id: i["id"].as_str().map(String::from),
                            month: None,
                        },
                        false,
                    ))
                })
                .collect();
            done += targets.len() as u64;
            self.refetch_all(targets).await?;
            progress(done, total.max(done));
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        tracing::info!(jql, issues = done, "jira backfill finished");
        Ok(done)
    }

    /// The JQL of the issues Quiver keeps: `jira.jql`, or the projects it holds.
    fn scope(&self, held: &HashMap<String, Held>) -> Option<String> {
        if let Some(jql) = &self.config.jql {
            return Some(jql.clone());
        }
        let projects: std::collections::BTreeSet<&str> = held
            .values()
            .filter_map(|h| h.key.rsplit_once('-').map(|(p, _)| p))
            .collect();
        (!projects.is_empty()).then(|| {
            format!(
                "project in ({})",
                projects
                    .into_iter()
                    .map(|p| format!("\"{p}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }

    /// Compares Jira's issue list with ours: fetches what is missing or older here, and
    /// removes what Jira no longer has.
    pub async fn check_consistency(&self) -> Result<Repair, OrchestratorError> {
        let held = self.held().await?;
        let Some(jql) = self.scope(&held) else {
            return Ok(Repair::default());
        };
        let listed = self.client.search_all(&jql, &["updated"]).await?;
        let mut repair = Repair {
            checked: listed.len(),
            ..Repair::default()
        };
        let mut seen = HashSet::new();
        let mut targets = Vec::new();
        for issue in &listed {
            let Some(id) = issue["id"].as_str() else {
                continue;
            };
            seen.insert(id.to_string());
            let theirs = issue["fields"]["updated"].as_str().and_then(micros);
            let stale = match held.get(id) {
                None => true,
                Some(h) => theirs.is_some_and(|t| h.updated.is_none_or(|ours| ours < t)),
            };
            if stale {
                targets.push((
                    Target {
                        reference: id.to_string(),
                        id: Some(id.to_string()),
                        month: None,
                    },
                    false,
                ));
            }
        }
        repair.refetched = targets.len();
        // Ours but not in Jira's list: ask for each (a 404 removes it).
        for (id, h) in &held {
            if !seen.contains(id) {
                repair.removed += 1;
                targets.push((
                    Target {
                        reference: id.clone(),
                        id: Some(id.clone()),
                        month: Some(h.month.clone()),
                    },
                    false,
                ));
            }
        }
        self.refetch_all(targets).await?;
        Ok(repair)
    }

    /// Re-reads open issues (status category not Done) and rewrites the `issues` rows whose
    /// SLA fields changed; returns how many.
    pub async fn refresh_sla(&self) -> Result<usize, OrchestratorError> {
        let held = self.held().await?;
        let Some(scope) = self.scope(&held) else {
            return Ok(0);
        };
        let jql = format!("({scope}) AND statusCategory != Done");
        let open = self.client.search_all(&jql, &["*all"]).await?;
        let mut changes = Vec::new();
        for issue in &open {
            let row = issue_row(issue)?;
            let id = row["issue_id"].as_str().unwrap_or_default().to_string();
            let Some(h) = held.get(&id) else { continue };
            if row["sla"].as_str() != h.sla.as_deref() {
                changes.push(Change::Head {
                    id,
                    month: h.month.clone(),
                    row,
                });
            }
        }
        let count = changes.len();
        self.apply(changes).await?;
        Ok(count)
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

/// The issues a webhook payload names: `issue` (issue, comment, attachment, worklog events)
/// or both ends of an `issueLink`.
fn targets_of(payload: &Value) -> Result<Vec<Target>, OrchestratorError> {
    let bad = |m: String| OrchestratorError::BadPayload(m);
    if let Some(issue) = payload.get("issue") {
        let key = issue["key"]
            .as_str()
            .ok_or_else(|| bad("`issue.key` is missing".into()))?;
        if !is_issue_key(key) {
            return Err(bad(format!(
                "`{}` is not a Jira issue key (like ABC-123)",
                key.chars().take(60).collect::<String>()
            )));
        }
        let id = match &issue["id"] {
            Value::String(s) if s.chars().all(|c| c.is_ascii_digit()) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let month = issue["fields"]["created"]
            .as_str()
            .and_then(micros)
            .and_then(chrono::DateTime::from_timestamp_micros)
            .map(|t| t.format("%Y-%m").to_string());
        return Ok(vec![Target {
            reference: key.to_string(),
            id,
            month,
        }]);
    }
    if let Some(link) = payload.get("issueLink") {
        let mut out = Vec::new();
        for end in ["sourceIssueId", "destinationIssueId"] {
            let id = match &link[end] {
                Value::Number(n) => n.to_string(),
                Value::String(s)
                    if !s.is_empty() && s.len() <= 20 && s.chars().all(|c| c.is_ascii_digit()) =>
                {
                    s.clone()
                }
                _ => return Err(bad(format!("`issueLink.{end}` is not an issue id"))),
            };
            out.push(Target {
                reference: id.clone(),
                id: Some(id),
                month: None,
            });
        }
        return Ok(out);
    }
    Err(bad(
        "the payload names no issue (expected `issue` or `issueLink`)".into(),
    ))
}

fn delivery_targets(delivery: &Delivery) -> Vec<Target> {
    serde_json::from_value(delivery.detail["targets"].clone()).unwrap_or_default()
}

/// A Jira time as microseconds since the epoch.
fn micros(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(s))
        .ok()
        .map(|t| t.timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_their_issues_or_are_refused() {
        let t = targets_of(&json!({"webhookEvent": "jira:issue_updated",
            "issue": {"id": "10001", "key": "ABC-1", "fields": {"created": "2026-03-01T00:30:00.000+0100"}}}))
        .unwrap();
        assert_eq!(
            t,
            vec![Target {
                reference: "ABC-1".into(),
                id: Some("10001".into()),
                month: Some("2026-02".into())
            }]
        );
        let t = targets_of(&json!({"issueLink": {"sourceIssueId": 1, "destinationIssueId": "2"}}))
            .unwrap();
        assert_eq!(t.len(), 2);
        for bad in [
            json!({"issue": {"key": "abc-1"}}),
            json!({"issue": {"key": "ABC-1; DROP"}}),
            json!({"issue": {}}),
            json!({"issueLink": {"sourceIssueId": "../x", "destinationIssueId": 2}}),
            json!({"user": {}}),
        ] {
            assert!(
                matches!(targets_of(&bad), Err(OrchestratorError::BadPayload(_))),
                "{bad}"
            );
        }
    }
}
