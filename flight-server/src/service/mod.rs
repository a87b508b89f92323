//! The Flight SQL service. Every call is signed in before it arrives ([`sign_in`]'s layer
//! puts its principal in the request); everything after that goes through the principal's own DataFusion session, so metadata and queries
//! only ever see what the principal may read. This file only dispatches; each call family
//! is answered in its own file:
//!
//! - [`sign_in`]: the layer reading the `authorization` header, and the handshake.
//! - [`admission`]: places for concurrent work, deadlines, the cluster watch.
//! - [`statements`]: planning, `FlightInfo` and tickets, running a ticket, `GetSchema`,
//!   cancellation.
//! - [`prepared`]: prepared statements and all parameter binding.
//! - [`catalog`]: catalogs, schemas, tables, `GetSqlInfo`, XDBC types, keys.
//! - [`sessions`]: session options.
//! - [`writes`]: bulk ingest and write statements.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::SqlInfoData;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandGetCatalogs, CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys,
    CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementSubstraitPlan, CommandStatementUpdate, DoPutPreparedStatementResult, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, FlightDescriptor, FlightInfo, HandshakeRequest, HandshakeResponse, Ticket,
};
use futures::Stream;
use quiver_catalog::QueryEngine;
use quiver_catalog::auth::authenticator::Authenticator;
use quiver_catalog::state::cluster::Replica;
use quiver_config::Compression;
use tonic::{Request, Response, Status, Streaming};
use tracing::instrument;

use crate::metadata::{self, foreign_keys_schema, primary_keys_schema};
use crate::plans::PlanCache;
use crate::session_store::{self, Caller, Sessions};
use crate::stream::{ResultLimits, RunningQueries};
use crate::ticket::Sealer;

mod admission;
mod catalog;
mod prepared;
mod sessions;
mod sign_in;
mod statements;
mod writes;

use sign_in::signed_in;
pub(crate) use sign_in::{SignIn, parse_basic};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";

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
    /// A result over these fails instead of being truncated.
    pub result_limits: ResultLimits,
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

/// Quiver's `FlightSqlService`.
#[derive(Clone)]
pub struct QuiverFlightSql {
    engine: Arc<QueryEngine>,
    sealer: Sealer,
    options: FlightOptions,
    running: RunningQueries,
    /// Parameters bound to prepared statements, for clients that keep using the original
    /// handle instead of the updated one returned by `DoPut`.
    bound: Arc<std::sync::Mutex<std::collections::HashMap<String, prepared::BoundParams>>>,
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

    /// Signs callers in (the [`SignIn`] layer in front of this service).
    pub(crate) fn authenticator(&self) -> &Arc<Authenticator> {
        &self.auth
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
}

#[tonic::async_trait]
impl FlightSqlService for QuiverFlightSql {
    type FlightService = QuiverFlightSql;

    #[instrument(skip_all)]
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<BoxStream<HandshakeResponse>>, Status> {
        self.handshake(request).await
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        _message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.unknown_ticket(request).await
    }

    #[instrument(skip_all)]
    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.statement_info(query, request).await
    }

    async fn get_flight_info_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.substrait_info(request).await
    }

    #[instrument(skip_all)]
    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.statement_results(ticket, request).await
    }

    #[instrument(skip_all)]
    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.create_prepared(query, request).await
    }

    #[instrument(skip_all)]
    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        self.bind_parameters(query, request).await
    }

    #[instrument(skip_all)]
    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.prepared_info(cmd, request).await
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        self.close_prepared(query, request).await
    }

    #[instrument(skip_all)]
    async fn do_put_statement_update(
        &self,
        cmd: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.statement_update(cmd, request).await
    }

    #[instrument(skip_all)]
    async fn do_put_statement_ingest(
        &self,
        cmd: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.ingest(cmd, request).await
    }

    #[instrument(skip_all)]
    async fn do_put_prepared_statement_update(
        &self,
        cmd: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.prepared_update(cmd, request).await
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.catalogs_info(query, request).await
    }

    async fn do_get_catalogs(
        &self,
        _query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.catalogs(request).await
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.schemas_info(query, request).await
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.schemas(query, request).await
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.tables_info(query, request).await
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.tables(query, request).await
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.table_types_info(query, request).await
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.table_types(query, request).await
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.server_info_info(query, request).await
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.server_info(query, request).await
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.type_info_info(query, request).await
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.type_info(query, request).await
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.keys_info(query, primary_keys_schema(), request).await
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.no_keys(primary_keys_schema(), request).await
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.keys_info(query, foreign_keys_schema(), request).await
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.no_keys(foreign_keys_schema(), request).await
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.keys_info(query, foreign_keys_schema(), request).await
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.no_keys(foreign_keys_schema(), request).await
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.keys_info(query, foreign_keys_schema(), request).await
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.no_keys(foreign_keys_schema(), request).await
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        self.cancel_query(query, request).await
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
                session_store::SET_SESSION_OPTIONS,
                "Set session options: `catalog` (quiver) and `schema` (for unqualified table names)",
            ),
            action(session_store::GET_SESSION_OPTIONS, "The session's options"),
            action(session_store::CLOSE_SESSION, "Forget the session's options"),
        ])
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let principal = signed_in(&request)?;
        let caller = Caller::of(&request);
        let action = request.into_inner();
        match action.r#type.as_str() {
            CANCEL_FLIGHT_INFO => self.cancel_flight_info(&principal, &action.body).await,
            session_store::SET_SESSION_OPTIONS => {
                self.set_session_options(&principal, &caller, &action.body)
                    .await
            }
            session_store::GET_SESSION_OPTIONS => Ok(self.get_session_options(&principal, &caller)),
            session_store::CLOSE_SESSION => Ok(self.close_session(&principal, &caller)),
            other => Err(Status::unimplemented(format!(
                "action `{other}` is not supported"
            ))),
        }
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
