//! Prepared statements and all parameter binding: handles sealed for their user, parameters
//! read under `query.max_parameter_bytes` and the user's memory, kept for clients that re-use
//! the original handle (bounded per user, across replicas), typed and split into rows.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandPreparedStatementQuery,
    DoPutPreparedStatementResult,
};
use arrow_flight::{Action, FlightDescriptor, FlightInfo, IpcMessage, SchemaAsIpc};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::LogicalPlan;
use datafusion::scalar::ScalarValue;
use futures::{FutureExt, StreamExt};
use quiver_catalog::engine::parameter_types;
use quiver_catalog::engine::wire::plain_type;
use quiver_catalog::state::cluster::ClaimError;
use quiver_catalog::{Planned, Principal, StateStore};
use tonic::{Request, Response, Status};

use crate::error::{datafusion_status, internal, to_status};
use crate::metadata;
use crate::ticket::PreparedHandle;
use crate::upload;

use super::QuiverFlightSql;
use super::sign_in::signed_in;

pub(super) const PREPARED: &str = "prepared statement";

/// Parameters bound to a prepared statement, kept for clients that re-use the original
/// handle; their bytes are reserved from the user's memory pool while they are kept.
pub(super) struct BoundParams {
    user: String,
    ipc: Vec<u8>,
    used: std::time::Instant,
    _memory: MemoryReservation,
    /// Where replicas share the state, the statement's place recorded there (statement id),
    /// given back when these parameters are forgotten.
    shared: Option<(Arc<StateStore>, String)>,
}

impl Drop for BoundParams {
    fn drop(&mut self) {
        if let Some((state, id)) = self.shared.take() {
            let release = move || {
                if let Err(e) = state.cluster().release_statement(&id) {
                    tracing::warn!(error = %e, "cannot record a closed prepared statement in the state");
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(release)),
                Err(_) => release(),
            }
        }
    }
}

impl QuiverFlightSql {
    /// Reads parameters sent with `DoPut` as one Arrow IPC stream, refusing more than
    /// `query.max_parameter_bytes` — received or once decoded — as soon as they pass it:
    /// nothing more is read, and nothing is inflated before its size is known to fit. What
    /// is decoded is held against the caller's memory until it has been re-encoded.
    pub(super) async fn read_parameters(
        &self,
        principal: &Principal,
        data: PeekableFlightDataStream,
    ) -> Result<Vec<u8>, Status> {
        let max = self.options.max_parameter_bytes;
        let too_big = move || {
            Status::resource_exhausted(format!(
                "the bound parameters are larger than {max} bytes (query.max_parameter_bytes); bind fewer rows at a time"
            ))
        };
        let memory = MemoryConsumer::new("bound parameters being read")
            .register(&self.engine.user_pool(principal.email()));
        let (mut received, mut decoded) = (0usize, 0usize);
        let checked = data.map(move |message| {
            let message = message.map_err(FlightError::from)?;
            received += message.data_header.len() + message.data_body.len();
            if received > max {
                return Err(FlightError::Tonic(Box::new(too_big())));
            }
            let len = upload::decoded_len(&message, max - decoded).map_err(|e| {
                FlightError::Tonic(Box::new(match e {
                    upload::UploadError::OverBudget { .. } => too_big(),
                    e => Status::invalid_argument(format!("cannot read bound parameters: {e}")),
                }))
            })?;
            decoded += len;
            memory
                .try_grow(len)
                .map_err(|e| FlightError::Tonic(Box::new(datafusion_status(&e))))?;
            Ok(message)
        });
        let mut stream = FlightRecordBatchStream::new_from_flight_data(checked);
        let decode = async move {
            let mut batches = Vec::new();
            while let Some(batch) = stream.next().await {
                batches.push(batch.map_err(|e| match e {
                    FlightError::Tonic(status) => *status,
                    e => Status::invalid_argument(format!("cannot read bound parameters: {e}")),
                })?);
            }
            Ok::<_, Status>(batches)
        };
        // arrow-ipc asserts some of a message's inner consistency by panicking (a validity
        // buffer shorter than the row count): such a message is malformed input, not a
        // failure of the server.
        let batches = std::panic::AssertUnwindSafe(decode)
            .catch_unwind()
            .await
            .map_err(|_| {
                tracing::warn!(user = %principal.email(), "malformed bound parameters made the IPC decoder panic");
                Status::invalid_argument(
                    "cannot read bound parameters: malformed Arrow IPC message",
                )
            })??;
        let ipc = ipc_bytes(&batches)?;
        if ipc.len() > max {
            return Err(too_big());
        }
        Ok(ipc)
    }

    /// Keeps a statement's bound parameters for clients that re-use its original handle:
    /// at most `query.max_prepared_per_user` statements per user (across replicas when they
    /// share the state), idle ones forgotten, the bytes reserved from the user's memory pool.
    pub(super) async fn keep_parameters(
        &self,
        principal: &Principal,
        id: &str,
        ipc: Vec<u8>,
    ) -> Result<(), Status> {
        let max = self.options.max_prepared_per_user;
        let refuse = |open: usize| {
            Status::resource_exhausted(format!(
                "you have {open} prepared statements with bound parameters open (query.max_prepared_per_user); close the ones you no longer use"
            ))
        };
        {
            let mut bound = self.bound.lock().unwrap_or_else(|p| p.into_inner());
            bound.retain(|_, b| b.used.elapsed() < self.options.prepared_idle);
            let open = bound
                .iter()
                .filter(|(key, b)| b.user == principal.email() && key.as_str() != id)
                .count();
            if open >= max {
                return Err(refuse(open));
            }
        }
        let memory = MemoryConsumer::new(format!("bound parameters of {id}"))
            .register(&self.engine.user_pool(principal.email()));
        memory
            .try_grow(ipc.len())
            .map_err(|e| datafusion_status(&e))?;
        let state = self.engine.state().clone();
        let shared = if state.cluster().is_shared() {
            let (claim_state, replica, user, statement) = (
                state.clone(),
                self.options.replica.id.clone(),
                principal.email().to_string(),
                id.to_string(),
            );
            let claimed = tokio::task::spawn_blocking(move || {
                claim_state
                    .cluster()
                    .claim_statement(&statement, &replica, &user, max)
            })
            .await
            .map_err(|e| internal(&e))?;
            match claimed {
                Ok(()) => Some((state, id.to_string())),
                Err(ClaimError::Busy(open)) => return Err(refuse(open)),
                Err(ClaimError::State(e)) => return Err(to_status(e)),
            }
        } else {
            None
        };
        let mut bound = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        // The same statement bound again keeps its place (the old entry's release is not
        // recorded: the claim above already holds the place).
        if let Some(mut old) = bound.remove(id) {
            old.shared = None;
        }
        bound.insert(
            id.to_string(),
            BoundParams {
                user: principal.email().to_string(),
                ipc,
                used: std::time::Instant::now(),
                _memory: memory,
                shared,
            },
        );
        Ok(())
    }

    pub(super) fn open_prepared(
        &self,
        principal: &Principal,
        handle: &[u8],
    ) -> Result<PreparedHandle, Status> {
        let prepared: PreparedHandle = self.sealer.open(PREPARED, handle)?;
        if prepared.user != principal.email() {
            return Err(Status::permission_denied(
                "this prepared statement belongs to another user",
            ));
        }
        Ok(prepared)
    }

    /// The parameters bound to `prepared`: in its handle, or kept here for clients that
    /// go on using the handle they had before binding.
    pub(super) fn prepared_params(&self, prepared: &PreparedHandle) -> Option<Vec<u8>> {
        prepared.params.clone().or_else(|| {
            let mut bound = self.bound.lock().unwrap_or_else(|p| p.into_inner());
            let kept = bound.get_mut(&prepared.id)?;
            kept.used = std::time::Instant::now();
            (!kept.ipc.is_empty()).then(|| kept.ipc.clone())
        })
    }

    pub(super) async fn create_prepared(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let principal = signed_in(&request)?;
        let session = self.session(&request, &principal);
        let schema = session.schema;
        let planned = self
            .plan_now(&principal, &query.query, schema.as_deref(), session.temp)
            .await?;
        let plan = planned.plan;
        // A write has no result set (JDBC then runs it as an update).
        let dataset = match planned.write {
            Some(_) => Schema::empty(),
            None => metadata::result_schema(plan.schema().as_arrow()),
        };
        let parameters = Schema::new(
            parameter_types(&plan)
                .map_err(to_status)?
                .into_iter()
                .enumerate()
                .map(|(i, ty)| Field::new(format!("${}", i + 1), declared_parameter(&ty), true))
                .collect::<Vec<_>>(),
        );
        let handle = PreparedHandle {
            id: uuid::Uuid::new_v4().to_string(),
            user: principal.email().to_string(),
            sql: query.query,
            schema,
            params: None,
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: self.sealer.seal(PREPARED, &handle),
            dataset_schema: schema_bytes(&dataset)?,
            parameter_schema: schema_bytes(&parameters)?,
        })
    }

    pub(super) async fn bind_parameters(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let principal = signed_in(&request)?;
        let mut prepared = self.open_prepared(&principal, &query.prepared_statement_handle)?;
        let temp = self.session(&request, &principal).temp;
        let ipc = self
            .read_parameters(&principal, request.into_inner())
            .await?;
        // Check now, so a bad binding fails at bind time rather than at execution.
        let plan = self
            .plan_now(&principal, &prepared.sql, prepared.schema.as_deref(), temp)
            .await?
            .plan;
        if !ipc.is_empty() {
            parameter_rows(&plan, &ipc)?;
        }
        self.keep_parameters(&principal, &prepared.id, ipc.clone())
            .await?;
        prepared.params = (!ipc.is_empty()).then_some(ipc);
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(self.sealer.seal(PREPARED, &prepared)),
        })
    }

    pub(super) async fn prepared_info(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let principal = signed_in(&request)?;
        let prepared = self.open_prepared(&principal, &cmd.prepared_statement_handle)?;
        let params = self.prepared_params(&prepared);
        let temp = self.session(&request, &principal).temp;
        let info = self
            .query_info(
                &principal,
                prepared.sql,
                prepared.schema,
                temp,
                params,
                request.into_inner(),
            )
            .await?;
        Ok(Response::new(info))
    }

    pub(super) async fn close_prepared(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let principal = signed_in(&request)?;
        let prepared = self.open_prepared(&principal, &query.prepared_statement_handle)?;
        let kept = self
            .bound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&prepared.id);
        // Its place in a shared state is given back even when another replica holds it.
        let state = self.engine.state().clone();
        if kept.is_none() && state.cluster().is_shared() {
            let id = prepared.id.clone();
            tokio::task::spawn_blocking(move || state.cluster().release_statement(&id))
                .await
                .map_err(|e| internal(&e))?
                .map_err(to_status)?;
        }
        drop(kept);
        Ok(())
    }
}

/// Splits bound parameters (an Arrow IPC stream) into rows of scalars, cast to the types
/// the plan expects where it knows them.
/// `planned` with its untyped placeholders typed as the values bound to them (`params`,
/// an Arrow IPC stream), so its schema is the schema of its rows.
pub(super) fn typed(planned: Planned, params: Option<&[u8]>) -> Result<Planned, Status> {
    let Some(ipc) = params else {
        return Ok(planned);
    };
    let reader = StreamReader::try_new(ipc, None)
        .map_err(|e| Status::invalid_argument(format!("cannot read bound parameters: {e}")))?;
    let types: Vec<DataType> = reader
        .schema()
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    planned.with_parameter_types(&types).map_err(to_status)
}

pub(super) fn parameter_rows(
    plan: &LogicalPlan,
    ipc: &[u8],
) -> Result<Vec<Vec<ScalarValue>>, Status> {
    let expected = parameter_types(plan).map_err(to_status)?;
    let reader = StreamReader::try_new(ipc, None)
        .map_err(|e| Status::invalid_argument(format!("cannot read bound parameters: {e}")))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch
            .map_err(|e| Status::invalid_argument(format!("cannot read bound parameters: {e}")))?;
        if batch.num_columns() != expected.len() {
            return Err(Status::invalid_argument(format!(
                "the statement has {} parameter(s) but {} were bound",
                expected.len(),
                batch.num_columns()
            )));
        }
        for row in 0..batch.num_rows() {
            let values = batch
                .columns()
                .iter()
                .zip(&expected)
                .enumerate()
                .map(|(i, (column, ty))| scalar_at(column, row, ty, i + 1))
                .collect::<Result<Vec<_>, _>>()?;
            rows.push(values);
        }
    }
    if rows.is_empty() && !expected.is_empty() {
        return Err(Status::invalid_argument(format!(
            "the statement has {} parameter(s) but none were bound",
            expected.len()
        )));
    }
    if rows.is_empty() {
        rows.push(Vec::new());
    }
    Ok(rows)
}

/// The type a parameter is declared with to clients. Timestamps and times are declared in
/// milliseconds: the JDBC driver (18.3) writes a bound value's milliseconds into whatever
/// unit is declared, unscaled, and Go and ADBC convert to any unit. Bound values are cast
/// to the statement's own type ([`scalar_at`]).
pub(super) fn declared_parameter(ty: &DataType) -> DataType {
    use arrow::datatypes::TimeUnit;
    match ty {
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Millisecond, tz.clone()),
        DataType::Time32(_) | DataType::Time64(_) => DataType::Time32(TimeUnit::Millisecond),
        other => plain_type(other),
    }
}

pub(super) fn scalar_at(
    column: &ArrayRef,
    row: usize,
    expected: &DataType,
    position: usize,
) -> Result<ScalarValue, Status> {
    let value = ScalarValue::try_from_array(column, row)
        .map_err(|e| Status::invalid_argument(format!("parameter ${position}: {e}")))?;
    if expected == &DataType::Null || value.data_type() == *expected {
        return Ok(value);
    }
    value.cast_to(expected).map_err(|_| {
        Status::invalid_argument(format!(
            "parameter ${position}: cannot use a {} value where {expected} is expected",
            value.data_type()
        ))
    })
}

/// Encodes a schema as the IPC message Flight SQL carries in prepared-statement results.
pub(super) fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| internal(&e))?;
    Ok(bytes)
}

/// Encodes parameter batches as one Arrow IPC stream.
pub(super) fn ipc_bytes(batches: &[RecordBatch]) -> Result<Vec<u8>, Status> {
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let mut writer =
        StreamWriter::try_new(Vec::new(), &first.schema()).map_err(|e| internal(&e))?;
    for batch in batches {
        writer.write(batch).map_err(|e| internal(&e))?;
    }
    writer.into_inner().map_err(|e| internal(&e))
}
