//! Browser sessions: the bearer token in an HttpOnly, SameSite=Lax cookie (Secure behind
//! HTTPS), and a CSRF token derived from it for every cookie-authenticated change. Ended
//! sessions are kept in the state store (`quiver_catalog::state::identity`), for every edge.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use hmac::{Hmac, Mac};
use quiver_catalog::auth::principal::unix_now;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The session cookie.
pub const SESSION_COOKIE: &str = "quiver_session";
/// The CSRF cookie (readable by the page, unlike the session cookie).
pub const CSRF_COOKIE: &str = "quiver_csrf";
/// The header carrying the CSRF token on cookie-authenticated changes.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Derives CSRF tokens and seals cookies.
#[derive(Debug)]
pub struct Sessions {
    key: Vec<u8>,
}

impl Sessions {
    /// Sessions whose CSRF tokens are keyed with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
        mac.update(b"quiver csrf key");
        Self {
            key: mac.finalize().into_bytes().to_vec(),
        }
    }

    /// The CSRF token that goes with a session token.
    pub fn csrf_for(&self, session: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(session.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether `presented` is the CSRF token of `session`, compared in constant time.
    pub fn csrf_ok(&self, session: &str, presented: &str) -> bool {
        self.csrf_for(session)
            .as_bytes()
            .ct_eq(presented.as_bytes())
            .into()
    }

    /// Seals `value` (JSON) with an HMAC, for a cookie the browser carries but cannot change.
    pub fn seal<T: serde::Serialize>(&self, value: &T) -> String {
        use base64::Engine;
        let json = serde_json::to_vec(value).expect("sealed values serialize");
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        format!("{body}.{}", self.csrf_for(&body))
    }

    /// Opens what [`Sessions::seal`] sealed; `None` when it was changed or is not ours.
    pub fn open<T: serde::de::DeserializeOwned>(&self, sealed: &str) -> Option<T> {
        use base64::Engine;
        let (body, mac) = sealed.rsplit_once('.')?;
        if !self.csrf_ok(body, mac) {
            return None;
        }
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .ok()?;
        serde_json::from_slice(&json).ok()
    }
}

/// A random token (256 bits, URL-safe).
pub fn random_token() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// A cookie's value from the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the request came over HTTPS (directly or through a proxy that says so).
pub fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// Starts a browser session on `response`: the session cookie holding `token` and the CSRF
/// cookie, both ending when the token does (`expires_at`, seconds since the epoch).
pub fn start(
    response: &mut Response,
    sessions: &Sessions,
    token: &str,
    expires_at: u64,
    https: bool,
) {
    let max_age = expires_at.saturating_sub(unix_now());
    let secure = if https { "; Secure" } else { "" };
    let session = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    );
    let csrf = format!(
        "{CSRF_COOKIE}={}; Path=/; SameSite=Lax; Max-Age={max_age}{secure}",
        sessions.csrf_for(token)
    );
    for cookie in [session, csrf] {
        let value = HeaderValue::from_str(&cookie).expect("cookie values are ASCII");
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// Ends the browser session on `response`: both cookies cleared.
pub fn end(response: &mut Response) {
    for name in [SESSION_COOKIE, CSRF_COOKIE] {
        let value = HeaderValue::from_str(&format!("{name}=; Path=/; Max-Age=0; SameSite=Lax"))
            .expect("cookie values are ASCII");
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let s = Sessions::new(b"0123456789abcdef0123456789abcdef");
        let t = s.csrf_for("session-a");
        assert!(s.csrf_ok("session-a", &t));
        assert!(!s.csrf_ok("session-b", &t));
        assert!(!s.csrf_ok("session-a", ""));
    }

    #[test]
    fn cookies_are_read_from_any_cookie_header() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; quiver_session=tok"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("tok"));
        assert_eq!(cookie(&h, "b"), None);
    }
}
