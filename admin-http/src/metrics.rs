//! `GET /metrics`: Prometheus text format, for admins (or anyone, when
//! `server.public_metrics` is set).

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::auth::AdminCaller;
use crate::error::ApiError;

/// Counters and histograms: queries by outcome, query duration, rows and bytes streamed,
/// active queries, sign-ins by outcome.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ()))]
pub(crate) async fn metrics(
    State(app): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    if !app.public_metrics {
        let (mut parts, _) = request.into_parts();
        AdminCaller::from_request_parts(&mut parts, &app).await?;
    }
    let body = app
        .metrics
        .as_ref()
        .map(|handle| handle.render())
        .unwrap_or_default();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}
