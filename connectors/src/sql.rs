//! `sql`: a table defined by a query over other Quiver tables, materialized on its schedule
//! (a summary that is expensive to compute on every read, a cleaned-up join).

use datafusion::sql::parser::{DFParser, Statement};
use futures::TryStreamExt;
use quiver_catalog::engine::read_only;
use quiver_config::FieldProblem;
use serde::Deserialize;

use crate::options::{parse, parse_checked};
use crate::{Batches, Connector, ConnectorError, Options, ReadRequest};

/// The `sql` connector.
pub(crate) struct Sql;

/// Options of the `sql` connector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlOptions {
    /// One `SELECT` over Quiver tables, addressed `schema.table`.
    query: String,
}

#[async_trait::async_trait]
impl Connector for Sql {
    fn check(&self, options: &Options) -> Vec<FieldProblem> {
        let parsed: SqlOptions = match parse(options) {
            Ok(o) => o,
            Err(p) => return vec![p],
        };
        match DFParser::parse_sql(&parsed.query) {
            Ok(statements) if statements.len() == 1 => match &statements[0] {
                Statement::Statement(s)
                    if matches!(**s, datafusion::sql::sqlparser::ast::Statement::Query(_)) =>
                {
                    Vec::new()
                }
                _ => vec![FieldProblem::new("options.query", "must be a SELECT query")],
            },
            Ok(_) => vec![FieldProblem::new(
                "options.query",
                "must be exactly one SELECT query",
            )],
            Err(e) => vec![FieldProblem::new(
                "options.query",
                format!("is not valid SQL: {e}"),
            )],
        }
    }

    async fn read(&self, request: ReadRequest<'_>) -> Result<Batches, ConnectorError> {
        let options: SqlOptions = parse_checked(request.options)?;
        let frame = request
            .session
            .sql_with_options(&options.query, read_only())
            .await?;
        let stream = frame.execute_stream().await?;
        Ok(Batches {
            schema: stream.schema(),
            stream: Box::pin(stream.map_err(ConnectorError::from)),
        })
    }
}
