//! Users, groups, memberships and grants in the state store: every change validated,
//! audited in the same transaction, and announced to the caches (generation bump).
//!
//! The invariants live here so the HTTP API and `quiver admin` cannot differ: `Admin` and
//! `Everyone` always exist, every active user is in `Everyone`, and the last active
//! administrator can be neither deactivated nor removed from `Admin`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::state::{Conn, params};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::identity::{ADMIN_GROUP, EVERYONE_GROUP, hash_password};
use crate::state::StateStore;
use crate::{CatalogError, TableName};

/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    /// New display name.
    pub name: Option<String>,
    /// New password.
    pub password: Option<String>,
    /// Activate or deactivate.
    pub active: Option<bool>,
}

/// Where a membership came from: made by an admin, synced from an identity provider's
/// group claim, or the bootstrap admin's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MembershipSource {
    /// Added by an administrator.
    Admin,
    /// Synced from an identity provider.
    Idp,
    /// The bootstrap administrator's.
    Bootstrap,
}

impl MembershipSource {
    fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Idp => "idp",
            Self::Bootstrap => "bootstrap",
        }
    }
}

/// A group member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Member {
    /// The member's e-mail.
    pub email: String,
    /// Where the membership came from (`everyone` for the implicit `Everyone` membership).
    pub source: String,
}

/// What a grant covers: one table, or every table of a schema (`schema.*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GrantTarget {
    /// One table.
    Table(TableName),
    /// Every table of the schema, present and future.
    Schema(String),
}

impl GrantTarget {
    /// The schema the grant is in.
    pub fn schema(&self) -> &str {
        match self {
            Self::Table(t) => t.schema(),
            Self::Schema(s) => s,
        }
    }

    /// Whether the grant covers `table`.
    pub fn covers(&self, table: &TableName) -> bool {
        match self {
            Self::Table(t) => t == table,
            Self::Schema(s) => s == table.schema(),
        }
    }

    fn table_part(&self) -> &str {
        match self {
            Self::Table(t) => t.table(),
            Self::Schema(_) => "*",
        }
    }
}

impl FromStr for GrantTarget {
    type Err = CatalogError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_suffix(".*") {
            Some(schema) => {
                // Validate the schema part with the table-name rules.
                TableName::new(schema, "x")?;
                Ok(Self::Schema(schema.to_string()))
            }
            None => Ok(Self::Table(s.parse()?)),
        }
    }
}

impl fmt::Display for GrantTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema(), self.table_part())
    }
}

impl Serialize for GrantTarget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A grant: members of `group` may read `target`, only the rows `row_filter` keeps, with
/// `column_masks` applied (a column mapped to `None` is hidden).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Grant {
    /// Grant id, for revoking.
    pub id: i64,
    /// The group it is granted to.
    pub group: String,
    /// `schema.table` or `schema.*`.
    #[schema(value_type = String, example = "tpch.customer")]
    pub table: GrantTarget,
    /// SQL predicate over the table's columns; may use `current_user()`.
    pub row_filter: Option<String>,
    /// Column → SQL expression replacing its value, or `None` to hide the column.
    pub column_masks: BTreeMap<String, Option<String>>,
}

/// A grant to be made; the engine validates it against the table before it is stored.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGrant {
    /// The group to grant to.
    pub group: String,
    /// `schema.table` or `schema.*`.
    pub table: String,
    /// SQL predicate over the table's columns.
    #[serde(default)]
    pub row_filter: Option<String>,
    /// Column → SQL expression, or `null` to hide the column.
    #[serde(default)]
    pub column_masks: BTreeMap<String, Option<String>>,
}

/// A group name: letters, digits, `_`, `-`, `.` and spaces, 1–64 characters.
fn check_group_name(name: &str) -> Result<(), CatalogError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.trim() == name
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' '));
    if ok {
        Ok(())
    } else {
        Err(CatalogError::InvalidInput(format!(
            "`{name}` is not a valid group name: use 1-64 letters, digits, `_`, `-`, `.` or spaces"
        )))
    }
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

fn group_exists(tx: &Conn<'_>, name: &str) -> Result<bool, CatalogError> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM groups WHERE name = $1",
            params![name],
            |_| Ok(()),
        )?
        .is_some())
}

fn no_user(email: &str) -> CatalogError {
    CatalogError::NotFound(format!("no user `{email}`"))
}

fn no_group(name: &str) -> CatalogError {
    CatalogError::NotFound(format!("no group `{name}`"))
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

impl StateStore {
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
        self.change(actor, "user.create", &email, |tx| {
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
        self.change(actor, "user.update", &email, |tx| {
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
        self.change(actor, "user.delete", &email, |tx| {
            if !user_exists(tx, &email)? {
                return Err(no_user(&email));
            }
            keep_an_admin(tx, &email)?;
            tx.execute("DELETE FROM memberships WHERE email = $1", params![email])?;
            tx.execute("DELETE FROM tokens WHERE email = $1", params![email])?;
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
        let conn = self.conn()?;
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
    ) -> Result<Option<crate::Principal>, CatalogError> {
        let email = normalize_email(email)?;
        let actor = format!("oidc:{provider}");
        self.change(&actor, "login", &email, |tx| {
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
            Ok((
                true,
                json!({ "created": created, "groups_from_idp": groups.map(|_| synced) }),
            ))
        })?
        .then(|| self.principal(&email))
        .transpose()
        .map(Option::flatten)
    }

    // ----- groups -----------------------------------------------------------------------

    /// Creates a group.
    pub fn create_group(&self, actor: &str, name: &str) -> Result<(), CatalogError> {
        check_group_name(name)?;
        self.change(actor, "group.create", name, |tx| {
            let clash: Option<String> = tx.query_opt(
                "SELECT name FROM groups WHERE lower(name) = lower($1)",
                params![name],
                |r| r.get(0),
            )?;
            if let Some(existing) = clash {
                return Err(CatalogError::Conflict(format!(
                    "a group `{existing}` already exists"
                )));
            }
            tx.execute("INSERT INTO groups (name) VALUES ($1)", params![name])?;
            Ok(((), serde_json::Value::Null))
        })
    }

    /// Deletes a group with its memberships and grants. `Admin` and `Everyone` stay.
    pub fn delete_group(&self, actor: &str, name: &str) -> Result<(), CatalogError> {
        if name == ADMIN_GROUP || name == EVERYONE_GROUP {
            return Err(CatalogError::Conflict(format!(
                "`{name}` is a built-in group and cannot be deleted"
            )));
        }
        self.change(actor, "group.delete", name, |tx| {
            if !group_exists(tx, name)? {
                return Err(no_group(name));
            }
            let grants = tx.execute("DELETE FROM grants WHERE group_name = $1", params![name])?;
            let members = tx.execute(
                "DELETE FROM memberships WHERE group_name = $1",
                params![name],
            )?;
            tx.execute("DELETE FROM groups WHERE name = $1", params![name])?;
            Ok((
                (),
                json!({ "grants_removed": grants, "members_removed": members }),
            ))
        })
    }

    /// Every group name, sorted.
    pub fn groups(&self) -> Result<Vec<String>, CatalogError> {
        let conn = self.conn()?;
        let names = conn.query_map("SELECT name FROM groups ORDER BY name", params![], |r| {
            r.get(0)
        })?;
        Ok(names)
    }

    /// Members of a group; `Everyone` lists every active user.
    pub fn members(&self, group: &str) -> Result<Vec<Member>, CatalogError> {
        let conn = self.conn()?;
        let exists: Option<i32> = conn.query_opt(
            "SELECT 1 FROM groups WHERE name = $1",
            params![group],
            |r| r.get(0),
        )?;
        if exists.is_none() {
            return Err(no_group(group));
        }
        let sql = if group == EVERYONE_GROUP {
            "SELECT email, 'everyone' FROM users WHERE active AND $1::VARCHAR IS NOT NULL ORDER BY email"
        } else {
            "SELECT email, source FROM memberships WHERE group_name = $1 ORDER BY email"
        };
        let members = conn.query_map(sql, params![group], |r| {
            Ok(Member {
                email: r.get(0)?,
                source: r.get(1)?,
            })
        })?;
        Ok(members)
    }

    /// Adds `email` to `group`. Adding an existing member again changes nothing.
    pub fn add_member(
        &self,
        actor: &str,
        group: &str,
        email: &str,
        source: MembershipSource,
    ) -> Result<(), CatalogError> {
        let email = email.trim().to_lowercase();
        if group == EVERYONE_GROUP {
            return Err(CatalogError::Conflict(
                "every active user is in `Everyone` already".into(),
            ));
        }
        self.change(actor, "member.add", &format!("{group}/{email}"), |tx| {
            if !group_exists(tx, group)? {
                return Err(no_group(group));
            }
            if !user_exists(tx, &email)? {
                return Err(no_user(&email));
            }
            tx.execute(
                "INSERT INTO memberships (group_name, email, source) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                params![group, email, source.as_str()],
            )?;
            Ok(((), json!({ "source": source })))
        })
    }

    /// Removes `email` from `group`. The last active admin stays in `Admin`.
    pub fn remove_member(&self, actor: &str, group: &str, email: &str) -> Result<(), CatalogError> {
        let email = email.trim().to_lowercase();
        if group == EVERYONE_GROUP {
            return Err(CatalogError::Conflict(
                "every active user is in `Everyone`; deactivate the user instead".into(),
            ));
        }
        self.change(actor, "member.remove", &format!("{group}/{email}"), |tx| {
            if !group_exists(tx, group)? {
                return Err(no_group(group));
            }
            if group == ADMIN_GROUP {
                keep_an_admin(tx, &email)?;
            }
            let removed = tx.execute(
                "DELETE FROM memberships WHERE group_name = $1 AND email = $2",
                params![group, email],
            )?;
            if removed == 0 {
                return Err(CatalogError::NotFound(format!(
                    "`{email}` is not a member of `{group}`"
                )));
            }
            Ok(((), serde_json::Value::Null))
        })
    }

    // ----- grants -----------------------------------------------------------------------

    /// Stores a grant. Callers validate its filter and masks first (see
    /// `QueryEngine::create_grant`).
    pub(crate) fn insert_grant(
        &self,
        actor: &str,
        group: &str,
        target: &GrantTarget,
        row_filter: Option<&str>,
        column_masks: &BTreeMap<String, Option<String>>,
    ) -> Result<Grant, CatalogError> {
        let masks = serde_json::to_string(column_masks)
            .map_err(|e| CatalogError::Internal(e.to_string()))?;
        let id = self.change(actor, "grant.create", &target.to_string(), |tx| {
            if !group_exists(tx, group)? {
                return Err(no_group(group));
            }
            let id: i64 = tx.query_row(
                "INSERT INTO grants (group_name, schema_name, table_name, row_filter, column_masks, created_by)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                params![group, target.schema(), target.table_part(), row_filter, masks, actor],
                |r| r.get(0),
            )?;
            Ok((
                id,
                json!({ "id": id, "group": group, "row_filter": row_filter, "column_masks": column_masks }),
            ))
        })?;
        self.grant(id)
    }

    /// Removes a grant.
    pub fn revoke_grant(&self, actor: &str, id: i64) -> Result<(), CatalogError> {
        let grant = self.grant(id)?;
        self.change(actor, "grant.revoke", &grant.table.to_string(), |tx| {
            tx.execute("DELETE FROM grants WHERE id = $1", params![id])?;
            Ok(((), json!({ "id": id, "group": grant.group })))
        })
    }

    /// One grant.
    pub fn grant(&self, id: i64) -> Result<Grant, CatalogError> {
        self.grants()?
            .into_iter()
            .find(|g| g.id == id)
            .ok_or_else(|| CatalogError::NotFound(format!("no grant {id}")))
    }

    /// Every grant, by id.
    pub fn grants(&self) -> Result<Vec<Grant>, CatalogError> {
        let conn = self.conn()?;
        let rows = conn.query_map(
            "SELECT id, group_name, schema_name, table_name, row_filter, column_masks
             FROM grants ORDER BY id",
            params![],
            |r| {
                Ok((
                    r.get::<i64>(0)?,
                    r.get::<String>(1)?,
                    r.get::<String>(2)?,
                    r.get::<String>(3)?,
                    r.get::<Option<String>>(4)?,
                    r.get::<String>(5)?,
                ))
            },
        )?;
        let mut grants = Vec::new();
        for row in rows {
            let (id, group, schema, table, row_filter, masks) = row;
            let table = if table == "*" {
                GrantTarget::Schema(schema)
            } else {
                GrantTarget::Table(TableName::new(&schema, &table)?)
            };
            let column_masks = serde_json::from_str(&masks)
                .map_err(|e| CatalogError::State(format!("grant {id} has corrupt masks: {e}")))?;
            grants.push(Grant {
                id,
                group,
                table,
                row_filter,
                column_masks,
            });
        }
        Ok(grants)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> StateStore {
        let store = StateStore::in_memory().unwrap();
        store
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
            s.update_user("t", "root@example.com", &deactivate),
            Err(CatalogError::Conflict(_))
        ));
        assert!(matches!(
            s.remove_member("t", "Admin", "root@example.com"),
            Err(CatalogError::Conflict(_))
        ));
        assert!(matches!(
            s.delete_user("t", "root@example.com"),
            Err(CatalogError::Conflict(_))
        ));
        s.create_user("t", "second@example.com", None, Some("password-2"))
            .unwrap();
        s.add_member("t", "Admin", "second@example.com", MembershipSource::Admin)
            .unwrap();
        s.update_user("t", "root@example.com", &deactivate).unwrap();
        assert!(s.principal("root@example.com").unwrap().is_none());
        assert!(matches!(
            s.remove_member("t", "Admin", "second@example.com"),
            Err(CatalogError::Conflict(_))
        ));
    }

    #[test]
    fn built_in_groups_stay_and_names_are_checked() {
        let s = store();
        for name in ["Admin", "Everyone"] {
            assert!(matches!(
                s.delete_group("t", name),
                Err(CatalogError::Conflict(_))
            ));
        }
        assert!(matches!(
            s.create_group("t", "admin"),
            Err(CatalogError::Conflict(_))
        ));
        assert!(matches!(
            s.create_group("t", "bad;name"),
            Err(CatalogError::InvalidInput(_))
        ));
        s.create_group("t", "Sales EU").unwrap();
        assert!(s.groups().unwrap().contains(&"Sales EU".to_string()));
        assert!(matches!(
            s.add_member(
                "t",
                "Sales EU",
                "nobody@example.com",
                MembershipSource::Admin
            ),
            Err(CatalogError::NotFound(_))
        ));
    }

    #[test]
    fn changes_are_audited_and_bump_the_generation() {
        let s = store();
        let g = s.generation();
        s.create_user("ops@example.com", "ana@example.com", Some("Ana"), None)
            .unwrap();
        assert!(s.generation() > g);
        let entries = s.audit_log(&Default::default()).unwrap();
        let last = entries.first().unwrap();
        assert_eq!(last.actor, "ops@example.com");
        assert_eq!(last.action, "user.create");
        assert_eq!(last.target.as_deref(), Some("ana@example.com"));
        // Failed changes leave nothing behind, audit included.
        let before = s.audit_log(&Default::default()).unwrap().len();
        assert!(
            s.create_user("t", "ana@example.com", None, Some("short"))
                .is_err()
        );
        assert_eq!(s.audit_log(&Default::default()).unwrap().len(), before);
    }

    #[test]
    fn identity_provider_groups_sync_without_touching_admin_memberships() {
        let s = store();
        for g in ["sales", "support"] {
            s.create_group("t", g).unwrap();
        }
        let groups = |list: &[&str]| list.iter().map(|g| g.to_string()).collect::<Vec<_>>();
        let p = s
            .sign_in_from_idp(
                "okta",
                "Ivy@Example.com",
                Some("Ivy"),
                Some(&groups(&["sales", "Admin", "unknown"])),
            )
            .unwrap()
            .unwrap();
        assert_eq!(p.groups(), ["Everyone", "sales"]);
        s.add_member("t", "support", "ivy@example.com", MembershipSource::Admin)
            .unwrap();
        let p = s
            .sign_in_from_idp("okta", "ivy@example.com", None, Some(&groups(&[])))
            .unwrap()
            .unwrap();
        assert_eq!(
            p.groups(),
            ["Everyone", "support"],
            "idp membership gone, admin one kept"
        );
        s.update_user(
            "t",
            "ivy@example.com",
            &UserUpdate {
                active: Some(false),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(
            s.sign_in_from_idp("okta", "ivy@example.com", None, None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn grant_targets_parse() {
        assert_eq!(
            "tpch.*".parse::<GrantTarget>().unwrap(),
            GrantTarget::Schema("tpch".into())
        );
        assert_eq!(
            "tpch.nation".parse::<GrantTarget>().unwrap().to_string(),
            "tpch.nation"
        );
        assert!("TPCH.*".parse::<GrantTarget>().is_err());
        assert!("nation".parse::<GrantTarget>().is_err());
    }
}
