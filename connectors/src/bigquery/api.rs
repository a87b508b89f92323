//! BigQuery's REST API as the connector uses it: a service account's access token (the OAuth
//! 2.0 JWT-bearer grant Google documents for server-to-server calls, renewed before it
//! expires), query jobs and their result pages, and Google's errors turned into what to do
//! — retried with truncated exponential backoff where Google says to retry.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Page, Plan};
use crate::ConnectorError;

/// The OAuth scope of BigQuery jobs.
const SCOPE: &str = "https://www.googleapis.com/auth/bigquery";
/// Tries of one call before its error is the sync's.
const ATTEMPTS: u32 = 6;
/// A token is renewed this long before it expires, so no call carries one about to lapse.
const RENEW_BEFORE: Duration = Duration::from_secs(300);
/// How long one call waits for a job before asking again (the API's `timeoutMs`).
const WAIT_MS: u64 = 10_000;
/// Rows per result page (BigQuery also caps a page at 10 MB).
const PAGE_ROWS: u64 = 50_000;

/// A job being waited for. Should the wait be abandoned — a remote query stopped by its
/// client or by `query.timeout` — the job is cancelled, so it stops costing.
struct Waiting {
    api: Api,
    job: Option<JobRef>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let (Some(job), Ok(runtime)) = (self.job.take(), tokio::runtime::Handle::try_current()) {
            let api = self.api.clone();
            runtime.spawn(async move { api.cancel(&job).await });
        }
    }
}

/// A service-account key file, as Google Cloud issues it. Never printed: it holds the key.
#[derive(Deserialize, PartialEq)]
pub(super) struct ServiceAccountKey {
    #[serde(rename = "type")]
    kind: String,
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default = "default_token_uri")]
    token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

impl ServiceAccountKey {
    /// Reads a key, checking that it is a service account's with a usable RSA key.
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let key: Self = serde_json::from_str(text).map_err(|e| {
            format!("not a service-account key (JSON with `client_email` and `private_key`): {e}")
        })?;
        if key.kind != "service_account" {
            return Err(format!(
                "a key of type `{}`, not `service_account`: create a key for a service account",
                key.kind
            ));
        }
        EncodingKey::from_rsa_pem(key.private_key.as_bytes())
            .map_err(|e| format!("its `private_key` is not an RSA key in PEM form: {e}"))?;
        Ok(key)
    }
}

/// A job, as the result calls name it.
#[derive(Debug, Clone)]
pub(super) struct JobRef {
    id: String,
    location: Option<String>,
}

/// The API for one project, with a service account's token; cheap to clone.
#[derive(Clone)]
pub(super) struct Api(Arc<Inner>);

struct Inner {
    http: reqwest::Client,
    /// `{endpoint}/bigquery/v2/projects/{project}`.
    base: String,
    project: String,
    key: ServiceAccountKey,
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
}

/// The API of every (endpoint, project, service account) in use, so the syncs and the
/// queries of remote tables share one connection and one token instead of a token exchange
/// and a TLS handshake each. A rotated key replaces its account's entry.
static SHARED: Mutex<BTreeMap<(String, String, String), Api>> = Mutex::new(BTreeMap::new());

impl Api {
    /// The API for `project` at `endpoint` with `key`: the one already in use, or a new one.
    pub(super) fn shared(
        endpoint: &str,
        project: &str,
        key: ServiceAccountKey,
    ) -> Result<Self, ConnectorError> {
        let id = (
            endpoint.to_string(),
            project.to_string(),
            key.client_email.clone(),
        );
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(api) = shared.get(&id)
            && api.0.key == key
        {
            return Ok(api.clone());
        }
        let api = Self::new(endpoint, project, key)?;
        shared.insert(id, api.clone());
        Ok(api)
    }

    fn new(endpoint: &str, project: &str, key: ServiceAccountKey) -> Result<Self, ConnectorError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| ConnectorError::Source(e.to_string()))?;
        Ok(Self(Arc::new(Inner {
            http,
            base: format!(
                "{}/bigquery/v2/projects/{project}",
                endpoint.trim_end_matches('/')
            ),
            project: project.to_string(),
            key,
            token: tokio::sync::Mutex::new(None),
        })))
    }

    /// What the query in `job` would process, without running it (not billed).
    pub(super) async fn dry_run(&self, job: &Value) -> Result<Plan, ConnectorError> {
        let mut body = job.clone();
        body["dryRun"] = json!(true);
        let url = format!("{}/queries", self.0.base);
        let answer = self
            .call("dry run", || post_json(&self.0.http, &url, &body))
            .await?;
        let bytes = answer["totalBytesProcessed"]
            .as_str()
            .and_then(|b| b.parse().ok())
            .unwrap_or(0);
        Ok(Plan {
            schema: answer["schema"].clone(),
            bytes,
        })
    }

    /// Runs the query in `job` and waits for it, at most `timeout` (then the job is cancelled,
    /// so it stops costing); the result's first page.
    pub(super) async fn query(
        &self,
        job: &Value,
        timeout: Duration,
    ) -> Result<Page, ConnectorError> {
        let mut body = job.clone();
        // The same request id on a retry: BigQuery runs the job once.
        body["requestId"] = json!(uuid::Uuid::new_v4().to_string());
        body["timeoutMs"] = json!(WAIT_MS);
        body["maxResults"] = json!(PAGE_ROWS);
        body["formatOptions"] = json!({ "useInt64Timestamp": true });
        let url = format!("{}/queries", self.0.base);
        let answer = self
            .call("query", || post_json(&self.0.http, &url, &body))
            .await?;
        let reference = &answer["jobReference"];
        let job = JobRef {
            id: reference["jobId"]
                .as_str()
                .ok_or_else(|| ConnectorError::Source("BigQuery query: no `jobReference`".into()))?
                .to_string(),
            location: reference["location"].as_str().map(String::from),
        };
        let deadline = Instant::now() + timeout;
        let mut answer = answer;
        let mut waiting = Waiting {
            api: self.clone(),
            job: Some(job.clone()),
        };
        while answer["jobComplete"].as_bool() != Some(true) {
            if Instant::now() >= deadline {
                waiting.job = None;
                self.cancel(&job).await;
                return Err(ConnectorError::Request(format!(
                    "the BigQuery job {} did not finish within `timeout` {}; it was cancelled",
                    job.id,
                    humantime::format_duration(timeout)
                )));
            }
            tracing::debug!(job = %job.id, "BigQuery job still running");
            answer = match self.ask_results(&job, None).await {
                Ok(answer) => answer,
                Err(e) => {
                    waiting.job = None; // the job failed: nothing to stop
                    return Err(e);
                }
            };
        }
        waiting.job = None;
        Ok(page(job, answer))
    }

    /// Asks BigQuery to stop a job; a failure to do so is only logged.
    async fn cancel(&self, job: &JobRef) {
        let url = format!("{}/jobs/{}/cancel", self.0.base, job.id);
        let location: Vec<(&str, &str)> = job
            .location
            .as_deref()
            .map(|l| vec![("location", l)])
            .unwrap_or_default();
        let cancelled = self
            .call("cancel", || self.0.http.post(&url).query(&location))
            .await;
        if let Err(e) = cancelled {
            tracing::warn!(job = %job.id, error = %e, "could not cancel the BigQuery job");
        }
    }

    /// The page of a finished query's result that `token` names.
    pub(super) async fn page(&self, job: &JobRef, token: &str) -> Result<Page, ConnectorError> {
        Ok(page(job.clone(), self.ask_results(job, Some(token)).await?))
    }

    /// One `jobs.getQueryResults`, which waits up to [`WAIT_MS`] for the job. A failed job
    /// answers with its error.
    async fn ask_results(
        &self,
        job: &JobRef,
        token: Option<&str>,
    ) -> Result<Value, ConnectorError> {
        let url = format!("{}/queries/{}", self.0.base, job.id);
        let mut query = vec![
            ("timeoutMs", WAIT_MS.to_string()),
            ("maxResults", PAGE_ROWS.to_string()),
            ("formatOptions.useInt64Timestamp", "true".to_string()),
        ];
        if let Some(location) = &job.location {
            query.push(("location", location.clone()));
        }
        if let Some(token) = token {
            query.push(("pageToken", token.to_string()));
        }
        self.call("query results", || self.0.http.get(&url).query(&query))
            .await
    }

    /// One call, with a fresh token, retried where Google says to retry.
    async fn call(
        &self,
        what: &str,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Value, ConnectorError> {
        let started = Instant::now();
        let mut delay = Duration::from_secs(1);
        for attempt in 1..=ATTEMPTS {
            let token = self.token().await?;
            let wait = match request().bearer_auth(token).send().await {
                Err(e) if attempt < ATTEMPTS && (e.is_connect() || e.is_timeout()) => {
                    tracing::warn!(call = what, attempt, error = %e, "BigQuery unreachable; retrying");
                    None
                }
                Err(e) => return Err(ConnectorError::Source(format!("BigQuery {what}: {e}"))),
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let body = json_body(response).await;
                    if status.is_success() {
                        return Ok(body);
                    }
                    let error = GoogleError::of(status.as_u16(), &body);
                    if status == reqwest::StatusCode::UNAUTHORIZED && attempt == 1 {
                        // A token revoked early: get a new one once.
                        *self.0.token.lock().await = None;
                        Some(Duration::ZERO)
                    } else if error.retryable() && attempt < ATTEMPTS {
                        tracing::warn!(call = what, attempt, status = error.status, reason = %error.reason, "BigQuery asks to retry");
                        retry_after
                    } else {
                        let tries = if error.retryable() {
                            format!(
                                " (still failing after {attempt} tries over {} s)",
                                started.elapsed().as_secs()
                            )
                        } else {
                            String::new()
                        };
                        return Err(ConnectorError::Source(format!(
                            "BigQuery {what}: {}{tries}",
                            error.explain(&self.0.key.client_email, &self.0.project)
                        )));
                    }
                }
            };
            let jitter = Duration::from_millis(rand::random_range(0..250));
            tokio::time::sleep(wait.unwrap_or(delay + jitter).min(Duration::from_secs(32))).await;
            delay = (delay * 2).min(Duration::from_secs(32));
        }
        unreachable!("the last attempt returns")
    }

    /// A valid access token, renewed [`RENEW_BEFORE`] it expires.
    async fn token(&self) -> Result<String, ConnectorError> {
        let mut cached = self.0.token.lock().await;
        if let Some((token, renew_at)) = &*cached
            && Instant::now() < *renew_at
        {
            return Ok(token.clone());
        }
        let key = &self.0.key;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = json!({
            "iss": key.client_email, "scope": SCOPE, "aud": key.token_uri,
            "iat": now, "exp": now + 3600,
        });
        let mut header = Header::new(Algorithm::RS256);
        header.kid = key.private_key_id.clone();
        let assertion = EncodingKey::from_rsa_pem(key.private_key.as_bytes())
            .and_then(|signer| jsonwebtoken::encode(&header, &claims, &signer))
            .map_err(|e| ConnectorError::Config(format!("the service-account key: {e}")))?;
        let refused = |detail: String| {
            ConnectorError::Source(format!(
                "Google did not issue a token for the service account {} at {}: {detail}",
                key.client_email, key.token_uri
            ))
        };
        let response = self
            .0
            .http
            .post(&key.token_uri)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| refused(e.to_string()))?;
        let status = response.status();
        let body = json_body(response).await;
        let Some(token) = body["access_token"]
            .as_str()
            .filter(|_| status.is_success())
        else {
            return Err(refused(format!(
                "{}: {} (is the key deleted, or the account disabled?)",
                body["error"].as_str().unwrap_or(status.as_str()),
                body["error_description"].as_str().unwrap_or_default()
            )));
        };
        let lifetime = Duration::from_secs(body["expires_in"].as_u64().unwrap_or(3600));
        *cached = Some((
            token.to_string(),
            Instant::now() + lifetime.saturating_sub(RENEW_BEFORE),
        ));
        tracing::debug!(account = %key.client_email, seconds = lifetime.as_secs(), "BigQuery token issued");
        Ok(token.to_string())
    }
}

fn post_json(http: &reqwest::Client, url: &str, body: &Value) -> reqwest::RequestBuilder {
    http.post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
}

/// A response's JSON body; `null` when it has none (a proxy's error page, say).
async fn json_body(response: reqwest::Response) -> Value {
    let bytes = response.bytes().await.unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

fn page(job: JobRef, mut answer: Value) -> Page {
    let rows = match answer["rows"].take() {
        Value::Array(rows) => rows,
        _ => Vec::new(),
    };
    Page {
        job,
        schema: answer["schema"].take(),
        rows,
        page_token: answer["pageToken"].as_str().map(String::from),
    }
}

/// An error answer of a Google API: `{"error": {"code", "message", "errors": [{"reason"}]}}`.
struct GoogleError {
    status: u16,
    reason: String,
    message: String,
}

impl GoogleError {
    fn of(status: u16, body: &Value) -> Self {
        let error = &body["error"];
        Self {
            status,
            reason: error["errors"][0]["reason"]
                .as_str()
                .or_else(|| error["status"].as_str())
                .unwrap_or_default()
                .to_string(),
            message: error["message"]
                .as_str()
                .unwrap_or("no message")
                .to_string(),
        }
    }

    /// 429 and 5xx, and the 403s that are rate limits: Google's guidance is to back off.
    fn retryable(&self) -> bool {
        matches!(self.status, 429 | 500 | 502 | 503 | 504)
            || matches!(self.reason.as_str(), "rateLimitExceeded" | "backendError")
    }

    /// The message, with what to do about it.
    fn explain(&self, account: &str, project: &str) -> String {
        let hint = match (self.status, self.reason.as_str()) {
            (401, _) => " (the service account's token was refused: check the key)".to_string(),
            (_, "accessDenied") | (403, "PERMISSION_DENIED") => format!(
                " (give the service account {account} the BigQuery Job User role on project {project} and BigQuery Data Viewer on the data)"
            ),
            (_, "quotaExceeded") => {
                " (a BigQuery quota is used up: wait for it to reset or raise it in the Google Cloud console)".to_string()
            }
            _ => String::new(),
        };
        let reason = if self.reason.is_empty() {
            String::new()
        } else {
            format!(" {}", self.reason)
        };
        format!("{}{reason}: {}{hint}", self.status, self.message)
    }
}
