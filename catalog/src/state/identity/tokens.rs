//! Personal access tokens: `qvr_` + 256 random bits, shown once, stored only as a SHA-256
//! hash (the secret is high-entropy, so a fast hash is enough and lookups stay indexed),
//! with a display prefix, an optional expiry and revocation.

use crate::state::{Conn, params};
use base64::Engine;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Identity, user_active};
use crate::CatalogError;
use crate::auth::principal::{Origin, Principal, unix_now};

/// Revokes every token made with `origin`, and the tokens made with those, and so on;
/// returns how many.
pub(crate) fn revoke_derived(tx: &Conn<'_>, origin: &Origin) -> Result<usize, CatalogError> {
    tx.execute(
        "UPDATE tokens SET revoked_at = coalesce(revoked_at, $1) WHERE id IN (
             WITH RECURSIVE derived(id) AS (
                 SELECT id FROM tokens WHERE origin = $2
                 UNION
                 SELECT t.id FROM tokens t JOIN derived d ON t.origin = 'pat:' || d.id)
             SELECT id FROM derived)",
        params![unix_now() as i64, origin.to_string()],
    )
}

/// Every personal access token starts with this, so it is recognisable (and scannable by
/// secret detectors) wherever it leaks.
pub const TOKEN_PREFIX: &str = "qvr_";

/// Characters of a token kept in the clear, to tell tokens apart in lists.
const DISPLAY_LEN: usize = 12;

/// Longest lifetime a token may be given.
pub const MAX_TOKEN_DAYS: u32 = 3650;

/// A token as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Id, for revoking.
    pub id: String,
    /// Owner.
    pub email: String,
    /// What the owner called it.
    pub name: String,
    /// The first characters of the token, e.g. `qvr_AbCd1234`.
    pub prefix: String,
    /// Seconds since the epoch.
    pub created_at: u64,
    /// Seconds since the epoch; `None` never expires.
    pub expires_at: Option<u64>,
    /// Seconds since the epoch, to the minute.
    pub last_used_at: Option<u64>,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// A token that authenticated: whose it is and until when it may be used.
#[derive(Debug, Clone)]
pub struct TokenUse {
    /// The token's id.
    pub id: String,
    /// The owner, active.
    pub principal: Principal,
    /// Seconds since the epoch.
    pub expires_at: Option<u64>,
}

/// The stored form of a token.
pub fn token_hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Identity<'_> {
    /// Creates a token for `email`, valid for `days` (or until revoked), and returns it with
    /// its secret — the only time the secret exists outside the caller. A token made while
    /// signed in with another credential (`origin`: a PAT, a service account's client) is
    /// revoked with it.
    pub fn create_token(
        &self,
        actor: &str,
        email: &str,
        name: &str,
        days: Option<u32>,
        origin: Option<&Origin>,
    ) -> Result<(TokenInfo, String), CatalogError> {
        let email = email.trim().to_lowercase();
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(CatalogError::InvalidInput(
                "a token needs a name of 1-100 characters".into(),
            ));
        }
        if let Some(days) = days
            && !(1..=MAX_TOKEN_DAYS).contains(&days)
        {
            return Err(CatalogError::InvalidInput(format!(
                "expires_in_days must be between 1 and {MAX_TOKEN_DAYS}"
            )));
        }
        let secret = format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
        );
        let now = unix_now();
        let info = TokenInfo {
            id: uuid::Uuid::new_v4().to_string(),
            email: email.clone(),
            name: name.to_string(),
            prefix: secret[..DISPLAY_LEN].to_string(),
            created_at: now,
            expires_at: days.map(|d| now + u64::from(d) * 86_400),
            last_used_at: None,
            revoked: false,
        };
        self.0.change(actor, "token.create", &email, |tx| {
            let active = user_active(tx, &email)?;
            match active {
                None => return Err(CatalogError::NotFound(format!("no user `{email}`"))),
                Some(false) => {
                    return Err(CatalogError::Conflict(format!(
                        "`{email}` is deactivated; activate the user first"
                    )));
                }
                Some(true) => {}
            }
            tx.execute(
                "INSERT INTO tokens (id, email, name, prefix, hash, created_at, expires_at, origin)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                params![
                    info.id,
                    email,
                    info.name,
                    info.prefix,
                    token_hash(&secret),
                    now as i64,
                    info.expires_at.map(|e| e as i64),
                    origin.map(|o| o.to_string())
                ],
            )?;
            Ok((
                (),
                json!({ "id": info.id, "name": info.name, "prefix": info.prefix, "expires_at": info.expires_at }),
            ))
        })?;
        Ok((info, secret))
    }

    /// The tokens of `email`, newest first.
    pub fn tokens(&self, email: &str) -> Result<Vec<TokenInfo>, CatalogError> {
        let conn = self.0.conn()?;
        let tokens = conn.query_map(
            "SELECT id, email, name, prefix, created_at, expires_at, last_used_at,
                    revoked_at IS NOT NULL
             FROM tokens WHERE email = $1 ORDER BY created_at DESC, id",
            params![email.trim().to_lowercase()],
            |r| {
                Ok(TokenInfo {
                    id: r.get(0)?,
                    email: r.get(1)?,
                    name: r.get(2)?,
                    prefix: r.get(3)?,
                    created_at: r.get::<i64>(4)? as u64,
                    expires_at: r.get::<Option<i64>>(5)?.map(|v| v as u64),
                    last_used_at: r.get::<Option<i64>>(6)?.map(|v| v as u64),
                    revoked: r.get(7)?,
                })
            },
        )?;
        Ok(tokens)
    }

    /// Revokes token `id`. With `owner`, only that user's token can be revoked (others are
    /// "not found", so ids of other users' tokens cannot be probed).
    pub fn revoke_token(
        &self,
        actor: &str,
        owner: Option<&str>,
        id: &str,
    ) -> Result<(), CatalogError> {
        let owner = owner.map(|o| o.trim().to_lowercase());
        self.0.change(actor, "token.revoke", id, |tx| {
            let email: Option<String> =
                tx.query_opt("SELECT email FROM tokens WHERE id = $1", params![id], |r| {
                    r.get(0)
                })?;
            let Some(email) = email.filter(|e| owner.as_ref().is_none_or(|o| o == e)) else {
                return Err(CatalogError::NotFound(format!("no token `{id}`")));
            };
            tx.execute(
                "UPDATE tokens SET revoked_at = coalesce(revoked_at, $1) WHERE id = $2",
                params![unix_now() as i64, id],
            )?;
            let derived = revoke_derived(tx, &Origin::Token(id.to_string()))?;
            Ok(((), json!({ "owner": email, "derived_revoked": derived })))
        })
    }

    /// Who a presented token belongs to; `None` when it is unknown, revoked, expired or its
    /// owner is inactive.
    pub fn token_principal(&self, secret: &str) -> Result<Option<TokenUse>, CatalogError> {
        if !secret.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let row: Option<(String, String, Option<i64>)> = self.0.conn()?.query_opt(
            "SELECT id, email, expires_at FROM tokens
                 WHERE hash = $1 AND revoked_at IS NULL",
            params![token_hash(secret)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let Some((id, email, expires_at)) = row else {
            return Ok(None);
        };
        let expires_at = expires_at.map(|e| e as u64);
        if expires_at.is_some_and(|e| e <= unix_now()) {
            return Ok(None);
        }
        Ok(self.principal(&email)?.map(|principal| TokenUse {
            id,
            principal,
            expires_at,
        }))
    }

    /// Whether token `id` of `email` may still be used (not revoked, not expired).
    pub fn token_active(&self, id: &str, email: &str) -> Result<bool, CatalogError> {
        let expires: Option<Option<i64>> = self.0.conn()?.query_opt(
            "SELECT expires_at FROM tokens WHERE id = $1 AND email = $2 AND revoked_at IS NULL",
            params![id, email],
            |r| r.get(0),
        )?;
        Ok(matches!(expires, Some(e) if e.is_none_or(|e| e as u64 > unix_now())))
    }

    /// Records that a token was used just now (callers throttle this to once a minute).
    pub fn touch_token(&self, id: &str) -> Result<(), CatalogError> {
        self.0.conn()?.execute(
            "UPDATE tokens SET last_used_at = $1 WHERE id = $2",
            params![unix_now() as i64, id],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateStore;

    #[test]
    fn tokens_work_until_revoked_and_are_stored_hashed() {
        let s = StateStore::in_memory().unwrap();
        s.identity()
            .ensure_bootstrap_admin("root@example.com", "root-password")
            .unwrap();
        let (info, secret) = s
            .identity()
            .create_token(
                "root@example.com",
                "root@example.com",
                "laptop",
                Some(30),
                None,
            )
            .unwrap();
        assert!(secret.starts_with("qvr_") && secret.len() > 40);
        assert!(secret.starts_with(&info.prefix));
        let used = s.identity().token_principal(&secret).unwrap().unwrap();
        assert_eq!(used.principal.email(), "root@example.com");
        let stored: String = s
            .conn()
            .unwrap()
            .query_row("SELECT hash FROM tokens", params![], |r| r.get(0))
            .unwrap();
        assert_ne!(stored, secret);
        assert!(
            s.identity()
                .token_principal("qvr_not-a-token")
                .unwrap()
                .is_none()
        );
        // Another user's revocation attempt looks like an unknown id.
        assert!(matches!(
            s.identity()
                .revoke_token("x", Some("other@example.com"), &info.id),
            Err(CatalogError::NotFound(_))
        ));
        s.identity()
            .revoke_token("root@example.com", Some("root@example.com"), &info.id)
            .unwrap();
        assert!(s.identity().token_principal(&secret).unwrap().is_none());
        assert!(s.identity().tokens("root@example.com").unwrap()[0].revoked);
        let audit = s.audit().log(&Default::default()).unwrap();
        assert!(audit.iter().all(|a| {
            !a.detail
                .as_deref()
                .unwrap_or_default()
                .contains(&secret[4..])
        }));
    }

    #[test]
    fn tokens_made_with_a_token_end_with_it() {
        let s = StateStore::in_memory().unwrap();
        s.identity()
            .ensure_bootstrap_admin("root@example.com", "root-password")
            .unwrap();
        let root = "root@example.com";
        let (a, _) = s
            .identity()
            .create_token(root, root, "a", None, None)
            .unwrap();
        let (b, b_secret) = s
            .identity()
            .create_token(root, root, "b", None, Some(&Origin::Token(a.id.clone())))
            .unwrap();
        let (_, c_secret) = s
            .identity()
            .create_token(root, root, "c", None, Some(&Origin::Token(b.id.clone())))
            .unwrap();
        let (_, other) = s
            .identity()
            .create_token(root, root, "other", None, None)
            .unwrap();
        assert!(s.identity().token_active(&b.id, root).unwrap());
        s.identity().revoke_token(root, None, &a.id).unwrap();
        assert!(!s.identity().token_active(&b.id, root).unwrap());
        assert!(s.identity().token_principal(&b_secret).unwrap().is_none());
        assert!(s.identity().token_principal(&c_secret).unwrap().is_none());
        assert!(s.identity().token_principal(&other).unwrap().is_some());
    }
}
