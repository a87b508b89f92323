//! Users' writes: bulk ingest of Arrow streams, and `CREATE TABLE [AS SELECT]`, `INSERT` and
//! `DROP TABLE` statements, each committed as one version like a sync's.
//!
//! Where a principal may write is decided here, once for every client: a schema one of its
//! groups was granted `write` on, or its personal schema, `me` from its own point of view
//! (`home_<name>` to admins, who may write there too).
//! A schema the principal cannot read is answered as if it did not exist. What is written
//! is streamed through the [`sink`](crate::sink) into a run folder that only the commit
//! makes visible: a write that fails or is cut off publishes nothing.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::TableReference;
use datafusion::logical_expr::{DdlStatement, DmlStatement, LogicalPlan, WriteOp};
use datafusion::sql::sqlparser::ast::{CommentObject, ObjectName};
use futures::{Stream, StreamExt};

use crate::auth::principal::Principal;
use crate::engine::wire::{plain_plan, plain_schema};
use crate::sink::{ParquetSink, Progress};
use crate::state::access::Privilege;
use crate::state::tables::{PERSONAL_PREFIX, WriteCommit, WriteMode, Written};
use crate::{CatalogError, TableName};

use super::{DEFAULT_SCHEMA, Planned, QueryEngine};

/// The schema every user's own tables are in, from their point of view.
pub const PERSONAL_SCHEMA: &str = "me";

/// Schemas no one writes to, whatever the grants say.
const RESERVED: &[&str] = &[
    "information_schema",
    "system",
    PERSONAL_SCHEMA,
    super::temporary::TEMP_SCHEMA,
];

/// Where users may write, from the `write` section of the configuration.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Every user has a personal schema (`me`).
    pub personal_schemas: bool,
    /// Bytes of parquet one user's personal schema may hold; 0: no bound.
    pub quota_per_user: u64,
    /// Bytes of parquet a shared writable schema may hold; 0: no bound.
    pub quota_per_schema: u64,
    /// Bytes of parquet named schemas may hold, in place of `quota_per_schema`.
    pub schema_quotas: std::collections::HashMap<String, u64>,
    /// Bytes of Arrow data one ingest or statement may write; 0: no bound.
    pub max_write_bytes: u64,
    /// Rows one ingest or statement may write; 0: no bound.
    pub max_write_rows: u64,
    /// Tables one schema may hold; 0: no bound.
    pub max_tables_per_schema: u64,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            personal_schemas: true,
            quota_per_user: 0,
            quota_per_schema: 0,
            schema_quotas: Default::default(),
            max_write_bytes: 0,
            max_write_rows: 0,
            max_tables_per_schema: 0,
        }
    }
}

/// A table a principal may write, by the name it stores under and the name the principal
/// used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteTarget {
    /// As stored (`home_ann.scores`).
    pub table: TableName,
    /// As the principal named it (`me.scores`).
    pub shown: String,
}

/// How an ingest meets an existing table (ADBC's ingest modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestMode {
    /// Create the table; refused when it exists.
    Create,
    /// Append to the table; refused when it does not exist.
    Append,
    /// Replace the table's rows (creating it when missing).
    Replace,
    /// Append, creating the table when missing.
    CreateAppend,
}

/// A write statement, planned: what it does and to which table.
#[derive(Debug, Clone)]
pub enum WriteStatement {
    /// `CREATE [OR REPLACE] TABLE t [(…)] [AS SELECT …]`.
    Create {
        /// The table.
        target: WriteTarget,
        /// `IF NOT EXISTS`: an existing table is left as it is.
        if_not_exists: bool,
        /// `OR REPLACE`.
        or_replace: bool,
    },
    /// `INSERT INTO t …`.
    Insert {
        /// The table.
        target: WriteTarget,
    },
    /// `DROP TABLE [IF EXISTS] t`.
    Drop {
        /// The table (`None`: `IF EXISTS` and there is none the principal may drop).
        target: Option<WriteTarget>,
    },
    /// `COMMENT ON TABLE t | COLUMN t.c IS '…' | NULL`.
    Comment {
        /// The table.
        target: WriteTarget,
        /// The column, or `None` for the table's description.
        column: Option<String>,
        /// The remark; `None` removes it.
        remark: Option<String>,
    },
}

impl QueryEngine {
    /// The personal schema's name (`me`) when users have one.
    pub fn personal_schemas(&self) -> Option<&'static str> {
        self.writes.personal_schemas.then_some(PERSONAL_SCHEMA)
    }

    /// Where `principal` may write `schema.table`; `schema` `None` is the session's schema
    /// (`session_schema`, `public` unless set). Refusals never tell whether a schema the
    /// principal cannot read exists.
    pub fn write_target(
        &self,
        principal: &Principal,
        schema: Option<&str>,
        table: &str,
        session_schema: Option<&str>,
    ) -> Result<WriteTarget, CatalogError> {
        let given = schema.is_some();
        let schema = schema.or(session_schema).unwrap_or(DEFAULT_SCHEMA);
        let stored = self.stored_schema(principal, schema, given)?;
        let table = TableName::new(&stored, table)?;
        Ok(WriteTarget {
            shown: format!("{schema}.{}", table.table()),
            table,
        })
    }

    /// The schema `schema` is stored as, when `principal` may write there.
    fn stored_schema(
        &self,
        principal: &Principal,
        schema: &str,
        given: bool,
    ) -> Result<String, CatalogError> {
        let tables = self.state.tables();
        let personal = self.writes.personal_schemas;
        if schema == PERSONAL_SCHEMA {
            if !personal {
                return Err(CatalogError::PermissionDenied(
                    "personal schemas are turned off on this server (`write.personal_schemas`)"
                        .into(),
                ));
            }
            return tables.claim_personal_schema(principal.email());
        }
        if schema.starts_with(PERSONAL_PREFIX) {
            let owner = tables
                .personal_schemas()?
                .into_iter()
                .find(|(s, _)| s == schema)
                .map(|(_, email)| email);
            return match owner {
                Some(email) if principal.is_admin() || email == principal.email() => {
                    Ok(schema.to_string())
                }
                _ => Err(self.no_writable_schema(principal, schema)),
            };
        }
        if RESERVED.contains(&schema) {
            return Err(CatalogError::PermissionDenied(format!(
                "`{schema}` is read-only; write to `{PERSONAL_SCHEMA}` (your own schema){}",
                self.writable_hint(principal)
            )));
        }
        let granted = self.state.access().grants()?.iter().any(|g| {
            g.privilege == Privilege::Write
                && g.table.schema() == schema
                && principal.groups().contains(&g.group)
        });
        if !granted {
            if !given {
                return Err(CatalogError::PermissionDenied(format!(
                    "no schema was given and the session's schema `{schema}` is read-only for you; name the table `{PERSONAL_SCHEMA}.<table>` (your own schema){}",
                    self.writable_hint(principal)
                )));
            }
            return Err(self.no_writable_schema(principal, schema));
        }
        if let Some(kept) = tables.kept_by_syncs(schema)? {
            return Err(CatalogError::PermissionDenied(format!(
                "`{schema}` holds tables kept by syncs (such as `{kept}`), which would overwrite what you write; write to `{PERSONAL_SCHEMA}` or a schema granted `write`"
            )));
        }
        Ok(schema.to_string())
    }

    /// The refusal for a schema `principal` may not write to: whether it can read there
    /// decides whether the schema is named as existing.
    fn no_writable_schema(&self, principal: &Principal, schema: &str) -> CatalogError {
        let readable = lock(&self.sessions)
            .get(principal)
            .is_some_and(|(_, s)| s.tables.iter().any(|t| t.name.schema() == schema));
        let hint = self.writable_hint(principal);
        if readable {
            CatalogError::PermissionDenied(format!(
                "`{schema}` is read-only for you: you may read it but not write to it; write to `{PERSONAL_SCHEMA}` (your own schema){hint}"
            ))
        } else {
            CatalogError::NotFound(format!(
                "schema `{schema}` not found among those you may write to; write to `{PERSONAL_SCHEMA}` (your own schema){hint}"
            ))
        }
    }

    /// ", or `a`, `b` (granted `write`)" for the schemas the principal's groups may write.
    fn writable_hint(&self, principal: &Principal) -> String {
        let mut schemas: Vec<String> = self
            .state
            .access()
            .grants()
            .unwrap_or_default()
            .into_iter()
            .filter(|g| g.privilege == Privilege::Write && principal.groups().contains(&g.group))
            .map(|g| format!("`{}`", g.table.schema()))
            .collect();
        schemas.sort();
        schemas.dedup();
        if schemas.is_empty() {
            String::new()
        } else {
            format!(" or {} (granted `write`)", schemas.join(", "))
        }
    }

    /// Writes `batches` (of `schema`) into `target` as `mode` says and commits them as its
    /// next version. Streamed: each part file is written as its rows arrive. `replica`
    /// is the id this process has in the shared state; `detail` goes into the audit.
    #[allow(clippy::too_many_arguments)]
    pub async fn ingest<S>(
        &self,
        principal: &Principal,
        target: &WriteTarget,
        mode: IngestMode,
        schema: SchemaRef,
        batches: S,
        replica: &str,
        detail: serde_json::Value,
    ) -> Result<Written, CatalogError>
    where
        S: Stream<Item = Result<RecordBatch, CatalogError>> + Send + Unpin,
    {
        let tables = self.state.tables();
        let current = match tables.get(&target.table) {
            Ok(entry) => Some(entry),
            Err(CatalogError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let mode = match (mode, &current) {
            (IngestMode::Create, Some(_)) => {
                return Err(CatalogError::AlreadyExists(format!(
                    "table `{}` already exists (ingest with mode append or replace)",
                    target.shown
                )));
            }
            (IngestMode::Append, None) => {
                return Err(CatalogError::NotFound(format!(
                    "no table `{}` to append to (ingest with mode create or create_append)",
                    target.shown
                )));
            }
            (IngestMode::Create | IngestMode::CreateAppend, None) => WriteMode::Create,
            (IngestMode::Append | IngestMode::CreateAppend, Some(_)) => WriteMode::Append,
            (IngestMode::Replace, current) => WriteMode::Replace {
                base: current.as_ref().map(|t| t.version),
            },
        };
        if let (WriteMode::Append, Some(entry)) = (mode, &current) {
            let ctx = self.new_context(principal.email())?;
            let existing = plain_schema(&self.provider(&ctx, entry).await?.schema());
            check_append(&target.shown, &existing, &plain_schema(&schema))?;
        }
        self.check_quotas(target, current.is_none())?;
        let bounded = self.bounded(batches);
        let run = tables.start_write(&target.table, principal.email(), replica)?;
        let sink = ParquetSink::new(&self.storage, &target.table);
        let location = sink.location();
        let landed = sink
            .write_stream(schema, bounded, &Progress::default())
            .await;
        let committed = landed.and_then(|landed| {
            tables.commit_write(
                principal.email(),
                &WriteCommit {
                    table: target.table.clone(),
                    mode,
                    location: landed.location,
                    files: landed.files,
                    run,
                    detail,
                },
            )
        });
        if let Err(e) = &committed {
            let _ = tables.fail_run(run, &e.to_string());
            // Best effort: the sweep removes what is left.
            if let Some(prefix) = self.storage.prefix_of(&location) {
                self.storage.delete_folder(&prefix).await;
            }
        }
        committed
    }

    /// `batches`, failing once they pass `write.max_write_bytes` of Arrow data or
    /// `write.max_write_rows` rows.
    pub(super) fn bounded<S>(
        &self,
        batches: S,
    ) -> impl Stream<Item = Result<RecordBatch, CatalogError>> + Send + Unpin
    where
        S: Stream<Item = Result<RecordBatch, CatalogError>> + Send + Unpin,
    {
        let (max_bytes, max_rows) = (self.writes.max_write_bytes, self.writes.max_write_rows);
        let (mut bytes, mut rows) = (0u64, 0u64);
        batches.map(move |batch| {
            let batch = batch?;
            bytes += crate::sink::arrow_bytes(&batch) as u64;
            rows += batch.num_rows() as u64;
            if max_bytes > 0 && bytes > max_bytes {
                return Err(CatalogError::LimitExceeded {
                    setting: "write.max_write_bytes",
                    message: format!(
                        "the write is larger than {max_bytes} bytes of Arrow data; nothing was written"
                    ),
                });
            }
            if max_rows > 0 && rows > max_rows {
                return Err(CatalogError::LimitExceeded {
                    setting: "write.max_write_rows",
                    message: format!(
                        "the write has more than {max_rows} rows; nothing was written"
                    ),
                });
            }
            Ok(batch)
        })
    }

    /// Refuses a write that would take `target`'s schema past a quota.
    fn check_quotas(&self, target: &WriteTarget, new_table: bool) -> Result<(), CatalogError> {
        let schema = target.table.schema();
        let (count, bytes) = self.state.tables().schema_usage(schema)?;
        let personal = schema.starts_with(PERSONAL_PREFIX);
        let (quota, setting) = if personal {
            (self.writes.quota_per_user, "write.quota_per_user")
        } else if let Some(quota) = self.writes.schema_quotas.get(schema) {
            (*quota, "write.schema_quotas")
        } else {
            (self.writes.quota_per_schema, "write.quota_per_schema")
        };
        if quota > 0 && bytes as u64 >= quota {
            return Err(CatalogError::LimitExceeded {
                setting,
                message: format!(
                    "`{}` holds {bytes} bytes, its quota is {quota}; drop or replace tables to make room",
                    if personal { PERSONAL_SCHEMA } else { schema }
                ),
            });
        }
        let most = self.writes.max_tables_per_schema;
        if new_table && most > 0 && count as u64 >= most {
            return Err(CatalogError::LimitExceeded {
                setting: "write.max_tables_per_schema",
                message: format!(
                    "`{}` holds {count} tables, the most one schema may; drop one first",
                    target.shown.split('.').next().unwrap_or(schema)
                ),
            });
        }
        Ok(())
    }

    /// The write a planned statement makes, resolved against what `principal` may write;
    /// `None` for a query. Anything that changes something else is refused, naming what
    /// is accepted.
    pub(super) fn write_statement(
        &self,
        principal: &Principal,
        plan: &LogicalPlan,
        session_schema: &str,
    ) -> Result<Option<WriteStatement>, CatalogError> {
        let target = |name: &TableReference| {
            self.write_target(principal, name.schema(), name.table(), Some(session_schema))
        };
        Ok(Some(match plan {
            LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)) => {
                if create.temporary {
                    return Err(unsupported(
                        "temporary tables are made by bulk ingest (`temporary=True`), not by SQL",
                    ));
                }
                WriteStatement::Create {
                    target: target(&create.name)?,
                    if_not_exists: create.if_not_exists,
                    or_replace: create.or_replace,
                }
            }
            LogicalPlan::Ddl(DdlStatement::DropTable(drop)) => {
                let found = target(&drop.name).and_then(|t| {
                    self.state
                        .tables()
                        .get(&t.table)
                        .map(|_| t)
                        .map_err(|_| CatalogError::NotFound(String::new()))
                });
                match found {
                    Ok(t) => WriteStatement::Drop { target: Some(t) },
                    Err(_) if drop.if_exists => WriteStatement::Drop { target: None },
                    Err(CatalogError::NotFound(_)) => {
                        return Err(CatalogError::TableNotFound(format!(
                            "no table `{}` you may drop",
                            drop.name
                        )));
                    }
                    Err(e) => return Err(e),
                }
            }
            LogicalPlan::Dml(DmlStatement {
                table_name,
                op: WriteOp::Insert(op),
                ..
            }) => {
                if !matches!(op, datafusion::logical_expr::dml::InsertOp::Append) {
                    return Err(unsupported(
                        "INSERT OVERWRITE and REPLACE INTO are not supported; use CREATE OR REPLACE TABLE … AS SELECT",
                    ));
                }
                WriteStatement::Insert {
                    target: target(table_name)?,
                }
            }
            LogicalPlan::Dml(DmlStatement {
                op: WriteOp::Update | WriteOp::Delete | WriteOp::Truncate,
                ..
            }) => {
                return Err(unsupported(
                    "UPDATE and DELETE are not supported: tables are written whole or appended to; use CREATE OR REPLACE TABLE t AS SELECT … to change rows",
                ));
            }
            _ => return Ok(None),
        }))
    }

    /// `COMMENT ON TABLE | COLUMN`, on a table `principal` may write; anything else named
    /// by `COMMENT ON` is refused.
    pub(super) async fn comment_statement(
        &self,
        principal: &Principal,
        ctx: &datafusion::prelude::SessionContext,
        object: &CommentObject,
        name: &ObjectName,
        remark: Option<String>,
        session_schema: &str,
    ) -> Result<WriteStatement, CatalogError> {
        // Unquoted names are folded to lower case, as the planner folds them.
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|part| match part.as_ident() {
                Some(ident) if ident.quote_style.is_some() => ident.value.clone(),
                Some(ident) => ident.value.to_lowercase(),
                None => part.to_string(),
            })
            .collect();
        let (schema, table, column) = match (object, parts.as_slice()) {
            (CommentObject::Table, [table]) => (None, table, None),
            (CommentObject::Table, [schema, table]) => (Some(schema.as_str()), table, None),
            (CommentObject::Column, [table, column]) => (None, table, Some(column.clone())),
            (CommentObject::Column, [schema, table, column]) => {
                (Some(schema.as_str()), table, Some(column.clone()))
            }
            (CommentObject::Table | CommentObject::Column, _) => {
                return Err(CatalogError::InvalidQuery(format!(
                    "COMMENT ON {object} names `{name}`; name it as [schema.]table{}",
                    if matches!(object, CommentObject::Column) {
                        ".column"
                    } else {
                        ""
                    }
                )));
            }
            _ => {
                return Err(unsupported(&format!(
                    "COMMENT ON {object} is not supported; COMMENT ON TABLE and COMMENT ON COLUMN are, on tables you may write"
                )));
            }
        };
        let target = self.write_target(principal, schema, table, Some(session_schema))?;
        let Ok(entry) = self.state.tables().get(&target.table) else {
            return Err(CatalogError::TableNotFound(format!(
                "no table `{}` you may comment on",
                target.shown
            )));
        };
        if let Some(column) = &column {
            let columns = self.provider(ctx, &entry).await?.schema();
            if columns.field_with_name(column).is_err() {
                return Err(CatalogError::InvalidQuery(format!(
                    "`{}` has no column `{column}`; its columns are {}",
                    target.shown,
                    columns
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok(WriteStatement::Comment {
            target,
            column,
            remark,
        })
    }

    /// Runs a planned write statement (after binding `params`); returns the rows written.
    pub async fn execute_write(
        self: &Arc<Self>,
        principal: &Principal,
        planned: &Planned,
        params: Vec<datafusion::scalar::ScalarValue>,
        replica: &str,
        sql: &str,
    ) -> Result<i64, CatalogError> {
        let Some(write) = planned.write.clone() else {
            return Err(CatalogError::InvalidQuery(
                "this statement is a query; run it as one".into(),
            ));
        };
        let plan = if params.is_empty() {
            planned.plan.clone()
        } else {
            planned.plan.clone().with_param_values(params)?
        };
        let detail = serde_json::json!({ "statement": sql, "read": planned.tables });
        let (target, mode, input) = match (&write, plan) {
            (
                WriteStatement::Comment {
                    target,
                    column,
                    remark,
                },
                _,
            ) => {
                self.state.tables().set_remark(
                    principal.email(),
                    &target.table,
                    column.as_deref(),
                    remark.as_deref(),
                )?;
                return Ok(0);
            }
            (WriteStatement::Drop { target }, _) => {
                if let Some(target) = target {
                    self.state
                        .tables()
                        .delete_table(principal.email(), &target.table)?;
                }
                return Ok(0);
            }
            (
                WriteStatement::Create {
                    target,
                    if_not_exists,
                    or_replace,
                },
                LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)),
            ) => {
                let exists = self.state.tables().get(&target.table).is_ok();
                if exists && *if_not_exists {
                    return Ok(0);
                }
                let mode = if *or_replace {
                    IngestMode::Replace
                } else {
                    IngestMode::Create
                };
                (target.clone(), mode, create.input.as_ref().clone())
            }
            (WriteStatement::Insert { target }, LogicalPlan::Dml(dml)) => (
                target.clone(),
                IngestMode::Append,
                dml.input.as_ref().clone(),
            ),
            _ => return Err(CatalogError::Internal("write plan changed shape".into())),
        };
        let engine = self.clone();
        let principal = principal.clone();
        let ctx = planned.ctx.clone();
        let replica = replica.to_string();
        let written = self
            .executor
            .run(async move {
                let input = plain_plan(input)?;
                let frame = ctx.execute_logical_plan(input).await?;
                let stream = frame.execute_stream().await?;
                let schema = stream.schema();
                let stream = stream.map(|b| b.map_err(CatalogError::from));
                engine
                    .ingest(&principal, &target, mode, schema, stream, &replica, detail)
                    .await
            })
            .await?;
        Ok(written.rows)
    }
}

/// Refuses appending data of `incoming` schema to a table of `existing` schema, naming the
/// first column that differs and both types.
pub(super) fn check_append(
    table: &str,
    existing: &SchemaRef,
    incoming: &SchemaRef,
) -> Result<(), CatalogError> {
    let names = |s: &SchemaRef| {
        s.fields()
            .iter()
            .map(|f| f.name().clone())
            .collect::<Vec<_>>()
    };
    for field in existing.fields() {
        match incoming.field_with_name(field.name()) {
            Err(_) => {
                return Err(CatalogError::InvalidInput(format!(
                    "cannot append to `{table}`: the data has no column `{}` ({}); the table's columns are {}",
                    field.name(),
                    field.data_type(),
                    names(existing).join(", ")
                )));
            }
            Ok(given) if !same_type(given.data_type(), field.data_type()) => {
                return Err(CatalogError::InvalidInput(format!(
                    "cannot append to `{table}`: column `{}` is {} in the table but {} in the data",
                    field.name(),
                    field.data_type(),
                    given.data_type()
                )));
            }
            Ok(_) => {}
        }
    }
    if let Some(extra) = incoming
        .fields()
        .iter()
        .find(|f| existing.field_with_name(f.name()).is_err())
    {
        return Err(CatalogError::InvalidInput(format!(
            "cannot append to `{table}`: it has no column `{}`; its columns are {}",
            extra.name(),
            names(existing).join(", ")
        )));
    }
    if names(existing) != names(incoming) {
        return Err(CatalogError::InvalidInput(format!(
            "cannot append to `{table}`: the columns must come in the table's order ({})",
            names(existing).join(", ")
        )));
    }
    Ok(())
}

/// Types that hold the same values: equal once nested nullability is set aside, and any
/// two string (or binary) layouts — clients send `large_string` or `string_view` for text
/// that is read back the same.
fn same_type(a: &DataType, b: &DataType) -> bool {
    use DataType::*;
    let text = |t: &DataType| matches!(t, Utf8 | LargeUtf8 | Utf8View);
    let binary = |t: &DataType| matches!(t, Binary | LargeBinary | BinaryView);
    a.equals_datatype(b) || (text(a) && text(b)) || (binary(a) && binary(b))
}

fn unsupported(what: &str) -> CatalogError {
    CatalogError::Unsupported(format!(
        "{what}. Quiver runs queries and, in schemas you may write to, CREATE [OR REPLACE] TABLE [AS SELECT], INSERT INTO … VALUES/SELECT, DROP TABLE, COMMENT ON TABLE/COLUMN and bulk ingest; everything else is read-only"
    ))
}

use super::lock;

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema};

    fn schema(fields: &[(&str, DataType)]) -> SchemaRef {
        Arc::new(Schema::new(
            fields
                .iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect::<Vec<_>>(),
        ))
    }

    #[test]
    fn an_append_names_the_column_and_both_types() {
        let table = schema(&[("id", DataType::Int64), ("name", DataType::Utf8)]);
        let ok = schema(&[("id", DataType::Int64), ("name", DataType::LargeUtf8)]);
        assert!(check_append("me.t", &table, &ok).is_ok());
        let text = |s: SchemaRef| check_append("me.t", &table, &s).unwrap_err().to_string();
        let wrong = text(schema(&[("id", DataType::Utf8), ("name", DataType::Utf8)]));
        assert!(
            wrong.contains("`id` is Int64 in the table but Utf8 in the data"),
            "{wrong}"
        );
        let missing = text(schema(&[("id", DataType::Int64)]));
        assert!(missing.contains("no column `name`"), "{missing}");
        let extra = text(schema(&[
            ("id", DataType::Int64),
            ("name", DataType::Utf8),
            ("x", DataType::Int8),
        ]));
        assert!(extra.contains("it has no column `x`"), "{extra}");
        let order = text(schema(&[("name", DataType::Utf8), ("id", DataType::Int64)]));
        assert!(order.contains("table's order"), "{order}");
    }
}
