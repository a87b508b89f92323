//! `keboola`: a table from Keboola Storage, through its Storage API.
//!
//! Incremental syncs export the rows Keboola changed since the last successful sync began
//! (`changedSince`), then merge them by primary key like every incremental table.
//!
//! The documented export flow: `POST /v2/storage/tables/{id}/export-async` (with
//! `changedSince` for an incremental sync) starts a job; `GET /v2/storage/jobs/{id}` is
//! polled until it succeeds; the job's result names a file, and
//! `GET /v2/storage/files/{id}?federationToken=1` describes it — for a sliced file, a
//! manifest listing the slices, which come with temporary S3 credentials. Slices are CSV
//! without a header; the column names come from `GET /v2/storage/tables/{id}`. The slices
//! are joined under one header and typed by the same CSV reader as the `files` connector.

use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;
use quiver_config::FieldProblem;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::files::{FilesOptions, append_stream, read_csv};
use crate::options::{self, parse, parse_checked, secret_reference};
use crate::{Batches, Connector, ConnectorError, Options, ReadRequest};

/// The `keboola` connector.
pub(crate) struct Keboola;

/// Options of the `keboola` connector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeboolaOptions {
    /// The Storage API URL of the stack, e.g. `https://connection.keboola.com`.
    url: String,
    /// A Storage API token with read access to the table, as an `${ENV}` reference.
    token: String,
    /// The table id, e.g. `in.c-sales.orders`.
    table_id: String,
    /// Give up on an export job after this long. Default `30m`.
    #[serde(default = "default_timeout")]
    timeout: options::Duration,
}

fn default_timeout() -> options::Duration {
    options::Duration(Duration::from_secs(30 * 60))
}

#[async_trait::async_trait]
impl Connector for Keboola {
    fn check(&self, options: &Options) -> Vec<FieldProblem> {
        let parsed: KeboolaOptions = match parse(options) {
            Ok(o) => o,
            Err(p) => return vec![p],
        };
        let mut problems: Vec<FieldProblem> =
            secret_reference(options, "token").into_iter().collect();
        if !(parsed.url.starts_with("https://") || parsed.url.starts_with("http://")) {
            problems.push(FieldProblem::new(
                "options.url",
                format!("`{}` must be the stack's https:// URL", parsed.url),
            ));
        }
        if parsed.table_id.split('.').count() < 3 {
            problems.push(FieldProblem::new(
                "options.table_id",
                format!(
                    "`{}` is not a Keboola table id (expected e.g. `in.c-sales.orders`)",
                    parsed.table_id
                ),
            ));
        }
        problems
    }

    async fn read(&self, request: ReadRequest<'_>) -> Result<Batches, ConnectorError> {
        let options: KeboolaOptions = parse_checked(request.options)?;
        let api = Api::new(&options)?;
        let table: Value = api
            .get(&format!("v2/storage/tables/{}", options.table_id))
            .await?;
        let columns: Vec<String> = table["columns"]
            .as_array()
            .ok_or_else(|| ConnectorError::Source("table detail has no `columns`".into()))?
            .iter()
            .filter_map(|c| c.as_str().map(String::from))
            .collect();

        let mut form = vec![("format", "rfc".to_string())];
        if let Some(since) = request.changed_since {
            // A little overlap: a row changed while the last export ran is read again and
            // merged by its key, never missed.
            form.push(("changedSince", (since - 60).to_string()));
        }
        let job: Value = api
            .post_form(
                &format!("v2/storage/tables/{}/export-async", options.table_id),
                &form,
            )
            .await?;
        let timeout = options.timeout.0;
        let job = api.wait(&job, timeout).await?;
        let file_id = job["results"]["file"]["id"]
            .as_i64()
            .ok_or_else(|| ConnectorError::Source("export job finished without a file".into()))?;
        let file: Value = api
            .get(&format!("v2/storage/files/{file_id}?federationToken=1"))
            .await?;

        let target = request.scratch.join("export.csv");
        let mut out = tokio::fs::File::create(&target)
            .await
            .map_err(|e| ConnectorError::Source(format!("{}: {e}", target.display())))?;
        let header = columns
            .iter()
            .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(",");
        write(&mut out, format!("{header}\n").as_bytes()).await?;
        if file["isSliced"].as_bool().unwrap_or(false) {
            let manifest: Value = api.get_absolute(file_url(&file)?).await?;
            let entries = manifest["entries"].as_array().cloned().unwrap_or_default();
            for entry in entries {
                let url = entry["url"].as_str().unwrap_or_default();
                // Slices are joined line by line: end each one with a newline.
                if api.download(url, &file, &mut out).await? != Some(b'\n') {
                    write(&mut out, b"\n").await?;
                }
            }
        } else {
            api.download(file_url(&file)?, &file, &mut out).await?;
        }
        out.flush()
            .await
            .map_err(|e| ConnectorError::Source(e.to_string()))?;
        drop(out);
        tracing::info!(table = %options.table_id, file = file_id, "Keboola export downloaded");
        let path = target.to_string_lossy().into_owned();
        read_csv(FilesOptions::local_csv(path.clone()), path).await
    }
}

fn file_url(file: &Value) -> Result<&str, ConnectorError> {
    file["url"]
        .as_str()
        .ok_or_else(|| ConnectorError::Source("file detail has no `url`".into()))
}

async fn write(out: &mut tokio::fs::File, bytes: &[u8]) -> Result<(), ConnectorError> {
    out.write_all(bytes)
        .await
        .map_err(|e| ConnectorError::Source(format!("writing the export: {e}")))
}

/// The Storage API of one stack, with its token.
struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    fn new(options: &KeboolaOptions) -> Result<Self, ConnectorError> {
        Ok(Self {
            base: options.url.trim_end_matches('/').to_string(),
            token: options.token.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(300))
                .build()
                .map_err(|e| ConnectorError::Source(e.to_string()))?,
        })
    }

    async fn json(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<Value, ConnectorError> {
        let response = request
            .header("X-StorageApi-Token", &self.token)
            .send()
            .await
            .map_err(|e| ConnectorError::Source(format!("Keboola {what}: {e}")))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| ConnectorError::Source(format!("Keboola {what}: {e}")))?;
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = value["error"]
                .as_str()
                .or_else(|| value["message"].as_str())
                .unwrap_or("no message");
            return Err(ConnectorError::Source(format!(
                "Keboola {what}: HTTP {status}: {message}"
            )));
        }
        Ok(value)
    }

    async fn get(&self, path: &str) -> Result<Value, ConnectorError> {
        self.json(
            self.http.get(format!("{}/{path}", self.base)),
            &format!("GET {path}"),
        )
        .await
    }

    async fn get_absolute(&self, url: &str) -> Result<Value, ConnectorError> {
        self.json(self.http.get(url), "manifest").await
    }

    async fn post_form(
        &self,
        path: &str,
        form: &[(&str, String)],
    ) -> Result<Value, ConnectorError> {
        self.json(
            self.http.post(format!("{}/{path}", self.base)).form(form),
            &format!("POST {path}"),
        )
        .await
    }

    /// Polls a job until it ends; its error message is the sync's error.
    async fn wait(&self, job: &Value, timeout: Duration) -> Result<Value, ConnectorError> {
        let id = job["id"]
            .as_i64()
            .ok_or_else(|| ConnectorError::Source("export did not return a job id".into()))?;
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(200);
        loop {
            let job = self.get(&format!("v2/storage/jobs/{id}")).await?;
            match job["status"].as_str() {
                Some("success") => return Ok(job),
                Some("error") => {
                    return Err(ConnectorError::Source(format!(
                        "Keboola export job {id} failed: {}",
                        job["error"]["message"].as_str().unwrap_or("no message")
                    )));
                }
                _ if Instant::now() > deadline => {
                    return Err(ConnectorError::Source(format!(
                        "Keboola export job {id} did not finish within {}",
                        humantime::format_duration(timeout)
                    )));
                }
                _ => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Appends one file (a slice, or the whole export) to `out`: `s3://` with the file's
    /// temporary credentials, `https://` directly.
    /// Returns the last byte written.
    async fn download(
        &self,
        url: &str,
        file: &Value,
        out: &mut tokio::fs::File,
    ) -> Result<Option<u8>, ConnectorError> {
        let fail =
            |e: &dyn std::fmt::Display| ConnectorError::Source(format!("downloading {url}: {e}"));
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').ok_or_else(|| fail(&"no key"))?;
            let credentials = &file["credentials"];
            let mut builder = object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(file["region"].as_str().unwrap_or("us-east-1"));
            if let (Some(id), Some(secret)) = (
                credentials["AccessKeyId"].as_str(),
                credentials["SecretAccessKey"].as_str(),
            ) {
                builder = builder
                    .with_access_key_id(id)
                    .with_secret_access_key(secret);
            }
            if let Some(session) = credentials["SessionToken"].as_str() {
                builder = builder.with_token(session);
            }
            let store = builder.build().map_err(|e| fail(&e))?;
            let stream = store
                .get(&object_store::path::Path::from(key))
                .await
                .map_err(|e| fail(&e))?
                .into_stream();
            append_stream(stream, out, url).await
        } else {
            let response = self
                .http
                .get(url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| fail(&e))?;
            append_stream(response.bytes_stream(), out, url).await
        }
    }
}
