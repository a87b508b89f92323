//! Jobs over a push source's tables: the backfill (a query's items, page by page), the
//! consistency check (the source's list against ours) and the refresh (a column that
//! changes without events) — and how the orchestrator runs them as runs of the source's
//! head table, like a sync.

use std::collections::HashSet;
use std::sync::Arc;

use quiver_catalog::state::tables::SyncRun;
use quiver_catalog::{CatalogError, TableName};
use quiver_connectors::push::Target;

use super::PushSync;
use super::shards::Change;
use crate::{Orchestrator, OrchestratorError, Running, Trigger, lock, retention};

/// What `quiver sync jira.*` (or "Sync now" on a push source's table) runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushJob {
    /// Compare the source's item list with ours and repair the difference.
    Check,
    /// Load every item a query (Jira: JQL) matches.
    Backfill(String),
}

/// Outcome of a consistency check.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Repair {
    /// Items in the source's list.
    pub checked: usize,
    /// Items re-fetched because they were missing or older than the source's.
    pub refetched: usize,
    /// Items we hold that the source's list lacks: asked for again, removed when the source
    /// says they are gone (kept if it still serves them, e.g. moved out of the scope).
    pub removed: usize,
}

impl PushSync {
    /// Loads every item matching `query`, page by page; `progress(done, total)` after each
    /// page (`total` is the source's approximate count). Returns how many were loaded.
    pub async fn backfill(
        &self,
        query: &str,
        progress: impl Fn(u64, u64),
    ) -> Result<u64, OrchestratorError> {
        let total = self.source.count(query).await?;
        progress(0, total);
        let mut done = 0u64;
        let mut token: Option<String> = None;
        loop {
            let page = self.source.page(query, token.as_deref()).await?;
            done += page.targets.len() as u64;
            self.refetch_all(page.targets.into_iter().map(|t| (t, false)).collect())
                .await?;
            progress(done, total.max(done));
            // Each page publishes versions; a long backfill should not pile them up.
            retention::expire(&self.state, &self.storage, self.retention).await?;
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        tracing::info!(
            source = self.name(),
            query,
            items = done,
            "backfill finished"
        );
        Ok(done)
    }

    /// Compares the source's item list with ours: fetches what is missing or older here,
    /// and removes what the source no longer has.
    pub async fn check_consistency(&self) -> Result<Repair, OrchestratorError> {
        let held = self.held().await?;
        let Some(listed) = self.source.list(&held).await? else {
            return Ok(Repair::default());
        };
        let mut repair = Repair {
            checked: listed.len(),
            ..Repair::default()
        };
        let mut seen = HashSet::new();
        let mut targets = Vec::new();
        for item in listed {
            let stale = match held.get(&item.id) {
                None => true,
                Some(h) => item
                    .updated
                    .is_some_and(|t| h.updated.is_none_or(|ours| ours < t)),
            };
            seen.insert(item.id.clone());
            if stale {
                targets.push((Target::by_id(item.id), false));
            }
        }
        repair.refetched = targets.len();
        // Ours but not in the source's list: ask for each (gone removes it).
        for (id, h) in &held {
            if !seen.contains(id) {
                repair.removed += 1;
                targets.push((
                    Target {
                        shard: Some(h.shard.clone()),
                        ..Target::by_id(id.clone())
                    },
                    false,
                ));
            }
        }
        self.refetch_all(targets).await?;
        Ok(repair)
    }

    /// Re-reads the head rows the source says may have changed without an event and
    /// rewrites those whose watched column did; returns how many.
    pub async fn refresh(&self) -> Result<usize, OrchestratorError> {
        let held = self.held().await?;
        let head = self.source.head();
        let mut changes = Vec::new();
        for row in self.source.refresh(&held).await? {
            let id = row[head.id].as_str().unwrap_or_default().to_string();
            let Some(h) = held.get(&id) else { continue };
            if row[head.watched].as_str() != h.watched.as_deref() {
                changes.push(Change::Head {
                    id,
                    shard: h.shard.clone(),
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
    /// The push source keeping `table`, if one does (its schema is the source's, and no
    /// definition claims the table).
    pub(crate) fn pushed(
        &self,
        table: &TableName,
    ) -> Result<Option<Arc<PushSync>>, OrchestratorError> {
        let Some(push) = self.push(table.schema()) else {
            return Ok(None);
        };
        Ok(self
            .state
            .tables()
            .definition(table)?
            .is_none()
            .then(|| push.clone()))
    }

    /// Starts a job of push source `source` in the background (recorded as a run of its
    /// head table).
    pub fn start_push(
        self: &Arc<Self>,
        source: &str,
        job: PushJob,
        trigger: Trigger,
    ) -> Result<i64, OrchestratorError> {
        let (push, running) = self.claim_push(source, &trigger)?;
        let run = running.run;
        let this = self.clone();
        tokio::spawn(async move {
            let _ = this.execute_push(&push, &job, &running, |_, _| {}).await;
        });
        Ok(run)
    }

    /// Runs a job of push source `source` to its end; `progress(done, total)` as items are
    /// loaded.
    pub async fn run_push(
        &self,
        source: &str,
        job: PushJob,
        trigger: Trigger,
        progress: impl Fn(u64, u64),
    ) -> Result<SyncRun, OrchestratorError> {
        let (push, running) = self.claim_push(source, &trigger)?;
        let _ = self.execute_push(&push, &job, &running, progress).await;
        Ok(self.state.tables().sync_run(running.run)?)
    }

    fn claim_push(
        &self,
        source: &str,
        trigger: &Trigger,
    ) -> Result<(Arc<PushSync>, Running), OrchestratorError> {
        let push = self.push(source).cloned().ok_or_else(|| {
            CatalogError::NotFound(format!(
                "{source} is not configured (no `{source}:` section)"
            ))
        })?;
        let running = self.claim_slot(&push.head_table(), trigger)?;
        Ok((push, running))
    }

    async fn execute_push(
        &self,
        push: &PushSync,
        job: &PushJob,
        running: &Running,
        progress: impl Fn(u64, u64),
    ) -> Result<u64, OrchestratorError> {
        let _permit = self.permits.acquire().await;
        tracing::info!(
            source = push.name(),
            run = running.run,
            ?job,
            "push job started"
        );
        let outcome = match job {
            PushJob::Check => push
                .check_consistency()
                .await
                .map(|r| (r.refetched + r.removed) as u64),
            PushJob::Backfill(query) => {
                push.backfill(query, |done, total| {
                    running.progress.set_rows(done);
                    progress(done, total);
                })
                .await
            }
        };
        lock(&self.running).remove(&push.head_table());
        match outcome {
            Ok(items) => {
                self.state.tables().succeed_run(running.run, items as i64)?;
                tracing::info!(
                    source = push.name(),
                    run = running.run,
                    items,
                    "push job succeeded"
                );
                if let Err(e) =
                    retention::expire(&self.state, &self.storage, self.options.retention).await
                {
                    tracing::warn!(error = %e, "garbage collection");
                }
                Ok(items)
            }
            Err(e) => {
                let message = e.to_string();
                tracing::warn!(source = push.name(), run = running.run, error = %message, "push job failed");
                self.state.tables().fail_run(running.run, &message)?;
                Err(e)
            }
        }
    }
}
