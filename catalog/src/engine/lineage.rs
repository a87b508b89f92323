//! Which columns of which tables a statement reads, for the access history: the columns
//! that reach its output (through projections, aggregates and window functions, at any
//! depth) and those used only to choose rows (filters, join keys, sorts). A column read in
//! a projection of a subquery counts as output: when in doubt, the history says "read".

use std::collections::{BTreeMap, BTreeSet, HashMap};

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Column, TableReference};
use datafusion::logical_expr::{Expr, LogicalPlan};

use crate::names::CATALOG_NAME;
use crate::state::audit::TableRead;

use super::sessions::VisibleTable;

/// The columns `plan` reads of each table, with the policies `tables` (the principal's
/// catalog) apply to them. Table names are as the principal addresses them; unqualified
/// names resolve in `schema`.
pub(crate) fn reads(plan: &LogicalPlan, schema: &str, tables: &[VisibleTable]) -> Vec<TableRead> {
    // Each table scanned: its name and columns, and the qualifiers its columns go by.
    let mut scans: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut qualifiers: HashMap<TableReference, String> = HashMap::new();
    let mut projected: Vec<Column> = Vec::new();
    let mut filtered: Vec<Column> = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::TableScan(scan) => {
                let resolved = scan.table_name.clone().resolve(CATALOG_NAME, schema);
                let name = format!("{}.{}", resolved.schema, resolved.table);
                let columns = scan
                    .source
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                scans.insert(name.clone(), columns);
                qualifiers.insert(scan.table_name.clone(), name);
            }
            LogicalPlan::SubqueryAlias(alias) => {
                if let LogicalPlan::TableScan(scan) = alias.input.as_ref() {
                    let resolved = scan.table_name.clone().resolve(CATALOG_NAME, schema);
                    qualifiers.insert(
                        alias.alias.clone(),
                        format!("{}.{}", resolved.schema, resolved.table),
                    );
                }
            }
            _ => {}
        }
        let output = matches!(
            node,
            LogicalPlan::Projection(_) | LogicalPlan::Aggregate(_) | LogicalPlan::Window(_)
        );
        let _ = node.apply_expressions(|e: &Expr| {
            let into = if output {
                &mut projected
            } else {
                &mut filtered
            };
            into.extend(e.column_refs().into_iter().cloned());
            Ok(TreeNodeRecursion::Continue)
        });
        Ok(TreeNodeRecursion::Continue)
    });
    // A column reference belongs to the table its qualifier names, or (unqualified) to
    // every scanned table that has a column of that name.
    let owners = |c: &Column| -> Vec<String> {
        match &c.relation {
            Some(r) => qualifiers
                .get(r)
                .or_else(|| {
                    qualifiers
                        .iter()
                        .find(|(q, _)| q.table() == r.table())
                        .map(|(_, t)| t)
                })
                .filter(|t| scans.get(*t).is_some_and(|cols| cols.contains(&c.name)))
                .cloned()
                .into_iter()
                .collect(),
            None => scans
                .iter()
                .filter(|(_, cols)| cols.contains(&c.name))
                .map(|(t, _)| t.clone())
                .collect(),
        }
    };
    let mut out: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = scans
        .keys()
        .map(|t| (t.clone(), Default::default()))
        .collect();
    for c in &projected {
        for table in owners(c) {
            out.entry(table).or_default().0.insert(c.name.clone());
        }
    }
    for c in &filtered {
        for table in owners(c) {
            out.entry(table).or_default().1.insert(c.name.clone());
        }
    }
    out.into_iter()
        .map(|(table, (projected, filtered))| {
            let visible = tables.iter().find(|t| t.name.to_string() == table);
            TableRead {
                masked_columns: visible
                    .map(|v| {
                        projected
                            .iter()
                            .filter(|c| !v.clear_columns.contains(c))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default(),
                policies: visible.map(|v| v.applied.clone()).unwrap_or_default(),
                columns_filtered: filtered.difference(&projected).cloned().collect(),
                columns_projected: projected.into_iter().collect(),
                table,
            }
        })
        .collect()
}
