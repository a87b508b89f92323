//! Planning and running a principal's statements: read-only queries within the limits,
//! resolved against the principal's session (a table it cannot read does not exist for it),
//! placeholders numbered and typed, results kept for repeats.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::TableReference;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SQLOptions, SessionContext};
use datafusion::scalar::ScalarValue;
use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::CatalogError;
use crate::auth::principal::Principal;
use crate::names::CATALOG_NAME;
use crate::state::TableEntry;

use super::{DEFAULT_SCHEMA, QueryEngine, TEMP_SCHEMA, TempTables, VisibleTable};

/// The first table `statement` names that the session's catalog does not hold, as
/// [`CatalogError::TableNotFound`] with a hint: the tables of that name the principal can
/// read, else the schemas it can read. Asked of the catalog before planning, so a missing
/// table is known by what it is, not by the planner's wording.
fn missing_table(
    state: &datafusion::execution::SessionState,
    statement: &DfStatement,
    visible: &[VisibleTable],
) -> Result<(), CatalogError> {
    // The table a `CREATE` or `DROP` names need not exist (yet).
    let made = match statement {
        DfStatement::Statement(inner) => match inner.as_ref() {
            SqlStatement::CreateTable(create) => vec![create.name.to_string()],
            SqlStatement::Drop { names, .. } => names.iter().map(ToString::to_string).collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    for reference in state.resolve_table_references(statement)? {
        if made
            .iter()
            .any(|m| TableReference::parse_str(m) == reference)
        {
            continue;
        }
        // `FROM generate_series(…)` names a table function, not a table.
        let function = matches!(reference, TableReference::Bare { .. })
            && state.table_functions().contains_key(reference.table());
        let exists = function
            || state
                .schema_for_ref(reference.clone())
                .is_ok_and(|schema| schema.table_exist(reference.table()));
        if exists {
            continue;
        }
        let options = &state.config_options().catalog;
        let name = reference
            .clone()
            .resolve(&options.default_catalog, &options.default_schema);
        let message = format!("table '{name}' not found");
        let candidates: Vec<String> = visible
            .iter()
            .filter(|t| t.name.table() == reference.table())
            .map(|t| format!("`{}`", t.name))
            .collect();
        let schemas: std::collections::BTreeSet<String> = visible
            .iter()
            .map(|t| format!("`{}`", t.name.schema()))
            .collect();
        let schemas = schemas.into_iter().collect::<Vec<_>>();
        return Err(CatalogError::TableNotFound(if !candidates.is_empty() {
            format!(
                "{message}; did you mean {}? (a table name without its schema is looked up in the session's schema, `{DEFAULT_SCHEMA}` unless set)",
                candidates.join(" or ")
            )
        } else if schemas.is_empty() {
            format!("{message}; you cannot read any table yet (an admin grants them)")
        } else {
            format!(
                "{message}; the schemas you can read are {} (name tables `schema.table`)",
                schemas.join(", ")
            )
        }));
    }
    Ok(())
}

/// What the SQL surface allows: queries only.
pub fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

impl QueryEngine {
    /// Plans `sql` for `principal`, refusing anything but a read-only query within the
    /// [`QueryLimits`]. `?` placeholders are accepted as well as `$1`. Unqualified table
    /// names are looked up in `schema` (the client's session schema; default `public`, or
    /// `temp` when the session holds temporary tables, which `temp` brings).
    /// The work runs on the query runtime; dropping the future abandons it.
    pub async fn plan(
        self: &Arc<Self>,
        principal: &Principal,
        sql: &str,
        schema: Option<&str>,
        temp: Option<Arc<TempTables>>,
    ) -> Result<Planned, CatalogError> {
        self.limits.check_length(sql)?;
        let engine = self.clone();
        let principal = principal.clone();
        let sql = sql.to_string();
        let temp = temp.filter(|t| !t.is_empty());
        let schema = schema
            .unwrap_or(if temp.is_some() {
                TEMP_SCHEMA
            } else {
                DEFAULT_SCHEMA
            })
            .to_string();
        let planned = self
            .executor
            .run(async move {
                engine
                    .plan_here(&principal, &sql, &schema, temp.as_deref())
                    .await
            })
            .await?;
        for entry in self.accelerator.note_reads(&planned.read) {
            let engine = self.clone();
            self.executor
                .spawn(async move { engine.hold_in_memory(entry).await });
        }
        Ok(planned)
    }

    async fn plan_here(
        &self,
        principal: &Principal,
        sql: &str,
        schema: &str,
        temp: Option<&TempTables>,
    ) -> Result<Planned, CatalogError> {
        // Read first: a change while planning makes the plan look stale, never current.
        let generation = self.state.generation();
        let session = self.principal_session(principal).await?;
        let ctx = match temp {
            Some(temp) => self.with_temp_tables(&session.ctx, temp).await?,
            None => session.ctx.clone(),
        };
        let sql = number_placeholders(sql)?;
        let mut state = ctx.state();
        state.config_mut().options_mut().catalog.default_schema = schema.to_string();
        let dialect = state.config_options().sql_parser.dialect;
        let statement = state
            .sql_to_statement(&sql, &dialect)
            .map_err(|e| self.parse_error(&sql, e))?;
        let query = match &statement {
            DfStatement::Statement(inner) => inner.as_ref(),
            DfStatement::Explain(explain) => match explain.statement.as_ref() {
                DfStatement::Statement(inner) => inner.as_ref(),
                _ => return Err(read_only_error("not a query")),
            },
            _ => return Err(read_only_error("not a query")),
        };
        if let (
            DfStatement::Statement(_),
            SqlStatement::Comment {
                object_type,
                object_name,
                comment,
                ..
            },
        ) = (&statement, query)
        {
            let write = self
                .comment_statement(
                    principal,
                    &ctx,
                    object_type,
                    object_name,
                    comment.clone(),
                    schema,
                )
                .await?;
            return Ok(Planned {
                plan: LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
                    produce_one_row: false,
                    schema: Arc::new(datafusion::common::DFSchema::empty()),
                }),
                ctx,
                tables: Vec::new(),
                read: Vec::new(),
                reads: Vec::new(),
                generation,
                result_key: None,
                write: Some(write),
            });
        }
        self.limits.check_depth(query)?;
        self.limits.check_expansion(query)?;
        missing_table(&state, &statement, &session.tables)?;
        let plan = state.statement_to_plan(statement).await?;
        self.limits.check_plan(&plan)?;
        let write = self.write_statement(principal, &plan, schema)?;
        match &write {
            None => verify_read_only(&plan)?,
            // What a write reads is a query like any other.
            Some(_) => {
                for input in plan.inputs() {
                    verify_read_only(input)?;
                }
            }
        }
        // EXPLAIN would show policy literals, storage paths and pre-filter row counts.
        if !principal.is_admin()
            && matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_))
        {
            return Err(CatalogError::InvalidQuery(
                "EXPLAIN is available to administrators only".into(),
            ));
        }
        let tables = tables_read(&plan, schema);
        let reads = super::lineage::reads(&plan, schema, &session.tables);
        // No view types leave the server (EXPLAIN's text columns are plain already).
        let plan = match plan {
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) => plan,
            _ if write.is_some() => plan,
            plan => crate::engine::wire::plain_plan(plan)?,
        };
        // The engine's settings include server paths (the spill directory): for admins.
        if !principal.is_admin() && tables.iter().any(|t| t == SETTINGS_TABLE) {
            return Err(CatalogError::TableNotFound(format!(
                "table '{CATALOG_NAME}.{SETTINGS_TABLE}' not found"
            )));
        }
        // Remote tables have no versions of their rows: what reads them is never kept,
        // held in memory or split by version.
        let read = session
            .tables
            .iter()
            .filter(|t| !t.remote && tables.contains(&t.name.to_string()))
            .map(|t| t.entry.clone())
            .collect::<Vec<_>>();
        // Temporary tables are the session's alone: their results are not kept.
        let result_key = match write {
            None if temp.is_none() => self.results.key(principal, &plan, &read, &tables),
            _ => None,
        };
        Ok(Planned {
            ctx,
            plan,
            tables,
            read,
            reads,
            generation,
            result_key,
            write,
        })
    }

    /// Whether `planned` still holds: no table, user or grant changed since it was planned,
    /// so running it now reads what planning it again would.
    pub fn is_current(&self, planned: &Planned) -> bool {
        planned.generation == self.state.generation()
    }

    /// The error for a statement the parser refused. Past the depth limit, the parser
    /// sometimes backtracks and reports a syntax error instead of the limit; a second parse
    /// with room to spare (only on failure, on the query runtime's deep stack) tells which.
    fn parse_error(&self, sql: &str, error: DataFusionError) -> CatalogError {
        let recursion = |e: &DataFusionError| {
            matches!(e.find_root(), DataFusionError::SQL(parse, _)
                if matches!(parse.as_ref(), ParserError::RecursionLimitExceeded))
        };
        if recursion(&error) {
            return self.limits.too_deep();
        }
        let roomy = DFParserBuilder::new(sql)
            .with_dialect(&GenericDialect {})
            .with_recursion_limit(self.limits.max_expression_depth.saturating_mul(10))
            .build()
            .and_then(|mut parser| parser.parse_statements());
        match roomy {
            Ok(_) => self.limits.too_deep(),
            Err(e) if recursion(&e) => self.limits.too_deep(),
            Err(_) => CatalogError::Query(error),
        }
    }

    /// Runs a planned statement (after binding `params` to its placeholders) as a stream of
    /// batches, produced on the query runtime, or answers it from the results of an
    /// identical one (`query.results_cache_memory`).
    pub async fn execute(
        self: &Arc<Self>,
        planned: &Planned,
        params: Vec<ScalarValue>,
    ) -> Result<SendableRecordBatchStream, CatalogError> {
        let key = planned
            .result_key
            .as_ref()
            .map(|key| format!("{key}parameters {params:?}"));
        if let Some(key) = &key
            && let Some(kept) = self.results.get(key, planned.generation)
        {
            return Ok(kept);
        }
        let (ctx, plan) = (planned.ctx.clone(), planned.plan.clone());
        let stream = self
            .executor
            .run(async move {
                let plan = if params.is_empty() {
                    plan
                } else {
                    plan.with_param_values(params)?
                };
                verify_read_only(&plan)?;
                let df = ctx.execute_logical_plan(plan).await?;
                Ok(df.execute_stream().await?)
            })
            .await?;
        let stream = self.executor.forward(stream);
        Ok(match key {
            Some(key) => self.results.record(key, planned.generation, stream),
            None => stream,
        })
    }
}

/// A statement planned for a principal.
#[derive(Clone)]
pub struct Planned {
    /// The principal's session it was planned in (and must run in).
    pub ctx: SessionContext,
    /// The logical plan, policies included.
    pub plan: LogicalPlan,
    /// The tables it reads (`schema.table`), for the audit log.
    pub tables: Vec<String>,
    /// The registered tables among them, at the versions it reads.
    pub read: Vec<TableEntry>,
    /// What it reads of each table, for the access history.
    pub reads: Vec<crate::state::audit::TableRead>,
    /// The state's generation it was planned at (see [`QueryEngine::is_current`]).
    generation: u64,
    /// Where its result is kept, if it may be (see `results`).
    result_key: Option<String>,
    /// What it writes, for a write statement (run by [`QueryEngine::execute_write`]).
    pub write: Option<super::WriteStatement>,
}

impl Planned {
    /// Roughly the memory the plan holds, for bounding how many are kept: its nodes and
    /// expressions (a few hundred bytes each), the text of its literals and its results-cache
    /// key. A 700 KiB `IN` list of numbers comes to about 12 MiB.
    pub fn approx_bytes(&self) -> usize {
        use datafusion::common::ScalarValue;
        use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
        use datafusion::logical_expr::Expr;

        const NODE: usize = 512;
        const EXPR: usize = 160;
        let mut bytes = self.result_key.as_ref().map_or(0, String::len);
        let _ = self.plan.apply_with_subqueries(|node| {
            bytes += NODE;
            let _ = node.apply_expressions(|e| {
                e.apply(|e| {
                    bytes += EXPR;
                    if let Expr::Literal(
                        ScalarValue::Utf8(Some(s))
                        | ScalarValue::Utf8View(Some(s))
                        | ScalarValue::LargeUtf8(Some(s)),
                        _,
                    ) = e
                    {
                        bytes += s.len();
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
            });
            Ok(TreeNodeRecursion::Continue)
        });
        bytes
    }

    /// The statement with its untyped placeholders (`SELECT ?`, `SELECT $1 AS a`) given the
    /// types of the values bound to them (`types[0]` for `$1`), so that its schema says what
    /// its rows will hold. Typed placeholders keep their type (a bound value is cast to it).
    pub fn with_parameter_types(&self, types: &[DataType]) -> Result<Self, CatalogError> {
        use datafusion::arrow::datatypes::Field;
        use datafusion::common::tree_node::{Transformed, TreeNode};
        use datafusion::logical_expr::{Expr, expr::Placeholder};

        let untyped = |p: &Placeholder| p.field.as_ref().is_none_or(|f| f.data_type().is_null());
        let bound = |id: &str| {
            let index = id.trim_start_matches('$').parse::<usize>().ok()?;
            types.get(index.checked_sub(1)?).filter(|t| !t.is_null())
        };
        let plan = self
            .plan
            .clone()
            .transform_up_with_subqueries(|node| {
                node.map_expressions(|e| {
                    e.transform(|e| match e {
                        Expr::Placeholder(p) if untyped(&p) => match bound(&p.id) {
                            Some(ty) => {
                                let field = Arc::new(Field::new("", ty.clone(), true));
                                Ok(Transformed::yes(Expr::Placeholder(
                                    Placeholder::new_with_field(p.id, Some(field)),
                                )))
                            }
                            None => Ok(Transformed::no(Expr::Placeholder(p))),
                        },
                        other => Ok(Transformed::no(other)),
                    })
                })?
                // Every node above a typed placeholder derives its schema again.
                .map_data(|plan| plan.recompute_schema())
            })?
            .data;
        Ok(Self {
            plan,
            ..self.clone()
        })
    }
}

/// `information_schema.df_settings`, as [`tables_read`] names it.
const SETTINGS_TABLE: &str = "information_schema.df_settings";

/// Refuses plans that would change anything (DDL, DML, `COPY`, `SET`, …).
pub(super) fn verify_read_only(plan: &LogicalPlan) -> Result<(), CatalogError> {
    read_only()
        .verify_plan(plan)
        .map_err(|e| read_only_error(&e.find_root().strip_backtrace()))
}

fn read_only_error(why: &str) -> CatalogError {
    CatalogError::InvalidQuery(format!(
        "statement not accepted ({why}): Quiver runs queries and, in schemas you may write to, CREATE [OR REPLACE] TABLE [AS SELECT], INSERT and DROP TABLE; everything else is read-only"
    ))
}

/// The placeholders' types in a plan, ordered `$1, $2, …`; unknown types come back as `Null`.
pub fn parameter_types(plan: &LogicalPlan) -> Result<Vec<DataType>, CatalogError> {
    let types = plan.get_parameter_types()?;
    let mut numbered: Vec<(usize, DataType)> = types
        .into_iter()
        .map(|(name, ty)| {
            let index = name.trim_start_matches('$').parse::<usize>().map_err(|_| {
                CatalogError::InvalidQuery(format!(
                    "named placeholder `{name}` is not supported; use `?` or `$1`, `$2`, …"
                ))
            })?;
            Ok((index, ty.unwrap_or(DataType::Null)))
        })
        .collect::<Result<_, CatalogError>>()?;
    numbered.sort_by_key(|(i, _)| *i);
    Ok(numbered.into_iter().map(|(_, t)| t).collect())
}

/// Rewrites JDBC/ODBC-style `?` placeholders to DataFusion's `$1`, `$2`, … (outside string
/// literals and comments, which the tokenizer keeps intact).
pub fn number_placeholders(sql: &str) -> Result<String, CatalogError> {
    if !sql.contains('?') {
        return Ok(sql.to_string());
    }
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| CatalogError::InvalidQuery(format!("SQL syntax error: {e}")))?;
    let mut next = 0;
    let mut out = String::with_capacity(sql.len() + 8);
    for token in tokens {
        match token {
            Token::Placeholder(p) if p == "?" => {
                next += 1;
                out.push_str(&format!("${next}"));
            }
            other => out.push_str(&other.to_string()),
        }
    }
    Ok(out)
}

/// The tables a plan planned with default schema `schema` reads (`schema.table`, as
/// resolved), subqueries included.
pub fn tables_read(plan: &LogicalPlan, schema: &str) -> Vec<String> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut tables = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let name = scan.table_name.clone().resolve(CATALOG_NAME, schema);
            tables.push(format!("{}.{}", name.schema, name.table));
        }
        Ok(TreeNodeRecursion::Continue)
    });
    tables.sort();
    tables.dedup();
    tables
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_become_numbered_placeholders() {
        assert_eq!(
            number_placeholders("SELECT * FROM t WHERE a = ? AND b = '?' AND c > ?").unwrap(),
            "SELECT * FROM t WHERE a = $1 AND b = '?' AND c > $2"
        );
        assert_eq!(number_placeholders("SELECT 1").unwrap(), "SELECT 1");
    }
}
