//! What Quiver stores about access: grants of a table (or a whole schema) to a group, each
//! with an optional row filter and column masks. Every change is audited in the same
//! transaction and announced to the caches.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::json;

use super::identity::{group_exists, no_group};
use super::{StateStore, params};
use crate::{CatalogError, TableName};

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

/// What a grant allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Privilege {
    /// Reading (the default).
    #[default]
    Read,
    /// Reading, and creating, replacing, appending to and dropping tables: only on a whole
    /// schema that no sync writes to.
    Write,
}

impl Privilege {
    /// The name in the API, YAML and the state store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

impl FromStr for Privilege {
    type Err = CatalogError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            other => Err(CatalogError::InvalidInput(format!(
                "privilege must be `read` or `write`, not `{}`",
                other.chars().take(40).collect::<String>()
            ))),
        }
    }
}

impl fmt::Display for Privilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Privilege {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A grant: members of `group` may read `target`, only the rows `row_filter` keeps, with
/// `column_masks` applied (a column mapped to `None` is hidden); with [`Privilege::Write`]
/// they may also write tables in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Grant id, for revoking.
    pub id: i64,
    /// The group it is granted to.
    pub group: String,
    /// `schema.table` or `schema.*`.
    pub table: GrantTarget,
    /// SQL predicate over the table's columns; may use `current_user()`.
    pub row_filter: Option<String>,
    /// Column → SQL expression replacing its value, or `None` to hide the column.
    pub column_masks: BTreeMap<String, Option<String>>,
    /// Read, or read and write.
    pub privilege: Privilege,
}

/// A grant to be made; the engine validates it against the table before it is stored.
#[derive(Debug, Clone, Default)]
pub struct NewGrant {
    /// The group to grant to.
    pub group: String,
    /// `schema.table` or `schema.*`.
    pub table: String,
    /// SQL predicate over the table's columns.
    pub row_filter: Option<String>,
    /// Column → SQL expression, or `null` to hide the column.
    pub column_masks: BTreeMap<String, Option<String>>,
    /// Read (the default), or read and write.
    pub privilege: Privilege,
}

/// The grants (see [`StateStore::access`]).
pub struct Access<'a>(pub(super) &'a StateStore);

impl Access<'_> {
    /// Stores a grant. Callers validate its filter and masks first (see
    /// `QueryEngine::create_grant`).
    pub(crate) fn insert_grant(
        &self,
        actor: &str,
        group: &str,
        target: &GrantTarget,
        row_filter: Option<&str>,
        column_masks: &BTreeMap<String, Option<String>>,
        privilege: Privilege,
    ) -> Result<Grant, CatalogError> {
        let masks = serde_json::to_string(column_masks)
            .map_err(|e| CatalogError::Internal(e.to_string()))?;
        let id = self.0.change(actor, "grant.create", &target.to_string(), |tx| {
            if !group_exists(tx, group)? {
                return Err(no_group(group));
            }
            let id: i64 = tx.query_row(
                "INSERT INTO grants (group_name, schema_name, table_name, row_filter, column_masks, created_by, privilege)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                params![group, target.schema(), target.table_part(), row_filter, masks, actor, privilege.as_str()],
                |r| r.get(0),
            )?;
            Ok((
                id,
                json!({ "id": id, "group": group, "row_filter": row_filter, "column_masks": column_masks, "privilege": privilege.as_str() }),
            ))
        })?;
        self.grant(id)
    }

    /// Removes a grant.
    pub fn revoke_grant(&self, actor: &str, id: i64) -> Result<(), CatalogError> {
        let grant = self.grant(id)?;
        self.0
            .change(actor, "grant.revoke", &grant.table.to_string(), |tx| {
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
        let conn = self.0.conn()?;
        let rows = conn.query_map(
            "SELECT id, group_name, schema_name, table_name, row_filter, column_masks, privilege
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
                    r.get::<Option<String>>(6)?,
                ))
            },
        )?;
        let mut grants = Vec::new();
        for row in rows {
            let (id, group, schema, table, row_filter, masks, privilege) = row;
            let table = if table == "*" {
                GrantTarget::Schema(schema)
            } else {
                GrantTarget::Table(TableName::new(&schema, &table)?)
            };
            let column_masks = serde_json::from_str(&masks)
                .map_err(|e| CatalogError::State(format!("grant {id} has corrupt masks: {e}")))?;
            // Grants made before privileges existed read.
            let privilege = match privilege.as_deref() {
                None => Privilege::Read,
                Some(p) => p.parse().map_err(|_| {
                    CatalogError::State(format!("grant {id} has an unknown privilege `{p}`"))
                })?,
            };
            grants.push(Grant {
                id,
                group,
                table,
                row_filter,
                column_masks,
                privilege,
            });
        }
        Ok(grants)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn privileges_parse_and_name_themselves() {
        assert_eq!("write".parse::<Privilege>().unwrap(), Privilege::Write);
        assert_eq!(Privilege::default().to_string(), "read");
        let e = "WRITE".parse::<Privilege>().unwrap_err().to_string();
        assert!(e.contains("`read` or `write`"), "{e}");
    }
}
