//! Quiver's HTTP sidecar (axum): health today; login, tokens, webhooks, the admin API and
//! the web UI build on the same router.
//!
//! The router is built by [`app`] from shared state and served by [`serve`], so tests can
//! drive it in process and the binary can bind it wherever it likes.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use quiver_catalog::StateStore;
use serde_json::json;
use tokio::net::TcpListener;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The state store.
    pub state: Arc<StateStore>,
}

/// The HTTP API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// `GET /health`: up, state store reachable, schema version. No authentication.
async fn health(State(app): State<AppState>) -> Response {
    let state = app.state.clone();
    match tokio::task::spawn_blocking(move || state.schema_version()).await {
        Ok(Ok(version)) => Json(json!({
            "status": "ok",
            "state_store": "ok",
            "schema_version": version,
        }))
        .into_response(),
        other => {
            tracing::error!(result = ?other.map(|r| r.map_err(|e| e.to_string())), "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(
                    json!({"error": {"code": "unavailable", "message": "state store unreachable"}}),
                ),
            )
                .into_response()
        }
    }
}
