//! `POST /webhooks/{source}`: a push source's signed deliveries (Jira Cloud's at
//! `/webhooks/jira`), handed to the orchestrator's push driver.
//!
//! Checked in this order, each before anything else is read from the body: the source's
//! webhooks are configured (else 503), the body fits its limit (413), the source accepts the
//! signature (401; Jira: the `X-Hub-Signature-256` HMAC of the raw body, in constant time).
//! Only then is the JSON parsed (400 when it names nothing the source keeps). The delivery is
//! stored and recorded before the answer, so once the source has its 200 nothing can be lost;
//! a repeated delivery id answers 200 again with `duplicate: true` and has no effect.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use quiver_orchestrator::push::{PUSH_SOURCES, Refused};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::ApiError;

/// Answer to an accepted delivery.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Accepted {
    /// The delivery id (Jira's `X-Atlassian-Webhook-Identifier`, or the body's SHA-256
    /// without one).
    pub delivery: String,
    /// `true` when the delivery had been received before; it has no further effect.
    pub duplicate: bool,
}

/// Receives a push source's webhook delivery; for `jira`, Jira Cloud's issue, comment,
/// attachment and issue-link events. Authenticated by the source's signature, not by a
/// token.
#[utoipa::path(post, path = "/webhooks/{source}", tag = "webhooks",
    request_body(content = String, content_type = "application/json", description = "The source's webhook payload"),
    params(
        ("source" = String, Path, description = "The push source: `jira`"),
        ("X-Hub-Signature-256" = String, Header, description = "Jira: `sha256=` and the hex HMAC-SHA256 of the body with the webhook secret"),
        ("X-Atlassian-Webhook-Identifier" = Option<String>, Header, description = "Jira: delivery id; retries repeat it"),
    ),
    responses(
        (status = 200, body = Accepted, description = "Stored; processed in the background"),
        (status = 400, body = crate::error::ErrorBody, description = "Not JSON, or names nothing the source keeps (Jira: no valid issue key)"),
        (status = 401, body = crate::error::ErrorBody, description = "Missing or wrong signature"),
        (status = 404, body = crate::error::ErrorBody, description = "No push source of that name"),
        (status = 413, body = crate::error::ErrorBody, description = "Body over the source's `max_payload`"),
        (status = 503, body = crate::error::ErrorBody, description = "The source's webhooks are not configured (Jira: no `jira.webhook_secret`)"),
    ))]
pub(crate) async fn receive(
    State(app): State<AppState>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Accepted>, ApiError> {
    let Some(push) = app.orchestrator.push(&source) else {
        if PUSH_SOURCES.iter().any(|(name, _)| *name == source) {
            return Err(Refused::Off(format!(
                "{source} webhooks are off: configure the `{source}:` section with a webhook_secret"
            ))
            .into());
        }
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no push source of that name",
        ));
    };
    let limit = push.source().max_payload()?;
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than {source}.max_payload ({limit} bytes)"),
        )
    })?;
    let id = push
        .source()
        .authenticate(&headers, &body)
        .inspect_err(|e| {
            if let Refused::Unauthenticated(_) = e {
                tracing::warn!(source, "delivery with a missing or wrong signature refused");
            }
        })?;
    let received = push.receive(id, &body).await?;
    Ok(Json(Accepted {
        delivery: received.id,
        duplicate: !received.new,
    }))
}
