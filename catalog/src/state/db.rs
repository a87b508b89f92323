//! One SQL interface over the two state backends, so every statement is written once.
//!
//! Statements use `$1, $2, …` placeholders, which DuckDB and PostgreSQL both accept, and
//! only the SQL the two dialects share; values travel as [`Value`]s and come back in
//! [`Row`]s. What must differ between the backends (connecting, migration locking, the
//! few dialect functions) lives in [`duck`](super::duck) and [`pg`](super::pg).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};

use super::{duck, pg};
use crate::CatalogError;

/// A value bound to a statement or read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// `BOOLEAN`.
    Bool(bool),
    /// Any integer column (`INTEGER`, `BIGINT`).
    Int(i64),
    /// `DOUBLE`.
    Float(f64),
    /// `VARCHAR`.
    Text(String),
    /// `TIMESTAMP` (UTC), microseconds since the Unix epoch.
    Time(i64),
}

/// A `TIMESTAMP` (UTC) read from or bound to a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// Milliseconds since the epoch (how leases, heartbeats and sign-in failures are
    /// stamped).
    pub fn millis(self) -> i64 {
        self.0 / 1000
    }

    /// `age` earlier.
    pub fn minus(self, age: Duration) -> Self {
        Self(
            self.0
                .saturating_sub(age.as_micros().min(i64::MAX as u128) as i64),
        )
    }

    /// `delay` later.
    pub fn plus(self, delay: Duration) -> Self {
        Self(
            self.0
                .saturating_add(delay.as_micros().min(i64::MAX as u128) as i64),
        )
    }

    /// Seconds since the Unix epoch.
    pub fn unix(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    /// ISO 8601 to the second, e.g. `2026-12-01T12:00:00Z`.
    pub fn iso(self) -> String {
        self.datetime().format("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    /// ISO 8601 to the millisecond, e.g. `2026-12-01T12:00:00.123Z`.
    pub fn iso_millis(self) -> String {
        self.datetime().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    }

    fn datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.0).unwrap_or_default()
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self(d.as_micros() as i64),
            Err(e) => Self(-(e.duration().as_micros() as i64)),
        }
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        if t.0 >= 0 {
            UNIX_EPOCH + Duration::from_micros(t.0 as u64)
        } else {
            UNIX_EPOCH - Duration::from_micros(t.0.unsigned_abs())
        }
    }
}

/// Something that can be bound to a placeholder.
pub trait Param {
    /// The value bound.
    fn value(&self) -> Value;
}

impl<T: Param + ?Sized> Param for &T {
    fn value(&self) -> Value {
        (**self).value()
    }
}

impl<T: Param> Param for Option<T> {
    fn value(&self) -> Value {
        self.as_ref().map_or(Value::Null, Param::value)
    }
}

impl Param for Value {
    fn value(&self) -> Value {
        self.clone()
    }
}

impl Param for str {
    fn value(&self) -> Value {
        Value::Text(self.to_string())
    }
}

impl Param for String {
    fn value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl Param for bool {
    fn value(&self) -> Value {
        Value::Bool(*self)
    }
}

impl Param for f64 {
    fn value(&self) -> Value {
        Value::Float(*self)
    }
}

impl Param for Timestamp {
    fn value(&self) -> Value {
        Value::Time(self.0)
    }
}

macro_rules! int_params {
    ($($t:ty),*) => {$(
        impl Param for $t {
            fn value(&self) -> Value {
                Value::Int(*self as i64)
            }
        }
    )*};
}
int_params!(i32, i64, u32, usize);

/// Parameters of a statement: `params![a, b]`.
macro_rules! params {
    () => { &[] as &[&dyn $crate::state::db::Param] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::state::db::Param),+] as &[&dyn $crate::state::db::Param] };
}
pub(crate) use params;

/// Parameters given to a statement.
pub type Params<'a> = &'a [&'a dyn Param];

/// A row of a result.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    /// Column `index` as `T`.
    pub fn get<T: FromValue>(&self, index: usize) -> Result<T, CatalogError> {
        let value = self
            .0
            .get(index)
            .ok_or_else(|| CatalogError::Internal(format!("no column {index} in a state row")))?;
        T::from_value(value).ok_or_else(|| {
            CatalogError::Internal(format!(
                "state column {index} holds {value:?}, not a {}",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// A type a column can be read as.
pub trait FromValue: Sized {
    /// `None` when the value is not of this type.
    fn from_value(value: &Value) -> Option<Self>;
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl FromValue for bool {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

impl FromValue for i64 {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl FromValue for u64 {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Int(i) => u64::try_from(*i).ok(),
            _ => None,
        }
    }
}

impl FromValue for i32 {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Int(i) => i32::try_from(*i).ok(),
            _ => None,
        }
    }
}

impl FromValue for f64 {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}

impl FromValue for Timestamp {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Time(t) => Some(Self(*t)),
            _ => None,
        }
    }
}

/// Which database holds the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded `state.duckdb` file, owned by one process.
    DuckDb,
    /// A PostgreSQL database shared by every replica.
    Postgres,
}

/// A connection to the state database, for one statement or one transaction.
pub enum Conn<'a> {
    /// A connection to the embedded file.
    Duck(duck::Conn<'a>),
    /// A pooled PostgreSQL connection.
    Pg(Box<pg::Conn<'a>>),
}

impl Conn<'_> {
    /// Which database the connection is to.
    pub fn backend(&self) -> Backend {
        match self {
            Conn::Duck(_) => Backend::DuckDb,
            Conn::Pg(_) => Backend::Postgres,
        }
    }

    /// Runs a statement; returns the rows it changed.
    pub fn execute(&self, sql: &str, params: Params<'_>) -> Result<usize, CatalogError> {
        match self {
            Conn::Duck(c) => c.execute(sql, params),
            Conn::Pg(c) => c.execute(sql, params),
        }
    }

    /// Runs several statements without parameters (migrations).
    pub fn batch(&self, sql: &str) -> Result<(), CatalogError> {
        match self {
            Conn::Duck(c) => c.batch(sql),
            Conn::Pg(c) => c.batch(sql),
        }
    }

    /// Every row of a query.
    pub fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, CatalogError> {
        match self {
            Conn::Duck(c) => c.query(sql, params),
            Conn::Pg(c) => c.query(sql, params),
        }
    }

    /// Every row of a query, each mapped by `f`.
    pub fn query_map<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        f: impl FnMut(&Row) -> Result<T, CatalogError>,
    ) -> Result<Vec<T>, CatalogError> {
        self.query(sql, params)?.iter().map(f).collect()
    }

    /// The first row of a query, mapped by `f`; `None` without rows.
    pub fn query_opt<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        f: impl FnOnce(&Row) -> Result<T, CatalogError>,
    ) -> Result<Option<T>, CatalogError> {
        self.query(sql, params)?.first().map(f).transpose()
    }

    /// The first row of a query that always returns one (an aggregate), mapped by `f`.
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        f: impl FnOnce(&Row) -> Result<T, CatalogError>,
    ) -> Result<T, CatalogError> {
        self.query_opt(sql, params, f)?
            .ok_or_else(|| CatalogError::Internal(format!("no row from `{sql}`")))
    }
}

/// The state database: one backend, connections handed out per call.
pub enum Db {
    /// The embedded DuckDB file.
    Duck(duck::Db),
    /// A PostgreSQL database.
    Pg(Box<pg::Db>),
}

impl Db {
    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self {
            Db::Duck(_) => Backend::DuckDb,
            Db::Pg(_) => Backend::Postgres,
        }
    }

    /// A connection for statements that need no transaction.
    pub fn conn(&self) -> Result<Conn<'_>, CatalogError> {
        Ok(match self {
            Db::Duck(db) => Conn::Duck(db.conn()?),
            Db::Pg(db) => Conn::Pg(Box::new(db.conn()?)),
        })
    }

    /// A connection for one transaction: on DuckDB, transactions take turns (see
    /// [`duck`]); on PostgreSQL, any pooled connection.
    fn transaction_conn(&self) -> Result<Conn<'_>, CatalogError> {
        match self {
            Db::Duck(db) => Ok(Conn::Duck(db.writer()?)),
            Db::Pg(_) => self.conn(),
        }
    }

    /// Runs `work` in one transaction: committed when it returns `Ok`, rolled back
    /// otherwise. On PostgreSQL the transaction is serializable and `work` runs again
    /// (a few times) when it lost a race with another replica's transaction; on DuckDB
    /// transactions take turns, and `work` runs again when a single-statement write
    /// touched the same rows first.
    pub fn transaction<T>(
        &self,
        mut work: impl FnMut(&Conn<'_>) -> Result<T, CatalogError>,
    ) -> Result<T, CatalogError> {
        let mut attempt = 0;
        loop {
            let conn = self.transaction_conn()?;
            let begin = match self.backend() {
                Backend::DuckDb => "BEGIN TRANSACTION",
                Backend::Postgres => "BEGIN ISOLATION LEVEL SERIALIZABLE",
            };
            conn.batch(begin)?;
            let outcome = work(&conn).and_then(|value| conn.batch("COMMIT").map(|()| value));
            match outcome {
                Ok(value) => return Ok(value),
                Err(e) => {
                    let lost_race = match &conn {
                        Conn::Duck(c) => c.lost_race(),
                        Conn::Pg(c) => c.lost_race(),
                    };
                    // A failed COMMIT has already ended the transaction; ROLLBACK is harmless.
                    let _ = conn.batch("ROLLBACK");
                    attempt += 1;
                    if attempt < 8 && lost_race {
                        drop(conn);
                        std::thread::sleep(Duration::from_millis(2 << attempt));
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }
}

impl Db {
    /// Runs `work` in one transaction that holds a lock named `key` until it ends, so
    /// callers with the same key take turns, in this process and in every other sharing
    /// the database (a count-then-insert that must not overshoot).
    pub fn locked<T>(
        &self,
        key: &str,
        work: impl FnOnce(&Conn<'_>) -> Result<T, CatalogError>,
    ) -> Result<T, CatalogError> {
        let conn = self.transaction_conn()?;
        // DuckDB: transactions already take turns. PostgreSQL: read committed, so each
        // statement after the lock sees what the previous holder committed.
        conn.batch("BEGIN")?;
        let outcome = match self.backend() {
            Backend::DuckDb => Ok(()),
            Backend::Postgres => conn
                .execute("SELECT pg_advisory_xact_lock(hashtext($1))", params![key])
                .map(drop),
        }
        .and_then(|()| work(&conn))
        .and_then(|value| conn.batch("COMMIT").map(|()| value));
        if outcome.is_err() {
            let _ = conn.batch("ROLLBACK");
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_utc_iso() {
        let t = Timestamp(1_764_590_400_123_456);
        assert_eq!(t.iso(), "2025-12-01T12:00:00Z");
        assert_eq!(t.iso_millis(), "2025-12-01T12:00:00.123Z");
        assert_eq!(t.unix(), 1_764_590_400);
        assert_eq!(Timestamp::from(SystemTime::from(t)), t);
    }
}
