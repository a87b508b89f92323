//! `files`: CSV, JSON lines and Parquet from a local path or glob, an `https://` URL or an
//! object-store URL.
//!
//! CSV is read by DuckDB, whose sniffer detects the dialect (delimiter, quoting, header) and
//! the column types (integers, dates and timestamps in their local formats); a fractional
//! column written with a fixed point (money: `1.234,56`) lands as decimal, not double, so a
//! CSV lands as typed parquet. JSON lines and Parquet are read by DataFusion. Remote files are
//! first downloaded into the sync's scratch directory, so every format reads local files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::compute::BatchCoalescer;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::prelude::{JsonReadOptions, ParquetReadOptions, SessionContext};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use quiver_config::FieldProblem;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use crate::options::{parse, parse_checked, secret_reference};
use crate::{Batches, Connector, ConnectorError, Options, ReadRequest};

/// Rows per batch handed on (DuckDB produces 2 048-row chunks).
const BATCH_ROWS: usize = 65_536;

/// Most fraction digits a CSV column may have and land as decimal; columns with more
/// (measurements, computed ratios) stay double.
const MAX_DECIMAL_SCALE: i64 = 9;

/// The `files` connector.
pub struct Files;

/// Options of the `files` connector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilesOptions {
    /// A local path or glob (`/data/orders/*.csv`), an `https://` URL, or an object store
    /// URL (`s3://bucket/orders/*.parquet`).
    path: String,
    /// `csv`, `jsonl` or `parquet`. Default: from the file extension.
    #[serde(default)]
    format: Option<Format>,
    /// CSV: the delimiter, when the sniffer should not guess it.
    #[serde(default)]
    delimiter: Option<String>,
    /// CSV: whether the first line names the columns.
    #[serde(default)]
    header: Option<bool>,
    /// CSV: the quote character.
    #[serde(default)]
    quote: Option<String>,
    /// CSV: the date format, e.g. `%d.%m.%Y`.
    #[serde(default)]
    date_format: Option<String>,
    /// CSV: the timestamp format, e.g. `%d.%m.%Y %H:%M`.
    #[serde(default)]
    timestamp_format: Option<String>,
    /// CSV: the decimal separator, `.` or `,`.
    #[serde(default)]
    decimal_separator: Option<String>,
    /// CSV: the thousands separator in numbers (`1.234,56`: `.`), one character.
    #[serde(default)]
    thousands_separator: Option<String>,
    /// CSV: the text that stands for a missing value, e.g. `NA`.
    #[serde(default)]
    null_string: Option<String>,
    /// Object store URLs: `object_store` settings such as `aws_endpoint`, `aws_region`,
    /// `aws_access_key_id`, `aws_secret_access_key` (secrets as `${ENV}` references).
    #[serde(default)]
    storage_options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Format {
    Csv,
    Jsonl,
    Parquet,
}

impl Format {
    /// The format a file name implies.
    fn of(path: &str) -> Option<Self> {
        let name = path.rsplit('/').next()?.to_ascii_lowercase();
        let name = name.trim_end_matches(".gz").trim_end_matches(".zst");
        if name.ends_with(".csv") || name.ends_with(".tsv") || name.ends_with(".txt") {
            Some(Format::Csv)
        } else if name.ends_with(".jsonl") || name.ends_with(".ndjson") || name.ends_with(".json") {
            Some(Format::Jsonl)
        } else if name.ends_with(".parquet") || name.ends_with(".pq") {
            Some(Format::Parquet)
        } else {
            None
        }
    }
}

impl FilesOptions {
    /// A local CSV file with a header line, every dialect setting sniffed.
    pub(crate) fn local_csv(path: String) -> Self {
        Self {
            path,
            format: Some(Format::Csv),
            delimiter: None,
            header: Some(true),
            quote: None,
            date_format: None,
            timestamp_format: None,
            decimal_separator: None,
            thousands_separator: None,
            null_string: None,
            storage_options: BTreeMap::new(),
        }
    }

    fn format(&self) -> Option<Format> {
        self.format.or_else(|| Format::of(&self.path))
    }

    fn is_remote(&self) -> bool {
        self.path.contains("://") && !self.path.starts_with("file://")
    }
}

#[async_trait::async_trait]
impl Connector for Files {
    fn check(&self, options: &Options) -> Vec<FieldProblem> {
        let parsed: FilesOptions = match parse(options) {
            Ok(o) => o,
            Err(p) => return vec![p],
        };
        let mut problems = Vec::new();
        if parsed.path.trim().is_empty() {
            problems.push(FieldProblem::new("options.path", "must not be empty"));
        }
        if parsed.format().is_none() {
            problems.push(FieldProblem::new(
                "options.format",
                format!(
                    "cannot tell the format of `{}` from its extension; set `format: csv`, `jsonl` or `parquet`",
                    parsed.path
                ),
            ));
        }
        if parsed.format() != Some(Format::Csv) {
            let csv_only = [
                ("delimiter", parsed.delimiter.is_some()),
                ("header", parsed.header.is_some()),
                ("quote", parsed.quote.is_some()),
                ("date_format", parsed.date_format.is_some()),
                ("timestamp_format", parsed.timestamp_format.is_some()),
                ("decimal_separator", parsed.decimal_separator.is_some()),
                ("thousands_separator", parsed.thousands_separator.is_some()),
                ("null_string", parsed.null_string.is_some()),
            ];
            for (key, set) in csv_only {
                if set {
                    problems.push(FieldProblem::new(
                        format!("options.{key}"),
                        "applies to CSV files only",
                    ));
                }
            }
        }
        if let Some(sep) = &parsed.decimal_separator
            && sep != "."
            && sep != ","
        {
            problems.push(FieldProblem::new(
                "options.decimal_separator",
                format!("`{sep}` must be `.` or `,`"),
            ));
        }
        if let Some(sep) = &parsed.thousands_separator {
            let decimal = parsed.decimal_separator.as_deref().unwrap_or(".");
            if sep.chars().count() != 1 || sep.chars().any(|c| c.is_ascii_digit()) {
                problems.push(FieldProblem::new(
                    "options.thousands_separator",
                    format!(
                        "`{sep}` must be one character other than a digit, e.g. `.`, `,` or `'`"
                    ),
                ));
            } else if sep == decimal {
                problems.push(FieldProblem::new(
                    "options.thousands_separator",
                    format!("`{sep}` is also the decimal separator; set `decimal_separator` to the other one"),
                ));
            }
        }
        if let Some(serde_json::Value::Object(storage)) = options.get("storage_options") {
            for key in storage.keys() {
                let k = key.to_ascii_lowercase();
                if (k.contains("secret") || k.contains("token") || k.contains("password"))
                    && let Some(mut p) = secret_reference(storage, key)
                {
                    p.field = format!("options.storage_options.{key}");
                    problems.push(p);
                }
            }
        }
        problems
    }

    async fn read(&self, request: ReadRequest<'_>) -> Result<Batches, ConnectorError> {
        let options: FilesOptions = parse_checked(request.options)?;
        let format = options
            .format()
            .ok_or_else(|| ConnectorError::Config("no format".into()))?;
        let local = if options.is_remote() {
            download(&options, request.scratch).await?
        } else {
            let path = options
                .path
                .strip_prefix("file://")
                .unwrap_or(&options.path);
            if !has_match(path)? {
                return Err(ConnectorError::Source(format!(
                    "no file matches `{}`",
                    options.path
                )));
            }
            path.to_string()
        };
        match format {
            Format::Csv => read_csv(options, local).await,
            Format::Jsonl | Format::Parquet => {
                let ctx = SessionContext::new();
                let frame = if format == Format::Jsonl {
                    let extension = extension_of(&local);
                    ctx.read_json(
                        local.as_str(),
                        JsonReadOptions::default().file_extension(&extension),
                    )
                    .await?
                } else {
                    let extension = extension_of(&local);
                    ctx.read_parquet(
                        local.as_str(),
                        ParquetReadOptions::default().file_extension(&extension),
                    )
                    .await?
                };
                let stream = frame.execute_stream().await?;
                let schema = stream.schema();
                Ok(Batches {
                    schema,
                    stream: stream.map_err(ConnectorError::from).boxed(),
                })
            }
        }
    }
}

/// The extension DataFusion should filter listed files by: that of the path or pattern.
fn extension_of(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    match name.rfind('.') {
        Some(i) if !name[i..].contains('*') => name[i..].to_string(),
        _ => String::new(),
    }
}

/// Whether a local path or glob names at least one file.
fn has_match(pattern: &str) -> Result<bool, ConnectorError> {
    if !pattern.contains(['*', '?', '[']) {
        return Ok(Path::new(pattern).is_file());
    }
    let url = ListingTableUrl::parse(pattern)
        .map_err(|e| ConnectorError::Config(format!("`{pattern}` is not a valid glob: {e}")))?;
    let base = url.prefix().as_ref().to_string();
    let base = PathBuf::from(format!("/{base}"));
    let mut stack = vec![base];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(p) = object_store::path::Path::from_filesystem_path(&path)
                && url.contains(&p, false)
            {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Downloads the remote file(s) into `scratch`; returns a local path or glob over them.
async fn download(options: &FilesOptions, scratch: &Path) -> Result<String, ConnectorError> {
    let dir = scratch.join("download");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ConnectorError::Source(format!("cannot create {}: {e}", dir.display())))?;
    let name = options
        .path
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && !n.contains(['*', '?', '[']))
        .unwrap_or("data");
    if options.path.starts_with("https://") || options.path.starts_with("http://") {
        let target = dir.join(sanitize(name));
        let response = reqwest::get(&options.path)
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| ConnectorError::Source(format!("GET {}: {e}", options.path)))?;
        let mut file = tokio::fs::File::create(&target)
            .await
            .map_err(|e| ConnectorError::Source(format!("{}: {e}", target.display())))?;
        append_stream(response.bytes_stream(), &mut file, &options.path).await?;
        return Ok(target.to_string_lossy().into_owned());
    }
    let url = url::Url::parse(&options.path)
        .map_err(|e| ConnectorError::Config(format!("`{}` is not a URL: {e}", options.path)))?;
    let (store, _) = object_store::parse_url_opts(&url, options.storage_options.clone())
        .map_err(|e| ConnectorError::Config(format!("cannot open `{}`: {e}", options.path)))?;
    let store: Arc<dyn object_store::ObjectStore> = Arc::from(store);
    let listing = remote_listing(&options.path)?;
    let ctx = SessionContext::new();
    let files: Vec<_> = listing
        .list_all_files(&ctx.state(), store.as_ref(), "")
        .await?
        .try_collect()
        .await?;
    if files.is_empty() {
        return Err(ConnectorError::Source(format!(
            "no file matches `{}`",
            options.path
        )));
    }
    let extension = Format::of(files[0].location.as_ref())
        .map(|_| extension_of(files[0].location.as_ref()))
        .unwrap_or_default();
    for (i, meta) in files.iter().enumerate() {
        let target = dir.join(format!("part-{i:05}{extension}"));
        let stream = store
            .get(&meta.location)
            .await
            .map_err(|e| ConnectorError::Source(format!("{}: {e}", meta.location)))?
            .into_stream();
        let mut file = tokio::fs::File::create(&target)
            .await
            .map_err(|e| ConnectorError::Source(format!("{}: {e}", target.display())))?;
        append_stream(stream, &mut file, meta.location.as_ref()).await?;
    }
    Ok(dir
        .join(format!("part-*{extension}"))
        .to_string_lossy()
        .into_owned())
}

/// A remote URL as a listing: DataFusion reads globs only in local paths, so the pattern
/// (from the first segment with `*`, `?` or `[`) is split off here.
fn remote_listing(path: &str) -> Result<ListingTableUrl, ConnectorError> {
    let invalid = |e: &dyn std::fmt::Display| ConnectorError::Config(format!("`{path}`: {e}"));
    let Some(first) = path.find(['*', '?', '[']) else {
        return ListingTableUrl::parse(path).map_err(|e| invalid(&e));
    };
    let split = path[..first].rfind('/').map_or(0, |i| i + 1);
    let (base, pattern) = path.split_at(split);
    let url = url::Url::parse(base).map_err(|e| invalid(&e))?;
    let pattern = glob::Pattern::new(pattern).map_err(|e| invalid(&e))?;
    ListingTableUrl::try_new(url, Some(pattern)).map_err(|e| invalid(&e))
}

/// Appends a byte stream (an HTTP body, an object) to `out`, flushed; returns the last byte
/// written. `source` names it in errors.
pub(crate) async fn append_stream<E: std::fmt::Display>(
    mut stream: impl futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    out: &mut tokio::fs::File,
    source: &str,
) -> Result<Option<u8>, ConnectorError> {
    let mut last = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ConnectorError::Source(format!("reading {source}: {e}")))?;
        last = chunk.last().copied().or(last);
        out.write_all(&chunk)
            .await
            .map_err(|e| ConnectorError::Source(format!("saving {source}: {e}")))?;
    }
    out.flush()
        .await
        .map_err(|e| ConnectorError::Source(format!("saving {source}: {e}")))?;
    Ok(last)
}

/// A file name safe to create: anything but letters, digits, `.`, `-` and `_` becomes `_`.
fn sanitize(name: &str) -> String {
    let name: String = name
        .split(['?', '#'])
        .next()
        .unwrap_or("data")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with('.') {
        format!("data{name}")
    } else {
        name
    }
}

/// Reads CSV through DuckDB's `read_csv`, which sniffs what was not given.
pub(crate) async fn read_csv(
    options: FilesOptions,
    path: String,
) -> Result<Batches, ConnectorError> {
    blocking_batches(move |out| {
        let conn = duckdb::Connection::open_in_memory()
            .and_then(|c| {
                // Let DuckDB's threads parse ahead of the parquet encoder (its default
                // streaming buffer is 1 MB, which serialises the read) and hand over chunks
                // as they finish rather than in file order.
                c.execute_batch(
                    "SET streaming_buffer_size = '256MB'; SET preserve_insertion_order = false;",
                )?;
                Ok(c)
            })
            .map_err(|e| ConnectorError::Source(format!("DuckDB: {e}")))?;
        let mut args = vec!["?".to_string()];
        let mut params: Vec<Box<dyn duckdb::ToSql>> = vec![Box::new(path.clone())];
        let text_options = [
            ("delim", &options.delimiter),
            ("quote", &options.quote),
            ("dateformat", &options.date_format),
            ("timestampformat", &options.timestamp_format),
            ("decimal_separator", &options.decimal_separator),
            ("thousands", &options.thousands_separator),
            ("nullstr", &options.null_string),
        ];
        for (name, value) in text_options {
            if let Some(value) = value {
                args.push(format!("{name} = ?"));
                params.push(Box::new(value.clone()));
            }
        }
        if let Some(header) = options.header {
            args.push("header = ?".into());
            params.push(Box::new(header));
        }
        args.push("union_by_name = true".into());
        let csv_error = |e: duckdb::Error| {
            ConnectorError::Source(format!("reading CSV `{}`: {e}", options.path))
        };
        let refs: Vec<&dyn duckdb::ToSql> = params.iter().map(|p| p.as_ref()).collect();
        let decimals = fixed_point_columns(&conn, &args, &refs, &options).map_err(csv_error)?;
        if !decimals.is_empty() {
            let types: Vec<String> = decimals
                .iter()
                .map(|(name, precision, scale)| {
                    format!("{}: 'DECIMAL({precision}, {scale})'", quote_literal(name))
                })
                .collect();
            args.push(format!("types = {{{}}}", types.join(", ")));
        }
        let sql = format!("SELECT * FROM read_csv({})", args.join(", "));
        let mut stmt = conn.prepare(&sql).map_err(csv_error)?;
        // The iterator panics on a failed chunk; step() below reports it as an error.
        drop(stmt.stream_arrow(refs.as_slice()).map_err(csv_error)?);
        let schema = stmt.schema();
        out.schema(schema.clone());
        let mut coalescer = BatchCoalescer::new(schema, BATCH_ROWS);
        while let Some(chunk) = stmt.step().map_err(csv_error)? {
            coalescer.push_batch(RecordBatch::from(&chunk))?;
            while let Some(batch) = coalescer.next_completed_batch() {
                if !out.batch(batch) {
                    return Ok(());
                }
            }
        }
        coalescer.finish_buffered_batch()?;
        while let Some(batch) = coalescer.next_completed_batch() {
            if !out.batch(batch) {
                return Ok(());
            }
        }
        Ok(())
    })
    .await
}

/// The columns DuckDB's sniffer typed DOUBLE whose every value is a plain fixed-point number
/// (sign, digits, thousands separators, at most [`MAX_DECIMAL_SCALE`] fraction digits), with
/// the most fraction digits seen: those are amounts, which land as decimals so they add up
/// exactly. The precision is 18 when the widest value fits (DuckDB parses those as 64-bit
/// integers, ~25× faster than its 128-bit `DECIMAL(38, s)`), else 38. One extra pass over
/// the text (a fraction of the read), only when there are such candidates.
fn fixed_point_columns(
    conn: &duckdb::Connection,
    args: &[String],
    params: &[&dyn duckdb::ToSql],
    options: &FilesOptions,
) -> Result<Vec<(String, u8, i64)>, duckdb::Error> {
    let mut describe = conn.prepare(&format!(
        "SELECT column_name FROM (DESCRIBE SELECT * FROM read_csv({})) WHERE column_type = 'DOUBLE'",
        args.join(", ")
    ))?;
    let doubles: Vec<String> = describe
        .query_map(params, |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if doubles.is_empty() {
        return Ok(Vec::new());
    }
    let decimal = options.decimal_separator.as_deref().unwrap_or(".");
    let thousands = options.thousands_separator.as_deref().unwrap_or("");
    let point = regex_escape(decimal);
    let checks: Vec<String> = doubles
        .iter()
        .map(|name| {
            let text = format!(
                "replace(trim({}), {}, '')",
                quote_identifier(name),
                quote_literal(thousands)
            );
            let decimal = quote_literal(decimal);
            format!(
                "bool_and(regexp_full_match({text}, '[+-]?[0-9]+({point}[0-9]+)?')), \
                 coalesce(max(length(split_part({text}, {decimal}, 2))), 0), \
                 coalesce(max(length(ltrim(split_part({text}, {decimal}, 1), '+-'))), 0)"
            )
        })
        .collect();
    let sql = format!(
        "SELECT {} FROM read_csv({}, all_varchar = true)",
        checks.join(", "),
        args.join(", ")
    );
    let row: Vec<(Option<bool>, i64, i64)> = conn.query_row(&sql, params, |r| {
        (0..doubles.len())
            .map(|i| Ok((r.get(3 * i)?, r.get(3 * i + 1)?, r.get(3 * i + 2)?)))
            .collect()
    })?;
    Ok(doubles
        .into_iter()
        .zip(row)
        .filter_map(|(name, (plain, scale, digits))| {
            let precision = match digits + scale {
                0..=18 => 18,
                19..=38 => 38,
                _ => return None,
            };
            (plain == Some(true) && (1..=MAX_DECIMAL_SCALE).contains(&scale))
                .then_some((name, precision, scale))
        })
        .collect())
}

/// `text` as a DuckDB string literal.
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `name` as a DuckDB identifier.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` matched literally in a regular expression.
fn regex_escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

/// Where a blocking reader hands its schema and batches.
pub(crate) struct Emitter {
    schema: Option<oneshot::Sender<Result<SchemaRef, ConnectorError>>>,
    batches: mpsc::Sender<Result<RecordBatch, ConnectorError>>,
}

impl Emitter {
    /// Announces the schema; must come before the first batch.
    pub(crate) fn schema(&mut self, schema: SchemaRef) {
        if let Some(tx) = self.schema.take() {
            let _ = tx.send(Ok(schema));
        }
    }

    /// Hands on a batch; `false` when nobody reads any more (stop reading).
    pub(crate) fn batch(&mut self, batch: RecordBatch) -> bool {
        self.batches.blocking_send(Ok(batch)).is_ok()
    }
}

/// Runs a blocking reader on its own thread and streams what it emits, with backpressure.
pub(crate) async fn blocking_batches(
    produce: impl FnOnce(&mut Emitter) -> Result<(), ConnectorError> + Send + 'static,
) -> Result<Batches, ConnectorError> {
    let (schema_tx, schema_rx) = oneshot::channel();
    let (tx, mut rx) = mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        let mut emitter = Emitter {
            schema: Some(schema_tx),
            batches: tx,
        };
        if let Err(e) = produce(&mut emitter) {
            match emitter.schema.take() {
                Some(schema) => {
                    let _ = schema.send(Err(e));
                }
                None => {
                    let _ = emitter.batches.blocking_send(Err(e));
                }
            }
        }
    });
    let schema = schema_rx
        .await
        .map_err(|_| ConnectorError::Source("the reader stopped unexpectedly".into()))??;
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
    Ok(Batches { schema, stream })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(value: serde_json::Value) -> Options {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn checks_name_the_field() {
        let problems = Files.check(&options(serde_json::json!({"path": "/x/data.bin"})));
        assert_eq!(problems[0].field, "options.format");
        let problems = Files.check(&options(
            serde_json::json!({"path": "/x/a.csv", "delimeter": ";"}),
        ));
        assert_eq!(problems[0].field, "options.delimeter");
        assert!(
            problems[0].message.contains("unknown field `delimeter`"),
            "{problems:?}"
        );
        let problems = Files.check(&options(
            serde_json::json!({"path": "/x/a.parquet", "header": true}),
        ));
        assert_eq!(problems[0].field, "options.header");
        let problems = Files.check(&options(serde_json::json!({
            "path": "s3://b/a.csv",
            "storage_options": {"aws_secret_access_key": "AKIA-literal"}
        })));
        assert_eq!(
            problems[0].field,
            "options.storage_options.aws_secret_access_key"
        );
        assert!(
            Files
                .check(&options(serde_json::json!({
                    "path": "s3://b/a.csv",
                    "storage_options": {"aws_secret_access_key": "${AWS_SECRET}"}
                })))
                .is_empty()
        );
    }

    #[tokio::test]
    async fn csv_is_sniffed_into_types() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        std::fs::write(
            &path,
            "id;amount;day;note;ratio;big\n1;1.212,50;03.01.2026;x;0,1234567890123;12.345.678.901.234.567,89\n2;-7,2;04.01.2026;;1,5e3;1,5\n",
        )
        .unwrap();
        let opts = FilesOptions {
            path: path.to_string_lossy().into(),
            format: None,
            delimiter: None,
            header: None,
            quote: None,
            date_format: Some("%d.%m.%Y".into()),
            timestamp_format: None,
            decimal_separator: Some(",".into()),
            thousands_separator: Some(".".into()),
            null_string: None,
            storage_options: BTreeMap::new(),
        };
        let batches = read_csv(opts, path.to_string_lossy().into()).await.unwrap();
        let types: Vec<String> = batches
            .schema
            .fields()
            .iter()
            .map(|f| format!("{}:{}", f.name(), f.data_type()))
            .collect();
        assert_eq!(types[0], "id:Int64");
        // Money lands exactly, at the most fraction digits seen, in 18 digits when they are
        // enough and 38 when not; other fractions stay double.
        assert_eq!(types[1], "amount:Decimal128(18, 2)");
        assert_eq!(types[2], "day:Date32");
        assert_eq!(types[4], "ratio:Float64");
        assert_eq!(types[5], "big:Decimal128(38, 2)");
        let batches: Vec<RecordBatch> = batches.stream.try_collect().await.unwrap();
        let amounts = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        let amounts = arrow::util::display::ArrayFormatter::try_new(
            amounts.column(1).as_ref(),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(
            [amounts.value(0).to_string(), amounts.value(1).to_string()],
            ["1212.50", "-7.20"]
        );
        let big = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        let big = arrow::util::display::ArrayFormatter::try_new(
            big.column(5).as_ref(),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(big.value(0).to_string(), "12345678901234567.89");
    }
}
