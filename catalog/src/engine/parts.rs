//! Results fetched in parts. A statement whose physical plan is N independent streams — a
//! scan with its filters, projections and the caller's policies, and nothing that merges,
//! sorts, limits or reshuffles rows — can be served as N Flight endpoints, each run alone,
//! on this replica or any other, and fetched side by side by the client.
//!
//! Every part re-plans the statement with the [`Layout`]'s settings, which gives the same
//! partitions on every replica (files are grouped and split by path and size, not by
//! listing order), and runs one partition. A part refuses to run when a table it reads has
//! a new version since the layout was made: the parts would otherwise mix two versions.

use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use serde::{Deserialize, Serialize};

use super::statements::verify_read_only;
use super::{Planned, QueryEngine};
use crate::CatalogError;

/// How a statement's result is split into parts, and what it read when it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Number of parts.
    pub count: usize,
    /// `target_partitions` the statement is planned with.
    pub target_partitions: usize,
    /// Files together larger than this are split into byte ranges
    /// (`repartition_file_min_size`).
    pub split_bytes: usize,
    /// `(schema.table, version)` of every table read.
    pub versions: Vec<(String, i64)>,
}

impl QueryEngine {
    /// How `planned` can be fetched in up to `most` parts, when it is a plain scan of
    /// tables together larger than `min_bytes`; `None` when it is one stream.
    pub async fn layout(
        self: &Arc<Self>,
        planned: &Planned,
        most: usize,
        min_bytes: usize,
    ) -> Result<Option<Layout>, CatalogError> {
        let bytes: i64 = planned.read.iter().map(|t| t.bytes).sum();
        if most < 2 || !is_scan(&planned.plan) || bytes < min_bytes as i64 {
            return Ok(None);
        }
        let mut layout = Layout {
            count: 0,
            target_partitions: most,
            split_bytes: min_bytes,
            versions: versions(planned),
        };
        let (ctx, plan) = (planned.ctx.clone(), planned.plan.clone());
        let settings = layout.clone();
        let count = self
            .executor
            .run(async move {
                let state = settings.apply(ctx.state());
                let physical = state.create_physical_plan(&plan).await?;
                Ok::<_, CatalogError>(independent_partitions(&physical))
            })
            .await?;
        layout.count = count;
        Ok((count > 1).then_some(layout))
    }

    /// Runs part `index` of `planned` as laid out by `layout`, on the query runtime.
    pub async fn execute_part(
        self: &Arc<Self>,
        planned: &Planned,
        layout: &Layout,
        index: usize,
    ) -> Result<SendableRecordBatchStream, CatalogError> {
        let now = versions(planned);
        if now != layout.versions {
            let changed: Vec<String> = now
                .iter()
                .filter(|v| !layout.versions.contains(v))
                .map(|(table, _)| format!("`{table}`"))
                .collect();
            return Err(CatalogError::Conflict(format!(
                "{} changed since this result was planned, and its parts would mix two versions; run the statement again",
                if changed.is_empty() {
                    "a table it reads".to_string()
                } else {
                    changed.join(", ")
                }
            )));
        }
        if index >= layout.count {
            return Err(CatalogError::InvalidInput(format!(
                "part {index} of a result in {} parts",
                layout.count
            )));
        }
        verify_read_only(&planned.plan)?;
        let (ctx, plan, layout) = (planned.ctx.clone(), planned.plan.clone(), layout.clone());
        let stream = self
            .executor
            .run(async move {
                let state = layout.apply(ctx.state());
                let physical = state.create_physical_plan(&plan).await?;
                let count = independent_partitions(&physical);
                if count != layout.count {
                    return Err(CatalogError::Conflict(format!(
                        "this statement now plans as {count} parts, not {}; run it again",
                        layout.count
                    )));
                }
                Ok(physical.execute(index, state.task_ctx())?)
            })
            .await?;
        Ok(self.executor.forward(stream))
    }
}

impl Layout {
    /// `state` with the settings this layout is planned with.
    fn apply(&self, mut state: SessionState) -> SessionState {
        let options = state.config_mut().options_mut();
        options.execution.target_partitions = self.target_partitions;
        options.optimizer.repartition_file_scans = true;
        options.optimizer.repartition_file_min_size = self.split_bytes;
        // A partition run alone would otherwise take its siblings' files too.
        options.execution.enable_file_stream_work_stealing = false;
        state
    }
}

/// Whether `plan` only reads one registered table, filters and projects (what else it does
/// merges or reorders rows): a cheap test before the physical plan decides.
fn is_scan(plan: &LogicalPlan) -> bool {
    let mut scans = 0;
    let only_scan = plan
        .apply(|node| {
            Ok(match node {
                LogicalPlan::TableScan(_) => {
                    scans += 1;
                    TreeNodeRecursion::Continue
                }
                LogicalPlan::Projection(_)
                | LogicalPlan::Filter(_)
                | LogicalPlan::SubqueryAlias(_) => TreeNodeRecursion::Continue,
                _ => TreeNodeRecursion::Stop,
            })
        })
        .is_ok_and(|end| end != TreeNodeRecursion::Stop);
    only_scan && scans == 1
}

/// The tables `planned` reads with their versions, in name order.
fn versions(planned: &Planned) -> Vec<(String, i64)> {
    let mut versions: Vec<(String, i64)> = planned
        .read
        .iter()
        .map(|t| (t.name.to_string(), t.version))
        .collect();
    versions.sort();
    versions
}

/// The number of partitions of `plan` when each can run alone and together they are the
/// result: a chain of one-input operators over a file scan, with the same partition count
/// at every step and no repartitioning (whose every output partition reads all inputs).
/// Otherwise 1.
fn independent_partitions(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let count = plan.output_partitioning().partition_count();
    let mut node = Arc::clone(plan);
    loop {
        if node.is::<RepartitionExec>() || node.output_partitioning().partition_count() != count {
            return 1;
        }
        let next = match node.children().as_slice() {
            [] => {
                return if node.is::<DataSourceExec>() {
                    count
                } else {
                    1
                };
            }
            [child] => Arc::clone(child),
            _ => return 1,
        };
        node = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

    /// Writes `select` to `path` as parquet (with `options`) in `ctx`.
    async fn write(ctx: &SessionContext, select: &str, path: &std::path::Path, options: &str) {
        let copy = format!(
            "COPY ({select}) TO '{}' STORED AS PARQUET {options}",
            path.display()
        );
        ctx.sql(&copy).await.unwrap().collect().await.unwrap();
    }

    /// `t`: the parquet at `path` (a file or a folder).
    async fn register(ctx: &SessionContext, path: &std::path::Path) {
        let options = ParquetReadOptions::default();
        ctx.register_parquet("t", path.to_str().unwrap(), options)
            .await
            .unwrap();
    }

    async fn partitions(sql: &str) -> usize {
        let dir = tempfile::tempdir().unwrap();
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(4));
        for i in 0..4 {
            let select = format!(
                "SELECT {i} * 1000 + value AS k, value % 7 AS g FROM generate_series(1, 1000)"
            );
            write(
                &ctx,
                &select,
                &dir.path().join(format!("part-{i}.parquet")),
                "",
            )
            .await;
        }
        register(&ctx, dir.path()).await;
        let plan = ctx
            .sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        independent_partitions(&plan)
    }

    #[tokio::test]
    async fn scans_split_and_whatever_merges_rows_does_not() {
        assert_eq!(partitions("SELECT * FROM t").await, 4);
        assert_eq!(partitions("SELECT k FROM t WHERE g = 3").await, 4);
        for merging in [
            "SELECT g, count(*) FROM t GROUP BY g",
            "SELECT * FROM t ORDER BY k",
            "SELECT * FROM t LIMIT 10",
            "SELECT a.k FROM t a JOIN t b ON a.k = b.k",
            "SELECT count(*) FROM t",
            "SELECT DISTINCT g FROM t",
        ] {
            assert_eq!(partitions(merging).await, 1, "{merging}");
        }
    }

    #[tokio::test]
    async fn each_part_run_alone_reads_only_its_share() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = SessionContext::new();
        let path = dir.path().join("one.parquet");
        let select = "SELECT value AS k, repeat('x', 20) AS s FROM generate_series(1, 300000)";
        write(&ctx, select, &path, "OPTIONS (max_row_group_size 50000)").await;
        register(&ctx, &path).await;
        let layout = Layout {
            count: 0,
            target_partitions: 3,
            split_bytes: 1024,
            versions: Vec::new(),
        };
        let plan = ctx
            .sql("SELECT * FROM t WHERE k % 2 = 0")
            .await
            .unwrap()
            .into_optimized_plan()
            .unwrap();
        let mut total = 0;
        let mut parts = 0;
        for index in 0.. {
            // A fresh plan for every part, as on a replica fetching one.
            let state = layout.apply(ctx.state());
            let physical = state.create_physical_plan(&plan).await.unwrap();
            parts = independent_partitions(&physical);
            if index == parts {
                break;
            }
            let batches = datafusion::physical_plan::common::collect(
                physical.execute(index, state.task_ctx()).unwrap(),
            )
            .await
            .unwrap();
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            assert!(rows < 150_000, "part {index} read {rows} rows");
            total += rows;
        }
        assert_eq!(parts, 3);
        assert_eq!(total, 150_000);
    }
}
