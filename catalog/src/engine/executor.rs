//! A runtime of its own for user queries: parsing, planning, optimising and executing.
//!
//! The gRPC and HTTP servers run on the process's main runtime, whose workers must stay free
//! to answer `/health`, handshakes and other users' streams. Planning is CPU-bound and can
//! recurse deeply on user input, so it runs here, on threads with large stacks (like
//! InfluxDB 3's dedicated executor). A query's batches are produced here too and handed to
//! the caller through a small channel, which keeps tonic's backpressure: the next batch is
//! computed only once the previous one was taken.
//!
//! Tokio cannot preempt a task: an aborted query stops only when its stream returns
//! `Pending`. DataFusion's leaves yield every so often, but an operator with several inputs
//! can emit batch after batch without touching them (a nested-loop join's output is the
//! product of its inputs), so [`YieldAfterJoins`] makes those yield too: a query past its
//! deadline then lets go of its threads, and other users' statements get their turn.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{FutureExt, StreamExt};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::CatalogError;

/// Stack of each query thread. Expression depth and plan size are bounded before planning
/// (`query.max_expression_depth`, `query.max_sql_length`), and this is ample for those
/// bounds; the memory is only reserved, and used as deep recursion touches it.
const STACK_SIZE: usize = 256 * 1024 * 1024;

/// The query runtime; dropping it stops its threads.
pub(crate) struct QueryExecutor {
    handle: Handle,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for QueryExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryExecutor").finish_non_exhaustive()
    }
}

impl QueryExecutor {
    /// A runtime with `threads` workers (one per core is right for CPU-bound work).
    pub(crate) fn new(threads: usize) -> Result<Self, CatalogError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            // DataFusion reads local files on blocking threads; they get the same stack.
            .max_blocking_threads(32)
            .thread_stack_size(STACK_SIZE)
            .thread_name("quiver-query")
            .enable_all()
            .build()
            .map_err(|e| CatalogError::Internal(format!("cannot start the query runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        // The runtime lives on a thread of its own, so it is never dropped inside another
        // runtime's async context (which tokio forbids).
        std::thread::Builder::new()
            .name("quiver-query-runtime".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_background();
            })
            .map_err(|e| CatalogError::Internal(format!("cannot start the query runtime: {e}")))?;
        Ok(Self {
            handle,
            shutdown: Some(shutdown),
        })
    }

    /// Runs `work` on the query runtime. Dropping the returned future aborts the work at
    /// its next await point; a panic in it becomes an error of this statement alone.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, CatalogError>> + Send + 'static,
    ) -> impl Future<Output = Result<T, CatalogError>> + Send + 'static {
        let task = AbortOnDrop(self.handle.spawn(work));
        async move {
            task.await.map_err(|e| {
                if e.is_panic() {
                    // A statement that makes DataFusion panic is refused like one it cannot
                    // plan; the server is unharmed (the panic ended this task only).
                    tracing::error!(error = %e, "the query engine panicked on a statement");
                    CatalogError::InvalidQuery(
                        "the query engine failed on this statement (a bug, logged on the server); rewrite it or report it to the administrator".into(),
                    )
                } else {
                    CatalogError::Internal("a query task was stopped".into())
                }
            })?
        }
    }

    /// Runs `work` on the query runtime in the background, to its end.
    pub(crate) fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        drop(self.handle.spawn(work));
    }

    /// Polls `stream` on the query runtime, handing its batches over one at a time. The
    /// producer stops when the returned stream is dropped.
    pub(crate) fn forward(
        &self,
        mut stream: SendableRecordBatchStream,
    ) -> SendableRecordBatchStream {
        let schema: SchemaRef = stream.schema();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let task = AbortOnDrop(self.handle.spawn(async move {
            loop {
                // A panic while producing a batch must end the result with an error, never
                // look like its end.
                let item = match std::panic::AssertUnwindSafe(stream.next()).catch_unwind().await {
                    Ok(Some(item)) => item,
                    Ok(None) => break,
                    Err(_) => {
                        tracing::error!("the query engine panicked while running a statement");
                        Err(DataFusionError::Execution(
                            "the query engine failed while running this statement (a bug, logged on the server)".into(),
                        ))
                    }
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        }));
        let batches = tokio_stream_from(rx, task);
        Box::pin(RecordBatchStreamAdapter::new(schema, batches))
    }
}

impl Drop for QueryExecutor {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Wraps the output of every operator with several inputs (joins, unions, recursive queries)
/// in a [`CooperativeExec`], which spends the task's Tokio budget on each batch and so
/// yields every 128 batches. Runs after DataFusion's own rules, which make leaves yield.
#[derive(Debug, Default)]
pub(crate) struct YieldAfterJoins;

impl PhysicalOptimizerRule for YieldAfterJoins {
    fn name(&self) -> &str {
        "YieldAfterJoins"
    }

    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            Ok(if node.children().len() > 1 {
                Transformed::yes(Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>)
            } else {
                Transformed::no(node)
            })
        })
        .map(|t| t.data)
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A receiver as a stream that also owns (and so aborts, when dropped) its producer.
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<
        Result<datafusion::arrow::array::RecordBatch, DataFusionError>,
    >,
    task: AbortOnDrop<()>,
) -> impl futures::Stream<Item = Result<datafusion::arrow::array::RecordBatch, DataFusionError>>
+ Send
+ 'static {
    futures::stream::poll_fn(move |cx| {
        let _owned = &task;
        rx.poll_recv(cx)
    })
}

/// A task that is aborted when its handle is dropped (a client that goes away stops its
/// query's work).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recursion that would overflow a default 2 MiB stack.
    fn deep(n: u64) -> u64 {
        let pad = std::hint::black_box([1u64; 64]);
        if n == 0 {
            0
        } else {
            deep(n - 1) + pad[n as usize % 64]
        }
    }

    #[tokio::test]
    async fn work_runs_on_threads_with_deep_stacks() {
        let executor = QueryExecutor::new(1).unwrap();
        let result = executor.run(async { Ok(deep(100_000)) }).await.unwrap();
        assert_eq!(result, 100_000);
    }

    #[tokio::test]
    async fn dropping_the_future_aborts_the_work() {
        let executor = QueryExecutor::new(1).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let work = executor.run(async move {
            let _tx = tx;
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            Ok(())
        });
        drop(work);
        // The sender is dropped with the aborted task.
        assert!(rx.await.is_err());
    }
}
