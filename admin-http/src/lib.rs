//! Quiver's HTTP sidecar (axum): health, password sign-in, the caller's tokens and the
//! admin API. OIDC, webhooks and the web UI build on the same router.
//!
//! - [`auth`]: bearer credentials → principal; `POST /auth/login`.
//! - [`api`]: `/api/me…` and `/api/admin/…` handlers.
//! - [`error`]: the one mapping of errors to JSON responses.
//!
//! The router is built by [`app`] from shared state and served by [`serve`], so tests can
//! drive it in process and the binary can bind it wherever it likes.

pub mod api;
pub mod auth;
pub mod error;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use quiver_catalog::throttle::LoginThrottle;
use quiver_catalog::{CatalogError, QueryEngine, StateStore, TokenSigner};
use serde_json::json;
use tokio::net::TcpListener;

use crate::error::ApiError;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The state store.
    pub state: Arc<StateStore>,
    /// The query engine (validates grants against tables).
    pub engine: Arc<QueryEngine>,
    /// Issues and checks bearer tokens.
    pub tokens: TokenSigner,
    /// Failed sign-in limits, shared with the Flight SQL handshake.
    pub throttle: Arc<LoginThrottle>,
}

/// Runs a state-store call off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    app: &AppState,
    f: impl FnOnce(&StateStore) -> Result<T, CatalogError> + Send + 'static,
) -> Result<T, ApiError> {
    let state = app.state.clone();
    Ok(tokio::task::spawn_blocking(move || f(&state)).await??)
}

/// The HTTP API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/auth/login", post(auth::login))
        .route("/api/me", get(api::me))
        .route(
            "/api/me/tokens",
            get(api::my_tokens).post(api::create_token),
        )
        .route("/api/me/tokens/{id}", delete(api::revoke_token))
        .route("/api/admin/users", get(api::users).post(api::create_user))
        .route(
            "/api/admin/users/{email}",
            patch(api::update_user).delete(api::delete_user),
        )
        .route(
            "/api/admin/groups",
            get(api::groups).post(api::create_group),
        )
        .route("/api/admin/groups/{name}", delete(api::delete_group))
        .route(
            "/api/admin/groups/{name}/members",
            get(api::members).post(api::add_member),
        )
        .route(
            "/api/admin/groups/{name}/members/{email}",
            delete(api::remove_member),
        )
        .route(
            "/api/admin/grants",
            get(api::grants).post(api::create_grant),
        )
        .route("/api/admin/grants/{id}", delete(api::revoke_grant))
        .route("/api/admin/audit", get(api::audit))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
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
