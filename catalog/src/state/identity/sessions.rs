//! Bearer sessions: ending one (signing out), and deciding whether a verified token may
//! still be used. Both edges (Flight SQL and HTTP) ask here, so a session ended on one is
//! ended on all, and the list survives restarts (and, with a shared state store, replicas).

use crate::state::params;

use super::Identity;
use crate::CatalogError;
use crate::auth::principal::{Origin, Principal, Verified, unix_now};
use crate::state::StateStore;

impl Identity<'_> {
    /// Ends the session of token `jti` (which expires at `expires_at` anyway).
    pub fn end_session(&self, email: &str, jti: &str, expires_at: u64) -> Result<(), CatalogError> {
        let now = unix_now() as i64;
        self.0.transaction(|tx| {
            // Ended sessions are kept only until they would have expired.
            tx.execute(
                "DELETE FROM ended_sessions WHERE expires_at < $1",
                params![now],
            )?;
            tx.execute(
                "INSERT INTO ended_sessions (jti, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                params![jti, expires_at as i64],
            )?;
            StateStore::mark_changed(tx)
        })?;
        self.0.audit().record_event(email, "logout", None, "ok")?;
        self.0.bump();
        Ok(())
    }

    /// The principal a verified token stands for, unless its session was ended, the
    /// credential it was obtained with was revoked, or the user is inactive.
    pub fn bearer_principal(&self, token: &Verified) -> Result<Option<Principal>, CatalogError> {
        let ended: Option<i64> = self.0.conn()?.query_opt(
            "SELECT expires_at FROM ended_sessions WHERE jti = $1",
            params![token.jti],
            |r| r.get(0),
        )?;
        if ended.is_some() {
            return Ok(None);
        }
        let origin_active = match &token.origin {
            None => true,
            Some(Origin::Token(id)) => self.token_active(id, &token.email)?,
            Some(Origin::Client(id)) => self.client_active(id, &token.email)?,
        };
        if !origin_active {
            return Ok(None);
        }
        self.principal(&token.email)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::TokenSigner;

    #[test]
    fn ended_sessions_and_revoked_origins_are_refused() {
        let s = StateStore::in_memory().unwrap();
        let root = "root@example.com";
        s.identity()
            .ensure_bootstrap_admin(root, "root-password")
            .unwrap();
        let signer = TokenSigner::new(&[1; 32], Duration::from_secs(600));
        let verify = |origin: Option<Origin>| {
            let (token, _) = signer.issue(root, origin).unwrap();
            signer.verify(&token).unwrap()
        };
        let plain = verify(None);
        assert!(s.identity().bearer_principal(&plain).unwrap().is_some());
        let g = s.generation();
        s.identity()
            .end_session(root, &plain.jti, plain.exp)
            .unwrap();
        assert!(s.generation() > g, "caches must forget the session");
        assert!(s.identity().bearer_principal(&plain).unwrap().is_none());
        assert!(
            s.identity()
                .bearer_principal(&verify(None))
                .unwrap()
                .is_some()
        );

        let (pat, _) = s
            .identity()
            .create_token(root, root, "cli", None, None)
            .unwrap();
        let via_pat = verify(Some(Origin::Token(pat.id.clone())));
        assert!(s.identity().bearer_principal(&via_pat).unwrap().is_some());
        s.identity().revoke_token(root, None, &pat.id).unwrap();
        assert!(s.identity().bearer_principal(&via_pat).unwrap().is_none());

        let (client, _) = s
            .identity()
            .create_client(root, "etl@example.com", "etl")
            .unwrap();
        let signer_etl = |origin| {
            let (token, _) = signer.issue("etl@example.com", origin).unwrap();
            signer.verify(&token).unwrap()
        };
        let via_client = signer_etl(Some(Origin::Client(client.client_id.clone())));
        assert!(
            s.identity()
                .bearer_principal(&via_client)
                .unwrap()
                .is_some()
        );
        s.identity().revoke_client(root, &client.client_id).unwrap();
        assert!(
            s.identity()
                .bearer_principal(&via_client)
                .unwrap()
                .is_none()
        );
    }
}
