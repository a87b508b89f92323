//! Statements: planning SQL under the caller's policies, the `FlightInfo` with sealed tickets
//! (one per part for large scans), running a ticket into a capped, cancellable stream,
//! `GetSchema`, cancellation, and refusing what Quiver does not run.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::ipc::CompressionType;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, Any, Command, CommandStatementQuery,
    ProstMessageExt, TicketStatementQuery,
};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightData,
    FlightDescriptor, FlightEndpoint, FlightInfo, SchemaAsIpc, SchemaResult, Ticket,
};
use datafusion::logical_expr::LogicalPlan;
use futures::{StreamExt, TryStreamExt, stream};
use prost::Message;
use quiver_catalog::auth::principal::unix_now;
use quiver_catalog::engine::TempTables;
use quiver_catalog::{Planned, Principal};
use quiver_config::Compression;
use tonic::{Request, Response, Status};

use crate::error::{datafusion_status, internal, to_status};
use crate::metadata;
use crate::stream::{GuardedStream, QueryLog, timed_out};
use crate::ticket::QueryTicket;

use super::prepared::{parameter_rows, typed};
use super::sessions::action_result;
use super::sign_in::signed_in;
use super::{BoxStream, QuiverFlightSql};

pub(super) const TICKET: &str = "ticket";
/// Parts a result is fetched in at most.
pub(super) const MAX_PARTS: usize = 16;

impl QuiverFlightSql {
    /// Plans `sql` for `principal` (read-only check and limits included) before
    /// `deadline`, on the query runtime. Failures are logged and audited, so admins see
    /// probing; a successful plan is audited when its results are fetched.
    pub(super) async fn plan(
        &self,
        principal: &Principal,
        sql: &str,
        schema: Option<&str>,
        temp: Option<Arc<TempTables>>,
        deadline: tokio::time::Instant,
    ) -> Result<Planned, Status> {
        let planning = self.engine.plan(principal, sql, schema, temp);
        let result = match tokio::time::timeout_at(deadline, planning).await {
            Ok(planned) => planned.map_err(to_status),
            Err(_) => Err(timed_out(self.options.query_timeout)),
        };
        result.inspect_err(|status| self.audit_refusal(principal, sql, status))
    }

    /// Plans `sql` holding one of the user's slots, within a deadline from now (for calls
    /// that only plan: `GetFlightInfo`, prepare, bind).
    pub(super) async fn plan_now(
        &self,
        principal: &Principal,
        sql: &str,
        schema: Option<&str>,
        temp: Option<Arc<TempTables>>,
    ) -> Result<Planned, Status> {
        let _slot = self.slot(principal, sql, None).await?;
        self.plan(principal, sql, schema, temp, self.deadline())
            .await
    }

    /// A `FlightInfo` for `sql` with `params`: one endpoint with a sealed ticket or, for a
    /// large scan on a cluster, one per part of the result, each pointing first at another
    /// replica, so one download is served by many (see `quiver_catalog::engine::Layout`).
    pub(super) async fn query_info(
        &self,
        principal: &Principal,
        sql: String,
        db_schema: Option<String>,
        temp: Option<Arc<TempTables>>,
        params: Option<Vec<u8>>,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let planned = self
            .plan_now(principal, &sql, db_schema.as_deref(), temp)
            .await?;
        let planned = typed(planned, params.as_deref())?;
        if planned.write.is_some() {
            return self
                .write_info(principal, &planned, &sql, params.as_deref(), descriptor)
                .await;
        }
        let schema = metadata::result_schema(planned.plan.schema().as_arrow());
        let layout = match self.split_bytes() {
            Some(min_bytes) if params.is_none() => {
                // Clients fetch every part at once, and each part takes one of the user's
                // places: a quarter of them, so a few such scans can run side by side.
                let most = (self.options.max_concurrent_per_user / 4).min(MAX_PARTS);
                self.engine
                    .layout(&planned, most, min_bytes)
                    .await
                    .map_err(to_status)?
            }
            _ => None,
        };
        let query_id = uuid::Uuid::new_v4().to_string();
        let exp = unix_now() + self.options.ticket_lifetime.as_secs();
        let tickets: Vec<QueryTicket> = match layout {
            None => vec![QueryTicket {
                query_id,
                user: principal.email().to_string(),
                sql,
                schema: db_schema,
                params,
                exp,
                part: None,
            }],
            Some(layout) => (0..layout.count)
                .map(|index| QueryTicket {
                    query_id: format!("{query_id}.{index}"),
                    user: principal.email().to_string(),
                    sql: sql.clone(),
                    schema: db_schema.clone(),
                    params: None,
                    exp,
                    part: Some((index, layout.clone())),
                })
                .collect(),
        };
        let mut info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| internal(&e))?
            .with_descriptor(descriptor)
            .with_total_records(-1)
            .with_total_bytes(-1)
            .with_ordered(is_ordered(&planned.plan));
        // Say when policies filtered or masked what the statement reads (never how).
        let effects = self
            .engine
            .policy_effects(principal, &planned.tables)
            .await
            .map_err(to_status)?;
        if !effects.is_empty() {
            let metadata = serde_json::json!({ "policy": effects });
            info = info.with_app_metadata(metadata.to_string().into_bytes());
        }
        let locations = self.locations();
        for (index, ticket) in tickets.iter().enumerate() {
            self.plans.keep(&ticket.query_id, principal, &planned);
            self.running.register(
                &ticket.query_id,
                principal.email(),
                self.options.ticket_lifetime,
            );
            let handle = self.sealer.seal(TICKET, ticket);
            let ticket = Ticket::new(
                TicketStatementQuery {
                    statement_handle: handle,
                }
                .as_any()
                .encode_to_vec(),
            );
            // Without `server.advertise`, no location: the client fetches on the same
            // connection. With it, also any other live replica (the ticket is signed with
            // the cluster's secret); part i goes to the i-th replica first.
            let mut endpoint = FlightEndpoint::new().with_ticket(ticket);
            endpoint.location = locations.clone();
            if !locations.is_empty() {
                endpoint.location.rotate_left(index % locations.len());
            }
            info = info.with_endpoint(endpoint);
        }
        Ok(info)
    }

    /// Bytes a scan must read to be fetched in parts. Never with `query.max_result_rows`
    /// or `max_result_bytes`, which each part would count on its own.
    pub(super) fn split_bytes(&self) -> Option<usize> {
        if self.options.result_limits.is_set() {
            return None;
        }
        self.options.parts_min_bytes
    }

    /// Executes a ticket's query (once per parameter row) and streams its results. The
    /// deadline counts from now: planning and the first batch are inside it.
    pub(super) async fn run_ticket(
        &self,
        principal: &Principal,
        ticket: QueryTicket,
        temp: Option<Arc<TempTables>>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        let deadline = self.deadline();
        let slot = self
            .slot(principal, &ticket.sql, Some(&ticket.query_id))
            .await?;
        let planned = match self.plans.take(&ticket.query_id, principal) {
            Some(planned) if self.engine.is_current(&planned) => planned,
            _ => {
                let planned = self
                    .plan(
                        principal,
                        &ticket.sql,
                        ticket.schema.as_deref(),
                        temp,
                        deadline,
                    )
                    .await?;
                typed(planned, ticket.params.as_deref())?
            }
        };
        let schema: SchemaRef = Arc::new(metadata::result_schema(planned.plan.schema().as_arrow()));
        let log = QueryLog::new(
            ticket.query_id.clone(),
            principal.email().to_string(),
            ticket.sql.clone(),
            self.running.clone(),
            Some(self.engine.state().clone()),
        );
        log.set_reads(&planned);
        log.hold(slot);
        let param_rows = match &ticket.params {
            Some(ipc) => parameter_rows(&planned.plan, ipc).inspect_err(|status| {
                log.refused(status);
            })?,
            None => vec![Vec::new()],
        };
        let token = self.running.start(&ticket.query_id, principal.email());
        if token.is_cancelled() {
            log.cancelled("cancelled before it started");
            return Err(Status::cancelled("the query was cancelled"));
        }
        // The first execution is planned now, so its errors become the call's status; further
        // parameter rows run lazily, one after another.
        let mut param_rows = param_rows.into_iter();
        let params = param_rows.next().unwrap_or_default();
        let first = async {
            match &ticket.part {
                Some((index, layout)) => self.engine.execute_part(&planned, layout, *index).await,
                None => self.engine.execute(&planned, params).await,
            }
        };
        let first = match tokio::time::timeout_at(deadline, first).await {
            Ok(first) => first.map_err(to_status),
            Err(_) => Err(timed_out(self.options.query_timeout)),
        }
        .inspect_err(|status| log.failed(status))?;
        let engine = self.engine.clone();
        let rest = stream::iter(param_rows)
            .then(move |params| {
                let (engine, planned) = (engine.clone(), planned.clone());
                async move { engine.execute(&planned, params).await.map_err(to_status) }
            })
            .map_ok(|s| s.map_err(|e| datafusion_status(&e)))
            .try_flatten();
        let batches = first.map_err(|e| datafusion_status(&e)).chain(rest);
        let guarded = GuardedStream::new(
            Box::pin(batches),
            token,
            (deadline, self.options.query_timeout),
            self.options.result_limits,
            log.clone(),
        );
        let bytes_log = log;
        let limits = self.options.result_limits;
        let ipc = IpcWriteOptions::default()
            .try_with_compression(match self.options.compression {
                Compression::None => None,
                Compression::Lz4 => Some(CompressionType::LZ4_FRAME),
                Compression::Zstd => Some(CompressionType::ZSTD),
            })
            .map_err(|e| internal(&e))?;
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_options(ipc)
            .with_max_flight_data_size(self.options.max_message_size)
            .build(guarded.map_err(|status| FlightError::Tonic(Box::new(status))))
            .map(move |item| match item {
                Ok(data) => {
                    let sent = bytes_log.add_bytes(data.data_body.len() + data.data_header.len());
                    limits
                        .check_bytes(sent)
                        .map(|()| data)
                        .inspect_err(|status| {
                            bytes_log.failed(status);
                        })
                }
                Err(FlightError::Tonic(status)) => Err(*status),
                Err(e) => Err(Status::from(e)),
            });
        Ok(Response::new(Box::pin(flight)))
    }

    /// `GetSchema`: the schema of a statement's or prepared statement's result, planned
    /// but not run; for metadata commands, the schema their `FlightInfo` names.
    pub(crate) async fn result_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let principal = signed_in(&request)?;
        let command = Any::decode(&*request.get_ref().cmd)
            .ok()
            .and_then(|any| Command::try_from(any).ok())
            .ok_or_else(|| Status::invalid_argument("GetSchema needs a Flight SQL command"))?;
        let planned = match command {
            Command::CommandStatementQuery(query) => {
                let session = self.session(&request, &principal);
                self.plan_now(
                    &principal,
                    &query.query,
                    session.schema.as_deref(),
                    session.temp,
                )
                .await?
            }
            Command::CommandPreparedStatementQuery(cmd) => {
                let prepared = self.open_prepared(&principal, &cmd.prepared_statement_handle)?;
                let params = self.prepared_params(&prepared);
                let temp = self.session(&request, &principal).temp;
                let planned = self
                    .plan_now(&principal, &prepared.sql, prepared.schema.as_deref(), temp)
                    .await?;
                typed(planned, params.as_deref())?
            }
            _ => {
                let info = FlightService::get_flight_info(self, request).await?;
                let schema = info.into_inner().schema;
                return Ok(Response::new(SchemaResult { schema }));
            }
        };
        let schema = metadata::result_schema(planned.plan.schema().as_arrow());
        let result = SchemaResult::try_from(SchemaAsIpc::new(&schema, &IpcWriteOptions::default()))
            .map_err(|e| internal(&e))?;
        Ok(Response::new(result))
    }

    /// Cancels the queries of `info` that `principal` may cancel (its own; an admin's:
    /// anyone's): at once when they run here, else by asking the replica streaming them
    /// (which notices within [`CLUSTER_POLL`]).
    pub(super) async fn cancel_info(
        &self,
        principal: &Principal,
        info: &FlightInfo,
    ) -> Result<CancelStatus, Status> {
        let mut status = CancelStatus::NotCancellable;
        for endpoint in &info.endpoint {
            let Some(ticket) = &endpoint.ticket else {
                continue;
            };
            let any = Any::decode(&*ticket.ticket)
                .map_err(|_| Status::invalid_argument("not a Quiver ticket"))?;
            let Some(statement) = any
                .unpack::<TicketStatementQuery>()
                .map_err(|_| Status::invalid_argument("not a Quiver ticket"))?
            else {
                continue;
            };
            let ticket: QueryTicket = self.sealer.open(TICKET, &statement.statement_handle)?;
            let (user, admin) = (principal.email().to_string(), principal.is_admin());
            if self.running.cancel(&ticket.query_id, &user, admin) {
                status = CancelStatus::Cancelled;
                continue;
            }
            let state = self.engine.state().clone();
            if !state.cluster().is_shared() {
                continue;
            }
            let asked = tokio::task::spawn_blocking(move || {
                state
                    .cluster()
                    .request_cancel(&ticket.query_id, &user, admin)
            })
            .await
            .map_err(|e| internal(&e))?
            .map_err(to_status)?;
            if asked && status == CancelStatus::NotCancellable {
                status = CancelStatus::Cancelling;
            }
        }
        Ok(status)
    }

    pub(super) async fn unknown_ticket(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        signed_in(&request)?;
        Err(Status::invalid_argument("unknown ticket type"))
    }

    pub(super) async fn statement_info(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let principal = signed_in(&request)?;
        let session = self.session(&request, &principal);
        let info = self
            .query_info(
                &principal,
                query.query,
                session.schema,
                session.temp,
                None,
                request.into_inner(),
            )
            .await?;
        Ok(Response::new(info))
    }

    pub(super) async fn substrait_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        signed_in(&request)?;
        Err(Status::unimplemented(
            "Substrait plans are not supported; send SQL",
        ))
    }

    pub(super) async fn statement_results(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let principal = signed_in(&request)?;
        let ticket: QueryTicket = self.sealer.open(TICKET, &ticket.statement_handle)?;
        if ticket.user != principal.email() {
            return Err(Status::permission_denied(
                "this ticket was issued to another user",
            ));
        }
        if ticket.exp < unix_now() {
            return Err(Status::invalid_argument(
                "the ticket has expired; run the query again",
            ));
        }
        let temp = self.session(&request, &principal).temp;
        self.run_ticket(&principal, ticket, temp).await
    }

    pub(super) async fn cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let principal = signed_in(&request)?;
        let info = FlightInfo::decode(&*query.info)
            .map_err(|_| Status::invalid_argument("CancelQuery needs a FlightInfo"))?;
        let status = self.cancel_info(&principal, &info).await?;
        // `CancelResult` is not exported by arrow-flight; its numbers are `CancelStatus`'s.
        Ok(ActionCancelQueryResult {
            result: status as i32,
        })
    }

    /// `CancelFlightInfo` (an action carrying the `FlightInfo` to cancel).
    pub(super) async fn cancel_flight_info(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let cancel = CancelFlightInfoRequest::decode(body)
            .map_err(|_| Status::invalid_argument("malformed CancelFlightInfoRequest"))?;
        let info = cancel
            .info
            .ok_or_else(|| Status::invalid_argument("CancelFlightInfo needs a FlightInfo"))?;
        let status = self.cancel_info(principal, &info).await?;
        let body = CancelFlightInfoResult {
            status: status as i32,
        }
        .encode_to_vec();
        Ok(action_result(body, None))
    }
}

/// Whether `plan`'s rows come in a defined order (`ORDER BY` at the top, under projections
/// and limits), which `FlightInfo.ordered` tells clients to keep across endpoints.
pub(super) fn is_ordered(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Sort(_) => true,
        LogicalPlan::Projection(_) | LogicalPlan::Limit(_) | LogicalPlan::SubqueryAlias(_) => {
            plan.inputs().first().is_some_and(|input| is_ordered(input))
        }
        _ => false,
    }
}
