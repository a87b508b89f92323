//! Table definitions (what to sync and when), from the configuration file or the admin API.
//!
//! A definition is stored as the JSON of [`TableDef`]; its secrets are `${ENV}` references
//! (the connectors refuse literals), so nothing secret is ever written here.

use std::collections::HashSet;

use super::Tables;
use crate::state::params;
use quiver_config::TableDef;

use crate::{CatalogError, TableName};

/// Where a definition came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DefinedIn {
    /// The `tables:` list of the configuration file (changed there, not through the API).
    Config,
    /// The admin API.
    Api,
}

impl DefinedIn {
    fn as_str(self) -> &'static str {
        match self {
            DefinedIn::Config => "config",
            DefinedIn::Api => "api",
        }
    }
}

/// A stored definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// The table it defines.
    pub name: TableName,
    /// What to sync and when.
    pub def: TableDef,
    /// Where it came from.
    pub origin: DefinedIn,
}

fn parse_def(json: &str) -> Result<TableDef, CatalogError> {
    serde_json::from_str(json)
        .map_err(|e| CatalogError::State(format!("stored table definition is unreadable: {e}")))
}

impl Tables<'_> {
    /// Every definition, ordered by name.
    pub fn definitions(&self) -> Result<Vec<Definition>, CatalogError> {
        let conn = self.0.conn()?;
        let rows: Vec<(String, String, String, String)> = conn.query_map("SELECT schema_name, table_name, definition, origin FROM table_definitions ORDER BY 1, 2", params![], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        rows.into_iter()
            .map(|(schema, table, json, origin)| {
                Ok(Definition {
                    name: TableName::new(&schema, &table)?,
                    def: parse_def(&json)?,
                    origin: if origin == "config" {
                        DefinedIn::Config
                    } else {
                        DefinedIn::Api
                    },
                })
            })
            .collect()
    }

    /// The definition of `name`, if it has one.
    pub fn definition(&self, name: &TableName) -> Result<Option<Definition>, CatalogError> {
        Ok(self.definitions()?.into_iter().find(|d| &d.name == name))
    }

    /// Registers a new table through the API; a name in use is a conflict.
    pub fn define_table(
        &self,
        actor: &str,
        name: &TableName,
        def: &TableDef,
    ) -> Result<(), CatalogError> {
        let json = serde_json::to_string(def)
            .map_err(|e| CatalogError::Internal(format!("definition: {e}")))?;
        let exists = self.definition(name)?.is_some() || self.get(name).is_ok();
        if exists {
            return Err(CatalogError::Conflict(format!(
                "table `{name}` already exists"
            )));
        }
        self.refuse_writable(name)?;
        self.0
            .change(actor, "table.create", &name.to_string(), |tx| {
                tx.execute(
                    "INSERT INTO table_definitions (schema_name, table_name, definition, origin)
                 VALUES ($1, $2, $3, 'api')",
                    params![name.schema(), name.table(), json],
                )?;
                Ok(((), serde_json::to_value(def).unwrap_or_default()))
            })
    }

    /// Refuses a sync into a schema users write to: its next run would overwrite them.
    fn refuse_writable(&self, name: &TableName) -> Result<(), CatalogError> {
        let schema = name.schema();
        let personal = schema.starts_with(super::PERSONAL_PREFIX) || schema == "me";
        let granted = self.0.access().grants()?.into_iter().any(|g| {
            g.privilege == crate::state::access::Privilege::Write && g.table.schema() == schema
        });
        if personal || granted {
            return Err(CatalogError::InvalidInput(format!(
                "`{name}` cannot be synced: users write to `{schema}` (a personal schema or one granted `write`), and a sync would overwrite what they wrote; sync into a schema of its own"
            )));
        }
        Ok(())
    }

    /// Replaces the definition of an API-defined table.
    pub fn redefine_table(
        &self,
        actor: &str,
        name: &TableName,
        def: &TableDef,
    ) -> Result<(), CatalogError> {
        match self.definition(name)? {
            None => {
                return Err(CatalogError::NotFound(format!(
                    "no table definition `{name}`"
                )));
            }
            Some(d) if d.origin == DefinedIn::Config => {
                return Err(CatalogError::Conflict(format!(
                    "`{name}` is defined in the configuration file; change it there"
                )));
            }
            Some(_) => {}
        }
        let json = serde_json::to_string(def)
            .map_err(|e| CatalogError::Internal(format!("definition: {e}")))?;
        self.0.change(actor, "table.update", &name.to_string(), |tx| {
            tx.execute(
                "UPDATE table_definitions SET definition = $1 WHERE schema_name = $2 AND table_name = $3",
                params![json, name.schema(), name.table()],
            )?;
            tx.execute(
                "UPDATE tables SET description = $1 WHERE schema_name = $2 AND table_name = $3",
                params![def.description, name.schema(), name.table()],
            )?;
            Ok(((), serde_json::to_value(def).unwrap_or_default()))
        })
    }

    /// Makes the stored config-file definitions match `defs` (the file wins over an API
    /// definition of the same name); returns how many changed.
    pub fn sync_config_definitions(
        &self,
        defs: &[(TableName, TableDef)],
    ) -> Result<usize, CatalogError> {
        let current = self.definitions()?;
        let mut changed = 0;
        for (name, _) in defs {
            self.refuse_writable(name)?;
        }
        for (name, def) in defs {
            let json = serde_json::to_string(def)
                .map_err(|e| CatalogError::Internal(format!("definition: {e}")))?;
            let same = current
                .iter()
                .any(|d| &d.name == name && d.origin == DefinedIn::Config && &d.def == def);
            if same {
                continue;
            }
            self.0
                .change("config", "table.define", &name.to_string(), |tx| {
                    tx.execute(
                    "INSERT INTO table_definitions (schema_name, table_name, definition, origin)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (schema_name, table_name)
                     DO UPDATE SET definition = excluded.definition, origin = excluded.origin",
                    params![name.schema(), name.table(), json, DefinedIn::Config.as_str()],
                )?;
                    tx.execute(
                    "UPDATE tables SET description = $1 WHERE schema_name = $2 AND table_name = $3",
                    params![def.description, name.schema(), name.table()],
                )?;
                    Ok(((), serde_json::Value::Null))
                })?;
            changed += 1;
        }
        let wanted: HashSet<&TableName> = defs.iter().map(|(n, _)| n).collect();
        for gone in current
            .iter()
            .filter(|d| d.origin == DefinedIn::Config && !wanted.contains(&d.name))
        {
            // Removed from the file: no more syncs. Its data stays until an admin deletes it.
            self.0
                .change("config", "table.undefine", &gone.name.to_string(), |tx| {
                    tx.execute(
                        "DELETE FROM table_definitions WHERE schema_name = $1 AND table_name = $2",
                        params![gone.name.schema(), gone.name.table()],
                    )?;
                    Ok(((), serde_json::Value::Null))
                })?;
            changed += 1;
        }
        Ok(changed)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    use crate::state::StateStore;

    /// A `files` definition of `name`.
    pub(in crate::state) fn def(name: &str) -> TableDef {
        serde_json::from_value(serde_json::json!({
            "name": name, "connector": "files", "options": {"path": "/x.csv"}
        }))
        .unwrap()
    }

    #[test]
    fn config_definitions_follow_the_file() {
        let store = StateStore::in_memory().unwrap();
        let a: TableName = "s.a".parse().unwrap();
        let b: TableName = "s.b".parse().unwrap();
        let both = vec![(a.clone(), def("s.a")), (b.clone(), def("s.b"))];
        assert_eq!(store.tables().sync_config_definitions(&both).unwrap(), 2);
        assert_eq!(store.tables().sync_config_definitions(&both).unwrap(), 0);
        assert!(matches!(
            store.tables().redefine_table("x@y.io", &a, &def("s.a")),
            Err(CatalogError::Conflict(_))
        ));
        assert_eq!(
            store.tables().sync_config_definitions(&both[..1]).unwrap(),
            1
        );
        let names: Vec<_> = store
            .tables()
            .definitions()
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, vec![a]);
    }
}
