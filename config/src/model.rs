//! The typed configuration. Doc comments on these fields are the user documentation of
//! `quiver.yaml` (the README's config reference mirrors them). Every field has a default, so
//! Quiver runs with no file at all.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// Everything Quiver can be told in `quiver.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Listeners and TLS.
    pub server: ServerConfig,
    /// Where table data and the state file live.
    pub storage: StorageConfig,
    /// Credentials and token lifetimes.
    pub auth: AuthConfig,
    /// Limits applied to every query.
    pub query: QueryConfig,
    /// Where users may write tables (bulk ingest, `CREATE TABLE`, `INSERT`), and how much.
    pub write: WriteConfig,
    /// The demo dataset that `quiver demo` generates.
    pub demo: DemoConfig,
    /// Log output.
    pub logging: LoggingConfig,
    /// How syncs run: concurrency, retries, retention of old versions.
    pub sync: SyncConfig,
    /// Tables to keep in sync from their sources (more can be added through the admin API).
    pub tables: Vec<TableDef>,
    /// Policies bound to tags and tables, beside those made through the admin API.
    pub governance: GovernanceConfig,
    /// Jira Cloud, pushing issue events into the `jira` schema. Off when absent.
    pub jira: Option<JiraConfig>,
}

/// Jira Cloud: webhook deliveries keep six tables in schema `jira` (`issues`, `comments`,
/// `attachments`, `changelog`, `issuelinks`, `remote_links`) up to date; each event makes
/// Quiver fetch the whole issue from Jira's REST API.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JiraConfig {
    /// The site, e.g. `https://acme.atlassian.net`.
    pub url: String,
    /// The Atlassian account the API token belongs to.
    pub email: String,
    /// API token of that account (use `${JIRA_API_TOKEN}`).
    pub api_token: String,
    /// Secret Jira signs deliveries with (the webhook's "Secret"; use `${ENV}`). Without it
    /// `POST /webhooks/jira` answers 503 to every call.
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// Which issues the consistency check compares with Jira, as JQL (e.g.
    /// `project in (ABC, OPS)`). Default: the projects Quiver already holds.
    #[serde(default)]
    pub jql: Option<String>,
    /// How often Jira's issue list is compared with ours, re-fetching what is missing or
    /// stale. Default `6h`.
    #[serde(default = "six_hours", with = "humantime_serde_compat")]
    pub consistency_check: Duration,
    /// How often open issues' SLA fields are re-fetched (they change without events).
    /// Default `5m`.
    #[serde(default = "five_minutes", with = "humantime_serde_compat")]
    pub sla_refresh: Duration,
    /// Largest webhook body accepted (413 beyond). Default `10 MiB`.
    #[serde(default = "ten_mib")]
    pub max_payload: ByteSize,
}

fn six_hours() -> Duration {
    Duration::from_secs(6 * 3600)
}

fn five_minutes() -> Duration {
    Duration::from_secs(300)
}

fn ten_mib() -> ByteSize {
    ByteSize::mib(10)
}

impl std::fmt::Debug for JiraConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JiraConfig")
            .field("url", &self.url)
            .field("email", &self.email)
            .field("api_token", &"<redacted>")
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("jql", &self.jql)
            .finish_non_exhaustive()
    }
}

/// Listeners and TLS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Address of the Flight SQL (gRPC) listener. Default `127.0.0.1:50051`.
    pub flight_listen: SocketAddr,
    /// Address of the HTTP listener (health, login, admin API). Default `127.0.0.1:8080`.
    pub http_listen: SocketAddr,
    /// TLS for the Flight SQL listener; plaintext when absent.
    pub tls: Option<TlsConfig>,
    /// Serve `/metrics` without credentials (for a scraper on a private network).
    /// Default `false`: admins only.
    pub public_metrics: bool,
    /// The URL people reach the HTTP listener at (behind a proxy, its public address);
    /// OIDC redirect URIs are built from it. Default `http://<http_listen>`.
    pub public_url: Option<String>,
    /// The Flight SQL URL clients reach this replica at (`grpc://host:port` or
    /// `grpc+tls://…`). In a cluster, results list every replica's, so a client can fetch
    /// from another when one fails. Default: none (results are fetched on the connection
    /// that asked).
    pub advertise: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            flight_listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls: None,
            public_metrics: false,
            public_url: None,
            advertise: None,
        }
    }
}

/// PEM files for TLS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsConfig {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// On a cluster: the CA (PEM) that issued the replicas' certificates, trusted when one
    /// replica sends another a distributed statement's stage. Without it, replicas
    /// advertising `grpc+tls://` run statements on their own.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

/// Where table data and the state file live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// Directory for the state file (`state.duckdb`), spill files and, by default, table data.
    /// Default `./quiver-data`.
    pub data_dir: PathBuf,
    /// Object store for table data: `file:///abs/path` or `s3://bucket/prefix`. Default:
    /// the `objects` folder inside `data_dir`. S3 credentials come from the usual `AWS_*`
    /// environment variables.
    pub object_store: Option<String>,
    /// Where users, grants, tokens, the table registry and audit live:
    /// `postgres://user:${PGPASSWORD}@host:5432/db`, a PostgreSQL database every replica of
    /// a cluster shares. Default: the embedded file `state.duckdb` in `data_dir`, which one
    /// process owns.
    pub state: Option<String>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("quiver-data"),
            object_store: None,
            state: None,
        }
    }
}

/// Credentials and token lifetimes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// The first administrator, created on start when missing and never overwritten.
    /// `QUIVER_ADMIN_EMAIL` / `QUIVER_ADMIN_PASSWORD` fill it when it is not set here.
    pub bootstrap_admin: Option<BootstrapAdmin>,
    /// Secret that signs bearer tokens and tickets (at least 32 characters). Default: a random
    /// secret generated once and kept in `data_dir/secret.key`.
    pub jwt_secret: Option<String>,
    /// How long a bearer token from the Flight SQL handshake stays valid. Default `12h`.
    #[serde(with = "humantime_serde_compat")]
    pub token_lifetime: Duration,
    /// How long a ticket returned by `GetFlightInfo` can be redeemed. Default `1h`.
    #[serde(with = "humantime_serde_compat")]
    pub ticket_lifetime: Duration,
    /// OpenID Connect providers people may sign in with (each is a button on the login
    /// page). Default: none.
    pub oidc: Vec<OidcProvider>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            bootstrap_admin: None,
            jwt_secret: None,
            token_lifetime: Duration::from_secs(12 * 3600),
            ticket_lifetime: Duration::from_secs(3600),
            oidc: Vec::new(),
        }
    }
}

/// An OpenID Connect provider (Google, Okta, Keycloak, Entra ID…), found by its issuer's
/// discovery document. Register `<server.public_url>/auth/oidc/<name>/callback` as its
/// redirect URI.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProvider {
    /// Short id used in URLs (`/auth/oidc/<name>/login`): lowercase letters, digits, `-`.
    pub name: String,
    /// Label of the sign-in button. Default: the name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Issuer URL, e.g. `https://accounts.google.com`.
    pub issuer: String,
    /// OAuth client id registered with the provider.
    pub client_id: String,
    /// OAuth client secret (use `${ENV}`).
    pub client_secret: String,
    /// Scopes requested. Default `openid email profile`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// E-mail domains allowed to sign in, e.g. `[example.com]`. Default: any.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// ID-token claim listing the user's groups (e.g. `groups`). Members of Quiver groups
    /// with those names are kept in sync, marked as coming from the provider; memberships
    /// made by admins are left alone, and `Admin` is never granted this way.
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// User attributes taken from ID-token claims at each sign-in, attribute → claim, e.g.
    /// `{region: region_claim}`; read in conditions as `user_attribute('region')`. A claim
    /// the token lacks leaves the attribute as it was.
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, String>,
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The first administrator.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapAdmin {
    /// E-mail address; it is the user name for Flight SQL Basic authentication.
    pub email: String,
    /// Password (use `${QUIVER_ADMIN_PASSWORD}` rather than a literal).
    pub password: String,
}

impl std::fmt::Debug for BootstrapAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapAdmin")
            .field("email", &self.email)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Limits applied to every query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueryConfig {
    /// A query running longer than this is stopped with `DEADLINE_EXCEEDED`. Default `5m`.
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Memory the query engine may use at once, across queries; operators that can spill
    /// (sorts, joins, aggregates) spill to `data_dir/spill` beyond it. Default `2 GiB`.
    pub memory_limit: ByteSize,
    /// Rows per record batch produced by the engine. Default `8192`.
    pub batch_size: usize,
    /// Largest gRPC message Quiver sends; larger batches are split. Must stay under the
    /// clients' limit (16 MiB for the Go-based ADBC driver). Default `4 MiB`.
    pub max_message_size: ByteSize,
    /// Compression of result batches on the wire: `none` (default), `lz4` or `zstd`
    /// (Arrow IPC body compression, read by every Arrow client). Worth it only where the
    /// network is slower than compressing (see `benches/RESULTS.md`).
    pub compression: Compression,
    /// Queries one user may run at once; more are refused with `RESOURCE_EXHAUSTED`.
    /// Default `8`.
    pub max_concurrent_per_user: usize,
    /// Memory one user's running queries may hold together, within `memory_limit`; beyond
    /// it their operators spill, then fail with `RESOURCE_EXHAUSTED`. Default `1 GiB`.
    pub memory_limit_per_user: ByteSize,
    /// A result with more rows fails with `RESOURCE_EXHAUSTED` (never silently truncated).
    /// Default: no limit.
    pub max_result_rows: Option<u64>,
    /// A result sending more bytes fails with `RESOURCE_EXHAUSTED`. Default: no limit.
    pub max_result_bytes: Option<ByteSize>,
    /// Longest SQL statement accepted; longer ones fail with `INVALID_ARGUMENT`.
    /// Default `1 MiB`.
    pub max_sql_length: ByteSize,
    /// Deepest nesting of expressions, subqueries, set operations (`UNION` chains) and joins
    /// in a statement (`a OR b OR c …` nests once per `OR`). Deeper statements fail with
    /// `INVALID_ARGUMENT`. Default `500`.
    pub max_expression_depth: usize,
    /// Most nodes in a statement's plan (a `WITH` table is copied into the plan each time
    /// it is used). Larger plans fail with `INVALID_ARGUMENT`. Default `10000`.
    pub max_plan_nodes: usize,
    /// Largest set of parameters bound to one prepared statement (an Arrow IPC stream), as
    /// received and once decompressed; bigger bindings fail with `RESOURCE_EXHAUSTED`. Bound parameters also count against
    /// the user's `memory_limit_per_user` while the statement is open. Default `1 MiB`.
    pub max_parameter_bytes: ByteSize,
    /// Prepared statements one user may hold open at once; closing one frees its place,
    /// and one unused for `prepared_statement_idle` is closed by the server. Default `64`.
    pub max_prepared_per_user: usize,
    /// How long an open prepared statement may go unused before the server forgets its
    /// bound parameters. Default `1h`.
    #[serde(with = "humantime_serde_compat")]
    pub prepared_statement_idle: Duration,
    /// `auto` (default): on a cluster (state in PostgreSQL, `server.advertise` set), a
    /// statement scanning more than `distributed_threshold` runs its stages on the live
    /// replicas; `off`: statements received here run here (the replica still runs stages
    /// that others send).
    pub distributed: Distributed,
    /// Bytes of table data one replica scans for a distributed statement; a statement
    /// reading less stays on one replica. A plain scan (no join, aggregate, sort or limit)
    /// reading more is also fetched in parts, several `FlightInfo` endpoints the client
    /// reads side by side, on a single server too (unless `distributed: off`). Default
    /// `256 MiB`.
    pub distributed_threshold: ByteSize,
    /// Memory for copies of hot tables: a table read by more than one statement is
    /// decoded once and then served from memory (its current version only; a new version
    /// is read from parquet until its own copy is ready). Tables that do not fit are read
    /// from parquet. Default `0`: none.
    pub acceleration_memory: ByteSize,
    /// Memory for the results of repeated statements: a statement run again on the same
    /// table versions, through the same policies and with the same parameters, is answered
    /// from memory (see the README's "Results cache"). A result larger than an eighth of it
    /// is not kept. Default `64 MiB`; `0`: none.
    pub results_cache_memory: ByteSize,
}

/// Compression of result batches (`query.compression`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Batches are sent as they are.
    #[default]
    None,
    /// LZ4 frames: fast to compress and to read.
    Lz4,
    /// Zstandard: fewer bytes, more CPU.
    Zstd,
}

/// Whether statements may run on several replicas (`query.distributed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distributed {
    /// Large statements are spread over the live replicas.
    Auto,
    /// Every statement runs on the replica that received it.
    Off,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            memory_limit: ByteSize::gib(2),
            batch_size: 8192,
            max_message_size: ByteSize::mib(4),
            compression: Compression::None,
            max_concurrent_per_user: 8,
            memory_limit_per_user: ByteSize::gib(1),
            max_result_rows: None,
            max_result_bytes: None,
            max_sql_length: ByteSize::mib(1),
            max_expression_depth: 500,
            max_plan_nodes: 10_000,
            max_parameter_bytes: ByteSize::mib(1),
            max_prepared_per_user: 64,
            prepared_statement_idle: Duration::from_secs(3600),
            distributed: Distributed::Auto,
            distributed_threshold: ByteSize::mib(256),
            acceleration_memory: ByteSize::b(0),
            results_cache_memory: ByteSize::mib(64),
        }
    }
}

/// Users' writes. Users write only to schemas a `write` grant names and to their personal
/// schema (`me`); every write is one new table version, like a sync's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WriteConfig {
    /// Every user has a personal schema, `me` in their own statements (`home_<name>` to
    /// administrators), that only they and administrators can read and write. Default `true`.
    pub personal_schemas: bool,
    /// Parquet bytes one user's personal schema may hold; a write into a fuller one is
    /// refused. Default: no limit.
    pub quota_per_user: Option<ByteSize>,
    /// Parquet bytes each shared writable schema may hold. Default: no limit.
    pub quota_per_schema: Option<ByteSize>,
    /// Parquet bytes named writable schemas may hold, in place of `quota_per_schema`
    /// (`sandbox: 50 GiB`). Default: none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub schema_quotas: BTreeMap<String, ByteSize>,
    /// Arrow bytes one ingest or statement may write; a larger one fails and publishes
    /// nothing. Default `10 GiB`.
    pub max_write_bytes: ByteSize,
    /// Rows one ingest or statement may write; a larger one fails and publishes nothing.
    /// Default: no limit.
    pub max_write_rows: Option<u64>,
    /// Tables one writable schema may hold. Default `1000`.
    pub max_tables_per_schema: u64,
}

impl Default for WriteConfig {
    fn default() -> Self {
        Self {
            personal_schemas: true,
            quota_per_user: None,
            quota_per_schema: None,
            schema_quotas: BTreeMap::new(),
            max_write_bytes: ByteSize::gib(10),
            max_write_rows: None,
            max_tables_per_schema: 1000,
        }
    }
}

/// The demo dataset that `quiver demo` generates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DemoConfig {
    /// TPC-H scale factor (1 ≈ 1 GB of CSV, 6 million `lineitem` rows). Default `0.1`.
    pub scale: f64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self { scale: 0.1 }
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoggingConfig {
    /// `text` (default) or `json` (one object per line).
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `quiver=debug,info`. `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// How syncs run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncConfig {
    /// Syncs that may run at once, across all tables. Default `2`.
    pub concurrency: usize,
    /// How long a replaced table version stays readable (queries that started on it
    /// finish) before its files are removed. Default `1h`.
    #[serde(with = "humantime_serde_compat")]
    pub retention: Duration,
    /// Wait after a failed scheduled sync before the first retry; doubled after each
    /// further failure, up to `max_backoff`. Default `30s`.
    #[serde(with = "humantime_serde_compat")]
    pub backoff: Duration,
    /// Longest wait between retries of a failing table. Default `1h`.
    #[serde(with = "humantime_serde_compat")]
    pub max_backoff: Duration,
    /// The most a BigQuery sync may process (and be billed for) unless its table sets
    /// `max_bytes_billed`: a dry run that would process more fails the sync. Default `100GB`.
    pub max_bytes_billed: ByteSize,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            concurrency: 2,
            retention: Duration::from_secs(3600),
            backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(3600),
            max_bytes_billed: ByteSize::gb(100),
        }
    }
}

/// A table kept in sync from a source: what to read (`connector` and its `options`), when
/// (`schedule`) and how (`mode`).
///
/// Options that are secrets (passwords, tokens) must be written as `${ENV_VAR}` references:
/// inside `tables:` references are kept as written and resolved only when a sync runs, so a
/// secret never reaches the state file, the admin API or a log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableDef {
    /// `schema.table`, lowercase, e.g. `sales.orders`.
    pub name: String,
    /// Which connector reads the source: `files`, `postgres`, `bigquery`, `keboola` or `sql`.
    pub connector: String,
    /// The connector's options (see the README's connector reference).
    #[serde(default)]
    pub options: serde_json::Map<String, serde_json::Value>,
    /// When to sync: `every 15m`, `every 2h`, `daily 03:00`, `daily 07:00,13:00` (UTC) or a
    /// cron expression such as `0 */6 * * *`. Default: only when asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// `full` (default): every sync replaces the table. `incremental`: a sync reads rows
    /// changed since the last one (by `watermark`) and merges them by `primary_key`.
    /// `remote` (`postgres`, `bigquery`): nothing is copied; each query reads the source,
    /// and a sync only refreshes the table's schema.
    #[serde(default)]
    pub mode: SyncMode,
    /// Incremental mode: the column that grows with every change (e.g. `updated_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<String>,
    /// Incremental mode: the columns that identify a row.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub primary_key: Vec<String>,
    /// Shown in catalogs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Column → description, shown in the web catalog and handed to drivers as the column's
    /// remarks (`ARROW:FLIGHT:SQL:REMARKS`: JDBC `getColumns` `REMARKS`, the field metadata of
    /// ADBC's `adbc_get_table_schema`).
    /// Each entry is a description, or `{description: "…", tags: [pii.email]}` to tag the
    /// column too (the file's tags replace that column's own tags at each start).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub columns: BTreeMap<String, ColumnDef>,
}

/// A column's entry under a table's `columns:`: its description, or a description and tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ColumnDef {
    /// The column's description.
    Description(String),
    /// A description and tags, `{description: "…", tags: [pii.email]}`.
    Detailed(ColumnDetail),
}

impl ColumnDef {
    /// The description, if any.
    pub fn description(&self) -> Option<&str> {
        match self {
            Self::Description(d) => Some(d),
            Self::Detailed(d) => d.description.as_deref(),
        }
    }

    /// The tags given in the file.
    pub fn tags(&self) -> &[String] {
        match self {
            Self::Description(_) => &[],
            Self::Detailed(d) => &d.tags,
        }
    }
}

/// A column's description and tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnDetail {
    /// Shown in catalogs and handed to drivers as the column's remarks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tags the column carries (`pii.email`), besides its table's and schema's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// Governance kept in the file: policies bound to tags and tables. The file's policies
/// replace those of the same names at each start, and one removed from the file is removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GovernanceConfig {
    /// Mask and row policies, as `POST /api/admin/policies` takes them.
    pub policies: Vec<Policy>,
}

/// What a policy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    /// Shows the values of every column carrying its tag through a mask.
    Mask,
    /// Decides which rows of its tables a caller sees: permissive ones add rows to what grants
    /// show (OR), restrictive ones keep only rows meeting their condition (AND).
    Row,
}

/// A mask or row policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Unique name (letters, digits, `_`, `-`).
    pub name: String,
    /// `mask` or `row`.
    pub kind: PolicyKind,
    /// The tag it is bound to: every column carrying it (or a tag below it: `pii` covers
    /// `pii.email`) is covered. A row policy bound to a tag covers each table with such a
    /// column, and its condition names the column as `{col}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Row policies: the table (`schema.table`, or `schema.*`) it covers, instead of a tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Mask policies: `null`, `redact`, `hash`, `partial(keep_first, keep_last)`,
    /// `round(digits)`, `truncate_date(unit)`, or a SQL expression written with `{col}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
    /// Row policies: the SQL condition a row must meet; it may use the caller
    /// (`current_user`, `current_user_groups()`, `user_attribute('region')`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Row policies: AND-ed over grants and permissive policies (a row must meet it whatever
    /// they say) instead of OR-ed with the grants' filters.
    #[serde(default)]
    pub restrictive: bool,
    /// Groups the policy does not apply to.
    #[serde(default)]
    pub except_groups: Vec<String>,
}

/// How a sync updates a table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Replace the whole table.
    #[default]
    Full,
    /// Merge changed rows by primary key.
    Incremental,
    /// Read the source at query time; a sync refreshes the schema.
    Remote,
}

impl SyncMode {
    /// The name used in files and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Full => "full",
            SyncMode::Incremental => "incremental",
            SyncMode::Remote => "remote",
        }
    }
}

/// Durations written the way people write them: `30s`, `5m`, `12h`, `1h 30m`.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            D::Error::custom(format!(
                "`{text}` is not a duration ({e}); write e.g. `30s`, `5m` or `12h`"
            ))
        })
    }
}
