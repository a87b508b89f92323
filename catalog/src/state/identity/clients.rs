//! OAuth client credentials for service accounts: a client id and a secret (`qvs_` + 256
//! random bits, shown once, stored as a SHA-256 hash) with which a service obtains bearer
//! tokens from `POST /oauth/token` (`grant_type=client_credentials`). The client acts as a
//! user account, so groups, grants, deactivation and audit work as for people.

use crate::state::params;
use base64::Engine;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::tokens::token_hash;
use super::{Identity, normalize_email, user_active};
use crate::CatalogError;
use crate::auth::principal::{Origin, Principal, unix_now};

/// Client secrets start with this.
pub const CLIENT_SECRET_PREFIX: &str = "qvs_";

/// A client as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The `client_id` to present.
    pub client_id: String,
    /// The user the client acts as.
    pub email: String,
    /// What it is for.
    pub name: String,
    /// Seconds since the epoch.
    pub created_at: u64,
    /// Whether it was revoked.
    pub revoked: bool,
}

fn random(prefix: &str, bytes: usize) -> String {
    let raw: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    )
}

impl Identity<'_> {
    /// Creates client credentials acting as `email`; the user is created (without a
    /// password) when missing. Returns the client and its secret, shown this once.
    pub fn create_client(
        &self,
        actor: &str,
        email: &str,
        name: &str,
    ) -> Result<(ClientInfo, String), CatalogError> {
        let email = normalize_email(email)?;
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(CatalogError::InvalidInput(
                "a service account needs a name of 1-100 characters".into(),
            ));
        }
        let secret = random(CLIENT_SECRET_PREFIX, 32);
        let info = ClientInfo {
            client_id: random("svc_", 12),
            email: email.clone(),
            name: name.to_string(),
            created_at: unix_now(),
            revoked: false,
        };
        self.0.change(actor, "client.create", &email, |tx| {
            let active = user_active(tx, &email)?;
            match active {
                Some(false) => {
                    return Err(CatalogError::Conflict(format!(
                        "`{email}` is deactivated; activate the user first"
                    )));
                }
                Some(true) => {}
                None => {
                    tx.execute(
                        "INSERT INTO users (email, name) VALUES ($1, $2)",
                        params![email, name],
                    )?;
                }
            }
            tx.execute(
                "INSERT INTO client_credentials (client_id, email, name, secret_hash, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
                params![
                    info.client_id,
                    email,
                    info.name,
                    token_hash(&secret),
                    info.created_at as i64
                ],
            )?;
            Ok((
                (),
                json!({ "client_id": info.client_id, "name": info.name }),
            ))
        })?;
        Ok((info, secret))
    }

    /// Every client, newest first.
    pub fn clients(&self) -> Result<Vec<ClientInfo>, CatalogError> {
        let conn = self.0.conn()?;
        let clients = conn.query_map(
            "SELECT client_id, email, name, created_at, revoked_at IS NOT NULL
             FROM client_credentials ORDER BY created_at DESC, client_id",
            params![],
            |r| {
                Ok(ClientInfo {
                    client_id: r.get(0)?,
                    email: r.get(1)?,
                    name: r.get(2)?,
                    created_at: r.get::<i64>(3)? as u64,
                    revoked: r.get(4)?,
                })
            },
        )?;
        Ok(clients)
    }

    /// Revokes a client: its access tokens, and the tokens made with them, stop working.
    pub fn revoke_client(&self, actor: &str, client_id: &str) -> Result<(), CatalogError> {
        self.0.change(actor, "client.revoke", client_id, |tx| {
            let updated = tx.execute(
                "UPDATE client_credentials SET revoked_at = coalesce(revoked_at, $1) WHERE client_id = $2",
                params![unix_now() as i64, client_id],
            )?;
            if updated == 0 {
                return Err(CatalogError::NotFound(format!("no client `{client_id}`")));
            }
            let derived =
                super::tokens::revoke_derived(tx, &Origin::Client(client_id.to_string()))?;
            Ok(((), json!({ "derived_revoked": derived })))
        })
    }

    /// Whether client `client_id`, acting as `email`, is not revoked.
    pub fn client_active(&self, client_id: &str, email: &str) -> Result<bool, CatalogError> {
        let found: Option<i64> = self.0.conn()?.query_opt(
            "SELECT 1 FROM client_credentials
                 WHERE client_id = $1 AND email = $2 AND revoked_at IS NULL",
            params![client_id, email],
            |r| r.get(0),
        )?;
        Ok(found.is_some())
    }

    /// The principal a client acts as, when `secret` is its secret and neither the client
    /// is revoked nor the user inactive. The hashes are compared in constant time.
    pub fn client_principal(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<Option<Principal>, CatalogError> {
        let row: Option<(String, String)> = self.0.conn()?.query_opt(
            "SELECT email, secret_hash FROM client_credentials
                 WHERE client_id = $1 AND revoked_at IS NULL",
            params![client_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let presented = token_hash(secret);
        let (email, stored) = row.unwrap_or_else(|| (String::new(), "0".repeat(64)));
        let matches: bool = presented.as_bytes().ct_eq(stored.as_bytes()).into();
        if !matches || email.is_empty() {
            return Ok(None);
        }
        self.principal(&email)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateStore;

    #[test]
    fn clients_authenticate_until_revoked() {
        let s = StateStore::in_memory().unwrap();
        let (info, secret) = s
            .identity()
            .create_client("root@example.com", "etl@example.com", "nightly export")
            .unwrap();
        assert!(secret.starts_with(CLIENT_SECRET_PREFIX));
        let p = s
            .identity()
            .client_principal(&info.client_id, &secret)
            .unwrap()
            .unwrap();
        assert_eq!(p.email(), "etl@example.com");
        assert!(!p.is_admin());
        assert!(
            s.identity()
                .client_principal(&info.client_id, "qvs_wrong")
                .unwrap()
                .is_none()
        );
        assert!(
            s.identity()
                .client_principal("svc_unknown", &secret)
                .unwrap()
                .is_none()
        );
        s.identity()
            .revoke_client("root@example.com", &info.client_id)
            .unwrap();
        assert!(
            s.identity()
                .client_principal(&info.client_id, &secret)
                .unwrap()
                .is_none()
        );
        assert!(s.identity().clients().unwrap()[0].revoked);
    }
}
