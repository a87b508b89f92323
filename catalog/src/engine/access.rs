//! Effective access: what one principal may read of each table, and which grant, policy or
//! tag brought each row condition and mask, so a person can answer "why can't I see X"
//! alone. Computed from the same grants, tags and policies the principal's session is built
//! from ([`super::sessions`]).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::auth::principal::Principal;
use crate::state::access::Grant;
use crate::state::governance::Tags;
use crate::{CatalogError, TableName};

use super::QueryEngine;
use super::sessions::{row_policies, tag_masks};

/// What a principal may read of one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableAccess {
    /// `schema.table`, as the principal addresses it.
    pub table: String,
    /// Why the principal reaches it at all: `admin`, `owner` (their own table) or `grants`.
    pub through: &'static str,
    /// The grants of the principal's groups covering the table.
    pub grants: Vec<GrantInForce>,
    /// Row policies in force on it.
    pub row_policies: Vec<RowPolicyInForce>,
    /// The visible columns and how each is shown.
    pub columns: Vec<ColumnAccess>,
    /// Whether some rows are held back (a grant's filter or a row policy).
    pub rows_filtered: bool,
    /// Why the table cannot be read, when a restrictive policy on it cannot be evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed: Option<String>,
}

/// A grant that reaches the table.
#[derive(Debug, Clone, Serialize)]
pub struct GrantInForce {
    /// The grant's id.
    pub id: i64,
    /// The group it was made to.
    pub group: String,
    /// `schema.table` or `schema.*`.
    pub on: String,
    /// Its row filter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row_filter: Option<String>,
}

/// A row policy in force on the table.
#[derive(Debug, Clone, Serialize)]
pub struct RowPolicyInForce {
    /// The policy's name.
    pub policy: String,
    /// `permissive` (adds rows) or `restrictive` (keeps only rows meeting it).
    pub mode: &'static str,
    /// The condition, as written for this table.
    pub condition: String,
}

/// One visible column.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnAccess {
    /// The column's name.
    pub name: String,
    /// Its tags (own, table's and schema's).
    pub tags: Vec<String>,
    /// `clear`, or `masked` on some or all rows.
    pub shown: &'static str,
    /// What masks it: `grant 12: '***'`, `policy emails (hash)`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub masked_by: Vec<String>,
}

/// What policies did to one table a statement read: never which policies, nor their text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyEffect {
    /// Some rows were held back (a grant's filter or a row policy).
    pub rows_filtered: bool,
    /// Columns shown masked on some or all rows.
    pub masked_columns: Vec<String>,
}

impl QueryEngine {
    /// For each table of `tables` (as a statement names them, `schema.table`) that a
    /// policy filters or masks for `principal`, what it does; tables it leaves alone are
    /// not listed.
    pub async fn policy_effects(
        &self,
        principal: &Principal,
        tables: &[String],
    ) -> Result<BTreeMap<String, PolicyEffect>, CatalogError> {
        let session = self.principal_session(principal).await?;
        let mut out = BTreeMap::new();
        for visible in &session.tables {
            let name = visible.name.to_string();
            if !tables.contains(&name) {
                continue;
            }
            let Some(schema) = self.table_schema(principal, &visible.name).await? else {
                continue;
            };
            let masked_columns: Vec<String> = schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .filter(|c| !visible.clear_columns.contains(c))
                .collect();
            if visible.row_filtered || !masked_columns.is_empty() {
                out.insert(
                    name,
                    PolicyEffect {
                        rows_filtered: visible.row_filtered,
                        masked_columns,
                    },
                );
            }
        }
        Ok(out)
    }

    /// What `principal` may read of each table, and why.
    pub async fn effective_access(
        &self,
        principal: &Principal,
    ) -> Result<Vec<TableAccess>, CatalogError> {
        let session = self.principal_session(principal).await?;
        let governance = {
            let g = self.state.governance();
            (g.tags()?, g.policies()?)
        };
        let grants: Vec<Grant> = self
            .state
            .access()
            .grants()?
            .into_iter()
            .filter(|g| principal.groups().contains(&g.group))
            .collect();
        let mut out = Vec::new();
        for visible in &session.tables {
            let stored = &visible.entry.name;
            let Some(schema) = self.table_schema(principal, &visible.name).await? else {
                continue;
            };
            let base = self.provider(&session.ctx, &visible.entry).await?.schema();
            let covering: Vec<&Grant> = grants.iter().filter(|g| g.table.covers(stored)).collect();
            let through = if principal.is_admin() {
                "admin"
            } else if visible.name.schema() == super::PERSONAL_SCHEMA {
                "owner"
            } else {
                "grants"
            };
            let governed = through == "grants";
            let (rows, masks) = if governed {
                (
                    row_policies(&governance, principal, stored, &base),
                    tag_masks(&governance, principal, stored, &base),
                )
            } else {
                Default::default()
            };
            let mut row_list: Vec<RowPolicyInForce> = Vec::new();
            for (mode, list) in [
                ("permissive", &rows.permissive),
                ("restrictive", &rows.restrictive),
            ] {
                row_list.extend(list.iter().map(|(policy, condition)| RowPolicyInForce {
                    policy: policy.clone(),
                    mode,
                    condition: condition.clone(),
                }));
            }
            let columns = schema
                .fields()
                .iter()
                .map(|f| {
                    let name = f.name().clone();
                    let mut masked_by: Vec<String> = Vec::new();
                    if governed {
                        for g in &covering {
                            if let Some(Some(mask)) = g.column_masks.get(&name) {
                                masked_by.push(format!("grant {}: {mask}", g.id));
                            }
                        }
                        if let Some(m) = masks.iter().find(|m| base.field(m.column).name() == &name)
                        {
                            masked_by.push(format!("policy {} ({})", m.policy, m.mask));
                        }
                    }
                    let clear = visible.clear_columns.contains(&name);
                    ColumnAccess {
                        tags: tags_of(&governance.0, stored, &name),
                        shown: if clear { "clear" } else { "masked" },
                        masked_by,
                        name,
                    }
                })
                .collect();
            let closed = if governed {
                self.closed_reason(&session.ctx, &visible.name).await
            } else {
                None
            };
            out.push(TableAccess {
                table: visible.name.to_string(),
                through,
                grants: covering
                    .iter()
                    .map(|g| GrantInForce {
                        id: g.id,
                        group: g.group.clone(),
                        on: g.table.to_string(),
                        row_filter: g.row_filter.clone(),
                    })
                    .collect(),
                row_policies: row_list,
                columns,
                rows_filtered: visible.row_filtered,
                closed,
            });
        }
        Ok(out)
    }

    /// Why `name` is closed in a session, if it is.
    async fn closed_reason(
        &self,
        ctx: &datafusion::prelude::SessionContext,
        name: &TableName,
    ) -> Option<String> {
        let provider = ctx.table_provider(name.to_string()).await.ok()?;
        provider
            .downcast_ref::<super::policy::PolicyTable>()
            .and_then(|t| t.policy().closed().map(String::from))
    }
}

fn tags_of(tags: &Tags, table: &TableName, column: &str) -> Vec<String> {
    tags.of_column(table, column).into_iter().collect()
}
