//! Quiver's HTTP sidecar (axum): health and metrics, password sign-in with browser
//! sessions, the OAuth token endpoint, the caller's tokens and the admin API. OIDC,
//! webhooks and the web UI build on the same router.
//!
//! - [`auth`]: credentials (bearer or session cookie) → principal; sign-in and sign-out.
//! - [`session`]: session cookies, CSRF tokens, ended sessions.
//! - [`oauth`]: `POST /oauth/token` (client credentials).
//! - [`oidc`]: sign-in with OpenID Connect providers.
//! - [`api`]: `/api/me…` and `/api/admin/…` handlers.
//! - [`actions`]: what the API and the pages both do (so they cannot drift).
//! - [`metrics`]: `GET /metrics` (Prometheus).
//! - [`ui`]: the server-rendered web pages, one file per page family.
//! - [`webhooks`]: `POST /webhooks/{source}`, push sources' signed deliveries (Jira's).
//! - [`error`]: the one mapping of errors to JSON responses.
//!
//! Every route is registered through [`utoipa_axum`], so the OpenAPI document served at
//! `/api/openapi.json` is generated from the handlers and lists them all.

pub(crate) mod actions;
pub mod api;
pub(crate) mod auth;
pub(crate) mod error;
pub(crate) mod metrics;
pub(crate) mod oauth;
pub mod oidc;
pub mod session;
pub(crate) mod ui;
pub(crate) mod webhooks;

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use quiver_catalog::auth::authenticator::Authenticator;
use quiver_catalog::{CatalogError, QueryEngine, StateStore};
use serde::Serialize;
use tokio::net::TcpListener;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::session::Sessions;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The state store.
    pub state: Arc<StateStore>,
    /// The query engine (validates grants against tables).
    pub engine: Arc<QueryEngine>,
    /// Runs syncs (the tables API triggers them).
    pub orchestrator: Arc<quiver_orchestrator::Orchestrator>,
    /// Signs callers in (shared with the Flight SQL handshake).
    pub auth: Arc<Authenticator>,
    /// Browser sessions: CSRF tokens and ended sessions.
    pub sessions: Arc<Sessions>,
    /// The Prometheus recorder's handle, when one is installed.
    pub metrics: Option<PrometheusHandle>,
    /// Serve `/metrics` without credentials.
    pub public_metrics: bool,
    /// OpenID Connect providers.
    pub oidc: Arc<oidc::Oidc>,
    /// The Flight SQL URI clients connect to, shown on the Connect page.
    pub flight_url: String,
}

/// Runs a state-store call off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    app: &AppState,
    f: impl FnOnce(&StateStore) -> Result<T, CatalogError> + Send + 'static,
) -> Result<T, ApiError> {
    let state = app.state.clone();
    Ok(tokio::task::spawn_blocking(move || f(&state)).await??)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Quiver", description = "Sign-in, tokens and administration of a Quiver server."),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "Sign-in, sign-out and the OAuth token endpoint"),
        (name = "me", description = "The signed-in user and their personal access tokens"),
        (name = "admin", description = "Users, groups, grants, service accounts and the audit log (Admin only)"),
        (name = "operations", description = "Health and metrics"),
        (name = "webhooks", description = "Deliveries from sources that push (HMAC-signed, no token)"),
        (name = "web", description = "Server-rendered pages (HTML forms, session cookie and CSRF token)"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from /auth/login, /oauth/token or the Flight SQL handshake, or a personal access token (qvr_…)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(session::SESSION_COOKIE))),
        );
    }
}

/// Every route, with its OpenAPI description.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(metrics::metrics))
        .routes(routes!(auth::login))
        .routes(routes!(auth::logout))
        .routes(routes!(oauth::token))
        .routes(routes!(oidc::login))
        .routes(routes!(oidc::callback))
        .routes(routes!(api::account::me))
        .routes(routes!(api::account::catalog))
        .routes(routes!(api::account::my_access))
        .routes(routes!(api::account::my_tokens, api::account::create_token))
        .routes(routes!(api::account::revoke_token))
        .routes(routes!(api::users::users, api::users::create_user))
        .routes(routes!(api::users::update_user, api::users::delete_user))
        .routes(routes!(api::users::attributes, api::users::set_attributes))
        .routes(routes!(api::users::access))
        .routes(routes!(api::preview::preview))
        .routes(routes!(api::users::groups, api::users::create_group))
        .routes(routes!(api::users::delete_group))
        .routes(routes!(api::users::members, api::users::add_member))
        .routes(routes!(api::users::remove_member))
        .routes(routes!(api::grants::grants, api::grants::create_grant))
        .routes(routes!(api::grants::revoke_grant))
        .routes(routes!(
            api::governance::table_tags,
            api::governance::set_table_tags
        ))
        .routes(routes!(
            api::governance::schema_tags,
            api::governance::set_schema_tags
        ))
        .routes(routes!(
            api::governance::policies,
            api::governance::create_policy
        ))
        .routes(routes!(api::governance::delete_policy))
        .routes(routes!(
            api::service_accounts::service_accounts,
            api::service_accounts::create_service_account
        ))
        .routes(routes!(api::service_accounts::revoke_service_account))
        .routes(routes!(api::audit::audit))
        .routes(routes!(api::audit::access_history))
        .routes(routes!(api::audit::backup_state))
        .routes(routes!(api::tables::tables, api::tables::create_table))
        .routes(routes!(api::tables::sync_table))
        .routes(routes!(api::tables::syncs))
        .routes(routes!(
            api::tables::table,
            api::tables::update_table,
            api::tables::delete_table
        ))
        .routes(routes!(ui::home))
        .routes(routes!(ui::login_form, ui::login_submit))
        .routes(routes!(ui::logout))
        .routes(routes!(ui::connect))
        .routes(routes!(ui::create_token))
        .routes(routes!(ui::revoke_token))
        .routes(routes!(ui::catalog))
        .routes(routes!(ui::users, ui::create_user))
        .routes(routes!(ui::set_active))
        .routes(routes!(ui::groups, ui::create_group))
        .routes(routes!(ui::delete_group))
        .routes(routes!(ui::add_member))
        .routes(routes!(ui::remove_member))
        .routes(routes!(ui::grants, ui::create_grant))
        .routes(routes!(ui::revoke_grant))
        .routes(routes!(ui::tables))
        .routes(routes!(ui::sync_table))
        .routes(routes!(ui::audit))
        .routes(routes!(webhooks::receive))
}

/// The OpenAPI document of the HTTP API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// The HTTP API.
pub fn app(state: AppState) -> Router {
    let (router, api) = routes().split_for_parts();
    let api = Arc::new(api);
    router
        .route(
            "/api/openapi.json",
            get(move || {
                let api = api.clone();
                async move { Json(api.as_ref().clone()) }
            }),
        )
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(axum::middleware::from_fn(ui::security_headers))
        .with_state(state)
}

/// How long a client has to send a request's headers. A connection that has not finished
/// them by then is closed, so connections that trickle bytes (or none) cannot pile up.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` resolves, then lets the requests in flight
/// finish. HTTP/1 and HTTP/2; each request knows its peer (`ConnectInfo<SocketAddr>`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use tower::ServiceExt;

    let stop = tokio_util::sync::CancellationToken::new();
    let trigger = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        trigger.cancel();
    });
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: wait, do not spin.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service =
            app.clone()
                .map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    request
                });
        let stop = stop.clone();
        connections.spawn(async move {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            builder.http2().timer(TokioTimer::new());
            let connection = builder.serve_connection_with_upgrades(
                TokioIo::new(stream),
                hyper_util::service::TowerToHyperService::new(service),
            );
            tokio::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = served {
                tracing::debug!(peer = %peer, error = %e, "HTTP connection ended");
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// `GET /health` answer.
#[derive(Debug, Serialize, ToSchema)]
struct Health {
    /// `ok`.
    status: &'static str,
    /// `ok` when the state database answers.
    state_store: &'static str,
    /// `ok` when the object store holding the tables answers.
    object_store: &'static str,
    /// The state database's schema version.
    schema_version: i64,
    /// This replica's id (several replicas may share one state).
    replica: String,
    /// Whether this replica runs the cluster's schedules and background jobs.
    leader: bool,
}

/// Up, state database and object store reachable, schema version, replica. No
/// authentication; 503 naming what cannot be reached.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = error::ErrorBody)))]
async fn health(State(app): State<AppState>) -> Response {
    let state = app.state.clone();
    let schema = tokio::task::spawn_blocking(move || state.schema_version()).await;
    let storage = app.orchestrator.storage();
    let root = storage.tables_root();
    let objects = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        storage.store().list_with_delimiter(Some(&root)),
    )
    .await;
    let unavailable = |what: &str, why: String| {
        tracing::error!(error = %why, "health check: the {what} cannot be reached");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the {what} cannot be reached"),
        )
        .into_response()
    };
    let schema_version = match schema {
        Ok(Ok(version)) => version,
        Ok(Err(e)) => return unavailable("state database", e.to_string()),
        Err(e) => return unavailable("state database", e.to_string()),
    };
    match objects {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return unavailable("object store", e.to_string()),
        Err(_) => return unavailable("object store", "no answer in 5 s".into()),
    }
    Json(Health {
        status: "ok",
        state_store: "ok",
        object_store: "ok",
        schema_version,
        replica: app.orchestrator.replica().to_string(),
        leader: app.orchestrator.is_leading(),
    })
    .into_response()
}
