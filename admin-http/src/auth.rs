//! Who is calling: a bearer credential (a Quiver JWT or a personal access token) or the
//! browser session cookie, resolved to a principal; password sign-in and sign-out.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use quiver_catalog::auth::authenticator::{BearerError, Credentials, Edge, SignedIn};
use quiver_catalog::{Origin, Principal, Verified};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::session::{self, CSRF_HEADER, SESSION_COOKIE, cookie, is_https};
use crate::{AppState, blocking};

/// The signed-in caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who it is.
    pub principal: Principal,
    /// The bearer token presented, when it was a session token (not a PAT): what signing
    /// out ends.
    session: Option<Verified>,
    /// The credential a token made by this caller must end with.
    pub origin: Option<Origin>,
}

/// The principal behind a bearer credential (a PAT, or a session token that was neither
/// ended nor outlived its origin), and that credential as an origin for tokens made with it.
pub(crate) async fn resolve_bearer(
    app: &AppState,
    token: &str,
) -> Result<Option<(Principal, Option<Verified>, Option<Origin>)>, ApiError> {
    match app.auth.bearer(token).await {
        Ok(bearer) => Ok(Some((bearer.principal, bearer.session, bearer.origin))),
        Err(BearerError::Failed(e)) => Err(e.into()),
        Err(_) => Ok(None),
    }
}

/// The signed-in caller, a member of `Admin`.
#[derive(Debug, Clone)]
pub struct AdminCaller(pub Principal);

/// The credential of a request: the bearer token, else the session cookie (then changes
/// must carry the session's CSRF token).
fn credential(parts: &Parts, app: &AppState) -> Result<String, ApiError> {
    if let Some(header) = parts.headers.get(header::AUTHORIZATION) {
        let header = header
            .to_str()
            .map_err(|_| ApiError::unauthenticated("malformed authorization header"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| ApiError::unauthenticated("expected `Authorization: Bearer <token>`"))?;
        return Ok(token.trim().to_string());
    }
    let Some(session) = cookie(&parts.headers, SESSION_COOKIE) else {
        return Err(ApiError::unauthenticated(
            "sign in: send `Authorization: Bearer <token>` or sign in at /auth/login",
        ));
    };
    let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let presented = parts
        .headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !safe && !app.sessions.csrf_ok(session, presented) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            format!("missing or wrong {CSRF_HEADER} header for a cookie-authenticated change"),
        ));
    }
    Ok(session.to_string())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let token = credential(parts, app)?;
        let (principal, session, origin) = resolve_bearer(app, &token).await?.ok_or_else(|| {
            ApiError::unauthenticated(
                "invalid, expired or revoked token, or the session has ended; sign in again",
            )
        })?;
        Ok(Caller {
            principal,
            session,
            origin,
        })
    }
}

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, app).await?;
        if !caller.principal.is_admin() {
            return Err(ApiError::forbidden("administrators only"));
        }
        Ok(AdminCaller(caller.principal))
    }
}

/// `POST /auth/login` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Login {
    /// The user's e-mail.
    email: String,
    /// The user's password.
    password: String,
}

/// `POST /auth/login` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LoginResponse {
    /// A bearer token for the API and Flight SQL.
    token: String,
    /// Seconds since the epoch.
    expires_at: u64,
    /// The CSRF token to send as `x-csrf-token` with cookie-authenticated changes.
    csrf_token: String,
}

/// Sign in with e-mail and password: a bearer token, and a session cookie for browsers.
/// Failures are uniform and rate-limited like the Flight SQL handshake.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = Login,
    responses((status = 200, body = LoginResponse), (status = 401, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody)))]
pub(crate) async fn login(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<Login>,
) -> Result<Response, ApiError> {
    let address = peer.ip().to_string();
    let credentials = Credentials::Password {
        email: body.email,
        password: body.password,
    };
    let SignedIn {
        token, expires_at, ..
    } = app
        .auth
        .sign_in(credentials, Edge::Http, Some(&address))
        .await
        .map_err(ApiError::from)?;
    let body = LoginResponse {
        csrf_token: app.sessions.csrf_for(&token),
        token: token.clone(),
        expires_at,
    };
    let mut response = Json(body).into_response();
    session::start(
        &mut response,
        &app.sessions,
        &token,
        expires_at,
        is_https(&headers),
    );
    Ok(response)
}

/// End the session: its token stops working and the cookies are cleared.
#[utoipa::path(post, path = "/auth/logout", tag = "auth",
    responses((status = 204), (status = 401, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn logout(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    if let Some(session) = caller.session {
        let email = caller.principal.email().to_string();
        blocking(&app, move |s| {
            s.identity().end_session(&email, &session.jti, session.exp)
        })
        .await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    session::end(&mut response);
    Ok(response)
}
