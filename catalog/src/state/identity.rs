//! What Quiver stores about who someone is: users here, and in the submodules groups with
//! their memberships, personal access tokens, service accounts' client credentials and ended
//! sessions. Every change is validated, audited in the same transaction, and announced to
//! the caches (generation bump).
//!
//! The invariants live here so the HTTP API and `quiver admin` cannot differ: `Admin` and
//! `Everyone` always exist, every active user is in `Everyone`, and the last active
//! administrator can be neither deactivated nor removed from `Admin`.

mod attributes;
mod clients;
mod groups;
mod sessions;
mod tokens;

pub use attributes::{AttributeValue, Attributes};
pub use clients::CLIENT_SECRET_PREFIX;
pub use clients::ClientInfo;
pub use groups::{Member, MembershipSource};
pub(super) use groups::{group_exists, no_group};
pub use tokens::{MAX_TOKEN_DAYS, TOKEN_PREFIX, TokenInfo, TokenUse, token_hash};

use std::collections::BTreeMap;

use serde_json::json;

use super::{Conn, StateStore, params};
use crate::CatalogError;
use crate::auth::principal::{self, ADMIN_GROUP, EVERYONE_GROUP, Principal, hash_password};

/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// E-mail, the user's name everywhere.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// Inactive users cannot sign in and their tokens stop working.
    pub active: bool,
    /// Whether the user can sign in with a password (others use OIDC or tokens).
    pub has_password: bool,
    /// Groups, sorted, `Everyone` included.
    pub groups: Vec<String>,
}

/// Changes to a user; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    /// New display name.
    pub name: Option<String>,
    /// New password.
    pub password: Option<String>,
    /// Activate or deactivate.
    pub active: Option<bool>,
}

/// Normalises and checks an e-mail address.
pub fn normalize_email(email: &str) -> Result<String, CatalogError> {
    let email = email.trim().to_lowercase();
    if quiver_config::is_plausible_email(&email) {
        Ok(email)
    } else {
        Err(CatalogError::InvalidInput(format!(
            "`{email}` is not an e-mail address"
        )))
    }
}

fn check_password(password: &str) -> Result<(), CatalogError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(CatalogError::InvalidInput(format!(
            "the password is too short: use at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    Ok(())
}

/// A user's active flag; `None` when there is no such user.
pub(crate) fn user_active(tx: &Conn<'_>, email: &str) -> Result<Option<bool>, CatalogError> {
    tx.query_opt(
        "SELECT active FROM users WHERE email = $1",
        params![email],
        |r| r.get(0),
    )
}

fn user_exists(tx: &Conn<'_>, email: &str) -> Result<bool, CatalogError> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM users WHERE email = $1",
            params![email],
            |_| Ok(()),
        )?
        .is_some())
}

fn no_user(email: &str) -> CatalogError {
    CatalogError::NotFound(format!("no user `{email}`"))
}

/// Refuses a change that would leave no active administrator.
fn keep_an_admin(tx: &Conn<'_>, losing: &str) -> Result<(), CatalogError> {
    let others: i64 = tx.query_row(
        "SELECT count(*) FROM memberships m JOIN users u ON u.email = m.email
         WHERE m.group_name = 'Admin' AND u.active AND u.email <> $1",
        params![losing],
        |r| r.get(0),
    )?;
    let is_admin: bool = tx.query_row(
        "SELECT count(*) > 0 FROM memberships m JOIN users u ON u.email = m.email
         WHERE m.group_name = 'Admin' AND u.active AND u.email = $1",
        params![losing],
        |r| r.get(0),
    )?;
    if is_admin && others == 0 {
        return Err(CatalogError::Conflict(format!(
            "`{losing}` is the last active administrator; make another user an admin first"
        )));
    }
    Ok(())
}

/// The identities (see [`StateStore::identity`]).
pub struct Identity<'a>(pub(super) &'a StateStore);

impl Identity<'_> {
    // ----- users ------------------------------------------------------------------------

    /// Creates an active user. Without a password the user signs in through OIDC or tokens.
    pub fn create_user(
        &self,
        actor: &str,
        email: &str,
        name: Option<&str>,
        password: Option<&str>,
    ) -> Result<User, CatalogError> {
        let email = normalize_email(email)?;
        let hash = match password {
            Some(p) => {
                check_password(p)?;
                Some(hash_password(p)?)
            }
            None => None,
        };
        self.0.change(actor, "user.create", &email, |tx| {
            if user_exists(tx, &email)? {
                return Err(CatalogError::Conflict(format!(
                    "a user `{email}` already exists"
                )));
            }
            tx.execute(
                "INSERT INTO users (email, name, password_hash) VALUES ($1, $2, $3)",
                params![email, name, hash],
            )?;
            Ok(((), json!({ "name": name, "password_set": hash.is_some() })))
        })?;
        self.user(&email)
    }

    /// Updates a user's name, password or active flag.
    pub fn update_user(
        &self,
        actor: &str,
        email: &str,
        update: &UserUpdate,
    ) -> Result<User, CatalogError> {
        let email = email.trim().to_lowercase();
        let hash = match &update.password {
            Some(p) => {
                check_password(p)?;
                Some(hash_password(p)?)
            }
            None => None,
        };
        self.0.change(actor, "user.update", &email, |tx| {
            if !user_exists(tx, &email)? {
                return Err(no_user(&email));
            }
            if update.active == Some(false) {
                keep_an_admin(tx, &email)?;
            }
            if let Some(name) = &update.name {
                tx.execute(
                    "UPDATE users SET name = $1 WHERE email = $2",
                    params![name, email],
                )?;
            }
            if let Some(hash) = &hash {
                tx.execute(
                    "UPDATE users SET password_hash = $1 WHERE email = $2",
                    params![hash, email],
                )?;
            }
            if let Some(active) = update.active {
                tx.execute(
                    "UPDATE users SET active = $1 WHERE email = $2",
                    params![active, email],
                )?;
            }
            Ok((
                (),
                json!({
                    "name": update.name,
                    "password_changed": hash.is_some(),
                    "active": update.active,
                }),
            ))
        })?;
        self.user(&email)
    }

    /// Deletes a user with its memberships and tokens.
    pub fn delete_user(&self, actor: &str, email: &str) -> Result<(), CatalogError> {
        let email = email.trim().to_lowercase();
        self.0.change(actor, "user.delete", &email, |tx| {
            if !user_exists(tx, &email)? {
                return Err(no_user(&email));
            }
            keep_an_admin(tx, &email)?;
            tx.execute("DELETE FROM memberships WHERE email = $1", params![email])?;
            tx.execute("DELETE FROM tokens WHERE email = $1", params![email])?;
            tx.execute(
                "DELETE FROM user_attributes WHERE email = $1",
                params![email],
            )?;
            tx.execute("DELETE FROM users WHERE email = $1", params![email])?;
            Ok(((), serde_json::Value::Null))
        })
    }

    /// One user.
    pub fn user(&self, email: &str) -> Result<User, CatalogError> {
        let email = email.trim().to_lowercase();
        self.users()?
            .into_iter()
            .find(|u| u.email == email)
            .ok_or_else(|| no_user(&email))
    }

    /// Every user, by e-mail.
    pub fn users(&self) -> Result<Vec<User>, CatalogError> {
        let conn = self.0.conn()?;
        let mut memberships: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for row in conn.query_map(
            "SELECT email, group_name FROM memberships ORDER BY 2",
            params![],
            |r| Ok((r.get::<String>(0)?, r.get(1)?)),
        )? {
            let (email, group) = row;
            memberships.entry(email).or_default().push(group);
        }
        let rows = conn.query_map(
            "SELECT email, name, active, password_hash IS NOT NULL FROM users ORDER BY email",
            params![],
            |r| {
                Ok(User {
                    email: r.get(0)?,
                    name: r.get(1)?,
                    active: r.get(2)?,
                    has_password: r.get(3)?,
                    groups: Vec::new(),
                })
            },
        )?;
        let mut users = Vec::new();
        for row in rows {
            let mut user = row;
            user.groups = memberships.remove(&user.email).unwrap_or_default();
            if user.active {
                user.groups.push(EVERYONE_GROUP.into());
            }
            user.groups.sort();
            user.groups.dedup();
            users.push(user);
        }
        Ok(users)
    }

    /// Signs in a user vouched for by an identity provider: creates the account (without a
    /// password) on first sign-in and, with `groups`, syncs the provider's memberships —
    /// groups that exist in Quiver, never `Admin` — leaving admin-made memberships alone.
    /// `None` when the account is deactivated.
    pub fn sign_in_from_idp(
        &self,
        provider: &str,
        email: &str,
        name: Option<&str>,
        groups: Option<&[String]>,
        attributes: &BTreeMap<String, serde_json::Value>,
    ) -> Result<Option<crate::Principal>, CatalogError> {
        let email = normalize_email(email)?;
        let actor = format!("oidc:{provider}");
        self.0.change(&actor, "login", &email, |tx| {
            let active = user_active(tx, &email)?;
            let created = match active {
                Some(false) => return Ok((false, json!({ "outcome": "deactivated" }))),
                Some(true) => false,
                None => {
                    tx.execute(
                        "INSERT INTO users (email, name) VALUES ($1, $2)",
                        params![email, name],
                    )?;
                    true
                }
            };
            let mut synced = Vec::new();
            if let Some(groups) = groups {
                let mut wanted: Vec<String> = Vec::new();
                for g in groups {
                    if g == ADMIN_GROUP || g == EVERYONE_GROUP || !group_exists(tx, g)? {
                        continue;
                    }
                    wanted.push(g.clone());
                }
                let current: Vec<String> = tx.query_map("SELECT group_name FROM memberships WHERE email = $1 AND source = 'idp'", params![email], |r| r.get(0))?;
                for g in current.iter().filter(|g| !wanted.contains(g)) {
                    tx.execute(
                        "DELETE FROM memberships WHERE email = $1 AND group_name = $2 AND source = 'idp'",
                        params![email, g],
                    )?;
                }
                for g in &wanted {
                    tx.execute(
                        "INSERT INTO memberships (group_name, email, source) VALUES ($1, $2, 'idp')
                         ON CONFLICT DO NOTHING",
                        params![g, email],
                    )?;
                }
                synced = wanted;
            }
            attributes::set_from_idp(tx, &email, attributes)?;
            Ok((
                true,
                json!({ "created": created, "groups_from_idp": groups.map(|_| synced) }),
            ))
        })?
        .then(|| self.principal(&email))
        .transpose()
        .map(Option::flatten)
    }

    /// Creates `email` as an active administrator with `password`, unless the user exists.
    /// Returns whether it was created. An existing user is never overwritten.
    pub fn ensure_bootstrap_admin(
        &self,
        email: &str,
        password: &str,
    ) -> Result<bool, CatalogError> {
        let email = email.trim().to_lowercase();
        let hash = principal::hash_password(password)?;
        let created = self.0.transaction(|tx| {
            let exists = tx.query_opt(
                "SELECT email FROM users WHERE email = $1",
                params![email],
                |r| r.get::<String>(0),
            )?;
            if exists.is_some() {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO users (email, password_hash) VALUES ($1, $2)",
                params![email, hash],
            )?;
            tx.execute(
                "INSERT INTO memberships (group_name, email, source) VALUES ('Admin', $1, 'bootstrap')",
                params![email],
            )?;
            tx.execute(
                "INSERT INTO audit (actor, action, target, outcome) VALUES ('bootstrap', 'user.create', $1, 'ok')",
                params![email],
            )?;
            StateStore::mark_changed(tx)?;
            Ok(true)
        })?;
        if created {
            self.0.bump();
        }
        Ok(created)
    }

    /// Checks an e-mail and password. Unknown users, inactive users and wrong passwords all
    /// give `None` after the same amount of work, so the answer does not tell which it was.
    pub fn authenticate_password(
        &self,
        email: &str,
        password: &str,
    ) -> Result<Option<Principal>, CatalogError> {
        let email = email.trim().to_lowercase();
        let row: Option<(Option<String>, bool)> = self.0.conn()?.query_opt(
            "SELECT password_hash, active FROM users WHERE email = $1",
            params![email],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let (hash, active) = match row {
            Some((Some(hash), active)) => (hash, active),
            _ => (principal::dummy_hash().to_string(), false),
        };
        let ok = principal::verify_password(&hash, password);
        if ok && active {
            self.principal(&email)
        } else {
            Ok(None)
        }
    }

    /// The active principal named `email`, with its groups; `None` when unknown or inactive.
    pub fn principal(&self, email: &str) -> Result<Option<Principal>, CatalogError> {
        let conn = self.0.conn()?;
        let active: Option<bool> = conn.query_opt(
            "SELECT active FROM users WHERE email = $1",
            params![email],
            |r| r.get(0),
        )?;
        if active != Some(true) {
            return Ok(None);
        }
        let mut groups: Vec<String> = conn.query_map(
            "SELECT group_name FROM memberships WHERE email = $1 ORDER BY 1",
            params![email],
            |r| r.get(0),
        )?;
        if !groups.iter().any(|g| g == "Everyone") {
            groups.push("Everyone".into());
        }
        Ok(Some(Principal::new(email.to_string(), groups)))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A store with one administrator, `root@example.com`.
    pub(in crate::state) fn store() -> StateStore {
        let store = StateStore::in_memory().unwrap();
        store
            .identity()
            .ensure_bootstrap_admin("root@example.com", "root-password")
            .unwrap();
        store
    }

    #[test]
    fn the_last_active_admin_cannot_be_lost() {
        let s = store();
        let deactivate = UserUpdate {
            active: Some(false),
            ..Default::default()
        };
        assert!(matches!(
            s.identity()
                .update_user("t", "root@example.com", &deactivate),
            Err(CatalogError::Conflict(_))
        ));
        assert!(matches!(
            s.identity().remove_member("t", "Admin", "root@example.com"),
            Err(CatalogError::Conflict(_))
        ));
        assert!(matches!(
            s.identity().delete_user("t", "root@example.com"),
            Err(CatalogError::Conflict(_))
        ));
        s.identity()
            .create_user("t", "second@example.com", None, Some("password-2"))
            .unwrap();
        s.identity()
            .add_member("t", "Admin", "second@example.com", MembershipSource::Admin)
            .unwrap();
        s.identity()
            .update_user("t", "root@example.com", &deactivate)
            .unwrap();
        assert!(
            s.identity()
                .principal("root@example.com")
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            s.identity()
                .remove_member("t", "Admin", "second@example.com"),
            Err(CatalogError::Conflict(_))
        ));
    }

    #[test]
    fn changes_are_audited_and_bump_the_generation() {
        let s = store();
        let g = s.generation();
        s.identity()
            .create_user("ops@example.com", "ana@example.com", Some("Ana"), None)
            .unwrap();
        assert!(s.generation() > g);
        let entries = s.audit().log(&Default::default()).unwrap();
        let last = entries.first().unwrap();
        assert_eq!(last.actor, "ops@example.com");
        assert_eq!(last.action, "user.create");
        assert_eq!(last.target.as_deref(), Some("ana@example.com"));
        // Failed changes leave nothing behind, audit included.
        let before = s.audit().log(&Default::default()).unwrap().len();
        assert!(
            s.identity()
                .create_user("t", "ana@example.com", None, Some("short"))
                .is_err()
        );
        assert_eq!(s.audit().log(&Default::default()).unwrap().len(), before);
    }

    #[test]
    fn identity_provider_groups_sync_without_touching_admin_memberships() {
        let s = store();
        for g in ["sales", "support"] {
            s.identity().create_group("t", g).unwrap();
        }
        let groups = |list: &[&str]| list.iter().map(|g| g.to_string()).collect::<Vec<_>>();
        let p = s
            .identity()
            .sign_in_from_idp(
                "okta",
                "Ivy@Example.com",
                Some("Ivy"),
                Some(&groups(&["sales", "Admin", "unknown"])),
                &BTreeMap::from([
                    ("region".to_string(), serde_json::json!("EU")),
                    ("Bad Name".to_string(), serde_json::json!("x")),
                ]),
            )
            .unwrap()
            .unwrap();
        assert_eq!(p.groups(), ["Everyone", "sales"]);
        let attributes = s.identity().attributes("ivy@example.com").unwrap();
        assert_eq!(
            attributes,
            Attributes::from([("region".into(), AttributeValue::One("EU".into()))]),
            "a claim's attribute is set, a badly named one skipped"
        );
        s.identity()
            .add_member("t", "support", "ivy@example.com", MembershipSource::Admin)
            .unwrap();
        let p = s
            .identity()
            .sign_in_from_idp(
                "okta",
                "ivy@example.com",
                None,
                Some(&groups(&[])),
                &BTreeMap::new(),
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            p.groups(),
            ["Everyone", "support"],
            "idp membership gone, admin one kept"
        );
        s.identity()
            .update_user(
                "t",
                "ivy@example.com",
                &UserUpdate {
                    active: Some(false),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(
            s.identity()
                .sign_in_from_idp("okta", "ivy@example.com", None, None, &BTreeMap::new())
                .unwrap()
                .is_none()
        );
    }
}
