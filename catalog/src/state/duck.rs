//! The embedded backend: one DuckDB file owned by one process, through a few connections.
//!
//! Readers run side by side, each on a connection of its own. Transactions take turns
//! (DuckDB would fail one of two concurrent writers at commit, and the statements are
//! written for serializable transactions); a single-statement write that meets a
//! transaction's write conflict is tried again.

use std::cell::Cell;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use duckdb::types::{TimeUnit, ToSqlOutput, ValueRef};

use super::value::{Params, Row, Value};
use crate::CatalogError;

/// Idle connections kept at most.
const POOL_SIZE: usize = 8;

/// The state file and its connections.
pub(crate) struct Db {
    /// The connection every other is cloned from (to the same database instance).
    origin: Mutex<duckdb::Connection>,
    idle: Mutex<Vec<duckdb::Connection>>,
    /// Held by a transaction from `BEGIN` to its end.
    writer: Mutex<()>,
}

/// A connection, held for one statement or transaction; back to the pool on drop.
pub(crate) struct Conn<'a> {
    db: &'a Db,
    conn: Option<duckdb::Connection>,
    /// Present for a transaction.
    writer: Option<MutexGuard<'a, ()>>,
    /// The last error was a write conflict: the transaction may be retried.
    lost_race: Cell<bool>,
}

impl Db {
    /// Opens (creating when missing) the file at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, CatalogError> {
        let conn = duckdb::Connection::open(path).map_err(|e| {
            let text = e.to_string();
            if text.contains("lock") {
                CatalogError::StateLocked(path.display().to_string())
            } else {
                CatalogError::State(format!("cannot open {}: {text}", path.display()))
            }
        })?;
        Ok(Self::with(conn))
    }

    /// A database in memory, for tests.
    pub(crate) fn in_memory() -> Result<Self, CatalogError> {
        Ok(Self::with(duckdb::Connection::open_in_memory()?))
    }

    fn with(origin: duckdb::Connection) -> Self {
        Self {
            origin: Mutex::new(origin),
            idle: Mutex::default(),
            writer: Mutex::default(),
        }
    }

    /// A connection for statements that need no transaction. (A panic while a lock was
    /// held cannot leave DuckDB half-written: statements are atomic and an unfinished
    /// transaction is rolled back with its connection, so poisoned locks are reused.)
    pub(crate) fn conn(&self) -> Result<Conn<'_>, CatalogError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self
                .origin
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .try_clone()?,
        };
        Ok(Conn {
            db: self,
            conn: Some(conn),
            writer: None,
            lost_race: Cell::new(false),
        })
    }

    /// A connection for one transaction, once the transaction before it has ended.
    pub(crate) fn writer(&self) -> Result<Conn<'_>, CatalogError> {
        let turn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut conn = self.conn()?;
        conn.writer = Some(turn);
        Ok(conn)
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut idle = self.db.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < POOL_SIZE {
                idle.push(conn);
            }
        }
    }
}

impl duckdb::ToSql for Value {
    fn to_sql(&self) -> duckdb::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Owned(duckdb::types::Value::Null),
            Value::Bool(b) => ToSqlOutput::Owned((*b).into()),
            Value::Int(i) => ToSqlOutput::Owned((*i).into()),
            Value::Float(f) => ToSqlOutput::Owned((*f).into()),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Time(t) => {
                ToSqlOutput::Owned(duckdb::types::Value::Timestamp(TimeUnit::Microsecond, *t))
            }
        })
    }
}

fn bind(params: Params<'_>) -> Vec<Value> {
    params.iter().map(|p| p.value()).collect()
}

fn read(value: ValueRef<'_>) -> Result<Value, CatalogError> {
    Ok(match value {
        ValueRef::Null => Value::Null,
        ValueRef::Boolean(b) => Value::Bool(b),
        ValueRef::TinyInt(i) => Value::Int(i.into()),
        ValueRef::SmallInt(i) => Value::Int(i.into()),
        ValueRef::Int(i) => Value::Int(i.into()),
        ValueRef::BigInt(i) => Value::Int(i),
        ValueRef::UTinyInt(i) => Value::Int(i.into()),
        ValueRef::USmallInt(i) => Value::Int(i.into()),
        ValueRef::UInt(i) => Value::Int(i.into()),
        ValueRef::UBigInt(i) => Value::Int(i as i64),
        ValueRef::HugeInt(i) => Value::Int(i as i64),
        ValueRef::Float(f) => Value::Float(f.into()),
        ValueRef::Double(f) => Value::Float(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Timestamp(unit, t) => Value::Time(unit.to_micros(t)),
        other => {
            return Err(CatalogError::Internal(format!(
                "unexpected state value {other:?}"
            )));
        }
    })
}

/// Whether `e` is DuckDB's optimistic concurrency control refusing a write that another
/// connection's uncommitted or newer write touched.
fn is_conflict(e: &duckdb::Error) -> bool {
    e.to_string().contains("Conflict")
}

// Statements are prepared afresh each time: DuckDB plans with the table statistics of
// the moment, and a cached plan reused after they changed can trip its assertions.
impl Conn<'_> {
    fn conn(&self) -> &duckdb::Connection {
        self.conn.as_ref().expect("checked out until drop")
    }

    /// Whether the last error was a write conflict.
    pub(crate) fn lost_race(&self) -> bool {
        self.lost_race.get()
    }

    /// `work`, tried again a few times when it meets a write conflict outside a
    /// transaction (a single statement, which has changed nothing when it fails).
    fn run<T>(&self, work: impl Fn() -> duckdb::Result<T>) -> Result<T, CatalogError> {
        let mut attempt = 0;
        loop {
            match work() {
                Ok(value) => return Ok(value),
                Err(e) if is_conflict(&e) => {
                    if self.writer.is_some() {
                        self.lost_race.set(true);
                        return Err(e.into());
                    }
                    attempt += 1;
                    if attempt == 8 {
                        return Err(e.into());
                    }
                    std::thread::sleep(Duration::from_millis(1 << attempt));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub(crate) fn execute(&self, sql: &str, params: Params<'_>) -> Result<usize, CatalogError> {
        let values = bind(params);
        self.run(|| {
            self.conn()
                .prepare(sql)?
                .execute(duckdb::params_from_iter(&values))
        })
    }

    pub(crate) fn batch(&self, sql: &str) -> Result<(), CatalogError> {
        self.lost_race.set(false);
        self.run(|| self.conn().execute_batch(sql))
    }

    pub(crate) fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, CatalogError> {
        let values = bind(params);
        let rows = self.run(|| {
            let mut stmt = self.conn().prepare(sql)?;
            let mut rows = stmt.query(duckdb::params_from_iter(&values))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let columns = row.as_ref().column_count();
                let values = (0..columns)
                    .map(|i| row.get_ref(i).map(|v| read(v)))
                    .collect::<duckdb::Result<Vec<_>>>()?;
                out.push(values);
            }
            Ok(out)
        })?;
        rows.into_iter()
            .map(|values| values.into_iter().collect::<Result<_, _>>().map(Row))
            .collect()
    }
}
