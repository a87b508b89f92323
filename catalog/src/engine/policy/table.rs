//! [`PolicyTable`], the per-principal table provider that produces rows already filtered
//! and masked, and [`PolicyExec`], its barrier in the physical plan (see the module above).

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, Result};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, and};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, Statistics,
};

use super::{ColumnRule, TablePolicy, is_safe_filter};

/// A table as one principal may see it: the base table's rows filtered and its columns
/// masked or hidden by the principal's grants.
#[derive(Debug)]
pub(crate) struct PolicyTable {
    base: Arc<dyn TableProvider>,
    policy: TablePolicy,
    schema: SchemaRef,
}

impl PolicyTable {
    /// Wraps `base` with `policy`.
    pub(crate) fn new(base: Arc<dyn TableProvider>, policy: TablePolicy) -> Self {
        let base_schema = base.schema();
        let fields: Vec<Field> = policy
            .columns
            .iter()
            .map(|(index, rule)| {
                let field = base_schema.field(*index).clone();
                match rule {
                    ColumnRule::Clear => field,
                    ColumnRule::Computed(_) => field.with_nullable(true),
                }
            })
            .collect();
        Self {
            base,
            policy,
            schema: Arc::new(Schema::new(fields)),
        }
    }

    /// The policy it applies.
    pub(crate) fn policy(&self) -> &TablePolicy {
        &self.policy
    }

    /// The table it filters and masks.
    pub(crate) fn base(&self) -> &Arc<dyn TableProvider> {
        &self.base
    }

    /// Names of the columns that are clear on every visible row.
    fn clear_columns(&self) -> HashSet<&str> {
        self.schema
            .fields()
            .iter()
            .zip(&self.policy.columns)
            .filter(|(_, (_, rule))| matches!(rule, ColumnRule::Clear))
            .map(|(field, _)| field.name().as_str())
            .collect()
    }
}

/// Drops table qualifiers, so expressions resolve against the provider's own schema.
pub(crate) fn unqualify(expr: Expr) -> Result<Expr> {
    expr.transform(|e| match e {
        Expr::Column(c) if c.relation.is_some() => Ok(Transformed::yes(Expr::Column(
            Column::new_unqualified(c.name),
        ))),
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

#[async_trait]
impl TableProvider for PolicyTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let clear = self.clear_columns();
        Ok(filters
            .iter()
            .map(|f| {
                if is_safe_filter(f, &clear) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some(reason) = self.policy.closed() {
            return datafusion::common::plan_err!("{reason}");
        }
        let base_schema = self.base.schema();
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.policy.columns.len()).collect(),
        };
        let pushed: Vec<Expr> = filters
            .iter()
            .cloned()
            .map(unqualify)
            .collect::<Result<_>>()?;

        // Base columns needed: the row filter's, the wanted columns' and the pushed filters'.
        let mut needed: HashSet<usize> = HashSet::new();
        let note = |needed: &mut HashSet<usize>, expr: &Expr| {
            for c in expr.column_refs() {
                if let Ok(i) = base_schema.index_of(&c.name) {
                    needed.insert(i);
                }
            }
        };
        if let Some(rows) = &self.policy.rows {
            note(&mut needed, rows);
        }
        for f in &pushed {
            note(&mut needed, f);
        }
        for &out in &wanted {
            match &self.policy.columns[out] {
                (i, ColumnRule::Clear) => {
                    needed.insert(*i);
                }
                (_, ColumnRule::Computed(e)) => note(&mut needed, e),
            }
        }
        let mut needed: Vec<usize> = needed.into_iter().collect();
        needed.sort_unstable();

        // Without a row filter or pushed filters, a limit can go to the base scan.
        let base_limit = (self.policy.rows.is_none() && pushed.is_empty())
            .then_some(limit)
            .flatten();
        // The base scan may use the row filter and the pushed filters to read less (parquet
        // pruning, a remote source's `WHERE`); all of them are applied again just above.
        let to_base: Vec<Expr> = self.policy.rows.iter().chain(&pushed).cloned().collect();
        let mut plan = self
            .base
            .scan(state, Some(&needed), &to_base, base_limit)
            .await?;
        let inner = DFSchema::try_from(plan.schema().as_ref().clone())?;
        // Functions of the query's time (`now()`, `current_date()`) take this query's value:
        // a row filter such as `day >= current_date() - 7` is evaluated for each query.
        let simplifier = ExprSimplifier::new(
            SimplifyContext::builder()
                .with_schema(Arc::new(inner.clone()))
                .with_query_execution_start_time(state.execution_props().query_execution_start_time)
                .build(),
        );

        let predicate = self.policy.rows.iter().cloned().chain(pushed).reduce(and);
        if let Some(predicate) = predicate {
            let predicate = simplifier.simplify(simplifier.coerce(predicate, &inner)?)?;
            let physical = state.create_physical_expr(predicate, &inner)?;
            plan = Arc::new(FilterExec::try_new(physical, plan)?);
        }
        let mut exprs = Vec::with_capacity(wanted.len());
        for &out in &wanted {
            let (index, rule) = &self.policy.columns[out];
            let name = base_schema.field(*index).name().clone();
            let expr = match rule {
                ColumnRule::Clear => Expr::Column(Column::new_unqualified(&name)),
                ColumnRule::Computed(e) => {
                    simplifier.simplify(simplifier.coerce(e.clone(), &inner)?)?
                }
            };
            exprs.push((state.create_physical_expr(expr, &inner)?, name));
        }
        plan = Arc::new(ProjectionExec::try_new(exprs, plan)?);
        Ok(Arc::new(PolicyExec::new(plan)))
    }
}

/// A pass-through node that the optimizer cannot see through: filters are not pushed below
/// it and it reports no statistics. It marks where a policy ends and user SQL begins.
#[derive(Debug)]
pub(crate) struct PolicyExec {
    input: Arc<dyn ExecutionPlan>,
}

impl PolicyExec {
    pub(crate) fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        Self { input }
    }
}

impl DisplayAs for PolicyExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PolicyExec")
    }
}

impl ExecutionPlan for PolicyExec {
    fn name(&self) -> &str {
        "PolicyExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match children.pop() {
            Some(child) if children.is_empty() => Ok(Arc::new(Self::new(child))),
            _ => datafusion::common::internal_err!("PolicyExec has exactly one child"),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }

    fn partition_statistics(&self, _partition: Option<usize>) -> Result<Arc<Statistics>> {
        Ok(Arc::new(Statistics::new_unknown(&self.schema())))
    }
}
