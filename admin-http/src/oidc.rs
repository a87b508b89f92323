//! OpenID Connect sign-in (authorization-code flow with PKCE, `state` and `nonce`) with any
//! standard provider, found by its issuer's discovery document.
//!
//! Written on `jsonwebtoken` (already our JWT library, with the RSA/EC/EdDSA verifiers an
//! ID token needs) and the `reqwest` client already in the tree, instead of a second OIDC
//! stack with its own crypto: discovery, PKCE and the token request are a few lines each,
//! and the checks that matter are all here: the flow's state travels in a sealed,
//! short-lived cookie; the ID token's signature is checked against the provider's JWKS
//! (asymmetric algorithms only), with `iss`, `aud`, `exp` and `nonce`; the e-mail must be
//! verified and in an allowed domain; redirects after sign-in go only to local paths.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use quiver_catalog::auth::authenticator::{Credentials, Edge, IdpIdentity, SignedIn};
use quiver_catalog::auth::principal::unix_now;
use quiver_config::OidcProvider;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::ApiError;
use crate::session::{self, cookie, is_https};

/// The cookie carrying a sign-in in progress.
const FLOW_COOKIE: &str = "quiver_oidc";
/// How long a sign-in may take at the provider.
const FLOW_LIFETIME: u64 = 600;
/// How long discovery documents and key sets are reused.
const CACHE_FOR: Duration = Duration::from_secs(3600);

/// The configured providers and what was learned from them.
#[derive(Debug)]
pub struct Oidc {
    providers: Vec<OidcProvider>,
    public_url: String,
    http: reqwest::Client,
    discovered: Mutex<HashMap<String, (Instant, Arc<Discovery>)>>,
    keys: Mutex<HashMap<String, (Instant, Arc<JwkSet>)>>,
}

/// The parts of a discovery document we use.
#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

/// A sign-in in progress, sealed into [`FLOW_COOKIE`].
#[derive(Debug, Serialize, Deserialize)]
struct Flow {
    provider: String,
    state: String,
    nonce: String,
    verifier: String,
    next: String,
    exp: u64,
}

/// The ID-token claims we read; the groups claim is looked up by name.
#[derive(Debug, Deserialize)]
struct IdClaims {
    email: Option<String>,
    email_verified: Option<serde_json::Value>,
    name: Option<String>,
    nonce: Option<String>,
    #[serde(flatten)]
    rest: HashMap<String, serde_json::Value>,
}

fn random() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// Whether `next` is a path on this server (no scheme, no host, no `//` or `\\` tricks).
pub fn is_local_path(next: &str) -> bool {
    next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(|c| c.is_control())
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "oidc", message)
}

impl Oidc {
    /// Sign-in through `providers`, with redirect URIs under `public_url`.
    pub fn new(providers: Vec<OidcProvider>, public_url: &str) -> Self {
        Self {
            providers,
            public_url: public_url.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("an HTTP client with default settings"),
            discovered: Mutex::default(),
            keys: Mutex::default(),
        }
    }

    /// The providers, for the login page: (name, label).
    pub fn buttons(&self) -> Vec<(String, String)> {
        self.providers
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.display_name.clone().unwrap_or_else(|| p.name.clone()),
                )
            })
            .collect()
    }

    fn provider(&self, name: &str) -> Result<&OidcProvider, ApiError> {
        self.providers
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no identity provider `{name}`"),
                )
            })
    }

    fn redirect_uri(&self, provider: &str) -> String {
        format!("{}/auth/oidc/{provider}/callback", self.public_url)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, ApiError> {
        let response = self.http.get(url).send().await.map_err(|e| {
            tracing::warn!(url, error = %e, "identity provider unreachable");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "idp_unreachable",
                "the identity provider cannot be reached; try again later",
            )
        })?;
        let bytes = response
            .error_for_status()
            .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "idp_error", e.to_string()))?
            .bytes()
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "idp_error", e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "idp_error",
                format!("unexpected answer from {url}: {e}"),
            )
        })
    }

    async fn discovery(&self, p: &OidcProvider) -> Result<Arc<Discovery>, ApiError> {
        if let Some((at, d)) = lock(&self.discovered).get(&p.name)
            && at.elapsed() < CACHE_FOR
        {
            return Ok(d.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            p.issuer.trim_end_matches('/')
        );
        let d: Arc<Discovery> = Arc::new(self.get_json(&url).await?);
        if d.issuer.trim_end_matches('/') != p.issuer.trim_end_matches('/') {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "idp_error",
                format!(
                    "the provider says its issuer is `{}`, not `{}`",
                    d.issuer, p.issuer
                ),
            ));
        }
        lock(&self.discovered).insert(p.name.clone(), (Instant::now(), d.clone()));
        Ok(d)
    }

    async fn key_set(
        &self,
        p: &OidcProvider,
        d: &Discovery,
        refresh: bool,
    ) -> Result<Arc<JwkSet>, ApiError> {
        if !refresh
            && let Some((at, k)) = lock(&self.keys).get(&p.name)
            && at.elapsed() < CACHE_FOR
        {
            return Ok(k.clone());
        }
        let keys: Arc<JwkSet> = Arc::new(self.get_json(&d.jwks_uri).await?);
        lock(&self.keys).insert(p.name.clone(), (Instant::now(), keys.clone()));
        Ok(keys)
    }

    /// For token exchange: the provider that issued `token` (by its `iss`), and the
    /// token's verified claims. The token must be meant for that provider's client id.
    pub async fn verify_foreign_token(&self, token: &str) -> Result<IdpIdentity, ApiError> {
        let invalid =
            || bad_request("the subject token is not from a configured identity provider");
        let payload = token.split('.').nth(1).ok_or_else(invalid)?;
        let claims: serde_json::Value = URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(invalid)?;
        let issuer = claims["iss"]
            .as_str()
            .ok_or_else(invalid)?
            .trim_end_matches('/');
        let p = self
            .providers
            .iter()
            .find(|p| p.issuer.trim_end_matches('/') == issuer)
            .ok_or_else(invalid)?;
        let d = self.discovery(p).await?;
        let claims = self.verify_id_token(p, &d, token, None).await?;
        identity_of(p, claims)
    }

    /// Checks an ID token's signature and claims (and its nonce, for a sign-in); returns
    /// its claims.
    async fn verify_id_token(
        &self,
        p: &OidcProvider,
        d: &Discovery,
        id_token: &str,
        nonce: Option<&str>,
    ) -> Result<IdClaims, ApiError> {
        let invalid = |why: &str| bad_request(format!("the identity provider's ID token {why}"));
        let header = jsonwebtoken::decode_header(id_token).map_err(|_| invalid("is malformed"))?;
        if matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(invalid(
                "uses a shared-secret algorithm, which is not accepted",
            ));
        }
        let mut keys = self.key_set(p, d, false).await?;
        let find = |keys: &JwkSet| match &header.kid {
            Some(kid) => keys.find(kid).cloned(),
            None => keys.keys.first().cloned(),
        };
        let jwk = match find(&keys) {
            Some(jwk) => jwk,
            None => {
                // Keys rotate: fetch once more before giving up.
                keys = self.key_set(p, d, true).await?;
                find(&keys).ok_or_else(|| invalid("is signed with an unknown key"))?
            }
        };
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| invalid("names an unusable key"))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = 60;
        validation.set_issuer(&[&d.issuer]);
        validation.set_audience(&[&p.client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<IdClaims>(id_token, &key, &validation)
            .map_err(|e| invalid(&format!("was refused ({e})")))?
            .claims;
        if let Some(nonce) = nonce {
            let nonce_ok: bool = claims
                .nonce
                .as_deref()
                .unwrap_or_default()
                .as_bytes()
                .ct_eq(nonce.as_bytes())
                .into();
            if !nonce_ok {
                return Err(invalid("does not carry this sign-in's nonce"));
            }
        }
        Ok(claims)
    }
}

/// Applies the provider's rules to verified claims: a verified e-mail in an allowed domain,
/// and the groups claim.
fn identity_of(p: &OidcProvider, claims: IdClaims) -> Result<IdpIdentity, ApiError> {
    let email = claims
        .email
        .clone()
        .ok_or_else(|| bad_request("the identity provider did not share an e-mail address"))?
        .trim()
        .to_lowercase();
    // A missing claim is not a verified address: anyone can type any e-mail at some
    // providers, and this e-mail is who the person becomes here.
    let verified = match &claims.email_verified {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => s == "true",
        _ => false,
    };
    if !verified {
        return Err(ApiError::forbidden(if claims.email_verified.is_none() {
            "your e-mail address is not verified: the identity provider sent no `email_verified` claim (ask for the `email` scope, or have the provider include the claim)"
        } else {
            "your e-mail address is not verified with the identity provider"
        }));
    }
    let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
    if !p.allowed_domains.is_empty()
        && !p
            .allowed_domains
            .iter()
            .any(|d| d.trim_start_matches('@').eq_ignore_ascii_case(domain))
    {
        metrics::counter!("quiver_logins_total", "via" => "oidc", "outcome" => "refused")
            .increment(1);
        return Err(ApiError::forbidden(format!(
            "accounts from `{domain}` may not sign in here"
        )));
    }
    let groups = p
        .groups_claim
        .as_ref()
        .map(|claim| match claims.rest.get(claim) {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        });
    let attributes = p
        .attributes
        .iter()
        .filter_map(|(attribute, claim)| Some((attribute.clone(), claims.rest.get(claim)?.clone())))
        .collect();
    Ok(IdpIdentity {
        provider: p.name.clone(),
        email,
        name: claims.name,
        groups,
        attributes,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `?next=` on the login route.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LoginQuery {
    /// Where to go after signing in: a local path. Default `/`.
    next: Option<String>,
}

/// Start signing in with an identity provider: redirects to it.
#[utoipa::path(get, path = "/auth/oidc/{provider}/login", tag = "auth",
    params(("provider" = String, Path), LoginQuery),
    responses((status = 303, description = "to the identity provider"),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn login(
    State(app): State<AppState>,
    Path(provider): Path<String>,
    Query(query): Query<LoginQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let p = app.oidc.provider(&provider)?;
    let d = app.oidc.discovery(p).await?;
    let next = query
        .next
        .filter(|n| is_local_path(n))
        .unwrap_or_else(|| "/".into());
    let flow = Flow {
        provider: provider.clone(),
        state: random(),
        nonce: random(),
        verifier: random(),
        next,
        exp: unix_now() + FLOW_LIFETIME,
    };
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(flow.verifier.as_bytes()));
    let mut url = url::Url::parse(&d.authorization_endpoint).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "idp_error",
            "the provider's authorization endpoint is not a URL",
        )
    })?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &p.client_id)
        .append_pair("redirect_uri", &app.oidc.redirect_uri(&provider))
        .append_pair("scope", &p.scopes.join(" "))
        .append_pair("state", &flow.state)
        .append_pair("nonce", &flow.nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let secure = if is_https(&headers) { "; Secure" } else { "" };
    let cookie = format!(
        "{FLOW_COOKIE}={}; Path=/auth/oidc/; HttpOnly; SameSite=Lax; Max-Age={FLOW_LIFETIME}{secure}",
        app.sessions.seal(&flow)
    );
    let mut response = Redirect::to(url.as_str()).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ApiError::internal(&e))?,
    );
    Ok(response)
}

/// The provider's answer.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
}

/// Finish signing in: checks the provider's answer, signs the user in (creating the
/// account on first sign-in, syncing groups from the configured claim) and redirects.
#[utoipa::path(get, path = "/auth/oidc/{provider}/callback", tag = "auth",
    params(("provider" = String, Path), Callback),
    responses((status = 303, description = "signed in; to the page asked for"),
              (status = 400, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)))]
pub async fn callback(
    State(app): State<AppState>,
    Path(provider): Path<String>,
    Query(answer): Query<Callback>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let p = app.oidc.provider(&provider)?;
    let flow: Flow = cookie(&headers, FLOW_COOKIE)
        .and_then(|c| app.sessions.open(c))
        .filter(|f: &Flow| f.provider == provider && f.exp > unix_now())
        .ok_or_else(|| bad_request("this sign-in expired or was started elsewhere; start again"))?;
    let state_ok: bool = answer
        .state
        .as_deref()
        .unwrap_or_default()
        .as_bytes()
        .ct_eq(flow.state.as_bytes())
        .into();
    if !state_ok {
        return Err(bad_request(
            "the sign-in's state does not match; start again",
        ));
    }
    if let Some(error) = answer.error {
        return Err(bad_request(format!(
            "the identity provider refused: {error} {}",
            answer.error_description.unwrap_or_default()
        )));
    }
    let code = answer
        .code
        .ok_or_else(|| bad_request("the identity provider sent no code"))?;
    let d = app.oidc.discovery(p).await?;
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", &code)
        .append_pair("redirect_uri", &app.oidc.redirect_uri(&provider))
        .append_pair("code_verifier", &flow.verifier)
        .finish();
    let response = app
        .oidc
        .http
        .post(&d.token_endpoint)
        .basic_auth(
            url::form_urlencoded::byte_serialize(p.client_id.as_bytes()).collect::<String>(),
            Some(
                url::form_urlencoded::byte_serialize(p.client_secret.as_bytes())
                    .collect::<String>(),
            ),
        )
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "token request failed");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "idp_unreachable",
                "the identity provider cannot be reached; try again later",
            )
        })?;
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    if !status.is_success() {
        tracing::warn!(provider, %status, "code exchange refused");
        return Err(bad_request(
            "the identity provider refused the sign-in code (used already, or expired); start again",
        ));
    }
    let id_token = serde_json::from_slice::<TokenAnswer>(&body)
        .ok()
        .and_then(|t| t.id_token)
        .ok_or_else(|| bad_request("the identity provider sent no ID token"))?;
    let claims = app
        .oidc
        .verify_id_token(p, &d, &id_token, Some(&flow.nonce))
        .await?;

    // The provider has proven who this is; the Authenticator creates or updates the
    // account, syncs its groups, audits and issues the session's token.
    let identity = identity_of(p, claims)?;
    let SignedIn {
        token, expires_at, ..
    } = app
        .auth
        .sign_in(Credentials::Idp(identity), Edge::Oidc, None)
        .await?;
    let next = if is_local_path(&flow.next) {
        flow.next
    } else {
        "/".into()
    };
    let mut response = Redirect::to(&next).into_response();
    session::start(
        &mut response,
        &app.sessions,
        &token,
        expires_at,
        is_https(&headers),
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("quiver_oidc=; Path=/auth/oidc/; Max-Age=0; HttpOnly"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        for ok in ["/", "/connect", "/catalog?x=1"] {
            assert!(is_local_path(ok), "{ok}");
        }
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "evil",
            "/\nx",
            "",
        ] {
            assert!(!is_local_path(bad), "{bad}");
        }
    }
}
