//! Jobs over the Jira tables: the backfill (a JQL's issues, page by page), the
//! consistency check (Jira's issue list against ours) and the SLA refresh (open issues'
//! SLA fields change without events) — and how the orchestrator runs them as runs of
//! `jira.issues`, like a sync.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use quiver_catalog::state::tables::SyncRun;
use quiver_catalog::{CatalogError, TableName};
use quiver_connectors::jira::tables::issue_row;
use quiver_connectors::jira::{is_issue_key, issue_id, parse_time};

use super::shards::{Change, Held};
use super::{JiraSync, SCHEMA, Target};
use crate::{Orchestrator, OrchestratorError, Running, Trigger, lock, retention};

/// What `quiver sync jira.*` (or "Sync now" on a Jira table) runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JiraJob {
    /// Compare Jira's issue list with ours and repair the difference.
    Check,
    /// Load every issue a JQL query matches.
    Backfill(String),
}

/// Outcome of a consistency check.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Repair {
    /// Issues in Jira's list.
    pub checked: usize,
    /// Issues re-fetched because they were missing or older than Jira's.
    pub refetched: usize,
    /// Issues we hold that Jira's list lacks: asked for again, removed when Jira answers
    /// 404 (kept if Jira still serves them, e.g. moved out of the JQL's scope).
    pub removed: usize,
}

impl JiraSync {
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
                    // Keys go into request paths: only well-formed ones.
                    let reference = i["key"].as_str().filter(|k| is_issue_key(k))?.to_string();
                    Some((
                        Target {
                            reference,
                            id: issue_id(&i["id"]),
                            month: None,
                        },
                        false,
                    ))
                })
                .collect();
            done += targets.len() as u64;
            self.refetch_all(targets).await?;
            progress(done, total.max(done));
            // Each page publishes versions; a long backfill should not pile them up.
            retention::expire(&self.state, &self.storage, self.retention).await?;
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
            let Some(id) = issue_id(&issue["id"]) else {
                continue;
            };
            let id = id.as_str();
            seen.insert(id.to_string());
            let theirs = issue["fields"]["updated"]
                .as_str()
                .and_then(parse_time)
                .map(|t| t.timestamp_micros());
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

impl Orchestrator {
    /// Whether `table` is one of Jira's (kept by the Jira writer, not by a definition).
    pub(crate) fn is_jira(&self, table: &TableName) -> Result<bool, OrchestratorError> {
        Ok(self.jira.is_some()
            && table.schema() == SCHEMA
            && self.state.tables().definition(table)?.is_none())
    }

    /// Starts a Jira job in the background (recorded as a run of `jira.issues`).
    pub fn start_jira(
        self: &Arc<Self>,
        job: JiraJob,
        trigger: Trigger,
    ) -> Result<i64, OrchestratorError> {
        let (jira, running) = self.claim_jira(&trigger)?;
        let run = running.run;
        let this = self.clone();
        tokio::spawn(async move {
            let _ = this.execute_jira(&jira, &job, &running, |_, _| {}).await;
        });
        Ok(run)
    }

    /// Runs a Jira job to its end; `progress(done, total)` as issues are loaded.
    pub async fn run_jira(
        &self,
        job: JiraJob,
        trigger: Trigger,
        progress: impl Fn(u64, u64),
    ) -> Result<SyncRun, OrchestratorError> {
        let (jira, running) = self.claim_jira(&trigger)?;
        let _ = self.execute_jira(&jira, &job, &running, progress).await;
        Ok(self.state.tables().sync_run(running.run)?)
    }

    fn claim_jira(&self, trigger: &Trigger) -> Result<(Arc<JiraSync>, Running), OrchestratorError> {
        let jira = self.jira.clone().ok_or_else(|| {
            CatalogError::NotFound("Jira is not configured (no `jira:` section)".into())
        })?;
        let table = TableName::new(SCHEMA, "issues")?;
        Ok((jira, self.claim_slot(&table, trigger)?))
    }

    async fn execute_jira(
        &self,
        jira: &JiraSync,
        job: &JiraJob,
        running: &Running,
        progress: impl Fn(u64, u64),
    ) -> Result<u64, OrchestratorError> {
        let table = TableName::new(SCHEMA, "issues")?;
        let _permit = self.permits.acquire().await;
        tracing::info!(run = running.run, ?job, "jira job started");
        let outcome = match job {
            JiraJob::Check => jira
                .check_consistency()
                .await
                .map(|r| (r.refetched + r.removed) as u64),
            JiraJob::Backfill(jql) => {
                jira.backfill(jql, |done, total| {
                    running.progress.set_rows(done);
                    progress(done, total);
                })
                .await
            }
        };
        lock(&self.running).remove(&table);
        match outcome {
            Ok(issues) => {
                self.state
                    .tables()
                    .succeed_run(running.run, issues as i64)?;
                tracing::info!(run = running.run, issues, "jira job succeeded");
                if let Err(e) =
                    retention::expire(&self.state, &self.storage, self.options.retention).await
                {
                    tracing::warn!(error = %e, "garbage collection");
                }
                Ok(issues)
            }
            Err(e) => {
                let message = e.to_string();
                tracing::warn!(run = running.run, error = %message, "jira job failed");
                self.state.tables().fail_run(running.run, &message)?;
                Err(e)
            }
        }
    }
}
