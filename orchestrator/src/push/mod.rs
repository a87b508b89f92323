//! The push driver: webhook deliveries of a push source in, its tables out, in shards. One
//! driver serves every [`PushSource`] (Jira's is the first).
//!
//! - [`PushSync::receive`] (called by `/webhooks/{source}` after the source checked the
//!   signature) stores the raw body in the object store, then records the delivery in the
//!   state store; a delivery id seen before has no effect. Only then does the webhook answer.
//! - The processor ([`PushSync::run`]) takes due deliveries in batches, fetches each item
//!   they name in full and rewrites the shards they touch ([`shards`]). A failure leaves the
//!   deliveries naming that item pending, retried with a growing pause; a crash before they
//!   are marked done only means they are processed again, which replaces the same rows with
//!   the same rows.
//! - [`jobs`]: the backfill, the consistency check and the refresh, and how the orchestrator
//!   runs them as runs of the source's head table.

mod jobs;
mod shards;

pub use jobs::{PushJob, Repair};
pub use quiver_connectors::PUSH_SOURCES;
pub use quiver_connectors::push::{PushSource, Refused};

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, PutPayload};
use quiver_catalog::state::webhooks::{Delivery, NewDelivery};
use quiver_catalog::{CatalogError, StateStore, Storage, TableName};
use quiver_connectors::push::Target;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::OrchestratorError;

/// Deliveries taken per batch.
const BATCH: usize = 500;
/// Items fetched from the source at once.
const FETCHES: usize = 8;
/// How long a processed delivery (its id, for de-duplication, and its raw body) is kept.
const KEEP_DELIVERIES: Duration = Duration::from_secs(7 * 86400);

/// A webhook delivery that was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The delivery id (the source's, or the body's hash when it sent none).
    pub id: String,
    /// `false` when this delivery had been received before (a retry): it has no effect.
    pub new: bool,
}

/// The writer of one push source's tables.
pub struct PushSync {
    source: Arc<dyn PushSource>,
    state: Arc<StateStore>,
    storage: Storage,
    /// How long replaced versions stay readable (`sync.retention`).
    retention: Duration,
    /// One lock per shard: held from reading a shard to committing its replacement.
    shards: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Shard writes in flight (their files are not committed yet: not orphans).
    writing: AtomicUsize,
    wake: tokio::sync::Notify,
}

impl std::fmt::Debug for PushSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushSync")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl PushSync {
    /// The writer of `source`'s tables; replaced versions are removed after `retention`.
    pub fn new(
        source: Arc<dyn PushSource>,
        state: Arc<StateStore>,
        storage: Storage,
        retention: Duration,
    ) -> Self {
        Self {
            source,
            state,
            storage,
            retention,
            shards: Mutex::default(),
            writing: AtomicUsize::new(0),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// The source (the webhook checks deliveries with it).
    pub fn source(&self) -> &dyn PushSource {
        self.source.as_ref()
    }

    /// The source's name: its schema and webhook path.
    pub fn name(&self) -> &'static str {
        self.source.name()
    }

    /// Whether shard files are being written (the orphan sweep leaves the tables alone then).
    pub fn is_writing(&self) -> bool {
        self.writing.load(Ordering::Acquire) > 0
    }

    /// The source's tables.
    pub fn tables(&self) -> Vec<TableName> {
        self.source
            .tables()
            .iter()
            .map(|t| TableName::new(self.name(), t.name).expect("a push source's names are valid"))
            .collect()
    }

    /// The head table, whose runs record the source's jobs.
    pub fn head_table(&self) -> TableName {
        self.tables().swap_remove(0)
    }

    // ----- receiving ------------------------------------------------------------------

    /// Accepts a delivery the source authenticated: checks the payload, stores it, and
    /// records it once. `id` is the source's delivery id, if it sent one.
    pub async fn receive(
        &self,
        id: Option<String>,
        body: &[u8],
    ) -> Result<Received, OrchestratorError> {
        let payload: Value = serde_json::from_slice(body)
            .map_err(|e| Refused::BadPayload(format!("the body is not valid JSON: {e}")))?;
        let event = self.source.parse(&payload)?;
        let id = id.unwrap_or_else(|| format!("sha256:{:x}", Sha256::digest(body)));
        let key = self
            .storage
            .inbox_prefix(self.name())
            .join(format!("{:x}.json", Sha256::digest(id.as_bytes())));
        self.storage
            .store()
            .put(&key, PutPayload::from(bytes::Bytes::copy_from_slice(body)))
            .await
            .map_err(|e| CatalogError::Storage(format!("storing the delivery: {e}")))?;
        self.storage.sync_file(&key).await?;
        let subject = event
            .targets
            .iter()
            .map(|t| t.reference.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let new = self.state.webhooks().record_delivery(&NewDelivery {
            source: self.name().into(),
            id: id.clone(),
            event: event.name.clone(),
            subject: subject.clone(),
            detail: json!({ "targets": event.targets, "deleted": event.deleted }),
            payload: key.to_string(),
        })?;
        metrics::counter!("quiver_webhook_deliveries_total", "source" => self.name(), "outcome" => if new { "accepted" } else { "duplicate" })
            .increment(1);
        tracing::info!(source = self.name(), delivery = %id, event = event.name, items = subject, new, "delivery received");
        if new {
            self.wake.notify_one();
        }
        Ok(Received { id, new })
    }

    // ----- processing -----------------------------------------------------------------

    /// Processes deliveries as they arrive (and those left pending by a restart), and runs
    /// the consistency check and the refresh on their intervals, until `shutdown`.
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
                        tracing::warn!(source = self.name(), error = %e, "processing deliveries");
                        break;
                    }
                }
            }
            if let Ok(counts) = self.state.webhooks().delivery_counts(self.name()) {
                metrics::gauge!("quiver_webhook_deliveries_pending", "source" => self.name())
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
        let intervals = self.source.intervals();
        let mut consistency = tokio::time::interval(intervals.check);
        let mut refresh = tokio::time::interval(intervals.refresh);
        let mut prune = tokio::time::interval(Duration::from_secs(3600));
        // The first tick of an interval is immediate: start after one period instead.
        consistency.tick().await;
        refresh.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = consistency.tick() => match self.check_consistency().await {
                    Ok(r) => tracing::info!(source = self.name(), checked = r.checked, refetched = r.refetched, removed = r.removed, "consistency check"),
                    Err(e) => tracing::warn!(source = self.name(), error = %e, "consistency check failed"),
                },
                _ = refresh.tick() => match self.refresh().await {
                    Ok(n) => tracing::info!(source = self.name(), items = n, "refresh"),
                    Err(e) => tracing::warn!(source = self.name(), error = %e, "refresh failed"),
                },
                _ = prune.tick() => if let Err(e) = self.prune_deliveries().await {
                    tracing::warn!(source = self.name(), error = %e, "pruning old deliveries");
                },
            }
        }
    }

    /// Forgets deliveries processed more than a week ago and removes their raw bodies.
    async fn prune_deliveries(&self) -> Result<(), OrchestratorError> {
        let payloads = self
            .state
            .webhooks()
            .forget_deliveries(self.name(), KEEP_DELIVERIES)?;
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
            tracing::info!(
                source = self.name(),
                deliveries = removed.len(),
                "removed old deliveries"
            );
        }
        Ok(())
    }

    /// Processes one batch of due deliveries; returns how many were taken.
    pub async fn process_due(&self) -> Result<usize, OrchestratorError> {
        let due = self.state.webhooks().due_deliveries(self.name(), BATCH)?;
        if due.is_empty() {
            return Ok(0);
        }
        // Each item once, however many deliveries name it: the source is asked for it now.
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
        // An item the source will not serve (now) holds back only the deliveries naming it.
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
        self.state.webhooks().finish_deliveries(self.name(), &ids)?;
        metrics::counter!("quiver_webhook_deliveries_processed_total", "source" => self.name())
            .increment(ids.len() as u64);
        for (delivery, error) in &postponed {
            let pause = Duration::from_secs(5)
                .saturating_mul(2u32.saturating_pow(delivery.attempts.clamp(0, 7) as u32));
            tracing::warn!(source = self.name(), delivery = %delivery.id, items = %delivery.subject, error = %error, retry_in = ?pause, "delivery postponed");
            self.state
                .webhooks()
                .postpone_delivery(self.name(), &delivery.id, error, pause)?;
        }
        if !ids.is_empty() {
            crate::retention::expire(&self.state, &self.storage, self.retention).await?;
        }
        Ok(due.len())
    }
}

fn delivery_targets(delivery: &Delivery) -> Vec<Target> {
    serde_json::from_value(delivery.detail["targets"].clone()).unwrap_or_default()
}
