//! Writes: bulk ingest (`DoPut` with `CommandStatementIngest`, what ADBC's `adbc_ingest`,
//! pandas' `to_sql` and polars' `write_database` send), and write statements (`CREATE
//! TABLE [AS SELECT]`, `INSERT`, `DROP TABLE`) through `DoPut` update commands — which answer
//! with the rows written — or through a `FlightInfo` (ADBC's `execute`), which runs them
//! as they are asked for and answers with an empty result.
//!
//! The engine decides where the caller may write and commits each write as one version;
//! this file only turns the wire's commands and streams into its calls. Each write is
//! audited as a statement, and its commit as a `table.write` with what it read.

use std::sync::Arc;

use arrow::datatypes::Schema;
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementUpdate,
    TableExistsOption, TableNotExistOption,
};
use arrow_flight::{FlightDescriptor, FlightInfo};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use quiver_catalog::engine::IngestMode;
use quiver_catalog::{CATALOG_NAME, CatalogError, Planned, Principal};
use tonic::{Request, Status};

use crate::error::{datafusion_status, internal, to_status};
use crate::stream::{QueryLog, timed_out};
use crate::upload;

use super::QuiverFlightSql;
use super::prepared::parameter_rows;
use super::sign_in::signed_in;

impl QuiverFlightSql {
    /// Runs a planned write once per parameter row (once without parameters), within the
    /// query deadline and one of the user's places, audited as a statement. Returns the
    /// rows written.
    pub(super) async fn run_write(
        &self,
        principal: &Principal,
        planned: &Planned,
        sql: &str,
        params: Option<&[u8]>,
    ) -> Result<i64, Status> {
        let query_id = uuid::Uuid::new_v4().to_string();
        let slot = self.slot(principal, sql, Some(&query_id)).await?;
        let log = QueryLog::new(
            query_id,
            principal.email().to_string(),
            sql.to_string(),
            self.running.clone(),
            Some(self.engine.state().clone()),
        );
        log.set_reads(planned);
        log.hold(slot);
        let rows = match params {
            Some(ipc) => parameter_rows(&planned.plan, ipc).inspect_err(|s| log.refused(s))?,
            None => vec![Vec::<ScalarValue>::new()],
        };
        let replica = &self.options.replica.id;
        let writing = async {
            let mut written = 0;
            for params in rows {
                written += self
                    .engine
                    .execute_write(principal, planned, params, replica, sql)
                    .await?;
            }
            Ok::<_, CatalogError>(written)
        };
        let written = match tokio::time::timeout_at(self.deadline(), writing).await {
            Ok(written) => written.map_err(to_status),
            Err(_) => Err(timed_out(self.options.query_timeout)),
        }
        .inspect_err(|status| log.failed(status))?;
        log.succeeded();
        Ok(written)
    }

    /// A `FlightInfo` for a write asked for as a query (ADBC's `execute`): the write runs
    /// now, and the result has no rows and no endpoints to fetch.
    pub(super) async fn write_info(
        &self,
        principal: &Principal,
        planned: &Planned,
        sql: &str,
        params: Option<&[u8]>,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        self.run_write(principal, planned, sql, params).await?;
        Ok(FlightInfo::new()
            .try_with_schema(&Schema::empty())
            .map_err(|e| internal(&e))?
            .with_descriptor(descriptor)
            .with_total_records(0)
            .with_total_bytes(0))
    }

    /// `DoPut` with `CommandStatementUpdate`: a write statement, answered with its rows.
    pub(super) async fn statement_update(
        &self,
        cmd: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let principal = signed_in(&request)?;
        let session = self.session(&request, &principal);
        let planned = self
            .plan_now(
                &principal,
                &cmd.query,
                session.schema.as_deref(),
                session.temp,
            )
            .await?;
        self.update(&principal, &planned, &cmd.query, None).await
    }

    /// `DoPut` with `CommandPreparedStatementUpdate`: a prepared write, run once per row of
    /// the parameters sent with it (JDBC's `executeBatch`), answered with the rows written.
    pub(super) async fn prepared_update(
        &self,
        cmd: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let principal = signed_in(&request)?;
        let prepared = self.open_prepared(&principal, &cmd.prepared_statement_handle)?;
        let temp = self.session(&request, &principal).temp;
        let sent = self
            .read_parameters(&principal, request.into_inner())
            .await?;
        let params = if sent.is_empty() {
            self.prepared_params(&prepared)
        } else {
            Some(sent)
        };
        let planned = self
            .plan_now(&principal, &prepared.sql, prepared.schema.as_deref(), temp)
            .await?;
        let planned = super::prepared::typed(planned, params.as_deref())?;
        self.update(&principal, &planned, &prepared.sql, params.as_deref())
            .await
    }

    async fn update(
        &self,
        principal: &Principal,
        planned: &Planned,
        sql: &str,
        params: Option<&[u8]>,
    ) -> Result<i64, Status> {
        if planned.write.is_none() {
            let status = Status::invalid_argument(
                "this statement is a query, not an update: run it as a query (executeQuery, cursor.execute)",
            );
            self.audit_refusal(principal, sql, &status);
            return Err(status);
        }
        self.run_write(principal, planned, sql, params).await
    }

    /// `DoPut` with `CommandStatementIngest`: the stream's batches become a table version,
    /// written as they arrive and published when the stream ends. A stream that fails or
    /// is cut off publishes nothing.
    pub(super) async fn ingest(
        &self,
        cmd: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let principal = signed_in(&request)?;
        let session_schema = self.session_schema(&request, &principal);
        let what = format!(
            "bulk ingest into {}{}",
            cmd.schema
                .as_deref()
                .map(|s| format!("{s}."))
                .unwrap_or_default(),
            cmd.table
        );
        let result = self
            .ingest_stream(&principal, &cmd, session_schema.as_deref(), request)
            .await;
        if let Err(status) = &result {
            self.audit_refusal(&principal, &what, status);
        }
        result
    }

    async fn ingest_stream(
        &self,
        principal: &Principal,
        cmd: &CommandStatementIngest,
        session_schema: Option<&str>,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        if let Some(catalog) = cmd.catalog.as_deref().filter(|c| *c != CATALOG_NAME) {
            return Err(Status::not_found(format!(
                "catalog `{catalog}` not found; the only catalog is `{CATALOG_NAME}`"
            )));
        }
        let mode = ingest_mode(cmd)?;
        // A temporary table is always in `temp`: a schema sent with it is not used (the
        // Python driver keeps the schema of a cursor's previous ingest).
        let temp = match cmd.temporary {
            true => Some(self.temp_tables(&request, principal)?),
            false => None,
        };
        let target = match temp {
            Some(_) => None,
            None => Some(
                self.engine
                    .write_target(principal, cmd.schema.as_deref(), &cmd.table, session_schema)
                    .map_err(to_status)?,
            ),
        };
        let _slot = self.slot(principal, "bulk ingest", None).await?;
        // Each message is checked before it is decoded, and held against the caller's
        // memory while it is: one message never decodes to more than the user may hold.
        let memory = MemoryConsumer::new("bulk ingest message")
            .register(&self.engine.user_pool(principal.email()));
        // A message with neither header nor body (a descriptor alone) carries no data.
        let carrying = request.into_inner().filter(|message| {
            futures::future::ready(!matches!(message,
                Ok(m) if m.data_header.is_empty() && m.data_body.is_empty()))
        });
        let checked = carrying.map(move |message| {
            let message = message.map_err(FlightError::from)?;
            let len = upload::decoded_len(&message, usize::MAX).map_err(|e| {
                FlightError::Tonic(Box::new(Status::invalid_argument(format!(
                    "cannot read the ingest stream: {e}; nothing was written"
                ))))
            })?;
            memory
                .try_resize(len)
                .map_err(|e| FlightError::Tonic(Box::new(datafusion_status(&e))))?;
            Ok(message)
        });
        let mut decoder = FlightDataDecoder::new(checked);
        // The stream opens with its schema.
        let schema = loop {
            match decoder.next().await {
                Some(Ok(data)) => match data.payload {
                    DecodedPayload::Schema(schema) => break schema,
                    DecodedPayload::None => continue,
                    DecodedPayload::RecordBatch(_) => {
                        return Err(Status::invalid_argument(
                            "the ingest stream sent rows before its schema",
                        ));
                    }
                },
                Some(Err(e)) => return Err(flight_error(e)),
                None => {
                    return Err(Status::invalid_argument(
                        "the ingest stream was empty: it must start with the data's schema",
                    ));
                }
            }
        };
        let batches = decoder
            .filter_map(|data| async move {
                match data {
                    Ok(data) => match data.payload {
                        DecodedPayload::RecordBatch(batch) => Some(Ok(batch)),
                        DecodedPayload::Schema(_) => Some(Err(CatalogError::InvalidInput(
                            "the ingest stream changed its schema midway; send one schema".into(),
                        ))),
                        DecodedPayload::None => None,
                    },
                    Err(e) => Some(Err(CatalogError::InvalidInput(format!(
                        "the ingest stream failed: {e}; nothing was written"
                    )))),
                }
            })
            .boxed();
        let Some(target) = target else {
            let temp =
                temp.ok_or_else(|| Status::internal("neither a table nor a temporary one"))?;
            return self
                .engine
                .ingest_temporary(&temp, &cmd.table, mode, schema, batches)
                .await
                .map_err(to_status);
        };
        let detail = serde_json::json!({
            "ingest": format!("{mode:?}").to_lowercase(),
            "table": target.shown,
        });
        let written = self
            .engine
            .ingest(
                principal,
                &target,
                mode,
                Arc::clone(&schema),
                batches,
                &self.options.replica.id,
                detail,
            )
            .await
            .map_err(to_status)?;
        Ok(written.rows)
    }
}

/// ADBC's ingest modes, as the two options it sends.
fn ingest_mode(cmd: &CommandStatementIngest) -> Result<IngestMode, Status> {
    let options = cmd.table_definition_options.unwrap_or_default();
    let missing = TableNotExistOption::try_from(options.if_not_exist)
        .unwrap_or(TableNotExistOption::Unspecified);
    let exists =
        TableExistsOption::try_from(options.if_exists).unwrap_or(TableExistsOption::Unspecified);
    use TableExistsOption as E;
    use TableNotExistOption as N;
    Ok(match (missing, exists) {
        (N::Create | N::Unspecified, E::Fail | E::Unspecified) => IngestMode::Create,
        (N::Fail, E::Append) => IngestMode::Append,
        (N::Create | N::Unspecified, E::Append) => IngestMode::CreateAppend,
        (N::Create | N::Unspecified, E::Replace) => IngestMode::Replace,
        (N::Fail, E::Replace) => IngestMode::Replace,
        (N::Fail, E::Fail | E::Unspecified) => {
            return Err(Status::invalid_argument(
                "an ingest that may neither create nor change the table does nothing; choose a mode (create, append, replace, create_append)",
            ));
        }
    })
}

fn flight_error(e: FlightError) -> Status {
    match e {
        FlightError::Tonic(status) => *status,
        e => Status::invalid_argument(format!("cannot read the ingest stream: {e}")),
    }
}
