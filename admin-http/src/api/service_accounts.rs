//! Service accounts: OAuth client credentials for programs that act as a user.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use quiver_catalog::state::identity;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AdminCaller;
use crate::error::ApiError;
use crate::{AppState, blocking};

/// A client as listed (never the secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientInfo {
    /// The `client_id` to present.
    client_id: String,
    /// The user the client acts as.
    email: String,
    /// What it is for.
    name: String,
    /// Seconds since the epoch.
    created_at: u64,
    /// Whether it was revoked.
    revoked: bool,
}

impl From<identity::ClientInfo> for ClientInfo {
    fn from(c: identity::ClientInfo) -> Self {
        Self {
            client_id: c.client_id,
            email: c.email,
            name: c.name,
            created_at: c.created_at,
            revoked: c.revoked,
        }
    }
}

/// `POST /api/admin/service-accounts` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewServiceAccount {
    /// The account the service acts as; created (without a password) when missing.
    email: String,
    /// What the credentials are for.
    name: String,
}

/// Client credentials just created: the secret is in this answer and nowhere else.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedClient {
    #[serde(flatten)]
    info: ClientInfo,
    client_secret: String,
    /// Where to exchange them for a bearer token (`grant_type=client_credentials`).
    token_endpoint: &'static str,
}

/// Every service account's client credentials (never their secrets).
#[utoipa::path(get, path = "/api/admin/service-accounts", tag = "admin",
    responses((status = 200, body = Vec<ClientInfo>), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn service_accounts(
    State(app): State<AppState>,
    _: AdminCaller,
) -> Result<Json<Vec<ClientInfo>>, ApiError> {
    let clients = blocking(&app, |s| s.identity().clients()).await?;
    Ok(Json(clients.into_iter().map(Into::into).collect()))
}

/// Create OAuth client credentials for a service account; grant it access through its
/// groups like any user.
#[utoipa::path(post, path = "/api/admin/service-accounts", tag = "admin", request_body = NewServiceAccount,
    responses((status = 201, body = CreatedClient), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn create_service_account(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Json(body): Json<NewServiceAccount>,
) -> Result<(StatusCode, Json<CreatedClient>), ApiError> {
    let actor = p.email().to_string();
    let (info, client_secret) = blocking(&app, move |s| {
        s.identity().create_client(&actor, &body.email, &body.name)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedClient {
            info: info.into(),
            client_secret,
            token_endpoint: "/oauth/token",
        }),
    ))
}

/// Revoke a service account's client credentials.
#[utoipa::path(delete, path = "/api/admin/service-accounts/{client_id}", tag = "admin",
    params(("client_id" = String, Path)),
    responses((status = 204), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn revoke_service_account(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Path(client_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let actor = p.email().to_string();
    blocking(&app, move |s| {
        s.identity().revoke_client(&actor, &client_id)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
