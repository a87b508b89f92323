//! Who is asking: principals, password hashes (argon2id) and bearer tokens (JWT).

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};

use crate::CatalogError;

/// The group whose members read everything and administer the server.
pub const ADMIN_GROUP: &str = "Admin";
/// The group every active user belongs to.
pub const EVERYONE_GROUP: &str = "Everyone";

/// An authenticated user and the groups it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    email: String,
    groups: Vec<String>,
}

impl Principal {
    /// A principal; `groups` should include `Everyone`.
    pub fn new(email: String, mut groups: Vec<String>) -> Self {
        groups.sort();
        groups.dedup();
        Self { email, groups }
    }

    /// The user's e-mail, its identity everywhere.
    pub fn email(&self) -> &str {
        &self.email
    }

    /// Group names, sorted.
    pub fn groups(&self) -> &[String] {
        &self.groups
    }

    /// Member of `Admin`: reads everything.
    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|g| g == ADMIN_GROUP)
    }
}

/// argon2id with OWASP's recommended parameters (19 MiB, 2 passes, 1 lane).
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("static argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password into a PHC string (`$argon2id$…`).
pub fn hash_password(password: &str) -> Result<String, CatalogError> {
    argon2()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| CatalogError::Internal(format!("password hashing failed: {e}")))
}

/// Checks `password` against a PHC hash; any malformed hash is a mismatch.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A valid hash of a random password, verified against when the user is unknown so that
/// "no such user" costs the same time as "wrong password".
pub fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        hash_password(&uuid::Uuid::new_v4().to_string()).expect("hashing a random password")
    })
}

/// Claims of a Quiver bearer token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    sub: String,
    /// Unique per token, so two tokens issued in the same second differ (signing out ends
    /// exactly one).
    #[serde(default)]
    jti: String,
    iss: String,
    aud: String,
    iat: u64,
    nbf: u64,
    exp: u64,
    /// The credential this token was obtained with, when it must end with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    origin: Option<Origin>,
}

/// A credential another one was obtained with, and so ends with: a token or a PAT made by
/// signing in with a PAT, or with a service account's client credentials, is refused once
/// that PAT or client is revoked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Origin {
    /// A personal access token, by id.
    Token(String),
    /// An OAuth client (service account), by client id.
    Client(String),
}

impl From<Origin> for String {
    fn from(origin: Origin) -> String {
        origin.to_string()
    }
}

impl TryFrom<String> for Origin {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.split_once(':') {
            Some(("pat", id)) => Ok(Origin::Token(id.to_string())),
            Some(("client", id)) => Ok(Origin::Client(id.to_string())),
            _ => Err(format!("unknown credential origin `{text}`")),
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Token(id) => write!(f, "pat:{id}"),
            Origin::Client(id) => write!(f, "client:{id}"),
        }
    }
}

/// What a valid bearer token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The user's e-mail.
    pub email: String,
    /// The token's unique id (what signing out ends).
    pub jti: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// The credential it was obtained with, if it ends with it.
    pub origin: Option<Origin>,
}

const ISSUER: &str = "quiver";
const AUDIENCE: &str = "quiver";

/// Issues and checks HS256 bearer tokens. Validation is stricter than `jsonwebtoken`'s
/// defaults: one algorithm, `exp`/`nbf`/`iss`/`aud` all required, 30 s of leeway.
#[derive(Clone)]
pub struct TokenSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    lifetime: Duration,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// A signer using `secret` (at least 32 bytes) for tokens valid for `lifetime`.
    pub fn new(secret: &[u8], lifetime: Duration) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            lifetime,
        }
    }

    /// How long issued tokens are valid.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A token naming `email`, obtained with `origin` (it ends with it), and when it
    /// expires (seconds since the epoch).
    pub fn issue(
        &self,
        email: &str,
        origin: Option<Origin>,
    ) -> Result<(String, u64), CatalogError> {
        let now = unix_now();
        let claims = Claims {
            sub: email.to_string(),
            jti: uuid::Uuid::new_v4().to_string(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now,
            nbf: now,
            exp: now + self.lifetime.as_secs(),
            origin,
        };
        let token = encode(
            &Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &self.encoding,
        )
        .map_err(|e| CatalogError::Internal(format!("token signing failed: {e}")))?;
        Ok((token, claims.exp))
    }

    /// What a valid token says; `None` for anything forged, expired or malformed. Whether
    /// it was ended or its origin revoked is the state store's to say
    /// ([`Identity::bearer_principal`](crate::state::Identity::bearer_principal)).
    pub fn verify(&self, token: &str) -> Option<Verified> {
        let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.leeway = 30;
        validation.validate_nbf = true;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        decode::<Claims>(token, &self.decoding, &validation)
            .ok()
            .map(|data| Verified {
                email: data.claims.sub,
                jti: data.claims.jti,
                exp: data.claims.exp,
                origin: data.claims.origin,
            })
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_round_trip() {
        let hash = hash_password("s3cret-pass").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "s3cret-pass"));
        assert!(!verify_password(&hash, "s3cret-pasS"));
        assert!(!verify_password("not a hash", "s3cret-pass"));
    }

    #[test]
    fn tokens_verify_only_with_the_same_key_and_unexpired() {
        let signer = TokenSigner::new(&[7u8; 32], Duration::from_secs(60));
        let (token, _) = signer
            .issue("ada@example.com", Some(Origin::Token("t1".into())))
            .unwrap();
        let verified = signer.verify(&token).unwrap();
        assert_eq!(verified.email, "ada@example.com");
        assert_eq!(verified.origin, Some(Origin::Token("t1".into())));
        let other = TokenSigner::new(&[8u8; 32], Duration::from_secs(60));
        assert_eq!(other.verify(&token), None);
        let mut tampered = token.clone();
        tampered.pop();
        assert_eq!(signer.verify(&tampered), None);
        // alg: none with the same claims
        let parts: Vec<&str> = token.split('.').collect();
        let none_header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(signer.verify(&format!("{none_header}.{}.", parts[1])), None);
    }

    fn base64_url(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }
}
