//! `POST /webhooks/jira`: Jira Cloud's signed deliveries.
//!
//! Checked in this order, each before anything else is read from the body: a secret is
//! configured (else 503), the body fits the limit (413), the `X-Hub-Signature-256` HMAC of
//! the raw body matches in constant time (401). Only then is the JSON parsed (400 when it
//! is not a Jira issue event). The delivery is stored and recorded before the answer, so
//! once Jira has its 200 nothing can be lost; a repeated delivery id answers 200 again with
//! `duplicate: true` and has no effect.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::ApiError;

/// Answer to an accepted delivery.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Accepted {
    /// The delivery id (`X-Atlassian-Webhook-Identifier`, or the body's SHA-256 without one).
    pub delivery: String,
    /// `true` when the delivery had been received before; it has no further effect.
    pub duplicate: bool,
}

/// Receives a Jira Cloud webhook delivery (issue, comment, attachment and issue-link
/// events). Authenticated by the HMAC signature, not by a token.
#[utoipa::path(post, path = "/webhooks/jira", tag = "webhooks",
    request_body(content = String, content_type = "application/json", description = "Jira's webhook payload"),
    params(
        ("X-Hub-Signature-256" = String, Header, description = "`sha256=` and the hex HMAC-SHA256 of the body with the webhook secret"),
        ("X-Atlassian-Webhook-Identifier" = Option<String>, Header, description = "Delivery id; retries repeat it"),
    ),
    responses(
        (status = 200, body = Accepted, description = "Stored; processed in the background"),
        (status = 400, body = crate::error::ErrorBody, description = "Not JSON, or no valid issue key"),
        (status = 401, body = crate::error::ErrorBody, description = "Missing or wrong signature"),
        (status = 413, body = crate::error::ErrorBody, description = "Body over `jira.max_payload`"),
        (status = 503, body = crate::error::ErrorBody, description = "No webhook secret configured"),
    ))]
pub(crate) async fn jira(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Accepted>, ApiError> {
    let jira = app.orchestrator.jira();
    let Some((jira, secret)) = jira.and_then(|j| Some((j, j.config().webhook_secret.clone()?)))
    else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Jira webhooks are off: set jira.webhook_secret in the configuration",
        ));
    };
    let limit = jira.config().max_payload.as_u64() as usize;
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than jira.max_payload ({limit} bytes)"),
        )
    })?;
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim());
    if !signature.is_some_and(|s| signed(secret.as_bytes(), &body, s)) {
        tracing::warn!("jira delivery with a missing or wrong signature refused");
        return Err(ApiError::unauthenticated(
            "missing or wrong X-Hub-Signature-256 (HMAC-SHA256 of the body with the webhook secret)",
        ));
    }
    let id = headers
        .get("x-atlassian-webhook-identifier")
        .and_then(|v| v.to_str().ok());
    let received = jira.receive(id, &body).await?;
    Ok(Json(Accepted {
        delivery: received.id,
        duplicate: !received.new,
    }))
}

/// Whether `signature` (`sha256=<hex>`, the prefix optional) is the body's HMAC.
fn signed(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let hex = signature.strip_prefix("sha256=").unwrap_or(signature);
    let Some(given) = decode_hex(hex) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(body);
    mac.finalize().into_bytes().ct_eq(given.as_slice()).into()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_with_or_without_prefix() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(b"{}");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(signed(b"s3cret", b"{}", &format!("sha256={hex}")));
        assert!(signed(b"s3cret", b"{}", &hex.to_uppercase()));
        assert!(!signed(b"other", b"{}", &hex));
        assert!(!signed(b"s3cret", b"{ }", &hex));
        assert!(!signed(b"s3cret", b"{}", "sha256=zz"));
        assert!(!signed(b"s3cret", b"{}", ""));
    }
}
