//! The audit log: every administrative change (written by `StateStore::change` in the same
//! transaction as the change), every sign-in attempt and every query. Secrets never reach
//! it: changes record what was done, not passwords or tokens.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::state::value::Param;
use crate::state::{Db, Timestamp, params};

use crate::CatalogError;
use crate::state::StateStore;

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Increasing id; page with `before`.
    pub id: i64,
    /// UTC time, ISO 8601.
    pub at: String,
    /// Who: an e-mail, or `quiver admin` for the command line.
    pub actor: String,
    /// What: `query`, `login`, `user.create`, `grant.revoke`, …
    pub action: String,
    /// On what: a user, a group, `schema.table`, …
    pub target: Option<String>,
    /// JSON details of the change.
    pub detail: Option<String>,
    /// `ok`, or what went wrong.
    pub outcome: String,
    /// The SQL of a query.
    pub statement: Option<String>,
    /// Tables a query read, comma-separated.
    pub tables: Option<String>,
    /// Rows a query returned.
    pub rows: Option<i64>,
    /// Bytes a query sent.
    pub bytes: Option<i64>,
    /// How long a query ran.
    pub duration_ms: Option<i64>,
}

/// Which entries to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
    /// Only entries older than this id (paging).
    pub before: Option<i64>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
}

/// What a statement read of one table, for the access history.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableRead {
    /// `schema.table`, as the user named it.
    pub table: String,
    /// Columns that reach the output.
    pub columns_projected: Vec<String>,
    /// Columns used only to choose rows (filters, join keys, sorts).
    pub columns_filtered: Vec<String>,
    /// The grants and policies that shaped what the user saw of the table (`grant 12`,
    /// `policy legal_only`).
    pub policies: Vec<String>,
    /// Output columns the user saw masked.
    pub masked_columns: Vec<String>,
}

/// A finished query, as the Flight SQL service reports it.
#[derive(Debug, Clone)]
pub struct QueryRecord {
    /// Who ran it.
    pub user: String,
    /// Its SQL.
    pub statement: String,
    /// Tables it read, `schema.table`.
    pub tables: Vec<String>,
    /// Rows returned.
    pub rows: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Wall time.
    pub duration_ms: u64,
    /// `ok`, `cancelled`, `error: …`.
    pub outcome: String,
    /// What it read of each table, for the access history.
    pub reads: Vec<TableRead>,
}

/// A statement an admin ran as another user ("view as").
#[derive(Debug, Clone)]
pub struct PreviewRecord {
    /// The admin who ran it.
    pub admin: String,
    /// The user it ran as.
    pub user: String,
    /// Its SQL.
    pub statement: String,
    /// Tables it read, `schema.table`.
    pub tables: Vec<String>,
    /// Rows returned.
    pub rows: u64,
    /// Wall time.
    pub duration_ms: u64,
    /// `ok` or `error: …`.
    pub outcome: String,
}

/// The audit log (see [`StateStore::audit`]).
pub struct Audit<'a>(pub(super) &'a StateStore);

impl Audit<'_> {
    /// Records a finished query soon, without waiting: queries end far more often than
    /// anything else is audited, and one statement (and one commit) per query would cost
    /// more than a short query itself. Records are written in order, in batches, by a
    /// thread of the store's; [`Self::flush`] waits for them.
    pub fn queue_query(&self, q: QueryRecord) {
        self.0.queries.send(Queued::Record(q));
    }

    /// Waits until every query record queued so far is written (or, after retries, logged
    /// as lost), at most `timeout`.
    pub fn flush(&self, timeout: std::time::Duration) {
        let (done, written) = std::sync::mpsc::channel();
        self.0.queries.send(Queued::Flush(done));
        let _ = written.recv_timeout(timeout);
    }

    /// Records an event that is not a change, such as a sign-in attempt.
    pub fn record_event(
        &self,
        actor: &str,
        action: &str,
        target: Option<&str>,
        outcome: &str,
    ) -> Result<(), CatalogError> {
        self.0.conn()?.execute(
            "INSERT INTO audit (actor, action, target, outcome) VALUES ($1, $2, $3, $4)",
            params![actor, action, target, outcome],
        )?;
        Ok(())
    }

    /// Records a statement an admin ran as another user: action `preview`, the admin as
    /// actor, the user as target.
    pub fn record_preview(&self, p: &PreviewRecord) -> Result<(), CatalogError> {
        self.0.conn()?.execute(
            "INSERT INTO audit (actor, action, target, outcome, statement, tables, row_count, duration_ms)
             VALUES ($1, 'preview', $2, $3, $4, $5, $6, $7)",
            params![
                p.admin,
                p.user,
                p.outcome,
                p.statement,
                p.tables.join(","),
                p.rows as i64,
                p.duration_ms as i64
            ],
        )?;
        Ok(())
    }

    /// Reads the audit log, newest first.
    pub fn log(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, CatalogError> {
        let limit = query.limit.unwrap_or(100).clamp(1, 1000) as i64;
        let conn = self.0.conn()?;
        let records = conn.query_map(
            "SELECT id, occurred_at, actor, action, target, detail,
                    outcome, statement, tables, row_count, byte_count, duration_ms
             FROM audit
             WHERE ($1::BIGINT IS NULL OR id < $1) AND ($2::VARCHAR IS NULL OR actor = $2)
               AND ($3::VARCHAR IS NULL OR action = $3)
             ORDER BY id DESC LIMIT $4",
            params![query.before, query.actor, query.action, limit],
            |r| {
                Ok(AuditRecord {
                    id: r.get(0)?,
                    at: r.get::<Timestamp>(1)?.iso_millis(),
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    detail: r.get(5)?,
                    outcome: r.get(6)?,
                    statement: r.get(7)?,
                    tables: r.get(8)?,
                    rows: r.get(9)?,
                    bytes: r.get(10)?,
                    duration_ms: r.get(11)?,
                })
            },
        )?;
        Ok(records)
    }
}

impl Audit<'_> {
    /// The audit log as Arrow batches, oldest first (for the admins' `system.audit` table);
    /// `limit` caps the rows (0 gives just the schema).
    pub fn arrow(
        &self,
        limit: Option<usize>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>), CatalogError> {
        let limit = limit.map(|l| l as i64).unwrap_or(i64::MAX);
        let rows = self.0.conn()?.query(
            "SELECT id, occurred_at, actor, action, target, detail, outcome, statement,
                    tables, row_count, byte_count, duration_ms
             FROM audit ORDER BY id LIMIT $1",
            params![limit],
        )?;
        let text = |i: usize| -> Result<ArrayRef, CatalogError> {
            let values: Vec<Option<String>> =
                rows.iter().map(|r| r.get(i)).collect::<Result<_, _>>()?;
            Ok(Arc::new(StringArray::from(values)))
        };
        let int = |i: usize| -> Result<ArrayRef, CatalogError> {
            let values: Vec<Option<i64>> =
                rows.iter().map(|r| r.get(i)).collect::<Result<_, _>>()?;
            Ok(Arc::new(Int64Array::from(values)))
        };
        let occurred: Vec<Option<Timestamp>> =
            rows.iter().map(|r| r.get(1)).collect::<Result<_, _>>()?;
        let columns: Vec<ArrayRef> = vec![
            int(0)?,
            Arc::new(TimestampMicrosecondArray::from(
                occurred
                    .into_iter()
                    .map(|t| t.map(|t| t.0))
                    .collect::<Vec<_>>(),
            )),
            text(2)?,
            text(3)?,
            text(4)?,
            text(5)?,
            text(6)?,
            text(7)?,
            text(8)?,
            int(9)?,
            int(10)?,
            int(11)?,
        ];
        let schema = audit_schema();
        let batch = RecordBatch::try_new(schema.clone(), columns)
            .map_err(|e| CatalogError::Internal(format!("audit batch: {e}")))?;
        Ok((schema, vec![batch]))
    }
}

/// Which access-history rows to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct AccessFilter {
    /// Only reads of this table (`schema.table`).
    pub table: Option<String>,
    /// Only reads that projected or filtered on this column.
    pub column: Option<String>,
    /// Only this user's.
    pub user: Option<String>,
    /// At most this many statements' rows (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// One row of the access history: what one statement read of one table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AccessRow {
    /// The statement's audit id.
    pub statement_id: i64,
    /// Who ran it.
    pub user: String,
    /// When, UTC, ISO 8601.
    pub occurred_at: String,
    /// What it read of the table.
    #[serde(flatten)]
    pub read: TableRead,
}

impl Audit<'_> {
    /// The access history, newest first: one row per statement and table read.
    pub fn access_history(&self, filter: &AccessFilter) -> Result<Vec<AccessRow>, CatalogError> {
        let limit = filter.limit.unwrap_or(100).clamp(1, 1000) as i64;
        let like = filter
            .table
            .as_ref()
            .map(|t| format!("%\"table\":{}%", serde_json::Value::from(t.as_str())));
        let rows: Vec<(i64, Timestamp, String, String)> = self.0.conn()?.query_map(
            "SELECT id, occurred_at, actor, access FROM audit
             WHERE access IS NOT NULL
               AND ($1::VARCHAR IS NULL OR actor = $1)
               AND ($2::VARCHAR IS NULL OR access LIKE $2)
             ORDER BY id DESC LIMIT $3",
            params![filter.user, like, limit],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        let mut out = Vec::new();
        for (id, at, user, access) in rows {
            let reads: Vec<TableRead> = serde_json::from_str(&access).unwrap_or_default();
            for read in reads {
                if filter.table.as_ref().is_some_and(|t| t != &read.table) {
                    continue;
                }
                if let Some(c) = &filter.column
                    && !read.columns_projected.contains(c)
                    && !read.columns_filtered.contains(c)
                {
                    continue;
                }
                out.push(AccessRow {
                    statement_id: id,
                    user: user.clone(),
                    occurred_at: at.iso_millis(),
                    read,
                });
            }
        }
        Ok(out)
    }

    /// The whole access history as Arrow batches, oldest first (the admins'
    /// `system.access_history`); `limit` caps the statements (0 gives just the schema).
    pub fn access_history_arrow(
        &self,
        limit: Option<usize>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>), CatalogError> {
        use arrow::array::{ListBuilder, StringBuilder};
        let limit = limit.map(|l| l as i64).unwrap_or(i64::MAX);
        let rows: Vec<(i64, Timestamp, String, String)> = self.0.conn()?.query_map(
            "SELECT id, occurred_at, actor, access FROM audit WHERE access IS NOT NULL
             ORDER BY id LIMIT $1",
            params![limit],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        let (mut ids, mut at, mut users, mut tables) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut lists: [ListBuilder<StringBuilder>; 4] =
            std::array::from_fn(|_| ListBuilder::new(StringBuilder::new()));
        for (id, when, user, access) in rows {
            let reads: Vec<TableRead> = serde_json::from_str(&access).unwrap_or_default();
            for read in reads {
                ids.push(id);
                at.push(when.0);
                users.push(user.clone());
                tables.push(read.table.clone());
                for (list, values) in lists.iter_mut().zip([
                    &read.columns_projected,
                    &read.columns_filtered,
                    &read.policies,
                    &read.masked_columns,
                ]) {
                    list.append_value(values.iter().map(Some));
                }
            }
        }
        let [projected, filtered, policies, masked] =
            lists.map(|mut l| Arc::new(l.finish()) as ArrayRef);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(TimestampMicrosecondArray::from(at)),
            Arc::new(StringArray::from(users)),
            Arc::new(StringArray::from(tables)),
            projected,
            filtered,
            policies,
            masked,
        ];
        let schema = access_history_schema();
        let batch = RecordBatch::try_new(schema.clone(), columns)
            .map_err(|e| CatalogError::Internal(format!("access history batch: {e}")))?;
        Ok((schema, vec![batch]))
    }
}

/// The columns of `system.access_history`.
fn access_history_schema() -> SchemaRef {
    let list = |name: &str| {
        Field::new(
            name,
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        )
    };
    Arc::new(Schema::new(vec![
        Field::new("statement_id", DataType::Int64, false),
        Field::new(
            "occurred_at",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("user", DataType::Utf8, false),
        Field::new("table_name", DataType::Utf8, false),
        list("columns_projected"),
        list("columns_filtered"),
        list("policies"),
        list("masked_columns"),
    ]))
}

/// The columns of `system.audit`.
fn audit_schema() -> SchemaRef {
    let text = |name: &str| Field::new(name, DataType::Utf8, true);
    let int = |name: &str| Field::new(name, DataType::Int64, true);
    Arc::new(Schema::new(vec![
        int("id"),
        Field::new(
            "occurred_at",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        text("actor"),
        text("action"),
        text("target"),
        text("detail"),
        text("outcome"),
        text("statement"),
        text("tables_read"),
        int("row_count"),
        int("byte_count"),
        int("duration_ms"),
    ]))
}

/// Rows one statement of [`insert_queries`] writes at most (8 parameters each).
const INSERT_ROWS: usize = 200;
/// How long the writer gathers records after the first before writing them.
const GATHER: std::time::Duration = std::time::Duration::from_millis(20);
/// Attempts to write a batch before its records are logged as lost.
const ATTEMPTS: u32 = 5;

/// Writes `records` with one multi-row statement per [`INSERT_ROWS`].
fn insert_queries(db: &Db, records: &[QueryRecord]) -> Result<(), CatalogError> {
    let conn = db.conn()?;
    for chunk in records.chunks(INSERT_ROWS) {
        let rows: Vec<(String, i64, i64, i64, Option<String>)> = chunk
            .iter()
            .map(|q| {
                (
                    q.tables.join(","),
                    q.rows as i64,
                    q.bytes as i64,
                    q.duration_ms as i64,
                    (!q.reads.is_empty())
                        .then(|| serde_json::to_string(&q.reads).unwrap_or_default()),
                )
            })
            .collect();
        let mut values = Vec::with_capacity(chunk.len());
        let mut args: Vec<&dyn Param> = Vec::with_capacity(chunk.len() * 8);
        for (i, (q, (tables, rows, bytes, ms, access))) in chunk.iter().zip(&rows).enumerate() {
            let n = i * 8;
            let p: Vec<String> = (1..=8).map(|k| format!("${}", n + k)).collect();
            values.push(format!("({}, 'query', {})", p[0], p[1..].join(", ")));
            args.extend([
                &q.user as &dyn Param,
                &q.outcome,
                &q.statement,
                tables,
                rows,
                bytes,
                ms,
                access,
            ]);
        }
        conn.execute(
            &format!(
                "INSERT INTO audit (actor, action, outcome, statement, tables, row_count, byte_count, duration_ms, access) VALUES {}",
                values.join(", ")
            ),
            &args,
        )?;
    }
    Ok(())
}

/// What the query-audit writer is sent.
pub(super) enum Queued {
    Record(QueryRecord),
    /// Answered once everything sent before it is written.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The query records waiting to be written, and the thread writing them (started on the
/// first record). Dropping it writes what is queued and waits for the thread.
pub(super) struct QueryQueue {
    db: std::sync::Weak<Db>,
    writer:
        std::sync::Mutex<Option<(std::sync::mpsc::Sender<Queued>, std::thread::JoinHandle<()>)>>,
}

impl QueryQueue {
    pub(super) fn new(db: &Arc<Db>) -> Self {
        Self {
            db: Arc::downgrade(db),
            writer: std::sync::Mutex::default(),
        }
    }

    fn send(&self, item: Queued) {
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if writer.is_none() {
            let (tx, rx) = std::sync::mpsc::channel();
            let db = self.db.clone();
            match std::thread::Builder::new()
                .name("quiver-audit".into())
                .spawn(move || write_queued(&db, &rx))
            {
                Ok(thread) => *writer = Some((tx, thread)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the audit writer");
                    return;
                }
            }
        }
        if let Some((tx, _)) = writer.as_ref() {
            let _ = tx.send(item);
        }
    }
}

impl Drop for QueryQueue {
    fn drop(&mut self) {
        let writer = self.writer.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some((tx, thread)) = writer.take() {
            drop(tx);
            let _ = thread.join();
        }
    }
}

/// The writer's loop: waits for a record, gathers what follows for [`GATHER`], writes the
/// lot; ends when the queue is dropped and drained.
fn write_queued(db: &std::sync::Weak<Db>, queue: &std::sync::mpsc::Receiver<Queued>) {
    let mut batch = Vec::new();
    let mut flushes = Vec::new();
    while let Ok(first) = queue.recv() {
        let gather_until = std::time::Instant::now() + GATHER;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Queued::Record(r) => batch.push(r),
                Queued::Flush(done) => flushes.push(done),
            }
            if !flushes.is_empty() {
                // Whoever waits is not kept waiting; what is queued goes now.
                next = queue.try_recv().ok();
            } else {
                let left = gather_until.saturating_duration_since(std::time::Instant::now());
                next = queue.recv_timeout(left).ok();
            }
        }
        if !batch.is_empty() {
            write_batch(db, &batch);
            batch.clear();
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Writes one batch, retrying while the database is away; logs the records it gives up on.
fn write_batch(db: &std::sync::Weak<Db>, batch: &[QueryRecord]) {
    let mut error = None;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(200 << attempt));
        }
        let Some(db) = db.upgrade() else { break };
        match insert_queries(&db, batch) {
            Ok(()) => return,
            Err(e) => error = Some(e),
        }
    }
    for q in batch {
        tracing::error!(
            error = %error.as_ref().map(ToString::to_string).unwrap_or_else(|| "the state store was closed".into()),
            user = %q.user,
            statement = %q.statement,
            outcome = %q.outcome,
            "cannot write the query to the audit log"
        );
    }
}
