//! The Flight SQL service: authentication, statements, prepared statements, metadata and
//! cancellation. Every call resolves its principal first; everything after that goes
//! through the principal's own DataFusion session, so metadata and queries only ever see
//! what the principal may read.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::CompressionType;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{GetCatalogsBuilder, SqlInfoData};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any, Command,
    CommandGetCatalogs, CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys,
    CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementSubstraitPlan, CommandStatementUpdate, DoPutPreparedStatementResult,
    ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightData,
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    Location, SchemaAsIpc, SchemaResult, Ticket,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::LogicalPlan;
use datafusion::scalar::ScalarValue;
use futures::{FutureExt, Stream, StreamExt, TryStreamExt, stream};
use prost::Message;
use quiver_catalog::authenticator::{Authenticator, BearerError, Credentials, Edge, SignInError};
use quiver_catalog::engine::parameter_types;
use quiver_catalog::identity::unix_now;
use quiver_catalog::state::cluster::{ClaimError, Replica};
use quiver_catalog::wire::plain_type;
use quiver_catalog::{CATALOG_NAME, Planned, Principal, QueryEngine, StateStore};
use quiver_config::Compression;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};
use tracing::instrument;

use crate::error::{datafusion_status, internal, to_status};
use crate::metadata::{self, XDBC_INFO, foreign_keys_schema, primary_keys_schema};
use crate::plans::PlanCache;
use crate::sessions::{self, Caller, Sessions, proto as session};
use crate::stream::{GuardedStream, QueryLog, RunningQueries, Slot, timed_out};
use crate::ticket::{PreparedHandle, QueryTicket, Sealer};
use crate::upload;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

const TICKET: &str = "ticket";
const PREPARED: &str = "prepared statement";
const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";
/// How often a replica looks for cancellations asked of other replicas.
const CLUSTER_POLL: Duration = Duration::from_millis(250);
/// The location that means "the connection this `FlightInfo` came on" (Flight spec).
const REUSE_CONNECTION: &str = "arrow-flight-reuse-connection://?";
/// Parts a result is fetched in at most.
const MAX_PARTS: usize = 16;
const READ_ONLY_MESSAGE: &str =
    "Quiver is read-only: INSERT, UPDATE, DELETE, DDL and bulk ingestion are not accepted";

/// Limits and lifetimes of the Flight SQL service.
#[derive(Debug, Clone)]
pub struct FlightOptions {
    /// A query running longer is stopped with `DEADLINE_EXCEEDED`.
    pub query_timeout: Duration,
    /// How long a ticket may be redeemed after it was issued.
    pub ticket_lifetime: Duration,
    /// Largest `FlightData` message sent; bigger batches are split.
    pub max_message_size: usize,
    /// How result batches are compressed on the wire.
    pub compression: Compression,
    /// Queries one user may run at once.
    pub max_concurrent_per_user: usize,
    /// A result with more rows fails instead of being truncated.
    pub max_result_rows: Option<u64>,
    /// A result with more bytes fails instead of being truncated.
    pub max_result_bytes: Option<u64>,
    /// Largest set of parameters bound to a prepared statement (Arrow IPC bytes).
    pub max_parameter_bytes: usize,
    /// Prepared statements with bound parameters one user may keep on the server.
    pub max_prepared_per_user: usize,
    /// Bound parameters unused this long are forgotten.
    pub prepared_idle: Duration,
    /// This replica (its id in the shared state, and the URL it is reached at).
    pub replica: Replica,
    /// Bytes a plain scan must read to be fetched in parts, several endpoints that the
    /// client reads side by side (on a cluster, from several replicas); `None`: one
    /// endpoint per result.
    pub parts_min_bytes: Option<usize>,
}

/// Parameters bound to a prepared statement, kept for clients that re-use the original
/// handle; their bytes are reserved from the user's memory pool while they are kept.
struct BoundParams {
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

/// Quiver's `FlightSqlService`.
#[derive(Clone)]
pub struct QuiverFlightSql {
    engine: Arc<QueryEngine>,
    sealer: Sealer,
    options: FlightOptions,
    running: RunningQueries,
    /// Parameters bound to prepared statements, for clients that keep using the original
    /// handle instead of the updated one returned by `DoPut`.
    bound: Arc<std::sync::Mutex<std::collections::HashMap<String, BoundParams>>>,
    /// Signs callers in and resolves their bearer credentials (shared with HTTP).
    auth: Arc<Authenticator>,
    /// The other live replicas' advertised URLs (see [`Self::watch_cluster`]).
    locations: Arc<std::sync::Mutex<Vec<String>>>,
    /// Statements planned for a `FlightInfo`, for its `DoGet`.
    plans: PlanCache,
    /// Clients' session options (their schema).
    sessions: Sessions,
    /// `GetSqlInfo`'s answers.
    sql_info: Arc<SqlInfoData>,
}

impl std::fmt::Debug for QuiverFlightSql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuiverFlightSql")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl QuiverFlightSql {
    /// A service over `engine`; `secret` signs tickets and prepared-statement handles.
    pub fn new(
        engine: Arc<QueryEngine>,
        secret: &[u8],
        options: FlightOptions,
        auth: Arc<Authenticator>,
    ) -> Self {
        let sql_info = Arc::new(metadata::sql_info(options.query_timeout));
        Self {
            auth,
            engine,
            sealer: Sealer::new(secret),
            plans: PlanCache::new(options.ticket_lifetime),
            options,
            running: RunningQueries::default(),
            bound: Arc::default(),
            locations: Arc::default(),
            sessions: Sessions::default(),
            sql_info,
        }
    }

    /// The engine statements are planned and run on.
    pub fn engine(&self) -> &Arc<QueryEngine> {
        &self.engine
    }

    /// Largest `FlightData` message this service sends.
    pub fn max_message_size(&self) -> usize {
        self.options.max_message_size
    }

    /// Queries currently registered for cancellation.
    pub fn running(&self) -> &RunningQueries {
        &self.running
    }

    /// The principal behind a call's `authorization: Bearer …` header.
    async fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| {
                Status::unauthenticated(
                    "authentication required: connect with a user name and password, or a bearer token",
                )
            })?
            .to_str()
            .map_err(|_| Status::unauthenticated("malformed authorization header"))?;
        // Clients that skip the handshake send Basic credentials with every call.
        if let Some((email, password)) = parse_basic(header) {
            let address = request.remote_addr().map(|a| a.ip().to_string());
            let credentials = Credentials::Password { email, password };
            return self
                .auth
                .basic(credentials, Edge::Flight, address.as_deref())
                .await
                .map_err(sign_in_status);
        }
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                Status::unauthenticated(
                    "expected `authorization: Bearer <token>`; obtain a token with the Basic-auth handshake",
                )
            })?;
        match self.auth.bearer(token).await {
            Ok(bearer) => Ok(bearer.principal),
            Err(BearerError::Failed(e)) => Err(to_status(e)),
            Err(refused) => Err(Status::unauthenticated(refused.to_string())),
        }
    }

    /// Takes one of the user's places for concurrent work (planning, or the stream of
    /// `query_id`); a refusal names the setting and is audited. When replicas share the
    /// state, streams count across all of them (statements being planned, short and
    /// bounded, count here only: a round trip less for every query).
    async fn slot(
        &self,
        principal: &Principal,
        sql: &str,
        query_id: Option<&str>,
    ) -> Result<Slot, Status> {
        let max = self.options.max_concurrent_per_user;
        let refuse = |busy: usize| {
            let message = format!(
                "you already have {busy} queries running (query.max_concurrent_per_user); wait for one to finish"
            );
            self.audit_refusal(principal, sql, &format!("refused: {message}"));
            Status::resource_exhausted(message)
        };
        let mut slot = self.running.slot(principal.email(), max).map_err(refuse)?;
        let state = self.engine.state().clone();
        if let Some(query) = query_id
            && state.cluster().is_shared()
        {
            self.running.settled(principal.email()).await;
            let id = uuid::Uuid::new_v4().to_string();
            slot.share(state.clone(), id.clone());
            let (replica, user) = (
                self.options.replica.id.clone(),
                principal.email().to_string(),
            );
            let query = query.to_string();
            let claimed = tokio::task::spawn_blocking(move || {
                state
                    .cluster()
                    .claim_work(&id, &replica, &user, &query, max)
            })
            .await
            .map_err(|e| internal(&e))?;
            match claimed {
                Ok(()) => {}
                Err(ClaimError::Busy(busy)) => {
                    slot.unshare();
                    return Err(refuse(busy));
                }
                Err(ClaimError::State(e)) => return Err(to_status(e)),
            }
        }
        Ok(slot)
    }

    /// Every `CLUSTER_POLL` while `stop` is pending: cancels the queries streaming here that
    /// someone asked another replica to cancel, and refreshes where the other replicas are
    /// reached; now and then, removes this replica's work rows whose end could not be
    /// recorded (the database was away), so they do not hold the users' places. Does
    /// nothing on an embedded state.
    pub async fn watch_cluster(self, stop: impl Future<Output = ()>) {
        let state = self.engine.state().clone();
        if !state.cluster().is_shared() {
            return stop.await;
        }
        let mut stop = std::pin::pin!(stop);
        let mut tick = tokio::time::interval(CLUSTER_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        for round in 1u64.. {
            tokio::select! {
                () = &mut stop => return,
                _ = tick.tick() => {}
            }
            if round % 40 == 0 {
                self.forget_ended_work().await;
            }
            let (store, replica) = (state.clone(), self.options.replica.clone());
            let seen = tokio::task::spawn_blocking(move || {
                Ok::<_, quiver_catalog::CatalogError>((
                    store.cluster().cancel_requests(&replica.id)?,
                    store.cluster().live_replicas()?,
                ))
            })
            .await;
            let (cancels, replicas) = match seen {
                Ok(Ok(seen)) => seen,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read the cluster's state");
                    continue;
                }
                Err(_) => continue,
            };
            if let Some(distribution) = self.engine.distribution() {
                distribution.set_workers(replicas.iter().filter_map(|r| r.advertise.clone()));
            }
            for query in cancels {
                if self.running.cancel(&query, "", true) {
                    tracing::info!(query_id = %query, "query cancelled through another replica");
                }
            }
            *self.locations.lock().unwrap_or_else(|p| p.into_inner()) = replicas
                .into_iter()
                .filter(|r| r.id != self.options.replica.id)
                .filter_map(|r| r.advertise)
                .collect();
        }
    }

    /// Removes this replica's work rows that no stream here holds any more.
    async fn forget_ended_work(&self) {
        let (state, running) = (self.engine.state().clone(), self.running.clone());
        let replica = self.options.replica.id.clone();
        let forgotten = tokio::task::spawn_blocking(move || {
            // Recorded rows first: a stream holds its id locally before its row exists.
            let recorded = state.cluster().work_on(&replica)?;
            let held = running.shared_work();
            let mut forgotten = 0;
            for id in recorded.iter().filter(|id| !held.contains(*id)) {
                state.cluster().finish_work(id)?;
                forgotten += 1;
            }
            Ok::<_, quiver_catalog::CatalogError>(forgotten)
        })
        .await;
        match forgotten {
            Ok(Ok(0)) | Err(_) => {}
            Ok(Ok(n)) => tracing::info!(rows = n, "removed work rows of streams that had ended"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot tidy this replica's work rows"),
        }
    }

    /// Where a ticket issued here may be redeemed: this connection first, then the other
    /// replicas' advertised URLs (none unless `server.advertise` is set).
    fn locations(&self) -> Vec<Location> {
        if self.options.replica.advertise.is_none() {
            return Vec::new();
        }
        let others = self.locations.lock().unwrap_or_else(|p| p.into_inner());
        std::iter::once(REUSE_CONNECTION.to_string())
            .chain(others.iter().cloned())
            .map(|uri| Location { uri })
            .collect()
    }

    /// Plans `sql` for `principal` (read-only check and limits included) before
    /// `deadline`, on the query runtime. Failures are logged and audited, so admins see
    /// probing; a successful plan is audited when its results are fetched.
    async fn plan(
        &self,
        principal: &Principal,
        sql: &str,
        schema: Option<&str>,
        deadline: tokio::time::Instant,
    ) -> Result<Planned, Status> {
        let planning = self.engine.plan(principal, sql, schema);
        let result = match tokio::time::timeout_at(deadline, planning).await {
            Ok(planned) => planned.map_err(to_status),
            Err(_) => Err(timed_out(self.options.query_timeout)),
        };
        result.inspect_err(|status| {
            let kind = match status.code() {
                tonic::Code::Internal | tonic::Code::DeadlineExceeded => "error",
                _ => "refused",
            };
            self.audit_refusal(principal, sql, &format!("{kind}: {}", status.message()));
        })
    }

    /// Plans `sql` holding one of the user's slots, within a deadline from now (for calls
    /// that only plan: `GetFlightInfo`, prepare, bind).
    async fn plan_now(
        &self,
        principal: &Principal,
        sql: &str,
        schema: Option<&str>,
    ) -> Result<Planned, Status> {
        let _slot = self.slot(principal, sql, None).await?;
        self.plan(principal, sql, schema, self.deadline()).await
    }

    /// `SetSessionOptions`: `catalog` must be Quiver's; `schema` one the caller can see
    /// (a schema it cannot see is refused exactly like one that does not exist). Each
    /// refused option is named in the result; the others are kept.
    async fn set_session_options(
        &self,
        principal: &Principal,
        caller: &Caller,
        body: &[u8],
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let request = session::SetSessionOptionsRequest::decode(body)
            .map_err(|_| Status::invalid_argument("malformed SetSessionOptionsRequest"))?;
        let visible: std::collections::BTreeSet<String> = self
            .engine
            .visible_tables(principal)
            .await
            .map_err(to_status)?
            .iter()
            .map(|t| t.entry.name.schema().to_string())
            .chain(principal.is_admin().then(|| "system".to_string()))
            .collect();
        let mut errors = std::collections::HashMap::new();
        let mut schema = None;
        for (name, value) in request.session_options {
            let text = match value.option_value {
                Some(session::Value::StringValue(text)) => Some(text),
                None => None,
                Some(_) => {
                    errors.insert(name, session::ErrorValue::InvalidValue);
                    continue;
                }
            };
            match name.as_str() {
                "catalog" if text.as_deref().is_none_or(|c| c == CATALOG_NAME) => {}
                "schema" if text.as_ref().is_none_or(|s| visible.contains(s)) => {
                    schema = Some(text);
                }
                "catalog" | "schema" => {
                    errors.insert(name, session::ErrorValue::InvalidValue);
                }
                _ => {
                    errors.insert(name, session::ErrorValue::InvalidName);
                }
            }
        }
        let id = self.sessions.update(caller, principal.email(), |options| {
            if let Some(schema) = schema {
                options.schema = schema;
            }
        });
        let result = session::SetSessionOptionsResult {
            errors: errors
                .into_iter()
                .map(|(name, value)| {
                    let error = session::SetSessionOptionsError {
                        value: value as i32,
                    };
                    (name, error)
                })
                .collect(),
        };
        Ok(action_result(result.encode_to_vec(), Some(&id)))
    }

    /// The schema `request`'s session looks unqualified names up in, if it chose one.
    fn session_schema<T>(&self, request: &Request<T>, principal: &Principal) -> Option<String> {
        self.sessions
            .options(&Caller::of(request), principal.email())
            .schema
    }

    /// Logs and audits a statement that did not run.
    fn audit_refusal(&self, principal: &Principal, sql: &str, outcome: &str) {
        let log = QueryLog::new(
            uuid::Uuid::new_v4().to_string(),
            principal.email().to_string(),
            sql.to_string(),
            self.running.clone(),
            Some(self.engine.state().clone()),
        );
        log.set_outcome(outcome);
    }

    /// When a call that starts now must be done.
    fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.options.query_timeout
    }

    /// A `FlightInfo` for `sql` with `params`: one endpoint with a sealed ticket or, for a
    /// large scan on a cluster, one per part of the result, each pointing first at another
    /// replica, so one download is served by many (see `quiver_catalog::engine::Layout`).
    async fn query_info(
        &self,
        principal: &Principal,
        sql: String,
        db_schema: Option<String>,
        params: Option<Vec<u8>>,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let planned = self.plan_now(principal, &sql, db_schema.as_deref()).await?;
        let planned = typed(planned, params.as_deref())?;
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
    fn split_bytes(&self) -> Option<usize> {
        if self.options.max_result_rows.is_some() || self.options.max_result_bytes.is_some() {
            return None;
        }
        self.options.parts_min_bytes
    }

    /// A `FlightInfo` for a metadata command: the ticket is the command itself.
    fn command_info(
        &self,
        command: impl ProstMessageExt,
        schema: &Schema,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = Ticket::new(command.as_any().encode_to_vec());
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| internal(&e))?
            .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }

    /// Streams one in-memory batch (metadata results).
    fn batch_response(&self, batch: RecordBatch) -> Response<BoxStream<FlightData>> {
        let schema = batch.schema();
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_max_flight_data_size(self.options.max_message_size)
            .build(stream::iter([Ok(batch)]))
            .map_err(Status::from);
        Response::new(Box::pin(stream))
    }

    /// Executes a ticket's query (once per parameter row) and streams its results. The
    /// deadline counts from now: planning and the first batch are inside it.
    async fn run_ticket(
        &self,
        principal: &Principal,
        ticket: QueryTicket,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        let deadline = self.deadline();
        let slot = self
            .slot(principal, &ticket.sql, Some(&ticket.query_id))
            .await?;
        let planned = match self.plans.take(&ticket.query_id, principal) {
            Some(planned) if self.engine.is_current(&planned) => planned,
            _ => {
                let planned = self
                    .plan(principal, &ticket.sql, ticket.schema.as_deref(), deadline)
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
        log.set_tables(planned.tables.clone());
        log.hold(slot);
        let param_rows = match &ticket.params {
            Some(ipc) => parameter_rows(&planned.plan, ipc).inspect_err(|status| {
                log.set_outcome(format!("refused: {}", status.message()));
            })?,
            None => vec![Vec::new()],
        };
        let token = self.running.start(&ticket.query_id, principal.email());
        if token.is_cancelled() {
            log.set_outcome("cancelled before it started");
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
        .inspect_err(|status| log.set_outcome(format!("error: {}", status.message())))?;
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
            self.options.max_result_rows,
            log.clone(),
        );
        let bytes_log = log;
        let max_bytes = self.options.max_result_bytes;
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
                    let sent =
                        bytes_log.add_bytes(data.data_body.len() + data.data_header.len());
                    match max_bytes {
                        Some(max) if sent > max => {
                            let message = format!(
                                "the result is larger than {max} bytes (query.max_result_bytes); add a LIMIT or select fewer columns"
                            );
                            bytes_log.set_outcome(format!("error: {message}"));
                            Err(Status::resource_exhausted(message))
                        }
                        _ => Ok(data),
                    }
                }
                Err(FlightError::Tonic(status)) => Err(*status),
                Err(e) => Err(Status::from(e)),
            });
        Ok(Response::new(Box::pin(flight)))
    }

    /// Reads parameters sent with `DoPut` as one Arrow IPC stream, refusing more than
    /// `query.max_parameter_bytes` — received or once decoded — as soon as they pass it:
    /// nothing more is read, and nothing is inflated before its size is known to fit. What
    /// is decoded is held against the caller's memory until it has been re-encoded.
    async fn read_parameters(
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
    async fn keep_parameters(
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

    fn open_prepared(
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
    fn prepared_params(&self, prepared: &PreparedHandle) -> Option<Vec<u8>> {
        prepared.params.clone().or_else(|| {
            let mut bound = self.bound.lock().unwrap_or_else(|p| p.into_inner());
            let kept = bound.get_mut(&prepared.id)?;
            kept.used = std::time::Instant::now();
            (!kept.ipc.is_empty()).then(|| kept.ipc.clone())
        })
    }

    /// `GetSchema`: the schema of a statement's or prepared statement's result, planned
    /// but not run; for metadata commands, the schema their `FlightInfo` names.
    pub(crate) async fn result_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let principal = self.principal(&request).await?;
        let command = Any::decode(&*request.get_ref().cmd)
            .ok()
            .and_then(|any| Command::try_from(any).ok())
            .ok_or_else(|| Status::invalid_argument("GetSchema needs a Flight SQL command"))?;
        let planned = match command {
            Command::CommandStatementQuery(query) => {
                let schema = self.session_schema(&request, &principal);
                self.plan_now(&principal, &query.query, schema.as_deref())
                    .await?
            }
            Command::CommandPreparedStatementQuery(cmd) => {
                let prepared = self.open_prepared(&principal, &cmd.prepared_statement_handle)?;
                let params = self.prepared_params(&prepared);
                let planned = self
                    .plan_now(&principal, &prepared.sql, prepared.schema.as_deref())
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
    async fn cancel_info(
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
}

/// Splits bound parameters (an Arrow IPC stream) into rows of scalars, cast to the types
/// the plan expects where it knows them.
/// `planned` with its untyped placeholders typed as the values bound to them (`params`,
/// an Arrow IPC stream), so its schema is the schema of its rows.
fn typed(planned: Planned, params: Option<&[u8]>) -> Result<Planned, Status> {
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

fn parameter_rows(plan: &LogicalPlan, ipc: &[u8]) -> Result<Vec<Vec<ScalarValue>>, Status> {
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
fn declared_parameter(ty: &DataType) -> DataType {
    use arrow::datatypes::TimeUnit;
    match ty {
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Millisecond, tz.clone()),
        DataType::Time32(_) | DataType::Time64(_) => DataType::Time32(TimeUnit::Millisecond),
        other => plain_type(other),
    }
}

fn scalar_at(
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

/// Whether `plan`'s rows come in a defined order (`ORDER BY` at the top, under projections
/// and limits), which `FlightInfo.ordered` tells clients to keep across endpoints.
fn is_ordered(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Sort(_) => true,
        LogicalPlan::Projection(_) | LogicalPlan::Limit(_) | LogicalPlan::SubqueryAlias(_) => {
            plan.inputs().first().is_some_and(|input| is_ordered(input))
        }
        _ => false,
    }
}

/// One action result, with the session cookie when there is one to set.
fn action_result(
    body: Vec<u8>,
    session: Option<&str>,
) -> Response<BoxStream<arrow_flight::Result>> {
    let result = arrow_flight::Result { body: body.into() };
    let mut response: Response<BoxStream<arrow_flight::Result>> =
        Response::new(Box::pin(stream::iter([Ok::<_, Status>(result)])));
    if let Some(id) = session
        && let Ok(cookie) = format!("{}={id}", sessions::COOKIE).parse()
    {
        response.metadata_mut().insert("set-cookie", cookie);
    }
    response
}

/// Encodes a schema as the IPC message Flight SQL carries in prepared-statement results.
fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| internal(&e))?;
    Ok(bytes)
}

/// Encodes parameter batches as one Arrow IPC stream.
fn ipc_bytes(batches: &[RecordBatch]) -> Result<Vec<u8>, Status> {
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

/// The status of a refused sign-in.
fn sign_in_status(error: SignInError) -> Status {
    match error {
        e @ SignInError::Throttled(_) => Status::resource_exhausted(e.to_string()),
        SignInError::Refused => Status::unauthenticated("invalid e-mail or password"),
        SignInError::Failed(e) => to_status(e),
    }
}

/// The user and password of a Basic `authorization` header.
pub(crate) fn parse_basic(header: &str) -> Option<(String, String)> {
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    // Some clients (the Go ADBC driver) send unpadded base64.
    let encoded = encoded.trim().trim_end_matches('=');
    let decoded = String::from_utf8(STANDARD_NO_PAD.decode(encoded).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[tonic::async_trait]
impl FlightSqlService for QuiverFlightSql {
    type FlightService = QuiverFlightSql;

    #[instrument(skip_all)]
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<BoxStream<HandshakeResponse>>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Status::unauthenticated(
                    "the handshake needs Basic credentials (e-mail and password)",
                )
            })?;
        // A client that already holds a bearer token may handshake with it.
        if header.starts_with("Bearer ") || header.starts_with("bearer ") {
            self.principal(&request).await?;
            let value = MetadataValue::try_from(header).map_err(|e| internal(&e))?;
            let mut response: Response<BoxStream<HandshakeResponse>> = Response::new(Box::pin(
                stream::iter([Ok::<_, Status>(HandshakeResponse::default())]),
            ));
            response.metadata_mut().insert("authorization", value);
            return Ok(response);
        }
        let (user, password) = parse_basic(header).ok_or_else(|| {
            Status::unauthenticated("malformed Basic credentials in the authorization header")
        })?;
        let address = request.remote_addr().map(|a| a.ip().to_string());
        let credentials = Credentials::Password {
            email: user,
            password,
        };
        let token = self
            .auth
            .sign_in(credentials, Edge::Flight, address.as_deref())
            .await
            .map_err(sign_in_status)?
            .token;
        let value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|e| internal(&e))?;
        let payload = HandshakeResponse {
            protocol_version: 0,
            payload: token.into(),
        };
        let mut response: Response<BoxStream<HandshakeResponse>> =
            Response::new(Box::pin(stream::iter([Ok::<_, Status>(payload)])));
        response.metadata_mut().insert("authorization", value);
        Ok(response)
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        _message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.principal(&request).await?;
        Err(Status::invalid_argument("unknown ticket type"))
    }

    // ----- statements -------------------------------------------------------------------

    #[instrument(skip_all)]
    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let principal = self.principal(&request).await?;
        let schema = self.session_schema(&request, &principal);
        let info = self
            .query_info(&principal, query.query, schema, None, request.into_inner())
            .await?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        Err(Status::unimplemented(
            "Substrait plans are not supported; send SQL",
        ))
    }

    #[instrument(skip_all)]
    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let principal = self.principal(&request).await?;
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
        self.run_ticket(&principal, ticket).await
    }

    // ----- prepared statements ----------------------------------------------------------

    #[instrument(skip_all)]
    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let principal = self.principal(&request).await?;
        let schema = self.session_schema(&request, &principal);
        let plan = self
            .plan_now(&principal, &query.query, schema.as_deref())
            .await?
            .plan;
        let dataset = metadata::result_schema(plan.schema().as_arrow());
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

    #[instrument(skip_all)]
    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let principal = self.principal(&request).await?;
        let mut prepared = self.open_prepared(&principal, &query.prepared_statement_handle)?;
        let ipc = self
            .read_parameters(&principal, request.into_inner())
            .await?;
        // Check now, so a bad binding fails at bind time rather than at execution.
        let plan = self
            .plan_now(&principal, &prepared.sql, prepared.schema.as_deref())
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

    #[instrument(skip_all)]
    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let principal = self.principal(&request).await?;
        let prepared = self.open_prepared(&principal, &cmd.prepared_statement_handle)?;
        let params = self.prepared_params(&prepared);
        let info = self
            .query_info(
                &principal,
                prepared.sql,
                prepared.schema,
                params,
                request.into_inner(),
            )
            .await?;
        Ok(Response::new(info))
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let principal = self.principal(&request).await?;
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

    // ----- refused writes -----------------------------------------------------------------

    async fn do_put_statement_update(
        &self,
        _ticket: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.principal(&request).await?;
        Err(Status::invalid_argument(READ_ONLY_MESSAGE))
    }

    async fn do_put_statement_ingest(
        &self,
        _ticket: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.principal(&request).await?;
        Err(Status::invalid_argument(READ_ONLY_MESSAGE))
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.principal(&request).await?;
        Err(Status::invalid_argument(READ_ONLY_MESSAGE))
    }

    // ----- metadata -------------------------------------------------------------------------

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        let schema = query.into_builder().schema();
        self.command_info(query, &schema, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        _query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.principal(&request).await?;
        let mut builder = GetCatalogsBuilder::new();
        builder.append(CATALOG_NAME);
        Ok(self.batch_response(builder.build().map_err(|e| internal(&e))?))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        let schema = query.clone().into_builder().schema();
        self.command_info(query, &schema, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let principal = self.principal(&request).await?;
        let mut schemas: Vec<String> = self
            .engine
            .visible_tables(&principal)
            .await
            .map_err(to_status)?
            .into_iter()
            .map(|t| t.entry.name.schema().to_string())
            .collect();
        schemas.sort();
        schemas.dedup();
        let mut builder = query.into_builder();
        for schema in schemas {
            builder.append(CATALOG_NAME, schema);
        }
        Ok(self.batch_response(builder.build().map_err(|e| internal(&e))?))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        let schema = query.clone().into_builder().schema();
        self.command_info(query, &schema, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let principal = self.principal(&request).await?;
        let include_schema = query.include_schema;
        let tables = self
            .engine
            .visible_tables(&principal)
            .await
            .map_err(to_status)?;
        let mut builder = query.into_builder();
        let empty = Schema::empty();
        // Column descriptions from the tables' definitions, as the columns' remarks.
        let remarks: std::collections::HashMap<_, _> = if include_schema {
            let state = self.engine.state().clone();
            tokio::task::spawn_blocking(move || state.tables().definitions())
                .await
                .map_err(|e| internal(&e))?
                .map_err(to_status)?
                .into_iter()
                .map(|d| (d.name, d.def.columns))
                .collect()
        } else {
            Default::default()
        };
        let no_remarks = std::collections::BTreeMap::new();
        for table in tables.into_iter().map(|t| t.entry) {
            let schema = if include_schema {
                let remarks = remarks.get(&table.name).unwrap_or(&no_remarks);
                self.engine
                    .table_schema(&principal, &table.name)
                    .await
                    .map_err(to_status)?
                    .map(|schema| {
                        let (db_schema, name) = (table.name.schema(), table.name.table());
                        Arc::new(Schema::new_with_metadata(
                            schema
                                .fields()
                                .iter()
                                .map(|f| {
                                    let remark = remarks.get(f.name()).map(String::as_str);
                                    metadata::described(f, CATALOG_NAME, db_schema, name, remark)
                                })
                                .collect::<Vec<_>>(),
                            schema.metadata().clone(),
                        ))
                    })
            } else {
                None
            };
            builder
                .append(
                    CATALOG_NAME,
                    table.name.schema(),
                    table.name.table(),
                    "TABLE",
                    schema.as_deref().unwrap_or(&empty),
                )
                .map_err(|e| internal(&e))?;
        }
        Ok(self.batch_response(builder.build().map_err(|e| internal(&e))?))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        let schema = query.into_builder().schema();
        self.command_info(query, &schema, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.principal(&request).await?;
        let mut builder = query.into_builder();
        builder.append("TABLE");
        Ok(self.batch_response(builder.build().map_err(|e| internal(&e))?))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        let batch =
            metadata::sql_info_batch(query.clone(), &self.sql_info).map_err(|e| internal(&e))?;
        self.command_info(query, &batch.schema(), request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.principal(&request).await?;
        let batch = metadata::sql_info_batch(query, &self.sql_info).map_err(|e| internal(&e))?;
        Ok(self.batch_response(batch))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        let schema = query.into_builder(&XDBC_INFO).schema();
        self.command_info(query, &schema, request.into_inner())
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.principal(&request).await?;
        let batch = query
            .into_builder(&XDBC_INFO)
            .build()
            .map_err(|e| internal(&e))?;
        Ok(self.batch_response(batch))
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        self.command_info(query, &primary_keys_schema(), request.into_inner())
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.principal(&request).await?;
        Ok(self.batch_response(RecordBatch::new_empty(primary_keys_schema())))
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        self.command_info(query, &foreign_keys_schema(), request.into_inner())
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.principal(&request).await?;
        Ok(self.batch_response(RecordBatch::new_empty(foreign_keys_schema())))
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        self.command_info(query, &foreign_keys_schema(), request.into_inner())
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.principal(&request).await?;
        Ok(self.batch_response(RecordBatch::new_empty(foreign_keys_schema())))
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        self.command_info(query, &foreign_keys_schema(), request.into_inner())
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.principal(&request).await?;
        Ok(self.batch_response(RecordBatch::new_empty(foreign_keys_schema())))
    }

    // ----- cancellation -------------------------------------------------------------------

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let principal = self.principal(&request).await?;
        let info = FlightInfo::decode(&*query.info)
            .map_err(|_| Status::invalid_argument("CancelQuery needs a FlightInfo"))?;
        let status = self.cancel_info(&principal, &info).await?;
        // `CancelResult` is not exported by arrow-flight; its numbers are `CancelStatus`'s.
        Ok(ActionCancelQueryResult {
            result: status as i32,
        })
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        let action = |kind: &str, description: &str| {
            Ok(ActionType {
                r#type: kind.into(),
                description: description.into(),
            })
        };
        Some(vec![
            action(
                CANCEL_FLIGHT_INFO,
                "Cancel a running query, given its FlightInfo",
            ),
            action(
                sessions::SET_SESSION_OPTIONS,
                "Set session options: `catalog` (quiver) and `schema` (for unqualified table names)",
            ),
            action(sessions::GET_SESSION_OPTIONS, "The session's options"),
            action(sessions::CLOSE_SESSION, "Forget the session's options"),
        ])
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let principal = self.principal(&request).await?;
        let caller = Caller::of(&request);
        let action = request.into_inner();
        match action.r#type.as_str() {
            CANCEL_FLIGHT_INFO => {}
            sessions::SET_SESSION_OPTIONS => {
                return self
                    .set_session_options(&principal, &caller, &action.body)
                    .await;
            }
            sessions::GET_SESSION_OPTIONS => {
                let options = self.sessions.options(&caller, principal.email());
                let mut result = session::GetSessionOptionsResult::default();
                let text = |s: String| session::SessionOptionValue {
                    option_value: Some(session::Value::StringValue(s)),
                };
                result
                    .session_options
                    .insert("catalog".into(), text(CATALOG_NAME.into()));
                // The schema in force: the one set, else where unqualified names resolve.
                let schema = options
                    .schema
                    .unwrap_or_else(|| quiver_catalog::engine::DEFAULT_SCHEMA.into());
                result.session_options.insert("schema".into(), text(schema));
                return Ok(action_result(result.encode_to_vec(), None));
            }
            sessions::CLOSE_SESSION => {
                self.sessions.close(&caller, principal.email());
                let result = session::CloseSessionResult {
                    status: session::CloseStatus::Closed as i32,
                };
                return Ok(action_result(result.encode_to_vec(), None));
            }
            other => {
                return Err(Status::unimplemented(format!(
                    "action `{other}` is not supported"
                )));
            }
        }
        let cancel = CancelFlightInfoRequest::decode(&*action.body)
            .map_err(|_| Status::invalid_argument("malformed CancelFlightInfoRequest"))?;
        let info = cancel
            .info
            .ok_or_else(|| Status::invalid_argument("CancelFlightInfo needs a FlightInfo"))?;
        let status = self.cancel_info(&principal, &info).await?;
        let body = CancelFlightInfoResult {
            status: status as i32,
        }
        .encode_to_vec();
        Ok(action_result(body, None))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
