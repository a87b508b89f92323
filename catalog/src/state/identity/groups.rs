//! Groups and their members. `Admin` and `Everyone` always exist; every active user is in
//! `Everyone` implicitly; memberships record where they came from, so an identity
//! provider's sync never touches what an admin made.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Identity, keep_an_admin, no_user, user_exists};
use crate::CatalogError;
use crate::auth::principal::{ADMIN_GROUP, EVERYONE_GROUP};
use crate::state::{Conn, params};

/// Where a membership came from: made by an admin, synced from an identity provider's
/// group claim, or the bootstrap admin's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's e-mail.
    pub email: String,
    /// Where the membership came from (`everyone` for the implicit `Everyone` membership).
    pub source: String,
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

pub(in crate::state) fn group_exists(tx: &Conn<'_>, name: &str) -> Result<bool, CatalogError> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM groups WHERE name = $1",
            params![name],
            |_| Ok(()),
        )?
        .is_some())
}

pub(in crate::state) fn no_group(name: &str) -> CatalogError {
    CatalogError::NotFound(format!("no group `{name}`"))
}

impl Identity<'_> {
    /// Creates a group.
    pub fn create_group(&self, actor: &str, name: &str) -> Result<(), CatalogError> {
        check_group_name(name)?;
        self.0.change(actor, "group.create", name, |tx| {
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
        self.0.change(actor, "group.delete", name, |tx| {
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
        let conn = self.0.conn()?;
        let names = conn.query_map("SELECT name FROM groups ORDER BY name", params![], |r| {
            r.get(0)
        })?;
        Ok(names)
    }

    /// Members of a group; `Everyone` lists every active user.
    pub fn members(&self, group: &str) -> Result<Vec<Member>, CatalogError> {
        let conn = self.0.conn()?;
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
        self.0
            .change(actor, "member.add", &format!("{group}/{email}"), |tx| {
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
        self.0
            .change(actor, "member.remove", &format!("{group}/{email}"), |tx| {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::identity::tests::store;

    #[test]
    fn built_in_groups_stay_and_names_are_checked() {
        let s = store();
        for name in ["Admin", "Everyone"] {
            assert!(matches!(
                s.identity().delete_group("t", name),
                Err(CatalogError::Conflict(_))
            ));
        }
        assert!(matches!(
            s.identity().create_group("t", "admin"),
            Err(CatalogError::Conflict(_))
        ));
        assert!(matches!(
            s.identity().create_group("t", "bad;name"),
            Err(CatalogError::InvalidInput(_))
        ));
        s.identity().create_group("t", "Sales EU").unwrap();
        assert!(
            s.identity()
                .groups()
                .unwrap()
                .contains(&"Sales EU".to_string())
        );
        assert!(matches!(
            s.identity().add_member(
                "t",
                "Sales EU",
                "nobody@example.com",
                MembershipSource::Admin
            ),
            Err(CatalogError::NotFound(_))
        ));
    }
}
