//! The OAuth 2.0 token endpoint (RFC 6749) for drivers and services: the client
//! credentials grant for service accounts, and token exchange (RFC 8693) of an identity
//! provider's ID token for a Quiver token, so the ADBC Flight SQL driver's
//! `adbc.flight.sql.oauth.*` options can sign in on their own. Client authentication by
//! HTTP Basic (`client_secret_basic`) or form fields (`client_secret_post`); errors in the
//! RFC's `{"error", "error_description"}` shape, which OAuth clients parse.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use base64::Engine;
use quiver_catalog::auth::authenticator::{Credentials, Edge, SignInError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::ApiError;

const CLIENT_CREDENTIALS: &str = "client_credentials";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// A token request (form-encoded).
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct TokenRequest {
    /// `client_credentials`.
    grant_type: String,
    /// The client id, unless sent with HTTP Basic.
    client_id: Option<String>,
    /// The client secret, unless sent with HTTP Basic.
    client_secret: Option<String>,
    /// Ignored: a token carries its user's grants, whatever the scope.
    #[allow(dead_code)]
    scope: Option<String>,
    /// Token exchange: an ID token (or JWT) from a configured identity provider, issued to
    /// Quiver's client id there.
    subject_token: Option<String>,
    /// Token exchange: `urn:ietf:params:oauth:token-type:id_token` or `…:jwt`.
    subject_token_type: Option<String>,
}

/// A successful token response.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TokenResponse {
    access_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    /// Seconds.
    expires_in: u64,
    /// For token exchange: what was issued (an access token).
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_token_type: Option<&'static str>,
}

const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut response = (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"quiver\""),
        );
    }
    no_store(response)
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A successful token answer (not cached), or the error of issuing it.
fn token_response(
    issued: Result<(String, u64), quiver_catalog::CatalogError>,
    lifetime: std::time::Duration,
    issued_token_type: Option<&'static str>,
) -> Response {
    match issued {
        Ok((access_token, _)) => no_store(
            Json(TokenResponse {
                access_token,
                token_type: "Bearer",
                expires_in: lifetime.as_secs(),
                issued_token_type,
            })
            .into_response(),
        ),
        Err(e) => crate::error::ApiError::from(e).into_response(),
    }
}

/// `client_id:client_secret` from HTTP Basic, each form-urlencoded (RFC 6749 §2.3.1).
fn basic_client(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

/// Exchange client credentials for a bearer token.
#[utoipa::path(post, path = "/oauth/token", tag = "auth",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = TokenResponse), (status = 400), (status = 401)))]
pub(crate) async fn token(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(request): Form<TokenRequest>,
) -> Response {
    match request.grant_type.as_str() {
        CLIENT_CREDENTIALS => {}
        TOKEN_EXCHANGE => return exchange(&app, &request).await,
        other => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("grant_type `{other}` is not supported; use client_credentials"),
            );
        }
    }
    let Some((client_id, secret)) = basic_client(&headers)
        .or_else(|| request.client_id.clone().zip(request.client_secret.clone()))
    else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "send client_id and client_secret (HTTP Basic or form fields)",
        );
    };
    let address = peer.ip().to_string();
    let credentials = Credentials::Client {
        id: client_id,
        secret,
    };
    match app
        .auth
        .sign_in(credentials, Edge::OAuth, Some(&address))
        .await
    {
        Ok(signed_in) => token_response(
            Ok((signed_in.token, signed_in.expires_at)),
            app.auth.tokens().lifetime(),
            None,
        ),
        Err(SignInError::Throttled(wait)) => oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "slow_down",
            &format!(
                "too many failed attempts; try again in {} s",
                wait.as_secs().max(1)
            ),
        ),
        Err(SignInError::Refused | SignInError::Deactivated) => oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client, wrong secret, or revoked",
        ),
        Err(SignInError::Failed(e)) => ApiError::from(e).into_response(),
    }
}

/// Token exchange: an identity provider's ID token in, a Quiver access token out, for the
/// same person (created on first use, groups synced, like a browser sign-in).
async fn exchange(app: &AppState, request: &TokenRequest) -> Response {
    let accepted = [
        "urn:ietf:params:oauth:token-type:id_token",
        "urn:ietf:params:oauth:token-type:jwt",
    ];
    let Some(subject) = request.subject_token.as_deref() else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token exchange needs subject_token",
        );
    };
    if !request
        .subject_token_type
        .as_deref()
        .is_some_and(|t| accepted.contains(&t))
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "subject_token_type must be urn:ietf:params:oauth:token-type:id_token or …:jwt",
        );
    }
    let identity = match app.oidc.verify_foreign_token(subject).await {
        Ok(identity) => identity,
        Err(e) => {
            metrics::counter!("quiver_logins_total", "via" => "token_exchange", "outcome" => "refused")
                .increment(1);
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", e.message());
        }
    };
    let signed_in = app
        .auth
        .sign_in(Credentials::Idp(identity), Edge::TokenExchange, None)
        .await;
    match signed_in {
        Ok(signed_in) => token_response(
            Ok((signed_in.token, signed_in.expires_at)),
            app.auth.tokens().lifetime(),
            Some(ACCESS_TOKEN_TYPE),
        ),
        Err(SignInError::Deactivated) => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the account is deactivated",
        ),
        Err(e) => ApiError::from(e).into_response(),
    }
}
