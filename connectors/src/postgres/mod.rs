//! `postgres`: a table or a query from PostgreSQL, full or incremental.
//!
//! Rows are read with `COPY (…) TO STDOUT (FORMAT binary)`, the fastest way out of
//! PostgreSQL, and decoded straight into Arrow builders ([`binary`]). Types map faithfully:
//!
//! | PostgreSQL | Arrow |
//! | --- | --- |
//! | `boolean`, `smallint`, `integer`, `bigint`, `real`, `double precision` | same width |
//! | `numeric(p,s)` (p ≤ 38) | `Decimal128(p,s)`; unconstrained `numeric` → `Decimal128(38,10)` |
//! | `text`, `varchar`, `char`, `name`, `uuid` | `Utf8` |
//! | `json`, `jsonb` | `Utf8` tagged with the `arrow.json` extension |
//! | `bytea` | `Binary` |
//! | `date`, `time`, `timestamp`, `timestamptz` | `Date32`, `Time64(µs)`, `Timestamp(µs)`, `Timestamp(µs, UTC)` |
//! | arrays of the above | `List` (multi-dimensional arrays are flattened) |
//! | anything else (enums, `inet`, `interval`, …) | `Utf8`, cast with `::text` |
//!
//! `NaN` and infinite numerics, dates and timestamps have no Arrow value and become null.
//!
//! Connections use TLS when the server offers it (`sslmode`, as libpq names it; [`tls`]).

mod binary;
mod idle;
mod tls;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use futures::StreamExt;
use quiver_config::FieldProblem;
use serde::Deserialize;

use crate::options::{parse, parse_checked, secret_reference};
use crate::pushdown::{self, SourceDialect};
use crate::{Batches, Connector, ConnectorError, Options, ReadRequest, Remote};
use quiver_catalog::RemoteQuery;
use quiver_config::SyncConfig;

use binary::{Decoder, Kind};

/// Rows per Arrow batch.
const BATCH_ROWS: usize = 65_536;

/// The `postgres` connector.
pub(crate) struct Postgres;

/// Options of the `postgres` connector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostgresOptions {
    /// Server host name or address. Default `localhost`.
    #[serde(default = "default_host")]
    host: String,
    /// Server port. Default `5432`.
    #[serde(default = "default_port")]
    port: u16,
    /// Database name.
    database: String,
    /// User name.
    user: String,
    /// Password, as an `${ENV}` reference.
    #[serde(default)]
    password: Option<String>,
    /// The table to read, `schema.table` (or just `table` for `public`).
    #[serde(default)]
    table: Option<String>,
    /// Or a query whose result is the table.
    #[serde(default)]
    query: Option<String>,
    /// `disable`, `prefer` (default), `require`, `verify-ca` or `verify-full`.
    #[serde(default)]
    sslmode: tls::SslMode,
    /// PEM file of the CA that signs the server's certificate (checked from `verify-ca` on,
    /// and with `prefer`/`require` when given). Default: the CAs the system trusts.
    #[serde(default)]
    ca_cert: Option<String>,
}

fn default_host() -> String {
    "localhost".into()
}

fn default_port() -> u16 {
    5432
}

#[async_trait::async_trait]
impl Connector for Postgres {
    fn check(&self, options: &Options) -> Vec<FieldProblem> {
        let parsed: PostgresOptions = match parse(options) {
            Ok(o) => o,
            Err(p) => return vec![p],
        };
        let mut problems: Vec<FieldProblem> =
            secret_reference(options, "password").into_iter().collect();
        match (&parsed.table, &parsed.query) {
            (Some(_), Some(_)) | (None, None) => problems.push(FieldProblem::new(
                "options.table",
                "give either `table` (e.g. `public.orders`) or `query`, not both",
            )),
            (Some(table), None) if table.split('.').count() > 2 || table.is_empty() => problems
                .push(FieldProblem::new(
                    "options.table",
                    format!("`{table}` must be `schema.table` or `table`"),
                )),
            _ => {}
        }
        match (&parsed.ca_cert, parsed.sslmode) {
            (Some(_), tls::SslMode::Disable) => problems.push(FieldProblem::new(
                "options.ca_cert",
                "is not used with `sslmode: disable`",
            )),
            (Some(path), _) => {
                if let Err(e) = tls::check_ca_cert(path) {
                    problems.push(FieldProblem::new("options.ca_cert", e));
                }
            }
            _ => {}
        }
        problems
    }

    async fn read(&self, request: ReadRequest<'_>) -> Result<Batches, ConnectorError> {
        let options: PostgresOptions = parse_checked(request.options)?;
        let client = options.connect().await?;
        let source = options.source();
        let columns = Columns::probe(&client, &source).await?;
        let mut filter = String::new();
        if let Some((column, since)) = request.since {
            let type_name = columns.types.get(column).ok_or_else(|| {
                ConnectorError::Source(format!(
                    "the source has no column `{column}` (the watermark)"
                ))
            })?;
            // The literal is quoted by the server itself: parameterised, never spliced.
            let literal: String = client
                .query_one("SELECT quote_literal($1::text)", &[&since])
                .await
                .map_err(pg)?
                .get(0);
            filter = format!(
                " WHERE {} > {literal}::{}",
                quote_ident(column),
                quote_ident(type_name)
            );
        }
        let select = format!(
            "SELECT {} FROM {source} AS quiver_source{filter}",
            columns.select.join(", ")
        );
        copy(client, &select, columns.fields, columns.kinds, None).await
    }

    fn remote(&self) -> Option<&dyn Remote> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl Remote for Postgres {
    fn dialect(&self) -> SourceDialect {
        SourceDialect::Postgres
    }

    async fn schema(&self, options: &Options, _: &SyncConfig) -> Result<SchemaRef, ConnectorError> {
        let options: PostgresOptions = parse_checked(options)?;
        let client = options.connect().await?;
        let columns = Columns::probe(&client, &options.source()).await?;
        Ok(Arc::new(Schema::new(columns.fields)))
    }

    async fn scan(
        &self,
        options: &Options,
        query: &RemoteQuery,
        _: &SyncConfig,
    ) -> Result<Batches, ConnectorError> {
        let options: PostgresOptions = parse_checked(options)?;
        let key = idle::Key::of(&options);
        let source = options.source();
        // A kept connection the server has since dropped fails the probe: then a new one.
        let kept = match idle::take(&key) {
            Some(client) => Columns::probe(&client, &source)
                .await
                .ok()
                .map(|columns| (client, columns)),
            None => None,
        };
        let (client, columns) = match kept {
            Some(kept) => kept,
            None => {
                let client = options.connect().await?;
                let columns = Columns::probe(&client, &source).await?;
                (client, columns)
            }
        };
        let (mut select, mut fields, mut kinds) = (Vec::new(), Vec::new(), Vec::new());
        for name in &query.columns {
            let i = columns
                .fields
                .iter()
                .position(|f| f.name() == name)
                .ok_or_else(|| {
                    ConnectorError::Request(format!(
                        "the source has no column `{name}` any more: sync the table to refresh its schema"
                    ))
                })?;
            select.push(columns.select[i].clone());
            fields.push(columns.fields[i].clone());
            kinds.push(columns.kinds[i].clone());
        }
        // Literals are written inline (COPY takes no parameters), quoted by `pg_string`.
        let sql = pushdown::select(SourceDialect::Postgres, query, &select, &source);
        copy(client, &sql.text, fields, kinds, Some(key)).await
    }
}

impl PostgresOptions {
    /// Connects, over TLS as `sslmode` says; errors name the server and the mode.
    async fn connect(&self) -> Result<tokio_postgres::Client, ConnectorError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .dbname(&self.database)
            .user(&self.user)
            .application_name("quiver")
            .ssl_mode(self.sslmode.negotiation());
        if let Some(password) = &self.password {
            config.password(password);
        }
        let where_ = format!(
            "PostgreSQL at {}:{}/{} (sslmode {})",
            self.host,
            self.port,
            self.database,
            self.sslmode.as_str()
        );
        let tls = tls::connector(self.sslmode, self.ca_cert.as_deref())
            .map_err(|e| ConnectorError::Source(format!("{where_}: {e}")))?;
        let connect_error = |e: tokio_postgres::Error| {
            // tokio-postgres says what it was doing; its sources say what failed.
            let mut message = format!("{where_}: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message = format!("{message}: {cause}");
                source = cause.source();
            }
            if let Some(hint) = tls::hint(&e) {
                message = format!("{message} ({hint})");
            }
            ConnectorError::Source(message)
        };
        Ok(match tls {
            None => run(config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(connect_error)?),
            Some(tls) => run(config.connect(tls).await.map_err(connect_error)?),
        })
    }

    /// What rows are read from: the quoted table, or the query in parentheses.
    fn source(&self) -> String {
        match (&self.table, &self.query) {
            (Some(table), _) => table
                .split('.')
                .map(quote_ident)
                .collect::<Vec<_>>()
                .join("."),
            (None, Some(query)) => format!("({query})"),
            (None, None) => unreachable!("checked"),
        }
    }
}

/// The source's columns, as the server describes them.
struct Columns {
    /// How each is selected (types without an Arrow mapping are cast to text).
    select: Vec<String>,
    kinds: Vec<Kind>,
    fields: Vec<Field>,
    /// PostgreSQL type name by column name.
    types: HashMap<String, String>,
}

impl Columns {
    /// Asks the server for the columns of `source` without reading a row.
    async fn probe(client: &tokio_postgres::Client, source: &str) -> Result<Self, ConnectorError> {
        let probe = client
            .prepare(&format!("SELECT * FROM {source} AS quiver_source"))
            .await
            .map_err(pg)?;
        let mut columns = Columns {
            select: Vec::new(),
            kinds: Vec::new(),
            fields: Vec::new(),
            types: HashMap::new(),
        };
        for column in probe.columns() {
            let name = column.name();
            let kind = Kind::of(column.type_(), column.type_modifier());
            let ident = quote_ident(name);
            columns.select.push(match kind {
                Some(_) => ident.clone(),
                None => format!("{ident}::text AS {ident}"),
            });
            let kind = kind.unwrap_or(Kind::Text);
            columns.fields.push(kind.field(name));
            columns
                .types
                .insert(name.to_string(), column.type_().name().to_string());
            columns.kinds.push(kind);
        }
        Ok(columns)
    }
}

/// The server's error, for statements (connection errors say more, see `connect`).
fn pg(e: tokio_postgres::Error) -> ConnectorError {
    ConnectorError::Source(format!("PostgreSQL: {}", describe(&e)))
}

/// Streams the rows of `select` through `COPY … TO STDOUT (FORMAT binary)`, decoded into
/// batches of `fields`. With a `keep` key, the connection is kept for the next query once
/// every row has come.
async fn copy(
    client: tokio_postgres::Client,
    select: &str,
    fields: Vec<Field>,
    kinds: Vec<Kind>,
    keep: Option<idle::Key>,
) -> Result<Batches, ConnectorError> {
    let copy = format!("COPY ({select}) TO STDOUT (FORMAT binary)");
    // Armed from here: PostgreSQL holds back even the start of the copy until rows come.
    let mut cancel = CancelOnDrop(Some(client.cancel_token()));
    let stream = match client.copy_out(&copy).await {
        Ok(stream) => stream,
        Err(e) => {
            cancel.0 = None;
            return Err(pg(e));
        }
    };
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let state = CopyState {
        stream: Box::pin(stream),
        client: Some(client),
        keep,
        decoder: Decoder::new(schema.clone(), kinds),
        cancel,
        done: false,
    };
    let batches = futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            match st.stream.next().await {
                Some(Ok(chunk)) => {
                    if let Err(e) = st.decoder.push(&chunk) {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                    if st.decoder.rows >= BATCH_ROWS {
                        let batch = st.decoder.flush();
                        return Some((batch, st));
                    }
                }
                Some(Err(e)) => {
                    st.done = true;
                    st.cancel.0 = None;
                    return Some((Err(pg(e)), st));
                }
                None => {
                    st.done = true;
                    st.cancel.0 = None;
                    if let (Some(key), Some(client)) = (st.keep.take(), st.client.take()) {
                        idle::keep(key, client);
                    }
                    return match st.decoder.finish() {
                        Ok(Some(batch)) => Some((Ok(batch), st)),
                        Ok(None) => None,
                        Err(e) => Some((Err(e), st)),
                    };
                }
            }
        }
    });
    Ok(Batches {
        schema,
        stream: batches.boxed(),
    })
}

/// A running `COPY … TO STDOUT`: the client stays alive until the stream is done.
struct CopyState {
    stream: std::pin::Pin<Box<tokio_postgres::CopyOutStream>>,
    client: Option<tokio_postgres::Client>,
    /// Where the connection is kept once the copy has ended cleanly.
    keep: Option<idle::Key>,
    decoder: Decoder,
    cancel: CancelOnDrop,
    done: bool,
}

/// Cancels the statement running on a connection, unless disarmed (`None`) when it ends.
///
/// Rows no longer wanted (a remote query stopped by its client, by `query.timeout`, or
/// with its limit reached above the scan): the server is asked to stop the statement, which
/// would otherwise run on until it next writes to the closed connection. The request goes
/// unencrypted, as libpq's `PQcancel` sends it; it carries only the cancel key.
struct CancelOnDrop(Option<tokio_postgres::CancelToken>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let (Some(token), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move {
                if let Err(e) = token.cancel_query(tokio_postgres::NoTls).await {
                    tracing::debug!(error = %e, "could not cancel the PostgreSQL statement");
                }
            });
        }
    }
}

/// The client of a new connection, whose messages are handled by a task of its own.
fn run<S, T>(
    (client, connection): (tokio_postgres::Client, tokio_postgres::Connection<S, T>),
) -> tokio_postgres::Client
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection ended");
        }
    });
    client
}

/// The server's message, with its detail, rather than tokio-postgres' "db error".
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_string(),
        },
        None => e.to_string(),
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
