//! The running server's HTTP API, for commands that would otherwise work on the embedded
//! state file the server holds (`quiver sync`, `quiver state backup`): reached at
//! `server.public_url` (else `http://<server.http_listen>`) with an admin's token from
//! `QUIVER_TOKEN`.

use anyhow::{Context, bail};
use quiver_config::Config;

/// The running server, as one admin.
pub(crate) struct Remote {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Remote {
    /// The server `config` names, with the token from `QUIVER_TOKEN`; without one, the error
    /// says what else the admin can do (`instead`).
    pub(crate) fn new(config: &Config, purpose: &str, instead: &str) -> anyhow::Result<Self> {
        let Ok(token) = std::env::var("QUIVER_TOKEN") else {
            bail!(
                "the server is running (it holds the state file). Set QUIVER_TOKEN to an admin's personal access token to {purpose} through it, or {instead}"
            );
        };
        let base = config
            .server
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", config.server.http_listen));
        Ok(Self {
            base,
            token,
            client: reqwest::Client::new(),
        })
    }

    /// `POST path` with an optional JSON body; a refusal becomes an error with the server's
    /// message.
    pub(crate) async fn post(
        &self,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        self.checked(request).await
    }

    /// `GET path`, its answer as JSON.
    pub(crate) async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> anyhow::Result<T> {
        let request = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        serde_json::from_slice(&self.checked(request).await?.bytes().await?)
            .with_context(|| format!("unexpected answer from {path}"))
    }

    async fn checked(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body: serde_json::Value =
            serde_json::from_slice(&response.bytes().await?).unwrap_or_default();
        bail!(
            "the server refused: {}",
            body["error"]["message"].as_str().unwrap_or(status.as_str())
        )
    }
}
