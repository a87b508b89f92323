//! Hot tables held in memory (`query.acceleration_memory`): a table read again and again is
//! decoded from parquet once and then served as Arrow, so a scan costs what sending it
//! costs.
//!
//! A copy belongs to one version of its table. Sessions pick tables by version, so a
//! version committed while its predecessor is held is read from parquet until its own copy
//! is ready: nobody is ever served a version that is no longer current. Copies are kept in
//! the plain types clients receive (no view types), so a scan needs no cast on its way out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::datasource::{MemTable, TableProvider};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;

use crate::engine::wire::{plain_batch, plain_schema};
use crate::state::TableEntry;
use crate::{CatalogError, TableName};

/// Reads of a table (statements planned) after which it is copied into memory.
const HOT_AFTER: u64 = 2;

/// Which tables are in memory, within a budget.
pub(super) struct Accelerator {
    budget: usize,
    inner: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    /// Statements planned that read each table.
    reads: HashMap<TableName, u64>,
    /// At most one copy per table.
    copies: HashMap<TableName, Copy>,
    /// Bytes of the ready copies.
    used: usize,
}

enum Copy {
    Loading(i64),
    Ready {
        version: i64,
        table: Arc<dyn TableProvider>,
        bytes: usize,
    },
    /// This version did not fit in the budget; not tried again.
    TooBig(i64),
}

impl Copy {
    fn version(&self) -> i64 {
        match self {
            Copy::Loading(v) | Copy::TooBig(v) | Copy::Ready { version: v, .. } => *v,
        }
    }
}

impl Accelerator {
    /// Holds tables in up to `budget` bytes of memory (0: none).
    pub(super) fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: Mutex::default(),
        }
    }

    /// The in-memory copy of `entry`'s version, when it is ready.
    pub(super) fn table(&self, entry: &TableEntry) -> Option<Arc<dyn TableProvider>> {
        match self.lock().copies.get(&entry.name)? {
            Copy::Ready { version, table, .. } if *version == entry.version => Some(table.clone()),
            _ => None,
        }
    }

    /// Counts a statement reading `read`; returns the tables that became hot and should be
    /// copied now (each is marked as loading).
    pub(super) fn note_reads(&self, read: &[TableEntry]) -> Vec<TableEntry> {
        if self.budget == 0 {
            return Vec::new();
        }
        let mut held = self.lock();
        let mut load = Vec::new();
        for entry in read {
            let reads = held.reads.entry(entry.name.clone()).or_insert(0);
            *reads += 1;
            let hot = *reads >= HOT_AFTER;
            let current = held
                .copies
                .get(&entry.name)
                .is_some_and(|c| c.version() == entry.version);
            // Parquet bytes are a lower bound of the Arrow bytes: skip what cannot fit.
            if hot && !current && (entry.bytes.max(0) as usize) < self.budget {
                if let Some(Copy::Ready { bytes, .. }) = held.copies.remove(&entry.name) {
                    held.used -= bytes;
                }
                held.copies
                    .insert(entry.name.clone(), Copy::Loading(entry.version));
                load.push(entry.clone());
            }
        }
        load
    }

    /// Reads `entry` through `provider` into memory and keeps the copy if it fits; returns
    /// whether it was kept.
    pub(super) async fn load(
        &self,
        ctx: &SessionContext,
        entry: &TableEntry,
        provider: Arc<dyn TableProvider>,
    ) -> Result<bool, CatalogError> {
        let loaded = async {
            let partitions = ctx.read_table(provider)?.collect_partitioned().await?;
            let schema = partitions
                .iter()
                .flatten()
                .next()
                .map(|b| plain_schema(&b.schema()));
            let Some(schema) = schema else {
                return Ok::<_, CatalogError>(None);
            };
            let mut bytes = 0;
            let partitions = partitions
                .into_iter()
                .map(|batches| {
                    batches
                        .into_iter()
                        .map(|b| {
                            let b = plain_batch(b, &schema).map_err(DataFusionError::from)?;
                            bytes += b.get_array_memory_size();
                            Ok(b)
                        })
                        .collect::<Result<Vec<_>, CatalogError>>()
                })
                .collect::<Result<Vec<_>, _>>()?;
            let table: Arc<dyn TableProvider> = Arc::new(MemTable::try_new(schema, partitions)?);
            Ok(Some((table, bytes)))
        }
        .await;
        let mut held = self.lock();
        let still_wanted =
            matches!(held.copies.get(&entry.name), Some(Copy::Loading(v)) if *v == entry.version);
        if !still_wanted {
            return Ok(false);
        }
        match loaded {
            Ok(Some((table, bytes))) if held.used + bytes <= self.budget => {
                held.used += bytes;
                held.copies.insert(
                    entry.name.clone(),
                    Copy::Ready {
                        version: entry.version,
                        table,
                        bytes,
                    },
                );
                metrics::gauge!("quiver_accelerated_bytes").set(held.used as f64);
                tracing::info!(table = %entry.name, version = entry.version, bytes, "table held in memory");
                Ok(true)
            }
            Ok(_) => {
                held.copies
                    .insert(entry.name.clone(), Copy::TooBig(entry.version));
                tracing::info!(table = %entry.name, version = entry.version, budget = self.budget, used = held.used,
                    "table not held in memory: it does not fit in query.acceleration_memory");
                Ok(false)
            }
            Err(e) => {
                held.copies.remove(&entry.name);
                Err(e)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
