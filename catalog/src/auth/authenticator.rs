//! Signing a caller in, written once for every edge that does it: the Flight SQL
//! handshake, `POST /auth/login`, the web UI's sign-in form and `POST /oauth/token`; and
//! resolving the bearer credential of every later call (Flight SQL and HTTP alike).
//!
//! Each sign-in goes throttle → verify → record → issue: refused early when the account or
//! address has failed too often, checked against the state store (in the same time for
//! unknown accounts, inactive ones and wrong secrets), written to the audit log with the
//! edge it came through, and answered with a bearer token that ends with the credential it
//! was obtained with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::CatalogError;
use crate::auth::principal::{Origin, Principal, TokenSigner, Verified, unix_now};
use crate::auth::throttle::LoginThrottle;
use crate::state::StateStore;
use crate::state::identity::{TOKEN_PREFIX, token_hash};

/// Resolved credentials kept before the cache is pruned.
const MAX_CACHED: usize = 4096;
/// A personal access token's use is recorded at most this often.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Basic credentials sent with every call are verified again at least this often.
const BASIC_REMEMBERED: Duration = Duration::from_secs(15 * 60);

/// What a caller signs in with.
#[derive(Clone)]
pub enum Credentials {
    /// An e-mail and a password; tools that only know user and password (DBeaver, JDBC)
    /// may pass a personal access token of that user as the password.
    Password { email: String, password: String },
    /// An OAuth client's id and secret (client credentials grant).
    Client { id: String, secret: String },
    /// An identity an identity provider vouched for (an ID token the edge verified): the
    /// user is created or updated, and their provider groups synced, on sign-in.
    Idp(IdpIdentity),
}

/// Who an identity provider says a person is.
#[derive(Debug, Clone)]
pub struct IdpIdentity {
    /// The provider's name in the configuration.
    pub provider: String,
    /// The verified e-mail.
    pub email: String,
    /// The display name, when the provider gives one.
    pub name: Option<String>,
    /// The provider's groups, when its configuration maps a groups claim.
    pub groups: Option<Vec<String>>,
    /// User attributes from the provider's claims (`oidc.attributes`), by attribute name.
    pub attributes: std::collections::BTreeMap<String, serde_json::Value>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Password { email, .. } => write!(f, "Password({email})"),
            Self::Client { id, .. } => write!(f, "Client({id})"),
            Self::Idp(identity) => write!(f, "Idp({}, {})", identity.provider, identity.email),
        }
    }
}

impl Credentials {
    /// The account the attempt counts against.
    fn account(&self) -> String {
        match self {
            Self::Password { email, .. } => email.trim().to_lowercase(),
            Self::Client { id, .. } => id.clone(),
            Self::Idp(identity) => identity.email.trim().to_lowercase(),
        }
    }
}

/// The edge a sign-in came through, as the audit log and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// The Flight SQL handshake.
    Flight,
    /// `POST /auth/login`.
    Http,
    /// The web UI's sign-in form.
    Web,
    /// `POST /oauth/token` with client credentials.
    OAuth,
    /// The web UI's sign-in through an OpenID provider.
    Oidc,
    /// `POST /oauth/token` exchanging a provider's ID token.
    TokenExchange,
}

impl Edge {
    fn metric(self) -> &'static str {
        match self {
            Self::Flight => "flight",
            Self::Http => "http",
            Self::Web => "web",
            Self::OAuth => "oauth",
            Self::Oidc => "oidc",
            Self::TokenExchange => "token_exchange",
        }
    }

    fn audit(self) -> &'static str {
        match self {
            Self::Flight => "flight",
            Self::Http => "http",
            Self::Web => "web",
            Self::OAuth => "oauth client_credentials",
            Self::Oidc => "oidc",
            Self::TokenExchange => "oauth token_exchange",
        }
    }
}

/// A successful sign-in.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// Who signed in.
    pub principal: Principal,
    /// The bearer token issued.
    pub token: String,
    /// When it expires (seconds since the epoch).
    pub expires_at: u64,
}

/// Why a sign-in did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Too many recent failures for the account or the address; try again after this long.
    #[error("too many failed sign-in attempts; try again in {} s", .0.as_secs().max(1))]
    Throttled(Duration),
    /// Wrong, unknown, inactive or revoked: deliberately not said which.
    #[error("invalid credentials")]
    Refused,
    /// An identity provider vouched for the person, whose account here is deactivated
    /// (said plainly: the provider has proven who asks).
    #[error("your account is deactivated; ask an administrator")]
    Deactivated,
    /// The state store failed.
    #[error(transparent)]
    Failed(#[from] CatalogError),
}

/// A bearer credential resolved to the principal it stands for.
#[derive(Debug, Clone)]
pub struct Bearer {
    /// Who calls.
    pub principal: Principal,
    /// A session token's claims; `None` for a personal access token.
    pub session: Option<Verified>,
    /// The credential a token made with this one ends with.
    pub origin: Option<Origin>,
}

/// Why a bearer credential was refused.
#[derive(Debug, thiserror::Error)]
pub enum BearerError {
    /// A personal access token that is unknown, revoked or expired, or whose owner is not
    /// active.
    #[error("invalid, expired or revoked access token")]
    Token,
    /// A session token that is malformed, badly signed or expired.
    #[error("invalid or expired token; sign in again")]
    Invalid,
    /// A session token that was signed out, or whose origin or account is gone.
    #[error(
        "the session has ended, its credential was revoked, or the account is no longer active; sign in again"
    )]
    Ended,
    /// The state store failed.
    #[error(transparent)]
    Failed(#[from] CatalogError),
}

/// A resolved credential, valid while the state's generation is unchanged (any change to
/// users, memberships, tokens or sessions, in this process or another, moves it).
#[derive(Debug, Clone)]
struct Cached {
    generation: u64,
    bearer: Bearer,
    /// A PAT's id, expiry and when its use was last recorded.
    token: Option<(String, Option<u64>, Instant)>,
}

/// Signs callers in and resolves their bearer credentials; one per server, shared by
/// every edge.
#[derive(Debug)]
pub struct Authenticator {
    state: Arc<StateStore>,
    tokens: TokenSigner,
    throttle: Arc<LoginThrottle>,
    /// Resolved credentials by token hash, so most calls skip the state lookup.
    cache: Mutex<HashMap<String, Cached>>,
    /// Basic credentials verified recently, by their MAC under `basic_key`: a client that
    /// sends them with every call pays for one password check, not one per call.
    basic: Mutex<HashMap<[u8; 32], (u64, Instant, Principal)>>,
    /// A key of this process only, so what `basic` remembers says nothing of a password.
    basic_key: [u8; 32],
}

impl Authenticator {
    /// An authenticator issuing tokens with `tokens`.
    pub fn new(state: Arc<StateStore>, tokens: TokenSigner) -> Self {
        Self {
            state,
            tokens,
            throttle: Arc::default(),
            cache: Mutex::default(),
            basic: Mutex::default(),
            basic_key: rand::random(),
        }
    }

    /// The principal behind Basic credentials sent with a call instead of a bearer token
    /// (the Go `database/sql` driver sends them with every call): signed in as a sign-in
    /// is (throttled, audited) the first time, then remembered while no user, group or
    /// grant changes, for at most [`BASIC_REMEMBERED`].
    pub async fn basic(
        &self,
        credentials: Credentials,
        edge: Edge,
        address: Option<&str>,
    ) -> Result<Principal, SignInError> {
        use hmac::{Hmac, Mac};
        let Credentials::Password { email, password } = &credentials else {
            return Err(SignInError::Refused);
        };
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.basic_key).expect("any key size");
        mac.update(email.as_bytes());
        mac.update(b"\0");
        mac.update(password.as_bytes());
        let key: [u8; 32] = mac.finalize().into_bytes().into();
        let generation = self.state.generation();
        let remembered = |basic: &HashMap<[u8; 32], (u64, Instant, Principal)>| {
            basic
                .get(&key)
                .filter(|(g, at, _)| *g == generation && at.elapsed() < BASIC_REMEMBERED)
                .map(|(_, _, principal)| principal.clone())
        };
        if let Some(principal) = remembered(&self.basic.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(principal);
        }
        let principal = self.sign_in(credentials, edge, address).await?.principal;
        let mut basic = self.basic.lock().unwrap_or_else(|p| p.into_inner());
        if basic.len() > MAX_CACHED {
            basic.retain(|_, (g, at, _)| *g == generation && at.elapsed() < BASIC_REMEMBERED);
        }
        basic.insert(key, (generation, Instant::now(), principal.clone()));
        Ok(principal)
    }

    /// The principal behind a bearer credential: a personal access token, or a session
    /// token that was neither signed out nor outlived its origin or its account.
    pub async fn bearer(&self, token: &str) -> Result<Bearer, BearerError> {
        let token = token.trim();
        let pat = token.starts_with(TOKEN_PREFIX);
        let verified = match pat {
            true => None,
            false => Some(self.tokens.verify(token).ok_or(BearerError::Invalid)?),
        };
        let key = token_hash(token);
        let generation = self.state.generation();
        if let Some(bearer) = self.cached(&key, generation)? {
            return Ok(bearer);
        }
        let state = self.state.clone();
        let secret = token.to_string();
        let resolved = tokio::task::spawn_blocking(move || match verified {
            None => Ok(state.identity().token_principal(&secret)?.map(|used| {
                let token = (used.id.clone(), used.expires_at, Instant::now());
                let bearer = Bearer {
                    principal: used.principal,
                    session: None,
                    origin: Some(Origin::Token(used.id)),
                };
                (bearer, Some(token))
            })),
            Some(verified) => {
                Ok::<_, CatalogError>(state.identity().bearer_principal(&verified)?.map(
                    |principal| {
                        let origin = verified.origin.clone();
                        let bearer = Bearer {
                            principal,
                            session: Some(verified),
                            origin,
                        };
                        (bearer, None)
                    },
                ))
            }
        })
        .await
        .map_err(|e| CatalogError::Internal(format!("credential lookup: {e}")))??;
        let Some(resolved) = resolved else {
            return Err(if pat {
                BearerError::Token
            } else {
                BearerError::Ended
            });
        };
        let (bearer, token) = resolved;
        if let Some((id, _, _)) = &token {
            // The use is recorded off the caller's path: a write to the state store costs
            // a commit, more than the rest of a new connection together.
            self.touch_later(id.clone());
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        // One entry per token: forget stale ones before the map grows large.
        if cache.len() > MAX_CACHED {
            cache.retain(|_, c| c.generation == generation);
            if cache.len() > MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(
            key,
            Cached {
                generation,
                bearer: bearer.clone(),
                token,
            },
        );
        Ok(bearer)
    }

    /// A credential resolved since the state last changed; a PAT past its expiry is
    /// refused, and its use recorded once a minute.
    fn cached(&self, key: &str, generation: u64) -> Result<Option<Bearer>, BearerError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let Some(cached) = cache.get_mut(key).filter(|c| c.generation == generation) else {
            return Ok(None);
        };
        if let Some((id, expires, touched)) = &mut cached.token {
            if expires.is_some_and(|e| e <= unix_now()) {
                return Err(BearerError::Token);
            }
            if touched.elapsed() >= TOUCH_EVERY {
                *touched = Instant::now();
                self.touch_later(id.clone());
            }
        }
        Ok(Some(cached.bearer.clone()))
    }

    /// Records a use of personal access token `id` (its `last used` time) in the background.
    fn touch_later(&self, id: String) {
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = state.identity().touch_token(&id) {
                tracing::warn!(error = %e, "cannot record token use");
            }
        });
    }

    /// The signer of the tokens issued.
    pub fn tokens(&self) -> &TokenSigner {
        &self.tokens
    }

    /// Signs in with `credentials` from `address` through `edge`.
    pub async fn sign_in(
        &self,
        credentials: Credentials,
        edge: Edge,
        address: Option<&str>,
    ) -> Result<SignedIn, SignInError> {
        let account = credentials.account();
        // A provider's word is not guessed, so it is not throttled: an attacker guessing a
        // person's password does not lock them out of single sign-on.
        let vouched = matches!(credentials, Credentials::Idp(_));
        let state = self.state.clone();
        let who = account.clone();
        let throttle = self.throttle.clone();
        let from = address.map(str::to_string);
        let verified = tokio::task::spawn_blocking(move || {
            let address = from.as_deref();
            if !vouched && let Err(wait) = throttle.check(&state, &who, address)? {
                return Ok(Err(SignInError::Throttled(wait)));
            }
            let verified = verify(&state, &credentials)?;
            let outcome = if verified.is_some() { "ok" } else { "refused" };
            state
                .audit()
                .record_event(&who, "login", Some(edge.audit()), outcome)?;
            match &verified {
                _ if vouched => {}
                Some(_) => throttle.succeeded(&state, &who)?,
                None => throttle.failed(&state, &who, address)?,
            }
            Ok::<_, CatalogError>(Ok(verified))
        })
        .await
        .map_err(|e| CatalogError::Internal(format!("sign-in task: {e}")))???;
        let outcome = if verified.is_some() { "ok" } else { "refused" };
        metrics::counter!("quiver_logins_total", "via" => edge.metric(), "outcome" => outcome)
            .increment(1);
        let Some((principal, origin)) = verified else {
            tracing::warn!(account = %account, address = ?address, via = edge.metric(), "sign-in refused");
            return Err(if vouched {
                SignInError::Deactivated
            } else {
                SignInError::Refused
            });
        };
        let (token, expires_at) = self.tokens.issue(principal.email(), origin)?;
        tracing::info!(user = %principal.email(), via = edge.metric(), "signed in");
        Ok(SignedIn {
            principal,
            token,
            expires_at,
        })
    }
}

/// The principal `credentials` stand for and the credential a token issued for them ends
/// with; `None` when refused.
fn verify(
    state: &StateStore,
    credentials: &Credentials,
) -> Result<Option<(Principal, Option<Origin>)>, CatalogError> {
    Ok(match credentials {
        Credentials::Password { email, password } if password.starts_with(TOKEN_PREFIX) => state
            .identity()
            .token_principal(password)?
            .filter(|t| t.principal.email() == email.trim().to_lowercase())
            .map(|t| (t.principal, Some(Origin::Token(t.id)))),
        Credentials::Password { email, password } => state
            .identity()
            .authenticate_password(email, password)?
            .map(|p| (p, None)),
        Credentials::Client { id, secret } => state
            .identity()
            .client_principal(id, secret)?
            .map(|p| (p, Some(Origin::Client(id.clone())))),
        Credentials::Idp(identity) => state
            .identity()
            .sign_in_from_idp(
                &identity.provider,
                &identity.email,
                identity.name.as_deref(),
                identity.groups.as_deref(),
                &identity.attributes,
            )?
            .map(|p| (p, None)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(email: &str, password: &str) -> Credentials {
        Credentials::Password {
            email: email.into(),
            password: password.into(),
        }
    }

    #[tokio::test]
    async fn signs_in_audits_and_throttles_in_one_place() {
        let state = Arc::new(StateStore::in_memory().unwrap());
        state
            .identity()
            .ensure_bootstrap_admin("ada@example.com", "a-long-password")
            .unwrap();
        let auth = Authenticator::new(
            state.clone(),
            TokenSigner::new(&[7; 32], Duration::from_secs(60)),
        );
        let ok = auth
            .sign_in(
                password("Ada@Example.com", "a-long-password"),
                Edge::Web,
                None,
            )
            .await
            .unwrap();
        assert!(auth.tokens().verify(&ok.token).is_some());
        for _ in 0..10 {
            assert!(matches!(
                auth.sign_in(
                    password("ada@example.com", "wrong"),
                    Edge::Http,
                    Some("10.0.0.1")
                )
                .await,
                Err(SignInError::Refused)
            ));
        }
        assert!(matches!(
            auth.sign_in(
                password("ada@example.com", "a-long-password"),
                Edge::Http,
                None
            )
            .await,
            Err(SignInError::Throttled(_))
        ));
        let logins = state
            .audit()
            .log(&crate::state::audit::AuditQuery {
                action: Some("login".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(logins.len(), 11);
        assert!(logins.iter().any(|r| r.target.as_deref() == Some("web")));
    }
}
