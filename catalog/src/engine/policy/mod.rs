//! Row filters and column masks, enforced inside a per-principal table provider.
//!
//! DataFusion's optimizer reorders and pushes predicates, so a user predicate such as
//! `1/(secret - 42)` could otherwise run on rows the policy hides and leak through its
//! error. [`PolicyTable`] therefore produces its rows already filtered and masked, and
//! accepts only predicates that cannot fail or leak (plain comparisons of always-clear
//! columns with literals, see [`is_safe_filter`]) below the policy, which keeps parquet
//! pruning. Everything else the user writes runs above it, on visible rows and masked
//! values. [`PolicyExec`] is the barrier in the physical plan: no filter, dynamic or not,
//! is pushed through it, and it reports no statistics, so `COUNT(*)`/`MIN`/`MAX` are never
//! answered from file metadata.
//!
//! Several grants on one table combine as a union: a row is visible if any grant's filter
//! keeps it; a column value is clear on the rows of a grant that leaves it clear, masked on
//! the rows of a grant that masks it, and the column is hidden only if every grant hides it.

use std::collections::HashSet;

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{Column, DFSchema, Result, ScalarValue};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{
    BinaryExpr, Expr, ExprSchemable, Operator, Volatility, lit, or, when,
};

use crate::engine::caller::CALLER_FUNCTIONS;
use crate::state::access::Grant;

mod masks;
mod table;

pub(crate) use masks::MaskHash;
pub(crate) use table::unqualify;
pub(crate) use table::{PolicyExec, PolicyTable};

/// How one visible column of a policy-governed table is produced.
#[derive(Debug, Clone)]
enum ColumnRule {
    /// The base column, unchanged on every visible row.
    Clear,
    /// An expression over the base columns (a mask, or a per-grant `CASE`).
    Computed(Expr),
}

/// A principal's compiled policy on one table: which rows, and how each visible column is
/// produced from the base table's columns.
#[derive(Debug, Clone)]
pub(crate) struct TablePolicy {
    /// Predicate over base columns; `None` keeps every row.
    rows: Option<Expr>,
    /// Visible columns: (index in the base schema, rule), in base order.
    columns: Vec<(usize, ColumnRule)>,
    /// Why the table may not be read at all: a restrictive row policy on it cannot be
    /// evaluated, and the table stays closed rather than open.
    closed: Option<String>,
}

/// The mask a tag policy puts on one column (the most restrictive, when several cover it).
#[derive(Debug, Clone)]
pub(crate) struct TagMask {
    /// The column's index in the base table.
    pub(crate) column: usize,
    pub(crate) mask: crate::state::governance::Mask,
    /// The policy it comes from.
    pub(crate) policy: String,
}

/// The row policies covering one table for one caller, as (policy name, condition written
/// for the table).
#[derive(Debug, Default)]
pub(crate) struct RowPolicies {
    /// The table's name, for messages.
    pub(crate) table: String,
    /// OR-ed with the grants' filters.
    pub(crate) permissive: Vec<(String, String)>,
    /// AND-ed over everything else.
    pub(crate) restrictive: Vec<(String, String)>,
}

/// One grant, parsed against a table.
struct ParsedGrant {
    filter: Option<Expr>,
    /// Per base column: `None` clear, `Some(None)` hidden, `Some(Some(e))` masked by `e`.
    masks: Vec<Option<Option<Expr>>>,
}

impl TablePolicy {
    /// Combines `grants` (all covering this table) and the row policies over it into one
    /// policy. Grants and permissive policies that do not compile against the table are
    /// skipped with a warning (fail closed: fewer rows); a restrictive policy that does not
    /// compile closes the table. `None` when no grant remains.
    pub(crate) fn compile(
        state: &SessionState,
        base: &Schema,
        grants: &[&Grant],
        row_policies: &RowPolicies,
    ) -> Option<Self> {
        let mut parsed: Vec<ParsedGrant> = grants
            .iter()
            .filter_map(|g| match parse_grant(state, base, g) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(grant = g.id, table = %g.table, error = %e, "grant skipped: it does not compile against the table");
                    None
                }
            })
            .collect();
        if parsed.is_empty() {
            return None;
        }
        let df = DFSchema::try_from(base.clone()).ok()?;
        // Rows a permissive policy adds show each column as the strictest grant does.
        let strictest = strictest_masks(&parsed);
        for (name, condition) in &row_policies.permissive {
            match parse_condition(state, &df, condition) {
                Ok(filter) => parsed.push(ParsedGrant {
                    filter: Some(filter),
                    masks: strictest.clone(),
                }),
                Err(e) => {
                    tracing::warn!(policy = %name, error = %e, "permissive row policy skipped: it does not compile against the table")
                }
            }
        }
        let mut policy = Self::combine(base, &parsed);
        for (name, condition) in &row_policies.restrictive {
            match parse_condition(state, &df, condition) {
                Ok(only) => {
                    policy.rows = Some(match policy.rows.take() {
                        Some(rows) => datafusion::logical_expr::and(rows, only),
                        None => only,
                    })
                }
                Err(e) => {
                    tracing::warn!(policy = %name, error = %e, "table closed: a restrictive row policy does not compile against it");
                    policy.closed = Some(format!(
                        "`{}` is closed to you: its restrictive row policy `{name}` cannot be evaluated on it; an administrator must fix the policy",
                        row_policies.table
                    ));
                }
            }
        }
        Some(policy)
    }

    /// Why the table may not be read at all, if it may not.
    pub(crate) fn closed(&self) -> Option<&str> {
        self.closed.as_deref()
    }

    /// Checks one grant against a table, with messages for the person writing it.
    pub(crate) fn validate(
        state: &SessionState,
        base: &Schema,
        grant: &Grant,
    ) -> Result<(), String> {
        for column in grant.column_masks.keys() {
            if base.field_with_name(column).is_err() {
                return Err(format!(
                    "column_masks names `{column}`, which the table does not have (columns: {})",
                    column_names(base)
                ));
            }
        }
        let parsed = parse_grant(state, base, grant)?;
        let policy = Self::combine(base, &[parsed]);
        // Plan the expressions physically too, so nothing fails later at query time.
        let df = DFSchema::try_from(base.clone()).map_err(|e| e.to_string())?;
        for expr in
            policy
                .rows
                .iter()
                .chain(policy.columns.iter().filter_map(|(_, rule)| match rule {
                    ColumnRule::Computed(e) => Some(e),
                    ColumnRule::Clear => None,
                }))
        {
            state
                .create_physical_expr(expr.clone(), &df)
                .map_err(|e| e.strip_backtrace())?;
        }
        Ok(())
    }

    /// Shows the columns `masks` names (by index in `base`) through their tag mask, on top
    /// of what the grants show of them. A mask that does not compile shows NULL.
    pub(crate) fn apply_tag_masks(
        &mut self,
        state: &SessionState,
        base: &Schema,
        masks: &[TagMask],
    ) {
        for (index, rule) in &mut self.columns {
            let Some(TagMask { mask, .. }) = masks.iter().find(|m| m.column == *index) else {
                continue;
            };
            let field = base.field(*index);
            let value = match rule {
                ColumnRule::Clear => Expr::Column(Column::new_unqualified(field.name())),
                ColumnRule::Computed(e) => e.clone(),
            };
            let masked = masks::mask_expr(mask, value, field.data_type(), state)
                .unwrap_or_else(|e| {
                    tracing::warn!(column = field.name(), %mask, error = %e, "tag mask shows NULL: it does not compile for the column");
                    lit(ScalarValue::try_from(field.data_type()).unwrap_or(ScalarValue::Null))
                });
            *rule = ColumnRule::Computed(cast(masked, field.data_type()));
        }
    }

    /// Whether the policy hides rows.
    pub(crate) fn filters_rows(&self) -> bool {
        self.rows.is_some() || self.closed.is_some()
    }

    /// Names of the visible columns shown unchanged (not masked).
    pub(crate) fn clear_columns(&self, base: &Schema) -> Vec<String> {
        self.columns
            .iter()
            .filter(|(_, r)| matches!(r, ColumnRule::Clear))
            .map(|(i, _)| base.field(*i).name().clone())
            .collect()
    }

    /// Whether what the policy shows depends on who runs the query: its filter or a mask
    /// calls a function that is not fixed by its arguments (`current_user()`).
    pub(crate) fn is_personal(&self) -> bool {
        self.expressions().any(varies)
    }

    /// Whether what the policy shows changes between two runs by the same caller: its
    /// filter or a mask calls `now()`, `random()` or the like (evaluated for each query).
    pub(crate) fn is_time_relative(&self) -> bool {
        self.expressions().any(|e| {
            e.exists(|e| {
                Ok(matches!(e, Expr::ScalarFunction(f)
                    if f.func.signature().volatility != Volatility::Immutable
                        && !CALLER_FUNCTIONS.contains(&f.func.name())))
            })
            .unwrap_or(true)
        })
    }

    /// The row filter and the masks' expressions.
    fn expressions(&self) -> impl Iterator<Item = &Expr> {
        let rules = self.columns.iter().filter_map(|(_, r)| match r {
            ColumnRule::Clear => None,
            ColumnRule::Computed(e) => Some(e),
        });
        self.rows.iter().chain(rules)
    }

    /// True when the policy changes nothing (no filter, every column clear).
    pub(crate) fn is_transparent(&self, base: &Schema) -> bool {
        self.rows.is_none()
            && self.closed.is_none()
            && self.columns.len() == base.fields().len()
            && self
                .columns
                .iter()
                .all(|(_, r)| matches!(r, ColumnRule::Clear))
    }

    fn combine(base: &Schema, grants: &[ParsedGrant]) -> Self {
        let rows = any_of(grants.iter().map(|g| g.filter.clone()));
        let mut columns = Vec::new();
        for (index, field) in base.fields().iter().enumerate() {
            let clear_rows = any_of(
                grants
                    .iter()
                    .filter(|g| g.masks[index].is_none())
                    .map(|g| g.filter.clone()),
            );
            let has_clear = grants.iter().any(|g| g.masks[index].is_none());
            let masked: Vec<(Option<Expr>, Expr)> = grants
                .iter()
                .filter_map(|g| match &g.masks[index] {
                    Some(Some(mask)) => Some((g.filter.clone(), mask.clone())),
                    _ => None,
                })
                .collect();
            let rule = if has_clear && (clear_rows.is_none() || rows == clear_rows) {
                // Clear on every visible row.
                ColumnRule::Clear
            } else if !has_clear && masked.is_empty() {
                continue; // hidden under every grant
            } else if grants.len() == 1 {
                let (_, mask) = masked.into_iter().next().expect("one masked grant");
                ColumnRule::Computed(cast(mask, field.data_type()))
            } else {
                let column = Expr::Column(Column::new_unqualified(field.name()));
                let mut branches: Vec<(Expr, Expr)> = Vec::new();
                if has_clear {
                    branches.push((clear_rows.unwrap_or(lit(true)), column));
                }
                for (filter, mask) in masked {
                    branches.push((filter.unwrap_or(lit(true)), cast(mask, field.data_type())));
                }
                let mut iter = branches.into_iter();
                let (first_when, first_then) = iter.next().expect("at least one branch");
                let mut case = when(first_when, first_then);
                for (w, t) in iter {
                    case.when(w, t);
                }
                let null = ScalarValue::try_from(field.data_type()).unwrap_or(ScalarValue::Null);
                match case.otherwise(lit(null)) {
                    Ok(e) => ColumnRule::Computed(e),
                    // Cannot build the CASE: hide the column rather than show it.
                    Err(_) => continue,
                }
            };
            columns.push((index, rule));
        }
        Self {
            rows,
            columns,
            closed: None,
        }
    }
}

/// Checks a row policy's condition against a table, planning it physically too, so
/// nothing fails later at query time.
pub(crate) fn validate_condition(
    state: &SessionState,
    base: &Schema,
    sql: &str,
) -> Result<(), String> {
    let df = DFSchema::try_from(base.clone()).map_err(|e| e.to_string())?;
    let expr = parse_condition(state, &df, sql)?;
    state
        .create_physical_expr(expr, &df)
        .map(|_| ())
        .map_err(|e| e.strip_backtrace())
}

/// Per column, the strictest of the grants' treatments: hidden if any grant hides it, else
/// masked if any masks it (by the first such mask), else clear.
fn strictest_masks(grants: &[ParsedGrant]) -> Vec<Option<Option<Expr>>> {
    let columns = grants.first().map_or(0, |g| g.masks.len());
    (0..columns)
        .map(|i| {
            if grants.iter().any(|g| matches!(g.masks[i], Some(None))) {
                Some(None)
            } else {
                grants.iter().find_map(|g| g.masks[i].clone())
            }
        })
        .collect()
}

/// Parses a SQL condition on a table's rows (a grant's filter or a row policy's): it must
/// be true/false, without subqueries.
fn parse_condition(state: &SessionState, df: &DFSchema, sql: &str) -> Result<Expr, String> {
    let expr = state
        .create_logical_expr(sql, df)
        .map_err(|e| e.strip_backtrace())?;
    no_subqueries(&expr)?;
    let ty = expr.get_type(df).map_err(|e| e.strip_backtrace())?;
    if ty != DataType::Boolean {
        return Err(format!(
            "a condition must be true/false, but `{sql}` is {ty}"
        ));
    }
    Ok(expr)
}

/// `None` (all rows) if any input is `None`, else the OR of the inputs.
fn any_of(filters: impl Iterator<Item = Option<Expr>>) -> Option<Expr> {
    let mut acc: Option<Expr> = None;
    for f in filters {
        let f = f?;
        acc = Some(match acc {
            None => f,
            Some(a) => or(a, f),
        });
    }
    acc
}

fn cast(expr: Expr, to: &DataType) -> Expr {
    Expr::Cast(datafusion::logical_expr::Cast::new(
        Box::new(expr),
        to.clone(),
    ))
}

fn column_names(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a mask of type `from` may stand in for a column of type `to`: same type, or the
/// same family (numbers, strings), or NULL.
fn mask_type_fits(from: &DataType, to: &DataType) -> bool {
    from == to
        || from.is_null()
        || (from.is_numeric() && to.is_numeric())
        || (is_string(from) && is_string(to))
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn parse_grant(state: &SessionState, base: &Schema, grant: &Grant) -> Result<ParsedGrant, String> {
    let df = DFSchema::try_from(base.clone()).map_err(|e| e.to_string())?;
    let parse = |sql: &str| -> Result<Expr, String> {
        let expr = state
            .create_logical_expr(sql, &df)
            .map_err(|e| e.strip_backtrace())?;
        no_subqueries(&expr)?;
        Ok(expr)
    };
    let filter = match grant.row_filter.as_deref() {
        Some(sql) => {
            Some(parse_condition(state, &df, sql).map_err(|e| format!("row_filter: {e}"))?)
        }
        None => None,
    };
    let mut masks = vec![None; base.fields().len()];
    for (column, mask) in &grant.column_masks {
        // Masks on columns a table lacks (from a `schema.*` grant) do not apply to it.
        let Ok(index) = base.index_of(column) else {
            continue;
        };
        masks[index] = Some(match mask {
            None => None,
            Some(sql) => {
                let expr = parse(sql).map_err(|e| format!("mask for `{column}`: {e}"))?;
                let from = expr.get_type(&df).map_err(|e| e.strip_backtrace())?;
                let to = base.field(index).data_type();
                if !mask_type_fits(&from, to) {
                    return Err(format!(
                        "mask for `{column}` is {from} but the column is {to}; a mask keeps the column's type"
                    ));
                }
                Some(expr)
            }
        });
    }
    Ok(ParsedGrant { filter, masks })
}

/// Refuses subqueries in a policy's expression: it is evaluated on one table's rows, with
/// no other table to read.
pub(crate) fn no_subqueries(expr: &Expr) -> Result<(), String> {
    let found = expr
        .exists(|e| {
            Ok(matches!(
                e,
                Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
            ))
        })
        .unwrap_or(true);
    if found {
        Err("subqueries are not allowed in row filters, conditions or masks".into())
    } else {
        Ok(())
    }
}

/// Whether a user predicate may run below the policy: it cannot fail and reveals nothing,
/// because it only compares columns that are clear on every visible row with literals.
pub(crate) fn is_safe_filter(expr: &Expr, clear: &HashSet<&str>) -> bool {
    let is_col = |e: &Expr| matches!(e, Expr::Column(c) if clear.contains(c.name.as_str()));
    let is_lit = |e: &Expr| matches!(e, Expr::Literal(..));
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::And | Operator::Or => {
                is_safe_filter(left, clear) && is_safe_filter(right, clear)
            }
            Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq
            | Operator::IsDistinctFrom
            | Operator::IsNotDistinctFrom => {
                (is_col(left) && is_lit(right)) || (is_lit(left) && is_col(right))
            }
            _ => false,
        },
        Expr::Not(e) => is_safe_filter(e, clear),
        Expr::IsNull(e) | Expr::IsNotNull(e) => is_col(e),
        Expr::Between(b) => is_col(&b.expr) && is_lit(&b.low) && is_lit(&b.high),
        Expr::InList(l) => is_col(&l.expr) && l.list.iter().all(is_lit),
        _ => false,
    }
}

/// Whether `expr` calls a function whose value is not fixed by its arguments (`now()`,
/// `random()`, `current_user()`).
pub(crate) fn varies(expr: &Expr) -> bool {
    expr.exists(|e| {
        Ok(matches!(e, Expr::ScalarFunction(f)
            if f.func.signature().volatility != Volatility::Immutable))
    })
    .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Field;
    use datafusion::logical_expr::{col, in_list};
    use datafusion::prelude::SessionContext;

    fn clear() -> HashSet<&'static str> {
        ["id", "region"].into_iter().collect()
    }

    #[test]
    fn only_comparisons_of_clear_columns_with_literals_are_safe() {
        let safe = [
            col("id").eq(lit(7)),
            lit(7).lt(col("id")),
            col("region").eq(lit("EU")).or(col("id").is_null()),
            in_list(col("id"), vec![lit(1), lit(2)], false),
            col("id").between(lit(1), lit(9)),
            !col("id").gt_eq(lit(3)),
        ];
        for e in &safe {
            assert!(is_safe_filter(e, &clear()), "{e}");
        }
        let unsafe_ = [
            // can fail on a hidden row
            (lit(1) / (col("id") - lit(42))).gt(lit(0)),
            cast(col("region"), &DataType::Int64).eq(lit(1)),
            // compares a masked column's real value
            col("email").eq(lit("a@b.c")),
            // column against column, function calls
            col("id").eq(col("region")),
            col("region").like(lit("E%")),
        ];
        for e in &unsafe_ {
            assert!(!is_safe_filter(e, &clear()), "{e}");
        }
    }

    fn grant(id: i64, filter: Option<&str>, masks: &[(&str, Option<&str>)]) -> Grant {
        Grant {
            id,
            group: "g".into(),
            table: "s.t".parse().unwrap(),
            row_filter: filter.map(String::from),
            column_masks: masks
                .iter()
                .map(|(c, m)| (c.to_string(), m.map(String::from)))
                .collect(),
            privilege: Default::default(),
        }
    }

    #[test]
    fn grants_combine_as_a_union_with_per_row_masks() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("email", DataType::Utf8, true),
            Field::new("secret", DataType::Utf8, true),
        ]);
        let ctx = SessionContext::new();
        let state = ctx.state();
        let a = grant(
            1,
            Some("id < 10"),
            &[("email", Some("'***'")), ("secret", None)],
        );
        let b = grant(2, Some("id > 100"), &[("secret", None)]);
        let policy =
            TablePolicy::compile(&state, &schema, &[&a, &b], &RowPolicies::default()).unwrap();
        assert_eq!(
            policy.rows.as_ref().unwrap().to_string(),
            "id < Int64(10) OR id > Int64(100)"
        );
        // `secret` is hidden under both; `id` clear under both; `email` clear only under b.
        let names: Vec<usize> = policy.columns.iter().map(|(i, _)| *i).collect();
        assert_eq!(names, vec![0, 1]);
        assert!(matches!(policy.columns[0].1, ColumnRule::Clear));
        let ColumnRule::Computed(email) = &policy.columns[1].1 else {
            panic!("email should be computed")
        };
        let text = email.to_string();
        assert!(
            text.starts_with("CASE WHEN id > Int64(100) THEN email WHEN id < Int64(10)"),
            "{text}"
        );
        // A grant without filter or masks makes the table transparent.
        let all = grant(3, None, &[]);
        assert!(
            TablePolicy::compile(&state, &schema, &[&a, &all], &RowPolicies::default())
                .unwrap()
                .rows
                .is_none()
        );
        assert!(
            TablePolicy::compile(&state, &schema, &[&all], &RowPolicies::default())
                .unwrap()
                .is_transparent(&schema)
        );
        // A grant that does not compile is skipped, not widened.
        let broken = grant(4, Some("nope = 1"), &[]);
        assert!(
            TablePolicy::compile(&state, &schema, &[&broken], &RowPolicies::default()).is_none()
        );
        assert!(TablePolicy::validate(&state, &schema, &broken).is_err());
    }

    #[test]
    fn permissive_policies_add_rows_masked_as_strictly_as_any_grant_and_restrictive_ones_close() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("email", DataType::Utf8, true),
            Field::new("secret", DataType::Utf8, true),
        ]);
        let ctx = SessionContext::new();
        let state = ctx.state();
        let a = grant(1, Some("id < 10"), &[("email", Some("'***'"))]);
        let rows = RowPolicies {
            table: "s.t".into(),
            permissive: vec![("more".into(), "id > 100".into())],
            restrictive: vec![("legal".into(), "secret IS NULL".into())],
        };
        let policy = TablePolicy::compile(&state, &schema, &[&a], &rows).unwrap();
        assert_eq!(
            policy.rows.as_ref().unwrap().to_string(),
            "(id < Int64(10) OR id > Int64(100)) AND secret IS NULL"
        );
        // The permissive policy's rows show `email` masked, as the only grant does.
        let ColumnRule::Computed(email) = &policy.columns[1].1 else {
            panic!("email should be computed")
        };
        assert!(!email.to_string().contains("THEN email"), "{email}");
        assert!(policy.closed().is_none());
        // A restrictive policy that does not compile closes the table; a permissive one
        // that does not is skipped.
        let broken = RowPolicies {
            table: "s.t".into(),
            permissive: vec![("wide".into(), "nope = 1".into())],
            restrictive: vec![("legal".into(), "id".into())],
        };
        let policy = TablePolicy::compile(&state, &schema, &[&a], &broken).unwrap();
        assert_eq!(policy.rows.as_ref().unwrap().to_string(), "id < Int64(10)");
        assert!(policy.closed().unwrap().contains("`legal`"));
        assert!(!policy.is_transparent(&schema));
    }
}
