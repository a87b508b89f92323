//! Governance that follows the data: tags on schemas, tables and columns (a column carries
//! its own tags and those of its table and schema), and masking policies bound to a tag, so
//! one policy covers every present and future column that carries it. Every change is
//! audited in the same transaction and announced to the caches, like grants.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use serde_json::json;

use super::access::GrantTarget;
use super::identity::{group_exists, no_group};
use super::{StateStore, params};
use crate::{CatalogError, TableName};

/// Who the audit log names for changes the configuration file makes.
const CONFIG: &str = "config";

/// Every tag, by what it is attached to.
#[derive(Debug, Clone, Default)]
pub struct Tags {
    schemas: HashMap<String, BTreeSet<String>>,
    tables: HashMap<TableName, BTreeSet<String>>,
    columns: HashMap<TableName, BTreeMap<String, BTreeSet<String>>>,
}

impl Tags {
    /// The tags of `schema` itself.
    pub fn of_schema(&self, schema: &str) -> BTreeSet<String> {
        self.schemas.get(schema).cloned().unwrap_or_default()
    }

    /// The tags of `table` itself (not its schema's).
    pub fn of_table(&self, table: &TableName) -> BTreeSet<String> {
        self.tables.get(table).cloned().unwrap_or_default()
    }

    /// The columns of `table` with tags of their own, and those tags.
    pub fn own_columns(&self, table: &TableName) -> BTreeMap<String, BTreeSet<String>> {
        self.columns.get(table).cloned().unwrap_or_default()
    }

    /// The tags `column` of `table` carries: its own, its table's and its schema's.
    pub fn of_column(&self, table: &TableName, column: &str) -> BTreeSet<String> {
        let mut tags = self.of_schema(table.schema());
        tags.extend(self.of_table(table));
        if let Some(own) = self.columns.get(table).and_then(|c| c.get(column)) {
            tags.extend(own.iter().cloned());
        }
        tags
    }

    /// Whether nothing is tagged.
    pub fn is_empty(&self) -> bool {
        self.schemas.is_empty() && self.tables.is_empty() && self.columns.is_empty()
    }
}

/// Whether a policy bound to `bound` covers a column tagged `tag`: the same tag, or one
/// below it (`pii` covers `pii.email`).
pub fn tag_covers(bound: &str, tag: &str) -> bool {
    tag == bound
        || tag
            .strip_prefix(bound)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Checks a tag's name: lower-case letters, digits and `_`, in parts joined by `.`
/// (`pii.email`), at most 64 characters.
pub fn check_tag(tag: &str) -> Result<(), CatalogError> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    if tag.len() <= 64 && tag.split('.').all(part_ok) {
        Ok(())
    } else {
        Err(CatalogError::InvalidInput(format!(
            "`{}` is not a tag name: lower-case letters, digits and `_`, in parts joined by `.` (such as `pii.email`), at most 64 characters",
            tag.chars().take(80).collect::<String>()
        )))
    }
}

/// How a masking policy shows a column's values. Each keeps the column's type; a mask that
/// does not apply to a type (`partial` of a number) shows NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mask {
    /// NULL.
    Null,
    /// Fixed text (`****`) for text; NULL for anything else.
    Redact,
    /// Text with all but the first and last characters given replaced by `*`.
    Partial {
        /// Characters kept at the start.
        first: u32,
        /// Characters kept at the end.
        last: u32,
    },
    /// A keyed hash (HMAC-SHA256 under a server secret): equal values mask equally, so
    /// masked columns still join and group; not reversible. Text or integers.
    Hash,
    /// Numbers rounded to `digits` decimal places (negative: to tens, hundreds, …).
    Round(i32),
    /// Dates and timestamps truncated to a unit (`month`, `year`, …).
    TruncateDate(String),
    /// Any SQL expression of the value, written with `{col}` where the value goes.
    Sql(String),
}

impl Mask {
    /// How restrictive the mask is (lower: more), for choosing among several on one
    /// column: the most restrictive wins.
    pub fn rank(&self) -> u8 {
        match self {
            Self::Null => 0,
            Self::Redact => 1,
            Self::Hash => 2,
            Self::Partial { .. } => 3,
            Self::Round(_) | Self::TruncateDate(_) => 4,
            Self::Sql(_) => 5,
        }
    }
}

const DATE_UNITS: &[&str] = &[
    "year", "quarter", "month", "week", "day", "hour", "minute", "second",
];

impl FromStr for Mask {
    type Err = CatalogError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let call = |name: &str| {
            s.strip_prefix(name)
                .map(str::trim_start)
                .and_then(|r| r.strip_prefix('('))
                .and_then(|r| r.strip_suffix(')'))
                .map(|args| args.split(',').map(str::trim).collect::<Vec<_>>())
        };
        let invalid = || {
            CatalogError::InvalidInput(format!(
                "mask `{}` is not one of null, redact, hash, partial(keep_first, keep_last), round(digits), truncate_date({}) or a SQL expression using {{col}}",
                s.chars().take(80).collect::<String>(),
                DATE_UNITS.join("|")
            ))
        };
        Ok(match s {
            "null" => Self::Null,
            "redact" => Self::Redact,
            "hash" => Self::Hash,
            _ if s.contains("{col}") => Self::Sql(s.to_string()),
            _ => {
                if let Some(args) = call("partial") {
                    match args.as_slice() {
                        [first, last] => Self::Partial {
                            first: first.parse().map_err(|_| invalid())?,
                            last: last.parse().map_err(|_| invalid())?,
                        },
                        _ => return Err(invalid()),
                    }
                } else if let Some(args) = call("round") {
                    match args.as_slice() {
                        [digits] => Self::Round(digits.parse().map_err(|_| invalid())?),
                        _ => return Err(invalid()),
                    }
                } else if let Some(args) = call("truncate_date") {
                    let unit = args.first().map(|u| u.trim_matches('\'').to_lowercase());
                    match unit {
                        Some(unit) if args.len() == 1 && DATE_UNITS.contains(&unit.as_str()) => {
                            Self::TruncateDate(unit)
                        }
                        _ => return Err(invalid()),
                    }
                } else {
                    return Err(invalid());
                }
            }
        })
    }
}

impl fmt::Display for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("null"),
            Self::Redact => f.write_str("redact"),
            Self::Hash => f.write_str("hash"),
            Self::Partial { first, last } => write!(f, "partial({first}, {last})"),
            Self::Round(digits) => write!(f, "round({digits})"),
            Self::TruncateDate(unit) => write!(f, "truncate_date({unit})"),
            Self::Sql(sql) => f.write_str(sql),
        }
    }
}

pub use quiver_config::{Policy, PolicyKind};

/// What the engine and the API ask of a [`Policy`].
pub trait PolicyRules {
    /// The parsed mask of a mask policy.
    fn parsed_mask(&self) -> Result<Mask, CatalogError>;
    /// Whether the policy applies to a member of `groups`.
    fn applies_to(&self, groups: &[String]) -> bool;
    /// Row policies: the tables it covers, when bound to a table.
    fn table_pattern(&self) -> Option<GrantTarget>;
    /// Row policies: its condition for one table, with `{col}` naming `column` (a column
    /// carrying its tag) when given.
    fn condition_for(&self, column: Option<&str>) -> String;
    /// Checks that the fields fit the kind, with a message naming what is wrong.
    fn check(&self) -> Result<(), CatalogError>;
}

impl PolicyRules for Policy {
    fn parsed_mask(&self) -> Result<Mask, CatalogError> {
        self.mask.as_deref().unwrap_or_default().parse()
    }

    fn applies_to(&self, groups: &[String]) -> bool {
        !self.except_groups.iter().any(|g| groups.contains(g))
    }

    fn table_pattern(&self) -> Option<GrantTarget> {
        self.table.as_deref().and_then(|t| t.parse().ok())
    }

    fn condition_for(&self, column: Option<&str>) -> String {
        let condition = self.condition.as_deref().unwrap_or("false");
        match column {
            Some(c) => condition.replace("{col}", &format!("\"{}\"", c.replace('"', "\"\""))),
            None => condition.to_string(),
        }
    }

    fn check(&self) -> Result<(), CatalogError> {
        let invalid = |m: &str| Err(CatalogError::InvalidInput(m.to_string()));
        match self.kind {
            PolicyKind::Mask => {
                if self.table.is_some() || self.condition.is_some() || self.restrictive {
                    return invalid(
                        "a mask policy takes `tag` and `mask`; `table`, `condition` and `restrictive` are for row policies",
                    );
                }
                let Some(tag) = &self.tag else {
                    return invalid("a mask policy needs the `tag` it is bound to");
                };
                check_tag(tag)?;
                if self.mask.is_none() {
                    return invalid("a mask policy needs a `mask`");
                }
                if let Mask::Sql(sql) = self.parsed_mask()? {
                    check_sql(&sql.replace("{col}", "value"), "mask")?;
                }
            }
            PolicyKind::Row => {
                if self.mask.is_some() {
                    return invalid("a row policy takes a `condition`, not a `mask`");
                }
                match (&self.tag, &self.table) {
                    (Some(tag), None) => check_tag(tag)?,
                    (None, Some(table)) => {
                        table.parse::<GrantTarget>()?;
                    }
                    _ => {
                        return invalid(
                            "a row policy is bound to either a `table` (`schema.table` or `schema.*`) or a `tag`",
                        );
                    }
                }
                let Some(condition) = &self.condition else {
                    return invalid(
                        "a row policy needs a `condition`, a SQL condition on the rows",
                    );
                };
                if self.table.is_some() && condition.contains("{col}") {
                    return invalid(
                        "`{col}` names the tagged column in a policy bound to a tag; a policy bound to a table names its columns",
                    );
                }
                check_sql(&condition.replace("{col}", "value"), "condition")?;
            }
        }
        Ok(())
    }
}

/// Checks that `sql` parses as a SQL expression (whether it fits a table is checked where
/// the table is known).
fn check_sql(sql: &str, what: &str) -> Result<(), CatalogError> {
    use datafusion::sql::sqlparser::{dialect::GenericDialect, parser::Parser};
    Parser::new(&GenericDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .map(|_| ())
        .map_err(|e| {
            CatalogError::InvalidInput(format!("{what} `{sql}` is not a SQL expression: {e}"))
        })
}

/// Tags and policies (see [`StateStore::governance`]).
pub struct Governance<'a>(pub(super) &'a StateStore);

impl Governance<'_> {
    /// Every tag.
    pub fn tags(&self) -> Result<Tags, CatalogError> {
        let rows: Vec<(String, String, String, String)> = self.0.conn()?.query_map(
            "SELECT schema_name, table_name, column_name, tag FROM tags ORDER BY 1, 2, 3, 4",
            params![],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        let mut tags = Tags::default();
        for (schema, table, column, tag) in rows {
            if table.is_empty() {
                tags.schemas.entry(schema).or_default().insert(tag);
                continue;
            }
            let table = TableName::new(&schema, &table)?;
            if column.is_empty() {
                tags.tables.entry(table).or_default().insert(tag);
            } else {
                tags.columns
                    .entry(table)
                    .or_default()
                    .entry(column)
                    .or_default()
                    .insert(tag);
            }
        }
        Ok(tags)
    }

    /// Replaces the tags of `table` itself and of its columns.
    pub fn set_table_tags(
        &self,
        actor: &str,
        table: &TableName,
        own: &BTreeSet<String>,
        columns: &BTreeMap<String, BTreeSet<String>>,
    ) -> Result<(), CatalogError> {
        for tag in own.iter().chain(columns.values().flatten()) {
            check_tag(tag)?;
        }
        let detail = json!({ "table": own, "columns": columns });
        self.0
            .change(actor, "tags.set", &table.to_string(), |tx| {
                let (schema, name) = (table.schema(), table.table());
                tx.execute(
                    "DELETE FROM tags WHERE schema_name = $1 AND table_name = $2",
                    params![schema, name],
                )?;
                let rows = own
                    .iter()
                    .map(|t| ("", t))
                    .chain(columns.iter().flat_map(|(c, tags)| tags.iter().map(move |t| (c.as_str(), t))));
                for (column, tag) in rows {
                    tx.execute(
                        "INSERT INTO tags (schema_name, table_name, column_name, tag) VALUES ($1, $2, $3, $4)",
                        params![schema, name, column, tag],
                    )?;
                }
                Ok(((), detail.clone()))
            })
    }

    /// Makes the state match the configuration file: the columns its tables tag get
    /// exactly those tags of their own, and its policies replace those of the same names
    /// (a policy the file once held and no longer does is removed). Returns how many
    /// changed. Groups a file's policy excepts need not exist yet.
    pub fn sync_config(
        &self,
        tables: &[quiver_config::TableDef],
        policies: &[Policy],
    ) -> Result<usize, CatalogError> {
        let mut changed = 0;
        let tags = self.tags()?;
        for def in tables {
            let name: TableName = def.name.parse()?;
            let mut columns = tags.own_columns(&name);
            let mut differs = false;
            for (column, entry) in &def.columns {
                if entry.tags().is_empty() {
                    continue;
                }
                let wanted: BTreeSet<String> = entry.tags().iter().cloned().collect();
                differs |= columns.get(column) != Some(&wanted);
                columns.insert(column.clone(), wanted);
            }
            if differs {
                self.set_table_tags(CONFIG, &name, &tags.of_table(&name), &columns)?;
                changed += 1;
            }
        }
        let stored: Vec<(String, String, Option<String>)> = self.0.conn()?.query_map(
            "SELECT name, definition, origin FROM policies",
            params![],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        for policy in policies {
            policy.check().map_err(|e| {
                CatalogError::InvalidInput(format!("governance.policies `{}`: {e}", policy.name))
            })?;
            let json =
                serde_json::to_string(policy).map_err(|e| CatalogError::Internal(e.to_string()))?;
            let same = stored.iter().any(|(name, definition, origin)| {
                name == &policy.name
                    && origin.as_deref() == Some(CONFIG)
                    && serde_json::from_str::<Policy>(definition).ok().as_ref() == Some(policy)
            });
            if same {
                continue;
            }
            self.0.change(CONFIG, "policy.create", &policy.name, |tx| {
                tx.execute(
                    "INSERT INTO policies (name, definition, origin) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, origin = excluded.origin",
                    params![policy.name, json, CONFIG],
                )?;
                Ok(((), serde_json::to_value(policy).unwrap_or_default()))
            })?;
            changed += 1;
        }
        for (name, _, origin) in &stored {
            if origin.as_deref() == Some(CONFIG) && !policies.iter().any(|p| &p.name == name) {
                self.0.change(CONFIG, "policy.delete", name, |tx| {
                    tx.execute("DELETE FROM policies WHERE name = $1", params![name])?;
                    Ok(((), json!({ "name": name })))
                })?;
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// Refuses to change a policy the configuration file defines.
    fn refuse_config_policy(tx: &super::Conn<'_>, name: &str) -> Result<(), CatalogError> {
        let origin: Option<Option<String>> = tx.query_opt(
            "SELECT origin FROM policies WHERE name = $1",
            params![name],
            |r| r.get(0),
        )?;
        if origin.flatten().as_deref() == Some(CONFIG) {
            return Err(CatalogError::Conflict(format!(
                "policy `{name}` is defined in the configuration file (governance.policies); change it there"
            )));
        }
        Ok(())
    }

    /// Replaces the tags of `schema` itself.
    pub fn set_schema_tags(
        &self,
        actor: &str,
        schema: &str,
        tags: &BTreeSet<String>,
    ) -> Result<(), CatalogError> {
        TableName::new(schema, "x")?;
        for tag in tags {
            check_tag(tag)?;
        }
        self.0
            .change(actor, "tags.set", schema, |tx| {
                tx.execute(
                    "DELETE FROM tags WHERE schema_name = $1 AND table_name = ''",
                    params![schema],
                )?;
                for tag in tags {
                    tx.execute(
                        "INSERT INTO tags (schema_name, table_name, column_name, tag) VALUES ($1, '', '', $2)",
                        params![schema, tag],
                    )?;
                }
                Ok(((), json!({ "schema": tags })))
            })
    }

    /// Every policy, by name.
    pub fn policies(&self) -> Result<Vec<Policy>, CatalogError> {
        let rows: Vec<(String, String)> = self.0.conn()?.query_map(
            "SELECT name, definition FROM policies ORDER BY name",
            params![],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        rows.into_iter()
            .map(|(name, json)| {
                serde_json::from_str(&json).map_err(|e| {
                    CatalogError::State(format!("policy `{name}` is stored corrupt: {e}"))
                })
            })
            .collect()
    }

    /// Stores a new policy, after checking its name, tag, mask and groups.
    pub fn create_policy(&self, actor: &str, policy: &Policy) -> Result<Policy, CatalogError> {
        let name_ok = !policy.name.is_empty()
            && policy.name.len() <= 64
            && policy
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            return Err(CatalogError::InvalidInput(format!(
                "`{}` is not a policy name: letters, digits, `_` and `-`, at most 64 characters",
                policy.name.chars().take(80).collect::<String>()
            )));
        }
        policy.check()?;
        let json =
            serde_json::to_string(policy).map_err(|e| CatalogError::Internal(e.to_string()))?;
        self.0.change(actor, "policy.create", &policy.name, |tx| {
            for group in &policy.except_groups {
                if !group_exists(tx, group)? {
                    return Err(no_group(group));
                }
            }
            let taken = tx
                .query_opt(
                    "SELECT 1 FROM policies WHERE name = $1",
                    params![policy.name],
                    |r| r.get::<i32>(0),
                )?
                .is_some();
            if taken {
                return Err(CatalogError::Conflict(format!(
                    "a policy named `{}` exists; delete it first or choose another name",
                    policy.name
                )));
            }
            tx.execute(
                "INSERT INTO policies (name, definition) VALUES ($1, $2)",
                params![policy.name, json],
            )?;
            Ok(((), serde_json::to_value(policy).unwrap_or_default()))
        })?;
        Ok(policy.clone())
    }

    /// Removes a policy.
    pub fn delete_policy(&self, actor: &str, name: &str) -> Result<(), CatalogError> {
        self.0.change(actor, "policy.delete", name, |tx| {
            Self::refuse_config_policy(tx, name)?;
            if tx.execute("DELETE FROM policies WHERE name = $1", params![name])? == 0 {
                return Err(CatalogError::NotFound(format!("no policy `{name}`")));
            }
            Ok(((), json!({ "name": name })))
        })
    }

    /// The server's secret for keyed masks (`hash`), made on first use and kept in the
    /// state, so every replica masks alike and masked values stay stable across restarts.
    pub fn mask_key(&self) -> Result<Vec<u8>, CatalogError> {
        let conn = self.0.conn()?;
        let fresh = hex(&rand::random::<[u8; 32]>());
        conn.execute(
            "INSERT INTO server_keys (name, value) VALUES ('mask', $1) ON CONFLICT DO NOTHING",
            params![fresh],
        )?;
        let stored: String = conn.query_row(
            "SELECT value FROM server_keys WHERE name = 'mask'",
            params![],
            |r| r.get(0),
        )?;
        Ok(stored.into_bytes())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_parse_and_print_back() {
        for text in [
            "null",
            "redact",
            "hash",
            "partial(2, 0)",
            "round(-2)",
            "truncate_date(month)",
            "upper({col})",
        ] {
            let mask: Mask = text.parse().unwrap();
            assert_eq!(mask.to_string(), text);
        }
        for bad in [
            "partial(2)",
            "round(x)",
            "truncate_date(fortnight)",
            "upper(x)",
            "",
        ] {
            let e = bad.parse::<Mask>().unwrap_err().to_string();
            assert!(e.contains("is not one of"), "{bad}: {e}");
        }
    }

    #[test]
    fn tags_name_parts_and_cover_those_below() {
        assert!(check_tag("pii.email").is_ok());
        for bad in ["PII", "pii..email", "", "pii email", &"x".repeat(65)] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
        assert!(tag_covers("pii", "pii.email"));
        assert!(tag_covers("pii.email", "pii.email"));
        assert!(!tag_covers("pii", "piinote"));
        assert!(!tag_covers("pii.email", "pii"));
    }
}
