//! The shared backend: a PostgreSQL database every replica uses, through a small pool.
//!
//! The state store's API is synchronous (its calls are short, and callers already keep
//! them off the async workers where it matters), so the connections' socket work runs on a
//! runtime of its own, one thread, and a call waits for its answer with
//! `futures::executor::block_on`, which works on any thread, async worker or not.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use futures::StreamExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{AsyncMessage, Client, NoTls, Statement};

use super::value::{Params, Row, Timestamp, Value};
use crate::CatalogError;

/// Connections kept open at most.
const POOL_SIZE: usize = 16;
/// How long a call waits for a free connection, or for a new one to be made.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a statement may run, enforced by the server (and by us, if the network hangs).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A pool of connections to one database.
pub(crate) struct Db {
    config: tokio_postgres::Config,
    /// The URL without its password, for messages.
    label: String,
    runtime: Option<tokio::runtime::Runtime>,
    idle: Mutex<Pool>,
    freed: Condvar,
}

#[derive(Default)]
struct Pool {
    idle: Vec<Pooled>,
    /// Connections open, idle or in use.
    open: usize,
}

/// A connection with the statements prepared on it.
struct Pooled {
    client: Client,
    statements: RefCell<HashMap<String, Statement>>,
}

/// A connection checked out for one statement or transaction; back to the pool on drop.
pub(crate) struct Conn<'a> {
    db: &'a Db,
    pooled: Option<Pooled>,
    /// The last error was a serialization failure or deadlock: the transaction may be retried.
    lost_race: Cell<bool>,
}

/// `url` without its password.
pub(super) fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(None);
            }
            parsed.to_string()
        }
        Err(_) => "the configured PostgreSQL URL".to_string(),
    }
}

impl Db {
    /// A pool for `url` (`postgres://user:password@host:port/db`); connects once to check.
    pub(crate) fn connect(url: &str) -> Result<Self, CatalogError> {
        let label = redact(url);
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| CatalogError::State(format!("`{label}` is not a PostgreSQL URL: {e}")))?;
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .application_name("quiver")
            .options(format!(
                "-c TimeZone=UTC -c statement_timeout={}",
                STATEMENT_TIMEOUT.as_millis()
            ));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("quiver-state-db")
            .enable_all()
            .build()
            .map_err(|e| CatalogError::Internal(format!("state database runtime: {e}")))?;
        let db = Self {
            config,
            label,
            runtime: Some(runtime),
            idle: Mutex::default(),
            freed: Condvar::new(),
        };
        drop(db.conn()?);
        Ok(db)
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("runtime lives until drop")
    }

    /// Calls `heard(true)` for every notification on `channel`, and `heard(false)` each
    /// time it starts listening (for what it may have missed before), from a connection of
    /// its own on this pool's runtime, reconnecting after a loss until the pool is dropped.
    /// `listening` says whether it is connected right now.
    pub(crate) fn listen(
        &self,
        channel: &'static str,
        heard: impl Fn(bool) + Send + Sync + 'static,
        listening: Arc<AtomicBool>,
    ) {
        let config = self.config.clone();
        let label = self.label.clone();
        let heard = Arc::new(heard);
        self.runtime().spawn(async move {
            loop {
                match config.connect(NoTls).await {
                    Ok((client, mut connection)) => {
                        let messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                        let on_message = heard.clone();
                        let driver = tokio::spawn(async move {
                            futures::pin_mut!(messages);
                            while let Some(message) = messages.next().await {
                                match message {
                                    Ok(AsyncMessage::Notification(_)) => on_message(true),
                                    Ok(_) => {}
                                    Err(e) => return e.to_string(),
                                }
                            }
                            "the server closed the connection".to_string()
                        });
                        match client.batch_execute(&format!("LISTEN {channel}")).await {
                            Ok(()) => {
                                listening.store(true, Ordering::Release);
                                heard(false);
                                let why = driver.await.unwrap_or_else(|e| e.to_string());
                                tracing::warn!(database = %label, error = %why, "stopped listening for state changes; polling until reconnected");
                            }
                            Err(e) => {
                                driver.abort();
                                tracing::warn!(database = %label, error = %e, "cannot listen for state changes; polling");
                            }
                        }
                        listening.store(false, Ordering::Release);
                    }
                    Err(e) => {
                        tracing::debug!(database = %label, error = %e, "cannot connect to listen for state changes");
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    /// Waits for `work` on this thread, at most `limit`.
    fn wait<F: Future>(&self, limit: Duration, work: F) -> Option<F::Output> {
        let _context = self.runtime().enter();
        futures::executor::block_on(tokio::time::timeout(limit, work)).ok()
    }

    /// A connection: an idle one, a new one, or the next one freed.
    pub(crate) fn conn(&self) -> Result<Conn<'_>, CatalogError> {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let mut pool = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            while let Some(pooled) = pool.idle.pop() {
                if !pooled.client.is_closed() {
                    return Ok(self.checked_out(pooled));
                }
                pool.open -= 1;
            }
            if pool.open < POOL_SIZE {
                pool.open += 1;
                drop(pool);
                return match self.open() {
                    Ok(pooled) => Ok(self.checked_out(pooled)),
                    Err(e) => {
                        self.release(None);
                        Err(e)
                    }
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CatalogError::State(format!(
                    "every connection to the state database {} is busy ({POOL_SIZE} in use for {}s)",
                    self.label,
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
            pool = self
                .freed
                .wait_timeout(pool, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn checked_out(&self, pooled: Pooled) -> Conn<'_> {
        Conn {
            db: self,
            pooled: Some(pooled),
            lost_race: Cell::new(false),
        }
    }

    fn open(&self) -> Result<Pooled, CatalogError> {
        let config = self.config.clone();
        let handle = self.runtime().spawn(async move {
            let (client, connection) = config.connect(NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "state database connection ended");
                }
            });
            Ok::<_, tokio_postgres::Error>(client)
        });
        let unreachable = |e: &dyn std::fmt::Display| {
            CatalogError::StateUnavailable(self.label.clone(), e.to_string())
        };
        match self.wait(CONNECT_TIMEOUT + Duration::from_secs(1), handle) {
            Some(Ok(Ok(client))) => Ok(Pooled {
                client,
                statements: RefCell::default(),
            }),
            Some(Ok(Err(e))) => Err(unreachable(&e)),
            Some(Err(e)) => Err(unreachable(&e)),
            None => Err(unreachable(&"timed out connecting")),
        }
    }

    /// Returns a connection to the pool (`None`: it was closed).
    fn release(&self, pooled: Option<Pooled>) {
        let mut pool = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        match pooled {
            Some(p) if !p.client.is_closed() => pool.idle.push(p),
            _ => pool.open -= 1,
        }
        drop(pool);
        self.freed.notify_one();
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Dropping a runtime may block; this may run on an async worker.
            runtime.shutdown_background();
        }
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        self.db.release(self.pooled.take());
    }
}

impl Conn<'_> {
    fn pooled(&self) -> &Pooled {
        self.pooled.as_ref().expect("checked out until drop")
    }

    /// Whether the last error was a serialization failure or a deadlock.
    pub(crate) fn lost_race(&self) -> bool {
        self.lost_race.get()
    }

    fn error(&self, e: tokio_postgres::Error) -> CatalogError {
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
            {
                self.lost_race.set(true);
            }
            // Text with a NUL character, which PostgreSQL cannot store (the embedded state
            // can): the caller's input is at fault, not the server.
            if *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE {
                return CatalogError::InvalidInput(
                    "text may not contain NUL (\\0) characters".into(),
                );
            }
            if *code == SqlState::QUERY_CANCELED {
                return CatalogError::StateUnavailable(
                    self.db.label.clone(),
                    format!("a statement ran past {}s", STATEMENT_TIMEOUT.as_secs()),
                );
            }
            return CatalogError::State(db.message().to_string());
        }
        if e.is_closed() {
            return CatalogError::StateUnavailable(self.db.label.clone(), e.to_string());
        }
        CatalogError::State(e.to_string())
    }

    fn timed_out(&self) -> CatalogError {
        CatalogError::StateUnavailable(
            self.db.label.clone(),
            format!("no answer within {}s", STATEMENT_TIMEOUT.as_secs()),
        )
    }

    /// `work` on this connection; a connection that timed out is not reused.
    fn run<T>(
        &self,
        work: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, CatalogError> {
        self.lost_race.set(false);
        match self
            .db
            .wait(STATEMENT_TIMEOUT + Duration::from_secs(1), work)
        {
            Some(result) => result.map_err(|e| self.error(e)),
            None => Err(self.timed_out()),
        }
    }

    fn statement(&self, sql: &str) -> Result<Statement, CatalogError> {
        let pooled = self.pooled();
        if let Some(statement) = pooled.statements.borrow().get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.run(pooled.client.prepare(sql))?;
        pooled
            .statements
            .borrow_mut()
            .insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    pub(crate) fn execute(&self, sql: &str, params: Params<'_>) -> Result<usize, CatalogError> {
        let statement = self.statement(sql)?;
        let values = values(params);
        self.run(self.pooled().client.execute(&statement, &refs(&values)))
            .map(|n| n as usize)
    }

    pub(crate) fn batch(&self, sql: &str) -> Result<(), CatalogError> {
        self.run(self.pooled().client.batch_execute(sql))
    }

    pub(crate) fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, CatalogError> {
        let statement = self.statement(sql)?;
        let values = values(params);
        let rows = self.run(self.pooled().client.query(&statement, &refs(&values)))?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| read(row, i))
                    .collect::<Result<_, _>>()
                    .map(Row)
            })
            .collect()
    }
}

fn values(params: Params<'_>) -> Vec<Value> {
    params.iter().map(|p| p.value()).collect()
}

fn refs(values: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as _).collect()
}

fn read(row: &tokio_postgres::Row, i: usize) -> Result<Value, CatalogError> {
    fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
        row: &'a tokio_postgres::Row,
        i: usize,
    ) -> Result<Option<T>, CatalogError> {
        row.try_get(i)
            .map_err(|e| CatalogError::Internal(format!("state column {i}: {e}")))
    }
    let ty = row.columns()[i].type_();
    let value = match *ty {
        Type::BOOL => get::<bool>(row, i)?.map(Value::Bool),
        Type::INT2 => get::<i16>(row, i)?.map(|v| Value::Int(v.into())),
        Type::INT4 => get::<i32>(row, i)?.map(|v| Value::Int(v.into())),
        Type::INT8 => get::<i64>(row, i)?.map(Value::Int),
        Type::FLOAT4 => get::<f32>(row, i)?.map(|v| Value::Float(v.into())),
        Type::FLOAT8 => get::<f64>(row, i)?.map(Value::Float),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            get::<String>(row, i)?.map(Value::Text)
        }
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            get::<SystemTime>(row, i)?.map(|t| Value::Time(Timestamp::from(t).0))
        }
        Type::VOID => None,
        _ => {
            return Err(CatalogError::Internal(format!(
                "state column {i} has type {ty}, which Quiver does not read"
            )));
        }
    };
    Ok(value.unwrap_or(Value::Null))
}

impl ToSql for Value {
    /// Binds to the type PostgreSQL inferred for the placeholder, so one `Value::Int` serves
    /// an `INTEGER` and a `BIGINT` column alike.
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        let text = |s: String, out: &mut BytesMut| s.as_str().to_sql(&Type::TEXT, out);
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Bool(b) if *ty == Type::BOOL => b.to_sql(ty, out),
            Value::Bool(b) => text(b.to_string(), out),
            Value::Int(i) => match *ty {
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => text(i.to_string(), out),
                _ => i.to_sql(ty, out),
            },
            Value::Float(f) => match *ty {
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => text(f.to_string(), out),
                _ => f.to_sql(ty, out),
            },
            Value::Text(s) => s.as_str().to_sql(ty, out),
            Value::Time(t) => SystemTime::from(Timestamp(*t)).to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(
            redact("postgres://quiver:s3cret@db.internal:5432/state"),
            "postgres://quiver@db.internal:5432/state"
        );
        assert_eq!(redact("not a url"), "the configured PostgreSQL URL");
    }
}
