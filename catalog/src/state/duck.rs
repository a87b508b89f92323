//! The embedded backend: one DuckDB file, one connection, owned by one process.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use duckdb::types::{TimeUnit, ToSqlOutput, ValueRef};

use super::db::{Params, Row, Value};
use crate::CatalogError;

/// The state file, behind its one connection.
pub struct Db {
    conn: Mutex<duckdb::Connection>,
}

/// The connection, held for one statement or transaction.
pub struct Conn<'a>(MutexGuard<'a, duckdb::Connection>);

impl Db {
    /// Opens (creating when missing) the file at `path`.
    pub fn open(path: &Path) -> Result<Self, CatalogError> {
        let conn = duckdb::Connection::open(path).map_err(|e| {
            let text = e.to_string();
            if text.contains("lock") {
                CatalogError::StateLocked(path.display().to_string())
            } else {
                CatalogError::State(format!("cannot open {}: {text}", path.display()))
            }
        })?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// A database in memory, for tests.
    pub fn in_memory() -> Result<Self, CatalogError> {
        Ok(Self {
            conn: Mutex::new(duckdb::Connection::open_in_memory()?),
        })
    }

    /// The connection. A panic while holding it cannot leave DuckDB half-written
    /// (statements are atomic, an open transaction is rolled back by the next BEGIN's
    /// failure path), so a poisoned lock is safe to reuse.
    pub fn conn(&self) -> Conn<'_> {
        Conn(self.conn.lock().unwrap_or_else(|p| p.into_inner()))
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

// Statements are prepared afresh each time: DuckDB plans with the table statistics of
// the moment, and a cached plan reused after they changed can trip its assertions.
impl Conn<'_> {
    pub fn execute(&self, sql: &str, params: Params<'_>) -> Result<usize, CatalogError> {
        let changed = self
            .0
            .prepare(sql)?
            .execute(duckdb::params_from_iter(bind(params)))?;
        Ok(changed)
    }

    pub fn batch(&self, sql: &str) -> Result<(), CatalogError> {
        Ok(self.0.execute_batch(sql)?)
    }

    pub fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, CatalogError> {
        let mut stmt = self.0.prepare(sql)?;
        let mut rows = stmt.query(duckdb::params_from_iter(bind(params)))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let columns = row.as_ref().column_count();
            let values = (0..columns)
                .map(|i| read(row.get_ref(i)?))
                .collect::<Result<_, CatalogError>>()?;
            out.push(Row(values));
        }
        Ok(out)
    }
}
