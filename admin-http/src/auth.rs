//! Who is calling: bearer credentials (a Quiver JWT or a personal access token) resolved to
//! a principal, and password sign-in.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use quiver_catalog::Principal;
use quiver_catalog::tokens::TOKEN_PREFIX;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::{AppState, blocking};

/// The signed-in caller.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

/// The signed-in caller, a member of `Admin`.
#[derive(Debug, Clone)]
pub struct AdminCaller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::unauthenticated("sign in: send `Authorization: Bearer <token>`")
            })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| ApiError::unauthenticated("expected `Authorization: Bearer <token>`"))?
            .trim()
            .to_string();
        let refused = || ApiError::unauthenticated("invalid, expired or revoked token");
        let principal = if token.starts_with(TOKEN_PREFIX) {
            blocking(app, move |s| {
                Ok(s.token_principal(&token)?.map(|t| t.principal))
            })
            .await?
            .ok_or_else(refused)?
        } else {
            let email = app.tokens.verify(&token).ok_or_else(refused)?;
            blocking(app, move |s| s.principal(&email))
                .await?
                .ok_or_else(refused)?
        };
        Ok(Caller(principal))
    }
}

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let Caller(principal) = Caller::from_request_parts(parts, app).await?;
        if !principal.is_admin() {
            return Err(ApiError::forbidden("administrators only"));
        }
        Ok(AdminCaller(principal))
    }
}

/// `POST /auth/login` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    email: String,
    password: String,
}

/// `POST /auth/login` answer.
#[derive(Debug, Serialize)]
pub struct LoginResponse {
    token: String,
    /// Seconds since the epoch.
    expires_at: u64,
}

/// `POST /auth/login`: e-mail and password → a bearer token. Failures are uniform and
/// rate-limited like the Flight SQL handshake.
pub async fn login(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(body): Json<Login>,
) -> Result<Json<LoginResponse>, ApiError> {
    let address = peer.ip().to_string();
    if let Err(wait) = app.throttle.check(&body.email, Some(&address)) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many failed sign-in attempts; try again in {} s",
                wait.as_secs().max(1)
            ),
        ));
    }
    let email = body.email.clone();
    let principal = blocking(&app, move |s| {
        let principal = s.authenticate_password(&body.email, &body.password)?;
        let outcome = if principal.is_some() { "ok" } else { "refused" };
        s.record_event(
            &body.email.trim().to_lowercase(),
            "login",
            Some("http"),
            outcome,
        )?;
        Ok(principal)
    })
    .await?;
    let Some(principal) = principal else {
        app.throttle.failed(&email, Some(&address));
        return Err(ApiError::unauthenticated("invalid e-mail or password"));
    };
    app.throttle.succeeded(&email);
    let (token, expires_at) = app.tokens.issue(principal.email())?;
    Ok(Json(LoginResponse { token, expires_at }))
}
