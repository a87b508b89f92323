//! One SQL interface over the two state backends, so every statement is written once.
//!
//! Statements use `$1, $2, …` placeholders, which DuckDB and PostgreSQL both accept, and
//! only the SQL the two dialects share; values travel as [`Value`](super::value::Value)s
//! and come back in [`Row`]s. What must differ between the backends (connecting, migration locking, the
//! few dialect functions) lives in [`duck`](super::duck) and [`pg`](super::pg).

use std::time::Duration;

use super::value::{Params, Row, params};
use super::{duck, pg};
use crate::CatalogError;

/// Which database holds the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded `state.duckdb` file, owned by one process.
    DuckDb,
    /// A PostgreSQL database shared by every replica.
    Postgres,
}

/// A connection to the state database, for one statement or one transaction.
pub(crate) enum Conn<'a> {
    /// A connection to the embedded file.
    Duck(duck::Conn<'a>),
    /// A pooled PostgreSQL connection.
    Pg(Box<pg::Conn<'a>>),
}

impl Conn<'_> {
    /// Which database the connection is to.
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Conn::Duck(_) => Backend::DuckDb,
            Conn::Pg(_) => Backend::Postgres,
        }
    }

    /// Runs a statement; returns the rows it changed.
    pub(crate) fn execute(&self, sql: &str, params: Params<'_>) -> Result<usize, CatalogError> {
        match self {
            Conn::Duck(c) => c.execute(sql, params),
            Conn::Pg(c) => c.execute(sql, params),
        }
    }

    /// Runs several statements without parameters (migrations).
    pub(crate) fn batch(&self, sql: &str) -> Result<(), CatalogError> {
        match self {
            Conn::Duck(c) => c.batch(sql),
            Conn::Pg(c) => c.batch(sql),
        }
    }

    /// Every row of a query.
    pub(crate) fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, CatalogError> {
        match self {
            Conn::Duck(c) => c.query(sql, params),
            Conn::Pg(c) => c.query(sql, params),
        }
    }

    /// Every row of a query, each mapped by `f`.
    pub(crate) fn query_map<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        f: impl FnMut(&Row) -> Result<T, CatalogError>,
    ) -> Result<Vec<T>, CatalogError> {
        self.query(sql, params)?.iter().map(f).collect()
    }

    /// The first row of a query, mapped by `f`; `None` without rows.
    pub(crate) fn query_opt<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        f: impl FnOnce(&Row) -> Result<T, CatalogError>,
    ) -> Result<Option<T>, CatalogError> {
        self.query(sql, params)?.first().map(f).transpose()
    }

    /// The first row of a query that always returns one (an aggregate), mapped by `f`.
    pub(crate) fn query_row<T>(
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
pub(crate) enum Db {
    /// The embedded DuckDB file.
    Duck(duck::Db),
    /// A PostgreSQL database.
    Pg(Box<pg::Db>),
}

impl Db {
    /// Which backend this is.
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Db::Duck(_) => Backend::DuckDb,
            Db::Pg(_) => Backend::Postgres,
        }
    }

    /// A connection for statements that need no transaction.
    pub(crate) fn conn(&self) -> Result<Conn<'_>, CatalogError> {
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
    pub(crate) fn transaction<T>(
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
    pub(crate) fn locked<T>(
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
