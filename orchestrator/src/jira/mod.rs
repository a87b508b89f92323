//! Jira: webhook deliveries in, six tables of schema `jira` out, in monthly shards.
//!
//! - [`JiraSync::receive`] (called by the webhook after the signature check) stores the
//!   raw body in the object store, then records the delivery in the state store; a
//!   delivery id seen before has no effect. Only then does the webhook answer.
//! - The processor ([`JiraSync::run`]) takes due deliveries in batches, fetches each issue
//!   they name in full and rewrites the months they touch ([`shards`]). A failure leaves
//!   the deliveries naming that issue pending, retried with a growing pause; a crash before
//!   they are marked done only means they are processed again, which replaces the same rows
//!   with the same rows.
//! - [`jobs`]: the backfill, the consistency check and the SLA refresh, and how the
//!   orchestrator runs them as runs of `jira.issues`.

mod jobs;
mod shards;

pub use jobs::{JiraJob, Repair};

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, PutPayload};
use quiver_catalog::state::webhooks::{Delivery, NewDelivery};
use quiver_catalog::{CatalogError, StateStore, Storage, TableName};
use quiver_config::JiraConfig;
use quiver_connectors::jira::{JiraClient, TABLES, is_issue_key, issue_id, parse_time};
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

/// An issue a delivery names: its key or id, and what the payload told about it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Target {
    /// Key (`ABC-1`) or id (`10001`), as the REST API accepts either.
    reference: String,
    id: Option<String>,
    month: Option<String>,
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
        let new = self.state.webhooks().record_delivery(&NewDelivery {
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
            if let Ok(counts) = self.state.webhooks().delivery_counts(SCHEMA) {
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
        let payloads = self
            .state
            .webhooks()
            .forget_deliveries(SCHEMA, KEEP_DELIVERIES)?;
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
        let due = self.state.webhooks().due_deliveries(SCHEMA, BATCH)?;
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
        self.state.webhooks().finish_deliveries(SCHEMA, &ids)?;
        metrics::counter!("quiver_webhook_deliveries_processed_total", "source" => "jira")
            .increment(ids.len() as u64);
        for (delivery, error) in &postponed {
            let pause = Duration::from_secs(5)
                .saturating_mul(2u32.saturating_pow(delivery.attempts.clamp(0, 7) as u32));
            tracing::warn!(delivery = %delivery.id, issues = %delivery.subject, error = %error, retry_in = ?pause, "jira delivery postponed");
            self.state
                .webhooks()
                .postpone_delivery(SCHEMA, &delivery.id, error, pause)?;
        }
        if !ids.is_empty() {
            crate::retention::expire(&self.state, &self.storage, self.retention).await?;
        }
        Ok(due.len())
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
        let id = issue_id(&issue["id"]);
        let month = issue["fields"]["created"]
            .as_str()
            .and_then(parse_time)
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
            let id = issue_id(&link[end])
                .ok_or_else(|| bad(format!("`issueLink.{end}` is not an issue id")))?;
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
