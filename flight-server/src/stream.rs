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
use quiver_catalog::StateStore;
use quiver_catalog::audit::QueryRecord;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::Status;

/// Batches of one query, errors already mapped to statuses.
pub type BatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch, Status>> + Send>>;

/// A registered query.
#[derive(Debug)]
struct Entry {
    /// When its ticket was issued; `None` once it runs (and so it is removed when it ends,
    /// not when it gets old).
    issued: Option<Instant>,
    /// Who runs it.
    user: String,
    token: CancellationToken,
}

/// Queries that can be cancelled, by query id. An entry is made when a ticket is issued (so
/// a cancel may even arrive before `DoGet`) and removed when the query ends, or when its
/// ticket was never redeemed and has expired.
#[derive(Debug, Default, Clone)]
pub struct RunningQueries {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
}

impl RunningQueries {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an issued ticket, forgetting tickets issued more than `max_age` ago and
    /// never redeemed.
    pub fn register(&self, query_id: &str, user: &str, max_age: Duration) -> CancellationToken {
        let mut map = self.lock();
        map.retain(|_, e| e.issued.is_none_or(|at| at.elapsed() < max_age));
        map.entry(query_id.to_string())
            .or_insert_with(|| Entry {
                issued: Some(Instant::now()),
                user: user.to_string(),
                token: CancellationToken::new(),
            })
            .token
            .clone()
    }

    /// Marks a query as running and returns its token (registering it if it was forgotten),
    /// unless `user` already runs `max_per_user` queries: then `Err(running)`.
    pub fn start(
        &self,
        query_id: &str,
        user: &str,
        max_per_user: usize,
    ) -> Result<CancellationToken, usize> {
        let mut map = self.lock();
        let running = map
            .iter()
            .filter(|(id, e)| e.issued.is_none() && e.user == user && id.as_str() != query_id)
            .count();
        if running >= max_per_user {
            return Err(running);
        }
        let entry = map.entry(query_id.to_string()).or_insert_with(|| Entry {
            issued: None,
            user: user.to_string(),
            token: CancellationToken::new(),
        });
        entry.issued = None;
        Ok(entry.token.clone())
    }

    /// Cancels a query; returns whether it was known.
    pub fn cancel(&self, query_id: &str) -> bool {
        match self.lock().get(query_id) {
            Some(entry) => {
                entry.token.cancel();
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
    /// Tables the query reads.
    pub tables: Vec<String>,
    started: Instant,
    rows: AtomicU64,
    bytes: AtomicU64,
    outcome: Mutex<Option<String>>,
    running: RunningQueries,
    audit: Option<Arc<StateStore>>,
}

impl QueryLog {
    /// Starts the record of a query; when it ends it is logged, and written to `audit`.
    pub fn new(
        query_id: String,
        user: String,
        statement: String,
        tables: Vec<String>,
        running: RunningQueries,
        audit: Option<Arc<StateStore>>,
    ) -> Arc<Self> {
        metrics::gauge!("quiver_active_queries").increment(1.0);
        Arc::new(Self {
            query_id,
            user,
            statement,
            tables,
            started: Instant::now(),
            rows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            outcome: Mutex::new(None),
            running,
            audit,
        })
    }

    /// Adds bytes sent on the wire; returns the total so far.
    pub fn add_bytes(&self, n: usize) -> u64 {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed) + n as u64
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
        let record = QueryRecord {
            user: std::mem::take(&mut self.user),
            statement: std::mem::take(&mut self.statement),
            tables: std::mem::take(&mut self.tables),
            rows: self.rows.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            duration_ms,
            outcome,
        };
        let outcome_label = match record.outcome.as_str() {
            "ok" => "ok",
            o if o.starts_with("cancelled") => "cancelled",
            o if o.starts_with("refused") => "refused",
            o if o.contains("query.timeout") => "timeout",
            _ => "error",
        };
        metrics::gauge!("quiver_active_queries").decrement(1.0);
        metrics::counter!("quiver_queries_total", "outcome" => outcome_label).increment(1);
        metrics::histogram!("quiver_query_duration_seconds")
            .record(self.started.elapsed().as_secs_f64());
        metrics::counter!("quiver_rows_streamed_total").increment(record.rows);
        metrics::counter!("quiver_bytes_streamed_total").increment(record.bytes);
        tracing::info!(
            query_id = %self.query_id,
            user = %record.user,
            statement = %record.statement,
            tables = %record.tables.join(","),
            rows = record.rows,
            bytes = record.bytes,
            duration_ms,
            outcome = %record.outcome,
            "query"
        );
        if let (Some(state), Ok(runtime)) =
            (self.audit.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn_blocking(move || {
                if let Err(e) = state.record_query(&record) {
                    tracing::error!(error = %e, "cannot write the query to the audit log");
                }
            });
        }
    }
}

/// A query's batches, stopped on cancellation or at the deadline, with rows counted.
pub struct GuardedStream {
    inner: BatchStream,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    max_rows: Option<u64>,
    log: Arc<QueryLog>,
    done: bool,
}

impl GuardedStream {
    /// Guards `inner` with `token`, a `timeout` counted from now and a row cap.
    pub fn new(
        inner: BatchStream,
        token: CancellationToken,
        timeout: Duration,
        max_rows: Option<u64>,
        log: Arc<QueryLog>,
    ) -> Self {
        Self {
            inner,
            cancelled: Box::pin(token.cancelled_owned()),
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            max_rows,
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
                let rows = self
                    .log
                    .rows
                    .fetch_add(batch.num_rows() as u64, Ordering::Relaxed)
                    + batch.num_rows() as u64;
                if let Some(max) = self.max_rows
                    && rows > max
                {
                    return self.fail(Status::resource_exhausted(format!(
                        "the result has more than {max} rows (query.max_result_rows); add a LIMIT or narrow the query"
                    )));
                }
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
        running.register("started", "a", Duration::from_secs(3600));
        let token = running.start("started", "a", 8).unwrap();
        running.register("never-redeemed", "a", Duration::from_secs(3600));
        std::thread::sleep(Duration::from_millis(20));
        // A new ticket with a tiny lifetime prunes old, unredeemed tickets only.
        running.register("new", "a", Duration::from_millis(10));
        assert!(running.cancel("started"));
        assert!(token.is_cancelled());
        assert!(!running.cancel("never-redeemed"));
        assert_eq!(running.len(), 2);
    }

    #[test]
    fn a_user_runs_at_most_the_allowed_number_of_queries() {
        let running = RunningQueries::default();
        running.start("q1", "a", 2).unwrap();
        running.start("q2", "a", 2).unwrap();
        assert_eq!(running.start("q3", "a", 2).unwrap_err(), 2);
        running
            .start("q3", "b", 2)
            .expect("other users are not affected");
        running.finish("q1");
        running.start("q3", "a", 2).expect("a slot was freed");
    }
}
