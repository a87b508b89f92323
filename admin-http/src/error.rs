//! The one mapping from Quiver's errors to HTTP responses: `{"error": {"code", "message"}}`.

use axum::Json;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use quiver_catalog::CatalogError;
use quiver_catalog::auth::authenticator::SignInError;

/// The body of every error response.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable, machine-readable: `unauthenticated`, `forbidden`, `not_found`, `conflict`,
    /// `invalid`, `bad_request`, `too_large`, `unsupported_media_type`, `method_not_allowed`,
    /// `unavailable`, `csrf`, `rate_limited`, `internal`.
    code: String,
    /// For people.
    message: String,
}

/// An error as the API reports it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with a status, a stable code and a message for people.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// The message for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// 401: no or bad credentials.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 403: signed in, but not allowed.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 500, with the detail logged rather than sent.
    pub fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has the details",
        )
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::InvalidName(m)
            | CatalogError::InvalidQuery(m)
            | CatalogError::InvalidInput(m) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m)
            }
            e @ CatalogError::LimitExceeded { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string())
            }
            CatalogError::NotFound(m) | CatalogError::TableNotFound(m) => {
                Self::new(StatusCode::NOT_FOUND, "not_found", m)
            }
            CatalogError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            CatalogError::AlreadyExists(m) => Self::new(StatusCode::CONFLICT, "already_exists", m),
            CatalogError::Aborted(m) => Self::new(StatusCode::CONFLICT, "aborted", m),
            CatalogError::PermissionDenied(m) => Self::new(StatusCode::FORBIDDEN, "forbidden", m),
            CatalogError::Unsupported(m) => {
                Self::new(StatusCode::NOT_IMPLEMENTED, "unsupported", m)
            }
            other @ CatalogError::StateUnavailable(..) => {
                tracing::error!(error = %other, "state database unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the state database is unavailable; try again shortly".to_string(),
                )
            }
            other => Self::internal(&other),
        }
    }
}

/// A refused sign-in of the JSON API (the sign-in page and the OAuth token endpoint answer
/// in their own formats).
impl From<SignInError> for ApiError {
    fn from(e: SignInError) -> Self {
        match e {
            SignInError::Throttled(_) => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", e.to_string())
            }
            SignInError::Refused => Self::unauthenticated("invalid e-mail or password"),
            SignInError::Deactivated => Self::forbidden(e.to_string()),
            SignInError::Failed(e) => e.into(),
        }
    }
}

impl From<quiver_orchestrator::OrchestratorError> for ApiError {
    fn from(e: quiver_orchestrator::OrchestratorError) -> Self {
        use quiver_orchestrator::OrchestratorError as E;
        match e {
            E::Catalog(e) => e.into(),
            E::Invalid(_) | E::SchemaChange(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string())
            }
            E::Refused(refused) => refused.into(),
            other => Self::internal(&other),
        }
    }
}

/// A refused webhook delivery.
impl From<quiver_orchestrator::push::Refused> for ApiError {
    fn from(e: quiver_orchestrator::push::Refused) -> Self {
        use quiver_orchestrator::push::Refused as R;
        match e {
            R::Off(m) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m),
            R::Unauthenticated(m) => Self::unauthenticated(m),
            R::BadPayload(m) => Self::new(StatusCode::BAD_REQUEST, "bad_request", m),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::internal(&e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// The error body for responses that did not come from [`ApiError`]: axum's own rejections
/// (bad JSON, a wrong content type, an unknown route or method, a body over the limit) answer
/// in plain text or with no body at all. Every other error response of the sidecar — JSON
/// already, or an HTML page — passes unchanged, and so do the headers (`Allow`, …).
pub(crate) async fn json_errors(request: Request, next: Next) -> Response {
    let route = format!("{} {}", request.method(), request.uri().path());
    let response = next.run(request).await;
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !(status.is_client_error() || status.is_server_error())
        || content_type.starts_with("application/json")
        || content_type.starts_with("text/html")
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", format!("no such route: {route}")),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            format!("{route}: method not allowed on this route"),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", text),
        StatusCode::PAYLOAD_TOO_LARGE => ("too_large", text),
        StatusCode::UNAUTHORIZED => ("unauthenticated", text),
        StatusCode::FORBIDDEN => ("forbidden", text),
        StatusCode::UNPROCESSABLE_ENTITY => ("invalid", text),
        StatusCode::TOO_MANY_REQUESTS => ("rate_limited", text),
        StatusCode::SERVICE_UNAVAILABLE => ("unavailable", text),
        s if s.is_server_error() => ("internal", text),
        _ => ("bad_request", text),
    };
    let message = if message.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        message
    };
    let mut rewritten = ApiError::new(status, code, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().append(name, value.clone());
        }
    }
    rewritten
}
