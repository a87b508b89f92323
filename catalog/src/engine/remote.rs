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
//! [`PolicyTable`](crate::engine::policy::PolicyTable) gives the scan the grants' row filter and
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
use datafusion::common::{DFSchema, DataFusionError, Result, exec_datafusion_err};
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

use crate::engine::policy::{PolicyTable, unqualify};
use crate::{CatalogError, TableName};

/// What one scan asks of a source: `SELECT columns FROM source WHERE filters LIMIT limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteQuery {
    /// The columns to read, in order; never empty.
    pub columns: Vec<String>,
    /// Conditions on the table's (unqualified) columns, all of which must hold; each one
    /// the source said it can run ([`RemoteSource::can_run`]).
    pub filters: Vec<Expr>,
    /// The most rows wanted.
    pub limit: Option<usize>,
}

/// One remote table's source (implemented by the connectors).
#[async_trait]
pub trait RemoteSource: Send + Sync + fmt::Debug {
    /// Whether the source evaluates `filter` exactly as DataFusion does, and can be sent
    /// it safely; `schema` is the table's.
    fn can_run(&self, schema: &DFSchema, filter: &Expr) -> bool;

    /// Starts reading: batches with the asked-for columns, in order.
    async fn scan(&self, query: &RemoteQuery) -> Result<SendableRecordBatchStream>;
}

/// A source's failure. `detail` — the source's own words, which may name its host, database
/// and account, or quote values of rows the caller cannot see — is for admins and the log;
/// everyone else is shown `public`.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct SourceError {
    /// What any caller may read.
    pub public: String,
    /// What admins and the log read.
    pub detail: String,
}

/// The error a caller sees for `error`: a [`SourceError`] becomes its detail for admins
/// (`detail`) and its public text for everyone else, the detail logged either way.
fn shown(table: &TableName, error: DataFusionError, detail: bool) -> DataFusionError {
    match error {
        DataFusionError::External(e) => match e.downcast::<SourceError>() {
            Ok(failure) => {
                tracing::warn!(table = %table, error = %failure.detail, "remote source failed");
                DataFusionError::Execution(if detail {
                    failure.detail
                } else {
                    failure.public
                })
            }
            Err(other) => DataFusionError::External(other),
        },
        other => other,
    }
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
    /// Whether the source's errors are shown whole (to admins), see [`SourceError`].
    detail: bool,
}

impl RemoteTable {
    /// `name`, with `schema`, read from `source`; `detail`: the caller may read the
    /// source's errors whole.
    pub fn new(
        name: TableName,
        schema: SchemaRef,
        source: Arc<dyn RemoteSource>,
        detail: bool,
    ) -> Self {
        Self {
            name,
            schema,
            source,
            detail,
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
                let runs = self.source.can_run(&schema, &unqualify((*f).clone())?);
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
        let mut runnable = Vec::new();
        for filter in filters {
            let filter = simplifier.simplify(unqualify(filter.clone())?)?;
            if self.source.can_run(&schema, &filter) {
                runnable.push(filter);
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
            filters: runnable,
            limit,
        };
        Ok(Arc::new(RemoteScanExec {
            table: self.name.clone(),
            query,
            source: self.source.clone(),
            detail: self.detail,
            properties: Arc::new(PlanProperties::new(
                EquivalenceProperties::new(output),
                Partitioning::UnknownPartitioning(1),
                EmissionType::Incremental,
                Boundedness::Bounded,
            )),
        }))
    }
}

/// Reads one [`RemoteQuery`] from its source, as one partition.
#[derive(Debug)]
pub struct RemoteScanExec {
    table: TableName,
    query: RemoteQuery,
    source: Arc<dyn RemoteSource>,
    detail: bool,
    properties: Arc<PlanProperties>,
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
            let filters: Vec<String> = filters.iter().map(|e| e.to_string()).collect();
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
        let (schema, table, detail) = (self.schema(), self.table.clone(), self.detail);
        let conformed = schema.clone();
        let batches = futures::stream::once(async move { source.scan(&query).await })
            .try_flatten()
            .map(move |batch| match batch {
                Ok(batch) => conform(&table, batch, &conformed),
                Err(e) => Err(shown(&table, e, detail)),
            });
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
