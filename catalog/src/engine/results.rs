//! Results of repeated identical queries, kept in memory (`query.results_cache_memory`), so
//! a dashboard refreshed by many viewers runs its statements once per table version.
//!
//! A result is found by its *key*: the statement's plan, the policy each table it reads is
//! seen through (row filter and masks, compiled for the caller), the versions of those
//! tables and the bound parameters. Two callers share a result only when their policies are
//! the same; a policy that depends on who runs it (`current_user()`) adds the caller to the
//! key. An `EXPLAIN`, a statement with a function whose value changes (`now()`,
//! `random()`, `current_user()`) and one that reads anything but registered tables
//! (`system.audit`, `information_schema`, table functions) are never kept. Any change to
//! tables, users or grants (the state's generation) forgets every result.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::source_as_provider;
use datafusion::error::Result;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{Stream, StreamExt};

use crate::auth::principal::Principal;
use crate::engine::policy::{PolicyTable, varies};
use crate::state::TableEntry;

/// What one result may take of the budget at most: a few large results must not push out
/// every small one.
const LARGEST_SHARE: usize = 8;

/// Kept results, within a byte budget, for one state generation.
pub(super) struct ResultsCache {
    budget: usize,
    inner: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    generation: u64,
    entries: HashMap<String, Entry>,
    used: usize,
    /// Increases with every use, to find the least recently used entry.
    clock: u64,
}

struct Entry {
    schema: SchemaRef,
    batches: Arc<[RecordBatch]>,
    bytes: usize,
    used_at: u64,
}

impl ResultsCache {
    /// Keeps results in up to `budget` bytes (0: none).
    pub(super) fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: Mutex::default(),
        }
    }

    /// The key of `plan`'s result for `principal`, or `None` when it must not be kept.
    pub(super) fn key(
        &self,
        principal: &Principal,
        plan: &LogicalPlan,
        read: &[TableEntry],
        tables: &[String],
    ) -> Option<String> {
        // Only registered tables, each at a known version; never `EXPLAIN [ANALYZE]`, whose
        // answer is about this run (its plan on the replicas live now, its metrics).
        let explain = matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_));
        if self.budget == 0 || explain || read.is_empty() || read.len() != tables.len() {
            return None;
        }
        let mut key = format!("{}\n", plan.display_indent_schema());
        let mut fixed = true;
        let mut personal = false;
        let _ = plan.apply_with_subqueries(|node| {
            let _ = node.apply_expressions(|e| {
                fixed &= !varies(e);
                Ok(TreeNodeRecursion::Continue)
            });
            if let LogicalPlan::TableScan(scan) = node {
                let policy = source_as_provider(&scan.source).ok().and_then(|p| {
                    p.downcast_ref::<PolicyTable>().map(|t| {
                        fixed &= !t.policy().is_time_relative();
                        (format!("{:?}", t.policy()), t.policy().is_personal())
                    })
                });
                match policy {
                    Some((policy, by_caller)) => {
                        key.push_str(&format!("{}: {policy}\n", scan.table_name));
                        personal |= by_caller;
                    }
                    None => {
                        key.push_str(&format!("{}: every row, every column\n", scan.table_name))
                    }
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        if !fixed {
            return None;
        }
        for entry in read {
            key.push_str(&format!("{} @ {}\n", entry.name, entry.version));
        }
        if personal {
            key.push_str(&format!("for {}\n", principal.email()));
        }
        Some(key)
    }

    /// The result kept under `key` at `generation`, as a stream.
    pub(super) fn get(&self, key: &str, generation: u64) -> Option<SendableRecordBatchStream> {
        let mut kept = self.lock();
        kept.forget_before(generation);
        kept.clock += 1;
        let clock = kept.clock;
        let hit = kept.entries.get_mut(key).map(|entry| {
            entry.used_at = clock;
            (entry.schema.clone(), entry.batches.clone())
        });
        metrics::counter!("quiver_results_cache_total", "outcome" => if hit.is_some() { "hit" } else { "miss" })
            .increment(1);
        let (schema, batches) = hit?;
        let batches = (0..batches.len()).map(move |i| Ok(batches[i].clone()));
        Some(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(batches),
        )))
    }

    /// `stream`, keeping what it yields under `key` once it ends without error (if it fits).
    pub(super) fn record(
        self: &Arc<Self>,
        key: String,
        generation: u64,
        stream: SendableRecordBatchStream,
    ) -> SendableRecordBatchStream {
        Box::pin(Recording {
            cache: self.clone(),
            key: Some(key),
            generation,
            largest: self.budget / LARGEST_SHARE,
            batches: Vec::new(),
            bytes: 0,
            stream,
        })
    }

    fn keep(
        &self,
        key: String,
        generation: u64,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        bytes: usize,
    ) {
        let mut kept = self.lock();
        kept.forget_before(generation);
        if kept.generation != generation || kept.entries.contains_key(&key) {
            return;
        }
        while kept.used + bytes > self.budget {
            let Some(oldest) = kept
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used_at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(entry) = kept.entries.remove(&oldest) {
                kept.used -= entry.bytes;
            }
        }
        kept.clock += 1;
        kept.used += bytes;
        let used_at = kept.clock;
        kept.entries.insert(
            key,
            Entry {
                schema,
                batches: batches.into(),
                bytes,
                used_at,
            },
        );
        metrics::gauge!("quiver_results_cache_bytes").set(kept.used as f64);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Kept {
    /// Forgets every result of a generation before `generation`.
    fn forget_before(&mut self, generation: u64) {
        if generation > self.generation {
            self.generation = generation;
            self.entries.clear();
            self.used = 0;
            metrics::gauge!("quiver_results_cache_bytes").set(0.0);
        }
    }
}

/// A result on its way to the client, kept when it ends if it is small enough.
struct Recording {
    cache: Arc<ResultsCache>,
    /// `None` once the result is known not to be kept.
    key: Option<String>,
    generation: u64,
    largest: usize,
    batches: Vec<RecordBatch>,
    bytes: usize,
    stream: SendableRecordBatchStream,
}

impl Stream for Recording {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let item = std::task::ready!(this.stream.poll_next_unpin(cx));
        match &item {
            Some(Ok(batch)) if this.key.is_some() => {
                this.bytes += batch.get_array_memory_size();
                if this.bytes > this.largest {
                    this.key = None;
                    this.batches = Vec::new();
                } else {
                    this.batches.push(batch.clone());
                }
            }
            Some(Err(_)) => this.key = None,
            None => {
                if let Some(key) = this.key.take() {
                    let batches = std::mem::take(&mut this.batches);
                    let bytes = this.bytes + key.len();
                    this.cache
                        .keep(key, this.generation, this.stream.schema(), batches, bytes);
                }
            }
            _ => {}
        }
        Poll::Ready(item)
    }
}

impl RecordBatchStream for Recording {
    fn schema(&self) -> SchemaRef {
        self.stream.schema()
    }
}
