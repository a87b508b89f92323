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
use quiver_catalog::Planned;
use quiver_catalog::StateStore;
use quiver_catalog::state::audit::{QueryRecord, TableRead};
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

#[derive(Debug, Default)]
struct Registry {
    queries: HashMap<String, Entry>,
    /// Work in progress per user: statements being planned and streams being sent.
    busy: HashMap<String, usize>,
    /// Ids of the streams here recorded in a state shared by replicas.
    shared: std::collections::HashSet<String>,
    /// Per user, ended streams whose end is still being recorded in the shared state.
    ending: HashMap<String, usize>,
}

/// Queries that can be cancelled, by query id, and each user's work in progress. An entry
/// is made when a ticket is issued (so a cancel may even arrive before `DoGet`) and removed
/// when the query ends, or when its ticket was never redeemed and has expired.
#[derive(Debug, Default, Clone)]
pub struct RunningQueries {
    inner: Arc<Mutex<Registry>>,
    /// Woken whenever the end of some work has been recorded in the shared state.
    recorded: Arc<tokio::sync::Notify>,
    /// Woken whenever a place is freed.
    freed: Arc<tokio::sync::Notify>,
}

/// One unit of a user's concurrent work (planning a statement, or one result stream);
/// released when dropped.
#[derive(Debug)]
pub struct Slot {
    registry: Arc<Mutex<Registry>>,
    recorded: Arc<tokio::sync::Notify>,
    freed: Arc<tokio::sync::Notify>,
    user: String,
    /// The same work recorded in a state shared by replicas (see [`Slot::share`]).
    shared: Option<(Arc<StateStore>, String)>,
}

impl Slot {
    /// Ties work `id` in the shared `state` to this slot (before it is recorded there, so
    /// [`RunningQueries::shared_work`] never misses it): it ends with the slot.
    pub fn share(&mut self, state: Arc<StateStore>, id: String) {
        self.lock().shared.insert(id.clone());
        self.shared = Some((state, id));
    }

    /// Undoes [`Self::share`] for work the shared state did not record.
    pub fn unshare(&mut self) {
        if let Some((_, id)) = self.shared.take() {
            self.lock().shared.remove(&id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((state, id)) = self.shared.take() {
            {
                let mut registry = self.lock();
                registry.shared.remove(&id);
                *registry.ending.entry(self.user.clone()).or_insert(0) += 1;
            }
            let (registry, recorded, user) = (
                self.registry.clone(),
                self.recorded.clone(),
                self.user.clone(),
            );
            let finish = move || {
                if let Err(e) = state.cluster().finish_work(&id) {
                    tracing::warn!(error = %e, "cannot record the end of a query in the state");
                }
                let mut registry = registry.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(n) = registry.ending.get_mut(&user) {
                    *n -= 1;
                    if *n == 0 {
                        registry.ending.remove(&user);
                    }
                }
                drop(registry);
                recorded.notify_waiters();
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(finish)),
                Err(_) => finish(),
            }
        }
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = registry.busy.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                registry.busy.remove(&self.user);
            }
        }
        drop(registry);
        self.freed.notify_waiters();
    }
}

impl RunningQueries {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one of `user`'s `max` places for concurrent work, or says how many are taken.
    /// Every stream counts, so redeeming one ticket many times at once takes many places.
    pub fn slot(&self, user: &str, max: usize) -> Result<Slot, usize> {
        let mut registry = self.lock();
        let busy = registry.busy.entry(user.to_string()).or_insert(0);
        if *busy >= max {
            return Err(*busy);
        }
        *busy += 1;
        Ok(Slot {
            registry: self.inner.clone(),
            recorded: self.recorded.clone(),
            freed: self.freed.clone(),
            user: user.to_string(),
            shared: None,
        })
    }

    /// Like [`Self::slot`], waiting up to `grace` for a place to be freed before refusing:
    /// a client that sends its next call as soon as it has its last row (and drops the
    /// stream rather than reading its end) can arrive before that stream is torn down.
    pub async fn slot_within(
        &self,
        user: &str,
        max: usize,
        grace: Duration,
    ) -> Result<Slot, usize> {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.slot(user, max) {
                Ok(slot) => return Ok(slot),
                Err(busy) => {
                    if tokio::time::timeout_at(deadline, freed).await.is_err() {
                        return Err(busy);
                    }
                }
            }
        }
    }

    /// Waits (a second at most) until the ends of `user`'s finished streams are recorded in
    /// the shared state, so that a count of the user's work there does not include them: a
    /// client sending its next query the moment the last one ended is not refused.
    pub async fn settled(&self, user: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            let recorded = self.recorded.notified();
            if !self.lock().ending.contains_key(user) {
                return;
            }
            if tokio::time::timeout_at(deadline, recorded).await.is_err() {
                return;
            }
        }
    }

    /// The ids of the streams running here that are recorded in the shared state.
    pub fn shared_work(&self) -> std::collections::HashSet<String> {
        self.lock().shared.clone()
    }

    /// Registers an issued ticket, forgetting tickets issued more than `max_age` ago and
    /// never redeemed.
    pub fn register(&self, query_id: &str, user: &str, max_age: Duration) -> CancellationToken {
        let mut registry = self.lock();
        registry
            .queries
            .retain(|_, e| e.issued.is_none_or(|at| at.elapsed() < max_age));
        registry
            .queries
            .entry(query_id.to_string())
            .or_insert_with(|| Entry {
                issued: Some(Instant::now()),
                user: user.to_string(),
                token: CancellationToken::new(),
            })
            .token
            .clone()
    }

    /// Marks a query as running and returns its token (registering it if it was forgotten).
    pub fn start(&self, query_id: &str, user: &str) -> CancellationToken {
        let mut registry = self.lock();
        let entry = registry
            .queries
            .entry(query_id.to_string())
            .or_insert_with(|| Entry {
                issued: None,
                user: user.to_string(),
                token: CancellationToken::new(),
            });
        entry.issued = None;
        entry.token.clone()
    }

    /// Cancels a query on behalf of `user` (an admin may cancel anyone's); returns whether
    /// it was known. Another user's query is "not known": its id reveals nothing.
    pub fn cancel(&self, query_id: &str, user: &str, admin: bool) -> bool {
        match self.lock().queries.get(query_id) {
            Some(entry) if admin || entry.user == user => {
                entry.token.cancel();
                true
            }
            _ => false,
        }
    }

    fn finish(&self, query_id: &str) {
        self.lock().queries.remove(query_id);
    }

    /// Number of queries registered (issued or running).
    pub fn len(&self) -> usize {
        self.lock().queries.len()
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
    /// Tables the query reads, and what of each, once planned.
    tables: Mutex<(Vec<String>, Vec<TableRead>)>,
    /// The user's place for this work, released when the query ends.
    slot: Mutex<Option<Slot>>,
    started: Instant,
    rows: AtomicU64,
    bytes: AtomicU64,
    /// How it ended: the metric's label and the audit's text.
    outcome: Mutex<Option<(&'static str, String)>>,
    running: RunningQueries,
    audit: Option<Arc<StateStore>>,
}

impl QueryLog {
    /// Starts the record of a query; when it ends it is logged, and written to `audit`.
    pub fn new(
        query_id: String,
        user: String,
        statement: String,
        running: RunningQueries,
        audit: Option<Arc<StateStore>>,
    ) -> Arc<Self> {
        metrics::gauge!("quiver_active_queries").increment(1.0);
        Arc::new(Self {
            query_id,
            user,
            statement,
            tables: Mutex::default(),
            slot: Mutex::default(),
            started: Instant::now(),
            rows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            outcome: Mutex::new(None),
            running,
            audit,
        })
    }

    /// Records the tables the query reads, and what of each (for the access history).
    pub fn set_reads(&self, planned: &Planned) {
        *self.tables.lock().unwrap_or_else(|p| p.into_inner()) =
            (planned.tables.clone(), planned.reads.clone());
    }

    /// Holds `slot` until the query ends.
    pub fn hold(&self, slot: Slot) {
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(slot);
    }

    /// Frees the query's place: its last batch has been taken, or it failed. Done before
    /// the client can see the end of the stream, so its next call finds the place free.
    pub fn release(&self) {
        drop(self.slot.lock().unwrap_or_else(|p| p.into_inner()).take());
    }

    /// Adds bytes sent on the wire; returns the total so far.
    pub fn add_bytes(&self, n: usize) -> u64 {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed) + n as u64
    }

    /// Records how the query ended (the first outcome recorded wins): `label` for the
    /// `quiver_queries_total` metric, `text` for the audit log.
    fn set_outcome(&self, label: &'static str, text: String) {
        let mut slot = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert((label, text));
    }

    /// It ran to its end.
    pub fn succeeded(&self) {
        self.set_outcome("ok", "ok".into());
    }

    /// It was cancelled (`why` says by whom, e.g. `cancelled: by request`).
    pub fn cancelled(&self, why: &str) {
        self.set_outcome("cancelled", why.into());
    }

    /// It was refused before it ran (a bound, a bad parameter, no free slot).
    pub fn refused(&self, status: &Status) {
        self.set_outcome("refused", format!("refused: {}", status.message()));
    }

    /// It failed; a statement stopped at its deadline counts as a timeout.
    pub fn failed(&self, status: &Status) {
        let label = match status.code() {
            tonic::Code::DeadlineExceeded => "timeout",
            _ => "error",
        };
        self.set_outcome(label, format!("error: {}", status.message()));
    }
}

impl Drop for QueryLog {
    fn drop(&mut self) {
        self.running.finish(&self.query_id);
        let (outcome_label, outcome) = self
            .outcome
            .get_mut()
            .map(|o| o.take())
            .ok()
            .flatten()
            .unwrap_or_else(|| ("cancelled", "cancelled: client went away".into()));
        let duration_ms = self.started.elapsed().as_millis() as u64;
        let (tables, reads) =
            std::mem::take(self.tables.get_mut().unwrap_or_else(|p| p.into_inner()));
        let record = QueryRecord {
            user: std::mem::take(&mut self.user),
            statement: std::mem::take(&mut self.statement),
            tables,
            reads,
            rows: self.rows.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            duration_ms,
            outcome,
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
        if let Some(state) = self.audit.take() {
            state.audit().queue_query(record);
        }
    }
}

/// The status of a query stopped at its deadline.
pub fn timed_out(timeout: Duration) -> Status {
    let timeout = humantime::format_duration(timeout);
    Status::deadline_exceeded(format!(
        "the query ran longer than the {timeout} limit (query.timeout) and was stopped"
    ))
}

/// A result's caps (`query.max_result_rows`, `query.max_result_bytes`): a result over either
/// fails with `RESOURCE_EXHAUSTED` naming the setting, never silently truncated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResultLimits {
    /// Rows a result may have.
    pub max_rows: Option<u64>,
    /// Bytes a result may take on the wire (Flight data headers and bodies).
    pub max_bytes: Option<u64>,
}

impl ResultLimits {
    /// Whether any cap is set (a result fetched in parts would count each part alone).
    pub fn is_set(&self) -> bool {
        self.max_rows.is_some() || self.max_bytes.is_some()
    }

    /// Refuses a result that has reached `rows` rows.
    pub fn check_rows(&self, rows: u64) -> Result<(), Status> {
        match self.max_rows {
            Some(max) if rows > max => Err(Status::resource_exhausted(format!(
                "the result has more than {max} rows (query.max_result_rows); add a LIMIT or narrow the query"
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses a result that has sent `bytes` bytes.
    pub fn check_bytes(&self, bytes: u64) -> Result<(), Status> {
        match self.max_bytes {
            Some(max) if bytes > max => Err(Status::resource_exhausted(format!(
                "the result is larger than {max} bytes (query.max_result_bytes); add a LIMIT or select fewer columns"
            ))),
            _ => Ok(()),
        }
    }
}

/// A query's batches, stopped on cancellation, at the deadline or past the row cap.
pub struct GuardedStream {
    inner: BatchStream,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    limits: ResultLimits,
    log: Arc<QueryLog>,
    done: bool,
}

impl GuardedStream {
    /// Guards `inner` with `token`, a deadline (`timeout` after the query started) and the
    /// row cap of `limits` (the byte cap applies where the batches are encoded).
    pub fn new(
        inner: BatchStream,
        token: CancellationToken,
        (deadline, timeout): (tokio::time::Instant, Duration),
        limits: ResultLimits,
        log: Arc<QueryLog>,
    ) -> Self {
        Self {
            inner,
            cancelled: Box::pin(token.cancelled_owned()),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            timeout,
            limits,
            log,
            done: false,
        }
    }

    fn fail(&mut self, status: Status) -> Poll<Option<Result<RecordBatch, Status>>> {
        self.done = true;
        self.log.failed(&status);
        self.log.release();
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
            self.log.cancelled("cancelled: by request");
            return self.fail(Status::cancelled("the query was cancelled"));
        }
        if self.deadline.poll_unpin(cx).is_ready() {
            let status = timed_out(self.timeout);
            return self.fail(status);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(batch))) => {
                let rows = self
                    .log
                    .rows
                    .fetch_add(batch.num_rows() as u64, Ordering::Relaxed)
                    + batch.num_rows() as u64;
                if let Err(status) = self.limits.check_rows(rows) {
                    return self.fail(status);
                }
                Poll::Ready(Some(Ok(batch)))
            }
            Poll::Ready(Some(Err(status))) => self.fail(status),
            Poll::Ready(None) => {
                self.done = true;
                self.log.succeeded();
                self.log.release();
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
        let token = running.start("started", "a");
        running.register("never-redeemed", "a", Duration::from_secs(3600));
        std::thread::sleep(Duration::from_millis(20));
        // A new ticket with a tiny lifetime prunes old, unredeemed tickets only.
        running.register("new", "a", Duration::from_millis(10));
        assert!(running.cancel("started", "a", false));
        assert!(token.is_cancelled());
        assert!(!running.cancel("never-redeemed", "a", false));
        assert_eq!(running.len(), 2);
    }

    #[test]
    fn only_the_owner_or_an_admin_cancels() {
        let running = RunningQueries::default();
        let token = running.start("q", "ada");
        assert!(!running.cancel("q", "bob", false));
        assert!(!token.is_cancelled());
        assert!(running.cancel("q", "root", true));
        assert!(token.is_cancelled());
    }

    #[test]
    fn a_user_holds_at_most_the_allowed_number_of_slots() {
        let running = RunningQueries::default();
        let first = running.slot("a", 2).unwrap();
        let _second = running.slot("a", 2).unwrap();
        assert_eq!(running.slot("a", 2).unwrap_err(), 2);
        running.slot("b", 2).expect("other users are not affected");
        drop(first);
        running.slot("a", 2).expect("a slot was freed");
    }

    #[tokio::test]
    async fn a_place_freed_within_the_grace_is_given_instead_of_a_refusal() {
        let running = RunningQueries::default();
        let held = running.slot("a", 1).unwrap();
        let grace = Duration::from_millis(300);
        let waiting = tokio::spawn({
            let running = running.clone();
            async move { running.slot_within("a", 1, grace).await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        assert_eq!(waiting.await.unwrap(), Ok(()));
        let _kept = running.slot("a", 1).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(running.slot_within("a", 1, grace).await.map(drop), Err(1));
        assert!(started.elapsed() >= grace);
    }
}
