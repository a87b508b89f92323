//! Streaming a running query to the client: batch by batch, with cancellation, a deadline,
//! and one log line per query when it ends, however it ends.
//!
//! Backpressure is tonic's: the next batch is pulled from DataFusion only when the client
//! has room for it, so a full scan never sits in server memory. Dropping the stream (client
//! gone, cancellation) drops the DataFusion stream, which stops its tasks.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use futures::{FutureExt, Stream};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::Status;

/// Batches of one query, errors already mapped to statuses.
pub type BatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch, Status>> + Send>>;

/// When a registered query's ticket was issued; `None` once it runs (and so is removed
/// when it ends, not when it gets old).
type Issued = Option<Instant>;

/// Queries that can be cancelled, by query id. An entry is made when a ticket is issued (so
/// a cancel may even arrive before `DoGet`) and removed when the query ends, or when its
/// ticket was never redeemed and has expired.
#[derive(Debug, Default, Clone)]
pub struct RunningQueries {
    inner: Arc<Mutex<HashMap<String, (Issued, CancellationToken)>>>,
}

impl RunningQueries {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Issued, CancellationToken)>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an issued ticket, forgetting tickets issued more than `max_age` ago and
    /// never redeemed.
    pub fn register(&self, query_id: &str, max_age: Duration) -> CancellationToken {
        let mut map = self.lock();
        map.retain(|_, (issued, _)| issued.is_none_or(|at| at.elapsed() < max_age));
        map.entry(query_id.to_string())
            .or_insert_with(|| (Some(Instant::now()), CancellationToken::new()))
            .1
            .clone()
    }

    /// Marks a query as running and returns its token (registering it if it was forgotten).
    pub fn start(&self, query_id: &str) -> CancellationToken {
        let mut map = self.lock();
        let entry = map
            .entry(query_id.to_string())
            .or_insert_with(|| (None, CancellationToken::new()));
        entry.0 = None;
        entry.1.clone()
    }

    /// Cancels a query; returns whether it was known.
    pub fn cancel(&self, query_id: &str) -> bool {
        match self.lock().get(query_id) {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    fn finish(&self, query_id: &str) {
        self.lock().remove(query_id);
    }

    /// Number of queries registered (issued or running).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no query is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The per-query record that becomes the query's log line.
#[derive(Debug)]
pub struct QueryLog {
    /// Query id (from the ticket).
    pub query_id: String,
    /// Principal's e-mail.
    pub user: String,
    /// The SQL text.
    pub statement: String,
    started: Instant,
    rows: AtomicU64,
    bytes: AtomicU64,
    outcome: Mutex<Option<String>>,
    running: RunningQueries,
}

impl QueryLog {
    /// Starts the record of a query.
    pub fn new(
        query_id: String,
        user: String,
        statement: String,
        running: RunningQueries,
    ) -> Arc<Self> {
        Arc::new(Self {
            query_id,
            user,
            statement,
            started: Instant::now(),
            rows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            outcome: Mutex::new(None),
            running,
        })
    }

    /// Adds bytes sent on the wire.
    pub fn add_bytes(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Records how the query ended (the first outcome recorded wins).
    pub fn set_outcome(&self, outcome: impl Into<String>) {
        let mut slot = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert_with(|| outcome.into());
    }
}

impl Drop for QueryLog {
    fn drop(&mut self) {
        self.running.finish(&self.query_id);
        let outcome = self
            .outcome
            .get_mut()
            .map(|o| o.take())
            .ok()
            .flatten()
            .unwrap_or_else(|| "cancelled: client went away".into());
        let duration_ms = self.started.elapsed().as_millis() as u64;
        tracing::info!(
            query_id = %self.query_id,
            user = %self.user,
            statement = %self.statement,
            rows = self.rows.load(Ordering::Relaxed),
            bytes = self.bytes.load(Ordering::Relaxed),
            duration_ms,
            outcome = %outcome,
            "query"
        );
    }
}

/// A query's batches, stopped on cancellation or at the deadline, with rows counted.
pub struct GuardedStream {
    inner: BatchStream,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    log: Arc<QueryLog>,
    done: bool,
}

impl GuardedStream {
    /// Guards `inner` with `token` and a `timeout` counted from now.
    pub fn new(
        inner: BatchStream,
        token: CancellationToken,
        timeout: Duration,
        log: Arc<QueryLog>,
    ) -> Self {
        Self {
            inner,
            cancelled: Box::pin(token.cancelled_owned()),
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            log,
            done: false,
        }
    }

    fn fail(&mut self, status: Status) -> Poll<Option<Result<RecordBatch, Status>>> {
        self.done = true;
        self.log.set_outcome(format!("error: {}", status.message()));
        Poll::Ready(Some(Err(status)))
    }
}

impl Stream for GuardedStream {
    type Item = Result<RecordBatch, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.cancelled.poll_unpin(cx).is_ready() {
            return self.fail(Status::cancelled("the query was cancelled"));
        }
        if self.deadline.poll_unpin(cx).is_ready() {
            let timeout = humantime::format_duration(self.timeout);
            return self.fail(Status::deadline_exceeded(format!(
                "the query ran longer than the {timeout} limit (query.timeout) and was stopped"
            )));
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(batch))) => {
                self.log
                    .rows
                    .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                Poll::Ready(Some(Ok(batch)))
            }
            Poll::Ready(Some(Err(status))) => self.fail(status),
            Poll::Ready(None) => {
                self.done = true;
                self.log.set_outcome("ok");
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_queries_outlive_the_ticket_lifetime_but_unredeemed_tickets_do_not() {
        let running = RunningQueries::default();
        running.register("started", Duration::from_secs(3600));
        let token = running.start("started");
        running.register("never-redeemed", Duration::from_secs(3600));
        std::thread::sleep(Duration::from_millis(20));
        // A new ticket with a tiny lifetime prunes old, unredeemed tickets only.
        running.register("new", Duration::from_millis(10));
        assert!(running.cancel("started"));
        assert!(token.is_cancelled());
        assert!(!running.cancel("never-redeemed"));
        assert_eq!(running.len(), 2);
    }
}
