//! Validated identifiers. Table and schema names end up in object-store keys, SQL identifiers
//! and log lines, so they are checked once, here, and carried as types afterwards.

use std::fmt;
use std::str::FromStr;

use crate::CatalogError;

/// The one catalog every principal sees.
pub const CATALOG_NAME: &str = "quiver";

/// Longest schema or table name accepted.
const MAX_IDENT: usize = 63;

/// A lowercase SQL identifier: `[a-z_][a-z0-9_]*`, at most 63 characters.
fn valid_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_IDENT
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A table addressed as `schema.table`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    schema: String,
    table: String,
}

impl TableName {
    /// Builds a name from its two parts, validating both.
    pub fn new(schema: &str, table: &str) -> Result<Self, CatalogError> {
        for part in [schema, table] {
            if !valid_ident(part) {
                return Err(CatalogError::InvalidName(format!(
                    "`{part}` is not a valid name: use lowercase letters, digits and `_`, starting with a letter or `_`, at most {MAX_IDENT} characters"
                )));
            }
        }
        Ok(Self {
            schema: schema.to_string(),
            table: table.to_string(),
        })
    }

    /// The schema part (`tpch` in `tpch.orders`).
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The table part (`orders` in `tpch.orders`).
    pub fn table(&self) -> &str {
        &self.table
    }
}

impl FromStr for TableName {
    type Err = CatalogError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('.') {
            Some((schema, table)) => Self::new(schema, table),
            None => Err(CatalogError::InvalidName(format!(
                "`{s}` is not a table name: write it as `schema.table`"
            ))),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let t: TableName = "tpch.line_item2".parse().unwrap();
        assert_eq!((t.schema(), t.table()), ("tpch", "line_item2"));
        for bad in [
            "tpch", "TPCH.x", "a.b.c", "a.", ".b", "a.1b", "a.b-c", "../x.y", "a.b c",
        ] {
            assert!(
                bad.parse::<TableName>().is_err(),
                "{bad} should be rejected"
            );
        }
    }
}
