//! `postgres`: a table or a query from PostgreSQL, full or incremental.
//!
//! Rows are read with `COPY (…) TO STDOUT (FORMAT binary)`, the fastest way out of
//! PostgreSQL, and decoded straight into Arrow builders. Types map faithfully:
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

mod idle;
mod tls;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder, make_builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use bytes::{Buf, BytesMut};
use futures::StreamExt;
use quiver_config::FieldProblem;
use serde::Deserialize;
use tokio_postgres::types::{Kind as PgKind, Type};

use crate::options::{parse, parse_checked, secret_reference};
use crate::pushdown::{self, SourceDialect};
use crate::{Batches, Connector, ConnectorError, Options, ReadRequest, Remote};
use quiver_catalog::RemoteQuery;
use quiver_config::SyncConfig;

/// Rows per Arrow batch.
const BATCH_ROWS: usize = 65_536;
/// Days and microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The `postgres` connector.
pub struct Postgres;

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

/// How one column (or array element) is decoded.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Bool,
    I16,
    I32,
    I64,
    F32,
    F64,
    Numeric { precision: u8, scale: i8 },
    Text,
    Json,
    Jsonb,
    Uuid,
    Bytes,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Array(Box<Kind>),
}

impl Kind {
    /// The decoder for a PostgreSQL type; `None` for types read as text.
    fn of(t: &Type, modifier: i32) -> Option<Kind> {
        Some(match *t {
            Type::BOOL => Kind::Bool,
            Type::INT2 => Kind::I16,
            Type::INT4 => Kind::I32,
            Type::INT8 => Kind::I64,
            Type::FLOAT4 => Kind::F32,
            Type::FLOAT8 => Kind::F64,
            Type::NUMERIC => {
                // typmod = ((precision << 16) | scale) + 4; -1 when unconstrained.
                let (precision, scale) = if modifier >= 4 {
                    let m = modifier - 4;
                    (((m >> 16) & 0xffff) as u8, (m & 0xffff) as i8)
                } else {
                    (38, 10)
                };
                if precision > 38 {
                    return None;
                }
                Kind::Numeric { precision, scale }
            }
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => Kind::Text,
            Type::JSON => Kind::Json,
            Type::JSONB => Kind::Jsonb,
            Type::UUID => Kind::Uuid,
            Type::BYTEA => Kind::Bytes,
            Type::DATE => Kind::Date,
            Type::TIME => Kind::Time,
            Type::TIMESTAMP => Kind::Timestamp,
            Type::TIMESTAMPTZ => Kind::TimestampTz,
            _ => match t.kind() {
                PgKind::Array(member) => Kind::Array(Box::new(Kind::of(member, modifier)?)),
                _ => return None,
            },
        })
    }

    fn data_type(&self) -> DataType {
        match self {
            Kind::Bool => DataType::Boolean,
            Kind::I16 => DataType::Int16,
            Kind::I32 => DataType::Int32,
            Kind::I64 => DataType::Int64,
            Kind::F32 => DataType::Float32,
            Kind::F64 => DataType::Float64,
            Kind::Numeric { precision, scale } => DataType::Decimal128(*precision, *scale),
            Kind::Text | Kind::Json | Kind::Jsonb | Kind::Uuid => DataType::Utf8,
            Kind::Bytes => DataType::Binary,
            Kind::Date => DataType::Date32,
            Kind::Time => DataType::Time64(TimeUnit::Microsecond),
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Kind::Array(inner) => DataType::List(Arc::new(inner.field("item"))),
        }
    }

    fn field(&self, name: &str) -> Field {
        let field = Field::new(name, self.data_type(), true);
        if matches!(self, Kind::Json | Kind::Jsonb) {
            field.with_metadata(HashMap::from([(
                "ARROW:extension:name".to_string(),
                "arrow.json".to_string(),
            )]))
        } else {
            field
        }
    }
}

/// Decodes the binary COPY stream into Arrow batches.
struct Decoder {
    schema: SchemaRef,
    kinds: Vec<Kind>,
    builders: Vec<Box<dyn ArrayBuilder>>,
    buffer: BytesMut,
    header_seen: bool,
    rows: usize,
}

fn bad(what: &str) -> ConnectorError {
    ConnectorError::Source(format!(
        "PostgreSQL sent a malformed binary COPY stream ({what})"
    ))
}

impl Decoder {
    fn new(schema: SchemaRef, kinds: Vec<Kind>) -> Self {
        let builders = Self::builders(&schema);
        Self {
            schema,
            kinds,
            builders,
            buffer: BytesMut::new(),
            header_seen: false,
            rows: 0,
        }
    }

    fn builders(schema: &Schema) -> Vec<Box<dyn ArrayBuilder>> {
        schema
            .fields()
            .iter()
            .map(|f| make_builder(f.data_type(), BATCH_ROWS))
            .collect()
    }

    /// Adds bytes and decodes every complete row in the buffer.
    fn push(&mut self, chunk: &[u8]) -> Result<(), ConnectorError> {
        self.buffer.extend_from_slice(chunk);
        if !self.header_seen {
            // "PGCOPY\n\xff\r\n\0", flags (i32), header extension length (i32) + extension.
            if self.buffer.len() < 19 {
                return Ok(());
            }
            if &self.buffer[..11] != b"PGCOPY\n\xff\r\n\0" {
                return Err(bad("no signature"));
            }
            let extension = i32::from_be_bytes(self.buffer[15..19].try_into().unwrap()) as usize;
            if self.buffer.len() < 19 + extension {
                return Ok(());
            }
            self.buffer.advance(19 + extension);
            self.header_seen = true;
        }
        while let Some(consumed) = self.row_length()? {
            let row = self.buffer.split_to(consumed);
            if consumed == 2 {
                break; // the trailer (-1)
            }
            let mut at = 2;
            for column in 0..self.kinds.len() {
                let len = i32::from_be_bytes(row[at..at + 4].try_into().unwrap());
                at += 4;
                let value = if len < 0 {
                    None
                } else {
                    let v = &row[at..at + len as usize];
                    at += len as usize;
                    Some(v)
                };
                append(&self.kinds[column], self.builders[column].as_mut(), value).map_err(
                    |e| {
                        ConnectorError::Source(format!(
                            "column `{}`: {e}",
                            self.schema.field(column).name()
                        ))
                    },
                )?;
            }
            self.rows += 1;
        }
        Ok(())
    }

    /// The length of the complete row at the start of the buffer, if it is all there.
    fn row_length(&self) -> Result<Option<usize>, ConnectorError> {
        let b = &self.buffer;
        if b.len() < 2 {
            return Ok(None);
        }
        let fields = i16::from_be_bytes([b[0], b[1]]);
        if fields == -1 {
            return Ok(Some(2));
        }
        if fields as usize != self.kinds.len() {
            return Err(bad("unexpected field count"));
        }
        let mut at = 2;
        for _ in 0..fields {
            if b.len() < at + 4 {
                return Ok(None);
            }
            let len = i32::from_be_bytes(b[at..at + 4].try_into().unwrap());
            at += 4 + len.max(0) as usize;
            if b.len() < at {
                return Ok(None);
            }
        }
        Ok(Some(at))
    }

    fn flush(&mut self) -> Result<RecordBatch, ConnectorError> {
        let columns = self.builders.iter_mut().map(|b| b.finish()).collect();
        self.rows = 0;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    fn finish(&mut self) -> Result<Option<RecordBatch>, ConnectorError> {
        if !self.buffer.is_empty() {
            return Err(bad("trailing bytes"));
        }
        if self.rows == 0 {
            return Ok(None);
        }
        self.flush().map(Some)
    }
}

macro_rules! builder {
    ($b:expr, $t:ty) => {
        $b.as_any_mut()
            .downcast_mut::<$t>()
            .expect("builder made for this kind")
    };
}

fn be<const N: usize>(v: &[u8]) -> Result<[u8; N], String> {
    v.try_into()
        .map_err(|_| format!("expected {N} bytes, got {}", v.len()))
}

/// Appends one binary value (or null) to the builder made for `kind`.
fn append(kind: &Kind, b: &mut dyn ArrayBuilder, value: Option<&[u8]>) -> Result<(), String> {
    match kind {
        Kind::Bool => {
            builder!(b, BooleanBuilder).append_option(value.map(|v| v.first() == Some(&1)))
        }
        Kind::I16 => builder!(b, Int16Builder)
            .append_option(value.map(|v| be(v).map(i16::from_be_bytes)).transpose()?),
        Kind::I32 => builder!(b, Int32Builder)
            .append_option(value.map(|v| be(v).map(i32::from_be_bytes)).transpose()?),
        Kind::I64 => builder!(b, Int64Builder)
            .append_option(value.map(|v| be(v).map(i64::from_be_bytes)).transpose()?),
        Kind::F32 => builder!(b, Float32Builder)
            .append_option(value.map(|v| be(v).map(f32::from_be_bytes)).transpose()?),
        Kind::F64 => builder!(b, Float64Builder)
            .append_option(value.map(|v| be(v).map(f64::from_be_bytes)).transpose()?),
        Kind::Numeric { scale, .. } => builder!(b, Decimal128Builder)
            .append_option(value.map(|v| numeric(v, *scale)).transpose()?.flatten()),
        Kind::Text | Kind::Json => builder!(b, StringBuilder).append_option(
            value
                .map(|v| std::str::from_utf8(v).map_err(|e| e.to_string()))
                .transpose()?,
        ),
        Kind::Jsonb => builder!(b, StringBuilder).append_option(
            value
                .map(|v| {
                    std::str::from_utf8(v.get(1..).unwrap_or_default()).map_err(|e| e.to_string())
                })
                .transpose()?,
        ),
        Kind::Uuid => builder!(b, StringBuilder).append_option(
            value
                .map(|v| be::<16>(v).map(|u| uuid::Uuid::from_bytes(u).hyphenated().to_string()))
                .transpose()?,
        ),
        Kind::Bytes => builder!(b, BinaryBuilder).append_option(value),
        Kind::Date => builder!(b, Date32Builder).append_option(
            value
                .map(|v| be(v).map(i32::from_be_bytes))
                .transpose()?
                .filter(|d| *d != i32::MAX && *d != i32::MIN)
                .map(|d| d + PG_EPOCH_DAYS),
        ),
        Kind::Time => builder!(b, Time64MicrosecondBuilder)
            .append_option(value.map(|v| be(v).map(i64::from_be_bytes)).transpose()?),
        Kind::Timestamp | Kind::TimestampTz => builder!(b, TimestampMicrosecondBuilder)
            .append_option(
                value
                    .map(|v| be(v).map(i64::from_be_bytes))
                    .transpose()?
                    .filter(|t| *t != i64::MAX && *t != i64::MIN)
                    .map(|t| t + PG_EPOCH_MICROS),
            ),
        Kind::Array(inner) => {
            let list = builder!(b, ListBuilder<Box<dyn ArrayBuilder>>);
            match value {
                None => list.append_null(),
                Some(v) => {
                    array(inner, list.values().as_mut(), v)?;
                    list.append(true);
                }
            }
        }
    }
    Ok(())
}

/// Appends the elements of a binary array (any number of dimensions, flattened).
fn array(inner: &Kind, values: &mut dyn ArrayBuilder, v: &[u8]) -> Result<(), String> {
    let int = |at: usize| -> Result<i32, String> {
        Ok(i32::from_be_bytes(be(v
            .get(at..at + 4)
            .ok_or("short array")?)?))
    };
    let dims = int(0)?.max(0) as usize;
    let mut count = if dims == 0 { 0 } else { 1usize };
    for d in 0..dims {
        count *= int(12 + d * 8)?.max(0) as usize;
    }
    let mut at = 12 + dims * 8;
    for _ in 0..count {
        let len = int(at)?;
        at += 4;
        if len < 0 {
            append(inner, values, None)?;
        } else {
            let end = at + len as usize;
            append(inner, values, Some(v.get(at..end).ok_or("short array")?))?;
            at = end;
        }
    }
    Ok(())
}

/// A binary `numeric` as an integer scaled by `scale` (half away from zero), `None` for NaN
/// and infinities.
fn numeric(v: &[u8], scale: i8) -> Result<Option<i128>, String> {
    let word = |i: usize| -> Result<u16, String> {
        Ok(u16::from_be_bytes(be(v
            .get(i * 2..i * 2 + 2)
            .ok_or("short numeric")?)?))
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i16 as i32;
    let sign = word(2)?;
    if sign == 0xC000 || sign == 0xD000 || sign == 0xF000 {
        return Ok(None); // NaN, +Infinity, -Infinity
    }
    let overflow = || format!("value does not fit decimal(38,{scale})");
    let mut acc: i128 = 0;
    let mut round_up = false;
    for i in 0..ndigits {
        let digit = word(4 + i)? as i128;
        // This base-10000 digit is worth 10^(4 * (weight - i)); scaled, 10^(4(w-i) + scale).
        let exponent = 4 * (weight - i as i32) + scale as i32;
        if exponent >= 0 {
            let factor = 10i128.checked_pow(exponent as u32).ok_or_else(overflow)?;
            acc = digit
                .checked_mul(factor)
                .and_then(|d| acc.checked_add(d))
                .ok_or_else(overflow)?;
        } else if exponent >= -4 {
            let divisor = 10i128.pow((-exponent) as u32);
            acc = acc.checked_add(digit / divisor).ok_or_else(overflow)?;
            round_up = (digit % divisor) * 2 >= divisor;
            break;
        } else {
            break;
        }
    }
    if round_up {
        acc = acc.checked_add(1).ok_or_else(overflow)?;
    }
    Ok(Some(if sign == 0x4000 { -acc } else { acc }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PostgreSQL's binary form of a numeric: base-10000 digits, weight, sign, scale.
    fn pg_numeric(digits: &[u16], weight: i16, negative: bool, dscale: u16) -> Vec<u8> {
        let mut out = Vec::new();
        for w in [
            digits.len() as u16,
            weight as u16,
            if negative { 0x4000 } else { 0 },
            dscale,
        ] {
            out.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out
    }

    #[test]
    fn numerics_scale_and_round() {
        // 12345.6789 = [1, 2345, 6789], weight 1
        let v = pg_numeric(&[1, 2345, 6789], 1, false, 4);
        assert_eq!(numeric(&v, 4).unwrap(), Some(123_456_789));
        assert_eq!(numeric(&v, 2).unwrap(), Some(1_234_568));
        assert_eq!(numeric(&v, 0).unwrap(), Some(12_346));
        let v = pg_numeric(&[7, 5000], 0, true, 4); // -7.5
        assert_eq!(numeric(&v, 1).unwrap(), Some(-75));
        let v = pg_numeric(&[5], -1, false, 4); // 0.0005
        assert_eq!(numeric(&v, 4).unwrap(), Some(5));
        assert_eq!(numeric(&v, 3).unwrap(), Some(1));
        let nan = [0u8, 0, 0, 0, 0xC0, 0, 0, 0];
        assert_eq!(numeric(&nan, 2).unwrap(), None);
        let huge = pg_numeric(&[1], 10, false, 0); // 10^40
        assert!(numeric(&huge, 0).unwrap_err().contains("does not fit"));
    }

    #[test]
    fn copy_stream_decodes_across_chunk_boundaries() {
        let kinds = vec![Kind::I32, Kind::Text, Kind::Array(Box::new(Kind::I64))];
        let schema = Arc::new(Schema::new(
            kinds
                .iter()
                .enumerate()
                .map(|(i, k)| k.field(&format!("c{i}")))
                .collect::<Vec<_>>(),
        ));
        let mut stream = b"PGCOPY\n\xff\r\n\0".to_vec();
        stream.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        for (id, text) in [(1i32, Some("héllo")), (2, None)] {
            stream.extend_from_slice(&3i16.to_be_bytes());
            stream.extend_from_slice(&4i32.to_be_bytes());
            stream.extend_from_slice(&id.to_be_bytes());
            match text {
                Some(t) => {
                    stream.extend_from_slice(&(t.len() as i32).to_be_bytes());
                    stream.extend_from_slice(t.as_bytes());
                }
                None => stream.extend_from_slice(&(-1i32).to_be_bytes()),
            }
            // int8[] {10, NULL}
            let mut arr = Vec::new();
            for x in [1i32, 1, 20] {
                arr.extend_from_slice(&x.to_be_bytes());
            }
            arr.extend_from_slice(&2i32.to_be_bytes());
            arr.extend_from_slice(&1i32.to_be_bytes());
            arr.extend_from_slice(&8i32.to_be_bytes());
            arr.extend_from_slice(&10i64.to_be_bytes());
            arr.extend_from_slice(&(-1i32).to_be_bytes());
            stream.extend_from_slice(&(arr.len() as i32).to_be_bytes());
            stream.extend_from_slice(&arr);
        }
        stream.extend_from_slice(&(-1i16).to_be_bytes());
        let mut decoder = Decoder::new(schema, kinds);
        for chunk in stream.chunks(7) {
            decoder.push(chunk).unwrap();
        }
        let batch = decoder.finish().unwrap().unwrap();
        assert_eq!(batch.num_rows(), 2);
        let text = arrow::util::pretty::pretty_format_batches(&[batch])
            .unwrap()
            .to_string();
        assert!(text.contains("héllo") && text.contains("[10, ]"), "{text}");
    }
}
