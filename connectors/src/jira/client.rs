//! Jira Cloud's REST API (v3), the parts Quiver reads: one issue in full, JQL search with
//! `nextPageToken` paging, and the approximate count for progress bars.
//!
//! Authentication is the documented Basic scheme with an account e-mail and API token. A
//! `429` or `503` is retried after the `Retry-After` Jira sends (or a growing pause).

use std::time::Duration;

use serde_json::{Value, json};
use url::Url;

use crate::ConnectorError;

/// Retries of one request after `429`/`503` or a connection failure.
const RETRIES: u32 = 5;
/// Issues per search page (Jira's maximum for full issues).
pub(crate) const PAGE_SIZE: usize = 100;

/// An issue with everything Quiver stores about it.
#[derive(Debug, Clone)]
pub(crate) struct FetchedIssue {
    /// The issue as `GET /rest/api/3/issue/{key}?expand=renderedFields,changelog` returns
    /// it, with every comment and changelog history (paged in when Jira truncated them).
    pub issue: Value,
    /// `GET /rest/api/3/issue/{key}/remotelink`.
    pub remote_links: Vec<Value>,
}

/// One page of a JQL search.
#[derive(Debug, Clone)]
pub(crate) struct SearchPage {
    /// The issues, with the fields asked for.
    pub issues: Vec<Value>,
    /// Token for the next page; `None` on the last.
    pub next: Option<String>,
}

/// A Jira Cloud site.
#[derive(Clone)]
pub(crate) struct JiraClient {
    http: reqwest::Client,
    base: Url,
    email: String,
    token: String,
}

impl std::fmt::Debug for JiraClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JiraClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl JiraClient {
    /// A client for the site at `url`, signing in as `email` with an API token.
    pub(crate) fn new(url: &str, email: &str, token: &str) -> Result<Self, ConnectorError> {
        let mut base = Url::parse(url)
            .map_err(|e| ConnectorError::Config(format!("jira.url `{url}`: {e}")))?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("quiver/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConnectorError::Source(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            email: email.to_string(),
            token: token.to_string(),
        })
    }

    /// The whole issue, or `None` when Jira says it does not exist (deleted, or no longer
    /// visible to the account).
    pub(crate) async fn issue(&self, key: &str) -> Result<Option<FetchedIssue>, ConnectorError> {
        let path = format!("rest/api/3/issue/{key}");
        let Some(mut issue) = self
            .get(&path, &[("expand", "renderedFields,changelog")])
            .await?
        else {
            return Ok(None);
        };
        // Jira embeds a limited number of comments and histories; page in the rest.
        if truncated(&issue["fields"]["comment"], "comments") {
            let comments = self
                .all_pages(
                    &format!("{path}/comment"),
                    "comments",
                    &[("expand", "renderedBody")],
                )
                .await?;
            issue["fields"]["comment"]["comments"] = Value::Array(comments);
        }
        if truncated(&issue["changelog"], "histories") {
            let histories = self
                .all_pages(&format!("{path}/changelog"), "values", &[])
                .await?;
            issue["changelog"]["histories"] = Value::Array(histories);
        }
        let remote_links = match self.get(&format!("{path}/remotelink"), &[]).await? {
            Some(Value::Array(links)) => links,
            _ => Vec::new(),
        };
        Ok(Some(FetchedIssue {
            issue,
            remote_links,
        }))
    }

    /// One page of issues matching `jql` (`POST /rest/api/3/search/jql`).
    pub(crate) async fn search(
        &self,
        jql: &str,
        fields: &[&str],
        page_token: Option<&str>,
    ) -> Result<SearchPage, ConnectorError> {
        let mut body = json!({"jql": jql, "fields": fields, "maxResults": PAGE_SIZE});
        if let Some(token) = page_token {
            body["nextPageToken"] = json!(token);
        }
        let page = self.post("rest/api/3/search/jql", &body).await?;
        let issues = match page.get("issues") {
            Some(Value::Array(issues)) => issues.clone(),
            _ => {
                return Err(ConnectorError::Source(
                    "Jira's search answer has no `issues` list".into(),
                ));
            }
        };
        let next = page
            .get("nextPageToken")
            .and_then(Value::as_str)
            .filter(|_| page.get("isLast") != Some(&Value::Bool(true)))
            .map(String::from);
        Ok(SearchPage { issues, next })
    }

    /// Every issue matching `jql`, with `fields`, page by page.
    pub(crate) async fn search_all(
        &self,
        jql: &str,
        fields: &[&str],
    ) -> Result<Vec<Value>, ConnectorError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self.search(jql, fields, token.as_deref()).await?;
            out.extend(page.issues);
            match page.next {
                Some(next) => token = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// About how many issues match `jql` (`POST /rest/api/3/search/approximate-count`).
    pub(crate) async fn count(&self, jql: &str) -> Result<u64, ConnectorError> {
        let answer = self
            .post("rest/api/3/search/approximate-count", &json!({"jql": jql}))
            .await?;
        Ok(answer.get("count").and_then(Value::as_u64).unwrap_or(0))
    }

    /// Every item of a paged list (`startAt`/`maxResults`/`total`, items under `items`).
    async fn all_pages(
        &self,
        path: &str,
        items: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<Value>, ConnectorError> {
        let mut out: Vec<Value> = Vec::new();
        loop {
            let start = out.len().to_string();
            let mut q = query.to_vec();
            q.extend([("startAt", start.as_str()), ("maxResults", "100")]);
            let Some(page) = self.get(path, &q).await? else {
                return Ok(out);
            };
            let list = page
                .get(items)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let total = page.get("total").and_then(Value::as_u64);
            let last = page.get("isLast").and_then(Value::as_bool);
            let done = list.is_empty()
                || last == Some(true)
                || total.is_some_and(|t| (out.len() + list.len()) as u64 >= t);
            out.extend(list);
            if done {
                return Ok(out);
            }
        }
    }

    async fn get(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Option<Value>, ConnectorError> {
        let url = self.url(path)?;
        self.send(|| self.http.get(url.clone()).query(query)).await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, ConnectorError> {
        let url = self.url(path)?;
        let body = body.to_string();
        self.send(|| {
            self.http
                .post(url.clone())
                .header("content-type", "application/json")
                .body(body.clone())
        })
        .await?
        .ok_or_else(|| ConnectorError::Source(format!("Jira answered 404 to POST {path}")))
    }

    fn url(&self, path: &str) -> Result<Url, ConnectorError> {
        self.base
            .join(path)
            .map_err(|e| ConnectorError::Source(format!("bad Jira path {path}: {e}")))
    }

    /// Sends a request (retrying throttling and unavailability); `None` on 404.
    async fn send(
        &self,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Option<Value>, ConnectorError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = request()
                .basic_auth(&self.email, Some(&self.token))
                .header("accept", "application/json")
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(e) if attempt <= RETRIES => {
                    tracing::warn!(error = %e, attempt, "Jira unreachable; retrying");
                    tokio::time::sleep(pause(attempt, None)).await;
                    continue;
                }
                Err(e) => return Err(ConnectorError::Source(format!("Jira unreachable: {e}"))),
            };
            let status = response.status();
            let url = response.url().path().to_string();
            if (status.as_u16() == 429 || status.as_u16() == 503) && attempt <= RETRIES {
                let wait = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                tracing::warn!(status = status.as_u16(), attempt, "Jira asks to slow down");
                tokio::time::sleep(pause(attempt, wait)).await;
                continue;
            }
            if status.as_u16() == 404 {
                return Ok(None);
            }
            let body = response
                .bytes()
                .await
                .map_err(|e| ConnectorError::Source(format!("reading Jira's answer: {e}")))?;
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body);
                let hint = match status.as_u16() {
                    401 | 403 => " (check jira.email and jira.api_token)",
                    _ => "",
                };
                return Err(ConnectorError::Source(format!(
                    "Jira answered {status} to {url}{hint}: {}",
                    text.chars().take(300).collect::<String>()
                )));
            }
            return serde_json::from_slice(&body).map(Some).map_err(|e| {
                ConnectorError::Source(format!("Jira sent invalid JSON for {url}: {e}"))
            });
        }
    }
}

/// Whether a list Jira embeds (`{<items>: […], total}`) holds fewer items than `total`.
fn truncated(container: &Value, items: &str) -> bool {
    let held = container
        .get(items)
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    container
        .get("total")
        .and_then(Value::as_u64)
        .is_some_and(|total| total as usize > held)
}

fn pause(attempt: u32, retry_after: Option<u64>) -> Duration {
    match retry_after {
        Some(seconds) => Duration::from_secs(seconds.min(120)),
        None => Duration::from_millis(500 * 2u64.pow(attempt.min(6))),
    }
}
