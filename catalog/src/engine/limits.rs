//! Bounds on what one statement may ask of the planner, checked before the work they bound.
//!
//! Parsing, planning and optimising recurse over the statement's tree, so an expression
//! nested a few thousand levels deep (`1 + 1 + … + 1`, a long `OR` chain, a `UNION ALL`
//! chain) would overflow a thread's stack and take the whole process with it; and a short
//! statement can describe a huge plan (`WITH` tables that each union the previous one
//! twice double the plan at every level). So:
//!
//! 1. the SQL text is at most [`QueryLimits::max_sql_length`] bytes;
//! 2. the parsed statement nests at most [`QueryLimits::max_expression_depth`] levels,
//!    counting expressions, subqueries, set operations and joins (the parser's own
//!    recursion limit is set to the same number);
//! 3. the logical plan has at most [`QueryLimits::max_plan_nodes`] nodes and is at most
//!    `max_expression_depth` deep: estimated from the statement first (a `WITH` table is
//!    counted once per use, as the planner copies it), then counted in the plan with an
//!    early stop, so that counting a huge plan costs no more than the limit.
//!
//! Each refusal names the setting that was exceeded.

use std::collections::HashMap;
use std::ops::ControlFlow;

use datafusion::common::tree_node::{TreeNodeRecursion, TreeNodeVisitor};
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{
    Expr, Query, Select, SetExpr, Visit, Visitor, visit_relations,
};

use crate::CatalogError;

/// The `query.max_*` settings that bound planning.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// Longest SQL text accepted, in bytes.
    pub max_sql_length: usize,
    /// Deepest nesting of expressions, subqueries, set operations and joins.
    pub max_expression_depth: usize,
    /// Most nodes in a statement's logical plan (subqueries included).
    pub max_plan_nodes: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            max_sql_length: 1024 * 1024,
            max_expression_depth: 500,
            max_plan_nodes: 10_000,
        }
    }
}

impl QueryLimits {
    /// Refuses SQL text longer than `max_sql_length`.
    pub fn check_length(&self, sql: &str) -> Result<(), CatalogError> {
        if sql.len() > self.max_sql_length {
            return Err(CatalogError::LimitExceeded {
                setting: "query.max_sql_length",
                message: format!(
                    "the statement is {} bytes long, more than the {} allowed",
                    sql.len(),
                    self.max_sql_length
                ),
            });
        }
        Ok(())
    }

    /// Refuses a parsed statement nested deeper than `max_expression_depth`.
    pub fn check_depth(&self, statement: &impl Visit) -> Result<(), CatalogError> {
        let mut depth = Depth {
            current: 0,
            limit: self.max_expression_depth,
        };
        match statement.visit(&mut depth) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => Err(self.too_deep()),
        }
    }

    /// Refuses a statement whose `WITH` tables, copied into the plan at every use, would
    /// make a plan of more than `max_plan_nodes` nodes — before the planner copies them.
    /// Each table counts one node per relation it reads, and a `WITH` table read counts
    /// what that table counts.
    pub fn check_expansion(&self, statement: &impl Visit) -> Result<(), CatalogError> {
        let mut expansion = Expansion {
            limit: self.max_plan_nodes as u64,
        };
        match statement.visit(&mut expansion) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => Err(self.too_many_nodes()),
        }
    }

    fn too_many_nodes(&self) -> CatalogError {
        CatalogError::LimitExceeded {
            setting: "query.max_plan_nodes",
            message: format!(
                "the statement's plan has more than {} nodes; a WITH table used many times is copied into the plan each time it is used",
                self.max_plan_nodes
            ),
        }
    }

    /// The error for a statement nested too deeply (also used for the parser's refusal).
    pub fn too_deep(&self) -> CatalogError {
        CatalogError::LimitExceeded {
            setting: "query.max_expression_depth",
            message: format!(
                "the statement nests expressions, subqueries, set operations or joins more than {} levels deep; simplify it, e.g. use IN (…) instead of a long OR chain",
                self.max_expression_depth
            ),
        }
    }

    /// Refuses a logical plan with more than `max_plan_nodes` nodes or deeper than
    /// `max_expression_depth`.
    pub fn check_plan(&self, plan: &LogicalPlan) -> Result<(), CatalogError> {
        let mut size = PlanSize {
            nodes: 0,
            depth: 0,
            limits: *self,
            exceeded: None,
        };
        plan.visit_with_subqueries(&mut size)?;
        match size.exceeded {
            None => Ok(()),
            Some(Exceeded::Nodes) => Err(self.too_many_nodes()),
            Some(Exceeded::Depth) => Err(self.too_deep()),
        }
    }
}

/// Counts nesting in the syntax tree; breaks as soon as the limit is passed.
struct Depth {
    current: usize,
    limit: usize,
}

impl Depth {
    fn enter(&mut self, width: usize) -> ControlFlow<()> {
        self.current += 1;
        if self.current + width > self.limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn leave(&mut self) -> ControlFlow<()> {
        self.current -= 1;
        ControlFlow::Continue(())
    }
}

impl Visitor for Depth {
    type Break = ();

    fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
        self.enter(0)
    }

    fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
        self.leave()
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        // `a UNION b UNION c …` is parsed without recursion into a left-deep chain, which
        // the planner then walks recursively: count the chain's length too.
        let mut chain = 0;
        let mut body = query.body.as_ref();
        while let SetExpr::SetOperation { left, .. } = body {
            chain += 1;
            body = left;
        }
        self.enter(chain)
    }

    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.leave()
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        // Joins (and comma-separated tables) are a list here but a left-deep tree in the
        // plan.
        let joins: usize = select.from.iter().map(|t| 1 + t.joins.len()).sum();
        self.enter(joins)
    }

    fn post_visit_select(&mut self, _: &Select) -> ControlFlow<()> {
        self.leave()
    }
}

/// Sizes of `WITH` tables as the planner will copy them.
struct Expansion {
    limit: u64,
}

impl Expansion {
    /// Nodes of `query` once the `WITH` tables in `sizes` it reads are copied in.
    fn size(query: &impl Visit, sizes: &HashMap<String, u64>) -> u64 {
        let mut size = 1u64;
        let _ = visit_relations(query, |relation| {
            let name = relation.to_string().to_lowercase();
            size = size.saturating_add(sizes.get(&name).copied().unwrap_or(1));
            ControlFlow::<()>::Continue(())
        });
        size
    }
}

impl Visitor for Expansion {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        let Some(with) = &query.with else {
            return ControlFlow::Continue(());
        };
        let mut sizes = HashMap::new();
        for cte in &with.cte_tables {
            let size = Self::size(cte.query.as_ref(), &sizes);
            if size > self.limit {
                return ControlFlow::Break(());
            }
            sizes.insert(cte.alias.name.to_string().to_lowercase(), size);
        }
        if Self::size(query.body.as_ref(), &sizes) > self.limit {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Exceeded {
    Nodes,
    Depth,
}

/// Counts plan nodes and depth, stopping at the first limit passed.
struct PlanSize {
    nodes: usize,
    depth: usize,
    limits: QueryLimits,
    exceeded: Option<Exceeded>,
}

impl<'n> TreeNodeVisitor<'n> for PlanSize {
    type Node = LogicalPlan;

    fn f_down(&mut self, _: &'n LogicalPlan) -> datafusion::common::Result<TreeNodeRecursion> {
        self.nodes += 1;
        self.depth += 1;
        if self.nodes > self.limits.max_plan_nodes {
            self.exceeded = Some(Exceeded::Nodes);
            return Ok(TreeNodeRecursion::Stop);
        }
        if self.depth > self.limits.max_expression_depth {
            self.exceeded = Some(Exceeded::Depth);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn f_up(&mut self, _: &'n LogicalPlan) -> datafusion::common::Result<TreeNodeRecursion> {
        self.depth -= 1;
        Ok(TreeNodeRecursion::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn depth_ok(sql: &str, limit: usize) -> bool {
        let limits = QueryLimits {
            max_expression_depth: limit,
            ..QueryLimits::default()
        };
        let statements = Parser::new(&GenericDialect {})
            .with_recursion_limit(10_000)
            .try_with_sql(sql)
            .unwrap()
            .parse_statements()
            .unwrap();
        limits.check_depth(&statements).is_ok()
    }

    #[test]
    fn left_deep_chains_count_as_depth() {
        let sum = format!("SELECT {}", vec!["1"; 100].join(" + "));
        assert!(depth_ok(&sum, 200));
        assert!(!depth_ok(&sum, 50));
        let unions = vec!["SELECT 1"; 100].join(" UNION ALL ");
        assert!(depth_ok(&unions, 200));
        assert!(!depth_ok(&unions, 50));
        let joins = format!(
            "SELECT 1 FROM t0 {}",
            (1..100)
                .map(|i| format!(" JOIN t{i} ON true"))
                .collect::<String>()
        );
        assert!(!depth_ok(&joins, 50));
        assert!(depth_ok(
            "SELECT a FROM t WHERE b IN (1, 2, 3, 4, 5, 6, 7, 8)",
            5
        ));
    }

    #[test]
    fn with_tables_are_counted_as_copied() {
        let doubling = |levels: usize| {
            let mut ctes = vec!["t0 AS (SELECT 1 AS x)".to_string()];
            ctes.extend((1..=levels).map(|i| {
                format!(
                    "t{i} AS (SELECT x FROM t{} UNION ALL SELECT x FROM t{})",
                    i - 1,
                    i - 1
                )
            }));
            format!("WITH {} SELECT * FROM t{levels}", ctes.join(", "))
        };
        let limits = QueryLimits {
            max_plan_nodes: 10_000,
            ..QueryLimits::default()
        };
        let parse = |sql: &str| {
            Parser::new(&GenericDialect {})
                .try_with_sql(sql)
                .unwrap()
                .parse_statements()
                .unwrap()
        };
        assert!(limits.check_expansion(&parse(&doubling(8))).is_ok());
        let err = limits
            .check_expansion(&parse(&doubling(19)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("query.max_plan_nodes"), "{err}");
    }

    #[test]
    fn long_statements_are_refused_by_length() {
        let limits = QueryLimits {
            max_sql_length: 10,
            ..QueryLimits::default()
        };
        assert!(limits.check_length("SELECT 1").is_ok());
        let err = limits.check_length("SELECT 1 + 1").unwrap_err().to_string();
        assert!(err.contains("query.max_sql_length"), "{err}");
    }
}
