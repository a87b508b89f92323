//! The `system` schema, in administrators' catalogs only: `system.audit` is the audit log,
//! queryable with SQL like any table.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::Result;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::state::StateStore;

/// Name of the schema holding system tables.
pub(crate) const SYSTEM_SCHEMA: &str = "system";

/// `system.audit`: a snapshot of the audit log taken when the query runs.
#[derive(Debug)]
pub(crate) struct AuditTable {
    state: Arc<StateStore>,
    schema: SchemaRef,
}

impl AuditTable {
    /// The table over `state`'s audit log.
    pub(crate) fn new(state: Arc<StateStore>) -> Result<Self, crate::CatalogError> {
        let (schema, _) = state.audit().arrow(Some(0))?;
        Ok(Self { state, schema })
    }
}

#[async_trait]
impl TableProvider for AuditTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let state = self.state.clone();
        let (_, batches) = tokio::task::spawn_blocking(move || state.audit().arrow(None))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}
