//! `bigquery`: a BigQuery table or query, materialized on its schedule with a cost guard.
//!
//! Every sync is first a dry run (`jobs.query` with `dryRun`), which costs nothing and says
//! how many bytes the query would process; over `max_bytes_billed` the sync fails and the
//! old version keeps serving. The query then runs as a job with that limit set on BigQuery's
//! side too (`maximumBytesBilled`), and its result is paged in (`jobs.getQueryResults` with
//! `pageToken`), one Arrow batch per page. An incremental sync filters by the watermark in
//! BigQuery, with a typed query parameter.
//!
//! | BigQuery | Arrow |
//! | --- | --- |
//! | `INT64`, `FLOAT64`, `BOOL`, `STRING`, `BYTES` | `Int64`, `Float64`, `Boolean`, `Utf8`, `Binary` |
//! | `NUMERIC` / `BIGNUMERIC` | `Decimal128(38, 9)` / `Decimal256(76, 38)` (or their declared precision and scale) |
//! | `DATE`, `TIME`, `DATETIME`, `TIMESTAMP` | `Date32`, `Time64(µs)`, `Timestamp(µs)`, `Timestamp(µs, UTC)` |
//! | `JSON` | `Utf8` tagged with the `arrow.json` extension |
//! | `GEOGRAPHY` | `Utf8` (WKT), `INTERVAL` and `RANGE` as their text |
//! | `STRUCT` (`RECORD`), `ARRAY` (`REPEATED`) | `Struct`, `List` |

mod api;
mod rows;

use std::time::Duration;

use bytesize::ByteSize;
use futures::StreamExt;
use quiver_config::FieldProblem;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::options::{self, parse, parse_checked, secret_reference};
use crate::pushdown::{self, SourceDialect};
use crate::{Batches, Connector, ConnectorError, Options, ReadRequest, Remote};
use api::{Api, ServiceAccountKey};
use arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use quiver_catalog::RemoteQuery;
use quiver_config::SyncConfig;

/// The `bigquery` connector.
pub(crate) struct BigQuery;

/// Options of the `bigquery` connector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BigQueryOptions {
    /// Path of a service-account key file (the JSON Google Cloud issues).
    #[serde(default)]
    credentials_file: Option<String>,
    /// Or the key's JSON itself, as an `${ENV}` reference.
    #[serde(default)]
    credentials: Option<String>,
    /// The project that runs (and pays for) the query jobs.
    project: String,
    /// Where the data lives (`US`, `EU`, `europe-west3`, …). Default: BigQuery infers it.
    #[serde(default)]
    location: Option<String>,
    /// The table to read: `dataset.table` (in `project`) or `project.dataset.table`.
    #[serde(default)]
    table: Option<String>,
    /// Or a GoogleSQL query whose result is the table.
    #[serde(default)]
    query: Option<String>,
    /// The most a sync may process (and so be billed for), e.g. `20GB`. Default: the
    /// server's `sync.max_bytes_billed`.
    #[serde(default)]
    max_bytes_billed: Option<ByteSize>,
    /// Cancel the query job and fail the sync when it runs longer than this. Default `30m`.
    #[serde(default = "default_timeout")]
    timeout: options::Duration,
    /// The API's root URL. Default `https://bigquery.googleapis.com`.
    #[serde(default = "default_endpoint")]
    endpoint: String,
}

fn default_timeout() -> options::Duration {
    options::Duration(Duration::from_secs(30 * 60))
}

fn default_endpoint() -> String {
    "https://bigquery.googleapis.com".into()
}

impl BigQueryOptions {
    /// The service-account key, from the file or the (resolved) option.
    fn key(&self) -> Result<ServiceAccountKey, String> {
        match (&self.credentials_file, &self.credentials) {
            (Some(path), None) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("`credentials_file` {path}: {e}"))?;
                ServiceAccountKey::parse(&text).map_err(|e| format!("`credentials_file` {path}: {e}"))
            }
            (None, Some(json)) => {
                ServiceAccountKey::parse(json).map_err(|e| format!("`credentials`: {e}"))
            }
            _ => Err("give either `credentials_file` (a service-account key file) or `credentials` (its JSON as an `${ENV}` reference), not both".into()),
        }
    }

    /// The GoogleSQL a sync runs, before any watermark filter.
    fn sql(&self) -> String {
        match &self.query {
            Some(query) => query.clone(),
            None => format!("SELECT * FROM {}", self.source()),
        }
    }

    /// What rows are read from: the table's path, or the query in parentheses.
    fn source(&self) -> String {
        match (&self.table, &self.query) {
            (Some(table), _) => {
                let path = if table.split('.').count() == 2 {
                    format!("{}.{table}", self.project)
                } else {
                    table.clone()
                };
                format!("`{path}`")
            }
            (None, Some(query)) => format!("({query})"),
            (None, None) => unreachable!("checked"),
        }
    }
}

/// One table's access to BigQuery: the API with its key, where jobs run, and the most a
/// query may process.
struct Session {
    api: Api,
    options: BigQueryOptions,
    limit: u64,
}

impl Session {
    fn open(options: &Options, sync: &SyncConfig) -> Result<Self, ConnectorError> {
        let options: BigQueryOptions = parse_checked(options)?;
        let key = options.key().map_err(ConnectorError::Config)?;
        let limit = options
            .max_bytes_billed
            .unwrap_or(sync.max_bytes_billed)
            .as_u64();
        let api = Api::shared(&options.endpoint, &options.project, key)?;
        Ok(Self {
            api,
            options,
            limit,
        })
    }

    /// A query job running `sql`.
    fn job(&self, sql: &str) -> Value {
        let mut job = json!({ "query": sql, "useLegacySql": false });
        if let Some(location) = &self.options.location {
            job["location"] = json!(location);
        }
        job
    }

    /// Runs `job`, whose dry run said it processes `bytes`, unless that is over the limit;
    /// its result, a batch per page.
    async fn run(self, mut job: Value, bytes: u64) -> Result<Batches, ConnectorError> {
        let limit = self.limit;
        if bytes > limit {
            return Err(ConnectorError::Request(format!(
                "the query would process {} ({bytes} bytes), over `max_bytes_billed` {} ({limit} bytes): select less (fewer columns, a partition filter) or raise the table's `max_bytes_billed`",
                ByteSize::b(bytes).display().si(),
                ByteSize::b(limit).display().si(),
            )));
        }
        tracing::info!(project = %self.options.project, bytes, limit, "BigQuery dry run within the limit");
        job["maximumBytesBilled"] = json!(limit.to_string());
        let api = self.api;
        let first = api.query(&job, self.options.timeout.0).await?;
        let schema = rows::schema(&first.schema)?;
        let batch_schema = schema.clone();
        let pages = futures::stream::try_unfold(Some(first), move |page| {
            let api = api.clone();
            let schema = batch_schema.clone();
            async move {
                let Some(page) = page else { return Ok(None) };
                let batch = rows::batch(&schema, &page.rows)?;
                let next = match &page.page_token {
                    Some(token) => Some(api.page(&page.job, token).await?),
                    None => None,
                };
                Ok(Some((batch, next)))
            }
        });
        Ok(Batches {
            schema,
            stream: pages.boxed(),
        })
    }
}

/// `name` as a GoogleSQL identifier.
fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
}

#[async_trait::async_trait]
impl Connector for BigQuery {
    fn check(&self, options: &Options) -> Vec<FieldProblem> {
        let parsed: BigQueryOptions = match parse(options) {
            Ok(o) => o,
            Err(p) => return vec![p],
        };
        let mut problems: Vec<FieldProblem> = secret_reference(options, "credentials")
            .into_iter()
            .collect();
        // A key given as `${ENV}` JSON is read only when a sync runs.
        if !matches!(
            (&parsed.credentials_file, &parsed.credentials),
            (None, Some(_))
        ) && let Err(e) = parsed.key()
        {
            problems.push(FieldProblem::new("options.credentials_file", e));
        }
        match (&parsed.table, &parsed.query) {
            (Some(_), Some(_)) | (None, None) => problems.push(FieldProblem::new(
                "options.table",
                "give either `table` (e.g. `sales.orders`) or `query`, not both",
            )),
            (Some(table), None)
                if !matches!(table.split('.').count(), 2 | 3)
                    || table.contains('`')
                    || table.split('.').any(str::is_empty) =>
            {
                problems.push(FieldProblem::new(
                    "options.table",
                    format!("`{table}` must be `dataset.table` or `project.dataset.table`"),
                ))
            }
            _ => {}
        }
        if !(parsed.endpoint.starts_with("https://") || parsed.endpoint.starts_with("http://")) {
            problems.push(FieldProblem::new(
                "options.endpoint",
                format!("`{}` must be an https:// URL", parsed.endpoint),
            ));
        }
        problems
    }

    async fn read(&self, request: ReadRequest<'_>) -> Result<Batches, ConnectorError> {
        let session = Session::open(request.options, request.sync)?;
        let mut job = session.job(&session.options.sql());
        let mut plan = session.api.dry_run(&job).await?;
        if let Some((column, since)) = request.since {
            let field = plan.schema["fields"]
                .as_array()
                .and_then(|fields| fields.iter().find(|f| f["name"] == column))
                .ok_or_else(|| {
                    ConnectorError::Source(format!(
                        "the query has no column `{column}` (the watermark)"
                    ))
                })?;
            let kind = rows::parameter_type(field)?;
            // A typed parameter: BigQuery parses the value, nothing is spliced into SQL.
            job["query"] = json!(format!(
                "SELECT * FROM ({}) WHERE {} > @quiver_since",
                job["query"].as_str().unwrap_or_default(),
                quote_ident(column)
            ));
            job["parameterMode"] = json!("NAMED");
            job["queryParameters"] = json!([{
                "name": "quiver_since",
                "parameterType": { "type": kind },
                "parameterValue": { "value": since },
            }]);
            plan = session.api.dry_run(&job).await?;
        }
        session.run(job, plan.bytes).await
    }

    fn remote(&self) -> Option<&dyn Remote> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl Remote for BigQuery {
    fn dialect(&self) -> SourceDialect {
        SourceDialect::BigQuery
    }

    /// From a dry run, which reads nothing and is not billed.
    async fn schema(
        &self,
        options: &Options,
        sync: &SyncConfig,
    ) -> Result<SchemaRef, ConnectorError> {
        let session = Session::open(options, sync)?;
        let job = session.job(&session.options.sql());
        rows::schema(&session.api.dry_run(&job).await?.schema)
    }

    /// Each query is dry-run first, so the cost guard holds for every one.
    async fn scan(
        &self,
        options: &Options,
        query: &RemoteQuery,
        sync: &SyncConfig,
    ) -> Result<Batches, ConnectorError> {
        let session = Session::open(options, sync)?;
        let columns: Vec<String> = query.columns.iter().map(|c| quote_ident(c)).collect();
        let sql = pushdown::select(
            SourceDialect::BigQuery,
            query,
            &columns,
            &session.options.source(),
        );
        let mut job = session.job(&sql.text);
        if !sql.params.is_empty() {
            job["parameterMode"] = json!("NAMED");
            job["queryParameters"] = sql
                .params
                .iter()
                .map(|(name, value)| parameter(name, value))
                .collect();
        }
        let bytes = session.api.dry_run(&job).await?.bytes;
        session.run(job, bytes).await
    }
}

/// A named query parameter as the REST API takes it (`QueryParameter`): every value as
/// text with its GoogleSQL type. `pushdown` sends only these types.
fn parameter(name: &str, value: &ScalarValue) -> Value {
    let kind = match value {
        ScalarValue::Boolean(_) => "BOOL",
        ScalarValue::Int64(_) => "INT64",
        ScalarValue::Float64(_) => "FLOAT64",
        // NUMERIC holds 29 digits before the point and 9 after; BIGNUMERIC 38 and 38.
        ScalarValue::Decimal128(_, p, s)
            if (0..=9).contains(s) && i16::from(*p) - i16::from(*s) <= 29 =>
        {
            "NUMERIC"
        }
        ScalarValue::Decimal128(..) => "BIGNUMERIC",
        ScalarValue::Date32(_) => "DATE",
        _ => "STRING",
    };
    json!({
        "name": name,
        "parameterType": { "type": kind },
        "parameterValue": { "value": pushdown::value_text(value) },
    })
}

/// What a dry run says: the result's schema and the bytes the query would process.
struct Plan {
    schema: Value,
    bytes: u64,
}

/// One page of a finished query's result.
struct Page {
    job: api::JobRef,
    /// The result's schema (the same on every page).
    schema: Value,
    rows: Vec<Value>,
    page_token: Option<String>,
}
