//! Catalog and metadata calls (`GetCatalogs`, `GetDbSchemas`, `GetTables`, `GetSqlInfo`,
//! XDBC types, keys): answered from what the caller may read, never more.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::GetCatalogsBuilder;
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, ProstMessageExt,
};
use arrow_flight::{FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use futures::{TryStreamExt, stream};
use prost::Message;
use quiver_catalog::CATALOG_NAME;
use tonic::{Request, Response, Status};

use crate::error::{internal, to_status};
use crate::metadata::{self, XDBC_INFO};

use super::sign_in::signed_in;
use super::{BoxStream, QuiverFlightSql};

impl QuiverFlightSql {
    /// A `FlightInfo` for a metadata command: the ticket is the command itself.
    pub(super) fn command_info(
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
    pub(super) fn batch_response(&self, batch: RecordBatch) -> Response<BoxStream<FlightData>> {
        let schema = batch.schema();
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_max_flight_data_size(self.options.max_message_size)
            .build(stream::iter([Ok(batch)]))
            .map_err(Status::from);
        Response::new(Box::pin(stream))
    }

    pub(super) async fn catalogs_info(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        signed_in(&request)?;
        let schema = query.into_builder().schema();
        self.command_info(query, &schema, request.into_inner())
    }

    pub(super) async fn catalogs(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        signed_in(&request)?;
        let mut builder = GetCatalogsBuilder::new();
        builder.append(CATALOG_NAME);
        Ok(self.batch_response(builder.build().map_err(|e| internal(&e))?))
    }

    pub(super) async fn schemas_info(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        signed_in(&request)?;
        let schema = query.clone().into_builder().schema();
        self.command_info(query, &schema, request.into_inner())
    }

    pub(super) async fn schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let principal = signed_in(&request)?;
        let mut schemas: Vec<String> = self
            .engine
            .visible_tables(&principal)
            .await
            .map_err(to_status)?
            .into_iter()
            .map(|t| t.name.schema().to_string())
            .chain(self.engine.personal_schemas().map(String::from))
            .collect();
        schemas.sort();
        schemas.dedup();
        let mut builder = query.into_builder();
        for schema in schemas {
            builder.append(CATALOG_NAME, schema);
        }
        Ok(self.batch_response(builder.build().map_err(|e| internal(&e))?))
    }

    pub(super) async fn tables_info(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        signed_in(&request)?;
        let schema = query.clone().into_builder().schema();
        self.command_info(query, &schema, request.into_inner())
    }

    pub(super) async fn tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let principal = signed_in(&request)?;
        let include_schema = query.include_schema;
        let tables = self
            .engine
            .visible_tables(&principal)
            .await
            .map_err(to_status)?;
        let mut builder = query.into_builder();
        let empty = Schema::empty();
        // Column descriptions (definitions', and those put on written tables) as remarks.
        let remarks = if include_schema {
            let state = self.engine.state().clone();
            tokio::task::spawn_blocking(move || state.tables().column_remarks())
                .await
                .map_err(|e| internal(&e))?
                .map_err(to_status)?
        } else {
            Default::default()
        };
        let no_remarks = std::collections::BTreeMap::new();
        for visible in tables {
            let table = &visible.entry;
            let shown = &visible.name;
            let schema = if include_schema {
                let remarks = remarks.get(&table.name).unwrap_or(&no_remarks);
                self.engine
                    .table_schema(&principal, shown)
                    .await
                    .map_err(to_status)?
                    .map(|schema| {
                        let (db_schema, name) = (shown.schema(), shown.table());
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
                    shown.schema(),
                    shown.table(),
                    "TABLE",
                    schema.as_deref().unwrap_or(&empty),
                )
                .map_err(|e| internal(&e))?;
        }
        Ok(self.batch_response(builder.build().map_err(|e| internal(&e))?))
    }

    pub(super) async fn table_types_info(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        signed_in(&request)?;
        let schema = query.into_builder().schema();
        self.command_info(query, &schema, request.into_inner())
    }

    pub(super) async fn table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        signed_in(&request)?;
        let mut builder = query.into_builder();
        builder.append("TABLE");
        Ok(self.batch_response(builder.build().map_err(|e| internal(&e))?))
    }

    pub(super) async fn server_info_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        signed_in(&request)?;
        let batch =
            metadata::sql_info_batch(query.clone(), &self.sql_info).map_err(|e| internal(&e))?;
        self.command_info(query, &batch.schema(), request.into_inner())
    }

    pub(super) async fn server_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        signed_in(&request)?;
        let batch = metadata::sql_info_batch(query, &self.sql_info).map_err(|e| internal(&e))?;
        Ok(self.batch_response(batch))
    }

    pub(super) async fn type_info_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        signed_in(&request)?;
        let schema = query.into_builder(&XDBC_INFO).schema();
        self.command_info(query, &schema, request.into_inner())
    }

    pub(super) async fn type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        signed_in(&request)?;
        let batch = query
            .into_builder(&XDBC_INFO)
            .build()
            .map_err(|e| internal(&e))?;
        Ok(self.batch_response(batch))
    }

    /// Key listings (`GetPrimaryKeys`, `GetExportedKeys`, `GetImportedKeys`,
    /// `GetCrossReference`): Quiver's tables declare no keys, so each answers its schema
    /// with no rows — but only to a signed-in caller.
    pub(super) async fn keys_info(
        &self,
        query: impl ProstMessageExt,
        schema: SchemaRef,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        signed_in(&request)?;
        self.command_info(query, &schema, request.into_inner())
    }

    /// The rows of a key listing: none (see [`Self::keys_info`]).
    pub(super) async fn no_keys(
        &self,
        schema: SchemaRef,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        signed_in(&request)?;
        Ok(self.batch_response(RecordBatch::new_empty(schema)))
    }
}
