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

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::prelude::{JsonReadOptions, ParquetReadOptions, SessionContext};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use quiver_config::FieldProblem;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::options::{parse, parse_checked, secret_reference};
use crate::{Batches, Connector, ConnectorError, Options, ReadRequest};

mod csv;

pub(crate) use csv::read_csv;

/// The `files` connector.
pub(crate) struct Files;

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
}
