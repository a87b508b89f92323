//! The `system` schema, in administrators' catalogs only: `system.audit` is the audit log and
//! `system.access_history` what each statement read of each table (the columns in its
//! output, those used only to choose rows, the policies and masks in force), queryable with
//! SQL like any table.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::Result;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::CatalogError;
use crate::state::StateStore;

/// Name of the schema holding system tables.
pub(crate) const SYSTEM_SCHEMA: &str = "system";

/// Reads a system table from the state: `Some(0)` rows gives just its schema.
type Read = fn(&StateStore, Option<usize>) -> Result<(SchemaRef, Vec<RecordBatch>), CatalogError>;

/// A system table: a snapshot of part of the state taken when the query runs.
#[derive(Debug)]
pub(crate) struct SnapshotTable {
    state: Arc<StateStore>,
    schema: SchemaRef,
    read: Read,
}

impl SnapshotTable {
    /// `system.audit`.
    pub(crate) fn audit(state: Arc<StateStore>) -> Result<Self, CatalogError> {
        Self::new(state, |s, limit| s.audit().arrow(limit))
    }

    /// `system.access_history`.
    pub(crate) fn access_history(state: Arc<StateStore>) -> Result<Self, CatalogError> {
        Self::new(state, |s, limit| s.audit().access_history_arrow(limit))
    }

    fn new(state: Arc<StateStore>, read: Read) -> Result<Self, CatalogError> {
        let (schema, _) = read(&state, Some(0))?;
        Ok(Self {
            state,
            schema,
            read,
        })
    }
}

#[async_trait]
impl TableProvider for SnapshotTable {
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
        let (state, read) = (self.state.clone(), self.read);
        let (_, batches) = tokio::task::spawn_blocking(move || read(&state, None))
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
