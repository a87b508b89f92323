//! User attributes: named values on users (`region: EU`, `teams: [a, b]`) that grants'
//! filters and row policies read as `user_attribute('region')`, so one condition serves
//! every user instead of one grant per region. Set by admins, or from an identity
//! provider's claims at each sign-in (`oidc.attributes`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Identity, no_user, user_exists};
use crate::CatalogError;
use crate::state::{Conn, params};

/// A user's attributes, by name.
pub type Attributes = BTreeMap<String, AttributeValue>;

/// An attribute's value: one string, or a list (`user_attribute` gives a list then).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AttributeValue {
    /// One value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

const MAX_ATTRIBUTES: usize = 64;
const MAX_VALUES: usize = 256;
const MAX_VALUE_LEN: usize = 1024;

impl AttributeValue {
    /// The value of attribute `name` from JSON: a string, number or boolean (kept as its
    /// text), or a list of them.
    pub fn from_json(name: &str, value: &Value) -> Result<Self, CatalogError> {
        let text = |v: &Value| -> Result<String, CatalogError> {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(CatalogError::InvalidInput(format!(
                        "attribute `{name}` must be a string, a number, a boolean or a list of them"
                    )));
                }
            };
            if s.len() > MAX_VALUE_LEN {
                return Err(CatalogError::InvalidInput(format!(
                    "a value of attribute `{name}` is longer than {MAX_VALUE_LEN} bytes"
                )));
            }
            Ok(s)
        };
        match value {
            Value::Array(items) if items.len() > MAX_VALUES => Err(CatalogError::InvalidInput(
                format!("attribute `{name}` has more than {MAX_VALUES} values"),
            )),
            Value::Array(items) => Ok(Self::Many(
                items.iter().map(text).collect::<Result<_, _>>()?,
            )),
            other => Ok(Self::One(text(other)?)),
        }
    }
}

/// Checks an attribute's name: lower-case letters, digits and `_`, 1–64 characters.
fn check_name(name: &str) -> Result<(), CatalogError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(CatalogError::InvalidInput(format!(
            "`{}` is not an attribute name: lower-case letters, digits and `_`, at most 64 characters",
            name.chars().take(80).collect::<String>()
        )))
    }
}

impl Identity<'_> {
    /// `email`'s attributes (none for an unknown user).
    pub fn attributes(&self, email: &str) -> Result<Attributes, CatalogError> {
        read(&self.0.conn()?, &email.trim().to_lowercase())
    }

    /// Names of the attributes some user holds as a list: `user_attribute` gives a list for
    /// them to every user (one value becomes a list of one), so a condition has one type
    /// whoever runs it.
    pub fn list_attributes(&self) -> Result<BTreeSet<String>, CatalogError> {
        let names: Vec<String> = self.0.conn()?.query_map(
            "SELECT DISTINCT name FROM user_attributes WHERE value LIKE '[%'",
            params![],
            |r| r.get(0),
        )?;
        Ok(names.into_iter().collect())
    }

    /// Replaces `email`'s attributes with `attributes`.
    pub fn set_attributes(
        &self,
        actor: &str,
        email: &str,
        attributes: &Attributes,
    ) -> Result<Attributes, CatalogError> {
        let email = email.trim().to_lowercase();
        if attributes.len() > MAX_ATTRIBUTES {
            return Err(CatalogError::InvalidInput(format!(
                "a user has at most {MAX_ATTRIBUTES} attributes"
            )));
        }
        for name in attributes.keys() {
            check_name(name)?;
        }
        self.0.change(actor, "user.attributes", &email, |tx| {
            if !user_exists(tx, &email)? {
                return Err(no_user(&email));
            }
            tx.execute(
                "DELETE FROM user_attributes WHERE email = $1",
                params![email],
            )?;
            write(tx, &email, attributes)?;
            Ok(((), serde_json::to_value(attributes).unwrap_or_default()))
        })?;
        self.attributes(&email)
    }
}

/// Sets the attributes an identity provider's claims gave at sign-in, in its transaction;
/// attributes of other names are kept. Invalid names or values are skipped with a warning
/// (a sign-in never fails on a claim).
pub(super) fn set_from_idp(
    tx: &Conn<'_>,
    email: &str,
    claims: &BTreeMap<String, Value>,
) -> Result<(), CatalogError> {
    let mut attributes = Attributes::new();
    for (name, value) in claims {
        match check_name(name).and_then(|()| AttributeValue::from_json(name, value)) {
            Ok(v) => {
                attributes.insert(name.clone(), v);
            }
            Err(e) => {
                tracing::warn!(email, attribute = %name, error = %e, "identity provider attribute skipped")
            }
        }
    }
    for name in attributes.keys() {
        tx.execute(
            "DELETE FROM user_attributes WHERE email = $1 AND name = $2",
            params![email, name],
        )?;
    }
    write(tx, email, &attributes)
}

fn write(tx: &Conn<'_>, email: &str, attributes: &Attributes) -> Result<(), CatalogError> {
    for (name, value) in attributes {
        let json =
            serde_json::to_string(value).map_err(|e| CatalogError::Internal(e.to_string()))?;
        tx.execute(
            "INSERT INTO user_attributes (email, name, value) VALUES ($1, $2, $3)",
            params![email, name, json],
        )?;
    }
    Ok(())
}

fn read(conn: &Conn<'_>, email: &str) -> Result<Attributes, CatalogError> {
    let rows: Vec<(String, String)> = conn.query_map(
        "SELECT name, value FROM user_attributes WHERE email = $1",
        params![email],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    rows.into_iter()
        .map(|(name, json)| {
            let value = serde_json::from_str(&json).map_err(|e| {
                CatalogError::State(format!(
                    "attribute `{name}` of {email} is stored corrupt: {e}"
                ))
            })?;
            Ok((name, value))
        })
        .collect()
}
