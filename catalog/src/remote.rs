//! Tables read from their source at query time (`mode: remote`).
//!
//! The catalog owns the DataFusion side: [`RemoteTable`], whose scan is one
//! [`RemoteScanExec`]. The connectors own the source side ([`RemoteSource`]: which filters
//! the source runs exactly as DataFusion would, in its SQL, and the rows), and the server
//! hands them to the engine as [`RemoteSources`].
//!
//! A scan sends the source the columns it needs, the filters the source can run and the
//! limit when DataFusion gives one. Filters are `Inexact`: DataFusion applies them again
//! above, so a source that keeps a row too many changes nothing. Under a policy,
//! [`PolicyTable`](crate::policy::PolicyTable) gives the scan the grants' row filter and
//! only the user predicates that are safe below the policy barrier, so a predicate that
//! could fail never runs on hidden rows at the source either; the row filter and the masks
//! apply above the scan exactly as for landed tables.
//!
//! `datafusion-table-providers` and `datafusion-federation` were the maintained options:
//! neither is on our DataFusion version, and federation hands whole sub-plans to the
//! source, which would lift user SQL over the policy barrier.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatchOptions;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, Result, exec_datafusion_err};
use datafusion::datasource::{TableProvider, TableType, source_as_provider};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};
use quiver_config::TableDef;

use crate::policy::{PolicyTable, unqualify};
use crate::{CatalogError, TableName};

/// What one scan asks of a source: `SELECT columns FROM source WHERE filters LIMIT limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteQuery {
    /// The columns to read, in order; never empty.
    pub columns: Vec<String>,
    /// Conditions in the source's SQL, all of which must hold.
    pub filters: Vec<String>,
    /// The most rows wanted.
    pub limit: Option<usize>,
}

impl RemoteQuery {
    /// The query in a SQL source's terms: `select` (the columns, quoted in its dialect)
    /// from `source` (a table, or a query in parentheses), with the filters and the limit.
    pub fn to_sql(&self, select: &[String], source: &str) -> String {
        let mut sql = format!(
            "SELECT {} FROM {source} AS quiver_source",
            select.join(", ")
        );
        if !self.filters.is_empty() {
            let filters: Vec<String> = self.filters.iter().map(|f| format!("({f})")).collect();
            sql = format!("{sql} WHERE {}", filters.join(" AND "));
        }
        if let Some(limit) = self.limit {
            sql = format!("{sql} LIMIT {limit}");
        }
        sql
    }
}

/// One remote table's source (implemented by the connectors).
#[async_trait]
pub trait RemoteSource: Send + Sync + fmt::Debug {
    /// `filter` in the source's SQL, when the source evaluates it exactly as DataFusion
    /// does; `schema` is the table's.
    fn filter_sql(&self, schema: &DFSchema, filter: &Expr) -> Option<String>;

    /// Starts reading: batches with the asked-for columns, in order.
    async fn scan(&self, query: &RemoteQuery) -> Result<SendableRecordBatchStream>;
}

/// Makes the sources of remote tables (the connectors, given to the engine by the server).
pub trait RemoteSources: Send + Sync + fmt::Debug {
    /// The source `def` (a `mode: remote` definition) reads.
    fn source(&self, def: &TableDef) -> Result<Arc<dyn RemoteSource>, CatalogError>;
}

/// A table whose rows are read from its source by every query. Its schema is the one the
/// last sync recorded.
#[derive(Debug)]
pub struct RemoteTable {
    name: TableName,
    schema: SchemaRef,
    source: Arc<dyn RemoteSource>,
}

impl RemoteTable {
    /// `name`, with `schema`, read from `source`.
    pub fn new(name: TableName, schema: SchemaRef, source: Arc<dyn RemoteSource>) -> Self {
        Self {
            name,
            schema,
            source,
        }
    }
}

#[async_trait]
impl TableProvider for RemoteTable {
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
        let schema = DFSchema::try_from(self.schema.as_ref().clone())?;
        filters
            .iter()
            .map(|f| {
                let runs = self
                    .source
                    .filter_sql(&schema, &unqualify((*f).clone())?)
                    .is_some();
                Ok(if runs {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                })
            })
            .collect()
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let output = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let schema = Arc::new(DFSchema::try_from(self.schema.as_ref().clone())?);
        // A row filter comes as the policy wrote it: `current_user()` becomes its value here.
        let simplifier = ExprSimplifier::new(
            SimplifyContext::builder()
                .with_schema(schema.clone())
                .build(),
        );
        let mut sql = Vec::new();
        for filter in filters {
            let filter = simplifier.simplify(unqualify(filter.clone())?)?;
            if let Some(s) = self.source.filter_sql(&schema, &filter) {
                sql.push(s);
            }
        }
        // `COUNT(*)` needs no column, but a source sends rows only with one: read the first.
        let mut columns: Vec<String> = output.fields().iter().map(|f| f.name().clone()).collect();
        if columns.is_empty() {
            let first =
                self.schema.fields().first().ok_or_else(|| {
                    exec_datafusion_err!("remote table {} has no columns", self.name)
                })?;
            columns.push(first.name().clone());
        }
        let query = RemoteQuery {
            columns,
            filters: sql,
            limit,
        };
        Ok(Arc::new(RemoteScanExec::new(
            self.name.clone(),
            output,
            query,
            self.source.clone(),
        )))
    }
}

/// Reads one [`RemoteQuery`] from its source, as one partition.
#[derive(Debug)]
pub struct RemoteScanExec {
    table: TableName,
    query: RemoteQuery,
    source: Arc<dyn RemoteSource>,
    properties: Arc<PlanProperties>,
}

impl RemoteScanExec {
    fn new(
        table: TableName,
        schema: SchemaRef,
        query: RemoteQuery,
        source: Arc<dyn RemoteSource>,
    ) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            table,
            query,
            source,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for RemoteScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let RemoteQuery {
            columns,
            filters,
            limit,
        } = &self.query;
        write!(
            f,
            "RemoteScanExec: table={}, columns=[{}]",
            self.table,
            columns.join(", ")
        )?;
        if !filters.is_empty() {
            write!(f, ", filters=[{}]", filters.join(" AND "))?;
        }
        if let Some(limit) = limit {
            write!(f, ", limit={limit}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for RemoteScanExec {
    fn name(&self) -> &str {
        "RemoteScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            datafusion::common::internal_err!("RemoteScanExec has no children")
        }
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let (source, query) = (self.source.clone(), self.query.clone());
        let (schema, table) = (self.schema(), self.table.clone());
        let conformed = schema.clone();
        let batches = futures::stream::once(async move { source.scan(&query).await })
            .try_flatten()
            .map(move |batch| conform(&table, batch?, &conformed));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}

/// `batch` with the table's `schema`: the same columns, cast where the source's types
/// drifted from the ones the last sync recorded, or an error saying to sync again.
fn conform(table: &TableName, batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if schema.fields().is_empty() {
        let rows = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        return Ok(RecordBatch::try_new_with_options(
            schema.clone(),
            Vec::new(),
            &rows,
        )?);
    }
    let columns = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| {
            if column.data_type() == field.data_type() {
                return Ok(column.clone());
            }
            cast(column, field.data_type()).map_err(|_| {
                exec_datafusion_err!(
                    "the source of {table} now sends column `{}` as {}, not {}: sync the table to refresh its schema",
                    field.name(),
                    column.data_type(),
                    field.data_type()
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if columns.len() != schema.fields().len() {
        return Err(exec_datafusion_err!(
            "the source of {table} sent {} columns, not {}: sync the table to refresh its schema",
            batch.num_columns(),
            schema.fields().len()
        ));
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Whether `plan` reads a remote table (such plans stay on the replica that received them:
/// a remote scan is not sent to other replicas).
pub(crate) fn reads_remote(plan: &LogicalPlan) -> bool {
    let mut remote = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = source_as_provider(&scan.source)
        {
            let base = match provider.downcast_ref::<PolicyTable>() {
                Some(policy) => policy.base().clone(),
                None => provider,
            };
            remote |= base.is::<RemoteTable>();
        }
        Ok(if remote {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    remote
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_written_with_its_filters_and_limit() {
        let mut query = RemoteQuery {
            columns: vec!["id".into(), "team".into()],
            filters: vec![],
            limit: None,
        };
        let select = ["\"id\"".to_string(), "\"team\"".to_string()];
        assert_eq!(
            query.to_sql(&select, "public.orders"),
            r#"SELECT "id", "team" FROM public.orders AS quiver_source"#
        );
        query.filters = vec![
            r#""team" = 'red'"#.into(),
            r#""id" > 1 OR "id" IS NULL"#.into(),
        ];
        query.limit = Some(5);
        assert_eq!(
            query.to_sql(&select, "(SELECT 1)"),
            r#"SELECT "id", "team" FROM (SELECT 1) AS quiver_source WHERE ("team" = 'red') AND ("id" > 1 OR "id" IS NULL) LIMIT 5"#
        );
    }
}
