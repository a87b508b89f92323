//! The audit log: every administrative change (written by `StateStore::change` in the same
//! transaction as the change), every sign-in attempt and every query. Secrets never reach
//! it: changes record what was done, not passwords or tokens.

use duckdb::params;
use serde::{Deserialize, Serialize};

use crate::CatalogError;
use crate::state::StateStore;

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// Increasing id; page with `before`.
    pub id: i64,
    /// UTC time, ISO 8601.
    pub at: String,
    /// Who: an e-mail, or `quiver admin` for the command line.
    pub actor: String,
    /// What: `query`, `login`, `user.create`, `grant.revoke`, …
    pub action: String,
    /// On what: a user, a group, `schema.table`, …
    pub target: Option<String>,
    /// JSON details of the change.
    pub detail: Option<String>,
    /// `ok`, or what went wrong.
    pub outcome: String,
    /// The SQL of a query.
    pub statement: Option<String>,
    /// Tables a query read, comma-separated.
    pub tables: Option<String>,
    /// Rows a query returned.
    pub rows: Option<i64>,
    /// Bytes a query sent.
    pub bytes: Option<i64>,
    /// How long a query ran.
    pub duration_ms: Option<i64>,
}

/// Which entries to read, newest first.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
    /// Only entries older than this id (paging).
    pub before: Option<i64>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
}

/// A finished query, as the Flight SQL service reports it.
#[derive(Debug, Clone)]
pub struct QueryRecord {
    /// Who ran it.
    pub user: String,
    /// Its SQL.
    pub statement: String,
    /// Tables it read, `schema.table`.
    pub tables: Vec<String>,
    /// Rows returned.
    pub rows: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Wall time.
    pub duration_ms: u64,
    /// `ok`, `cancelled`, `error: …`.
    pub outcome: String,
}

impl StateStore {
    /// Records a finished query.
    pub fn record_query(&self, q: &QueryRecord) -> Result<(), CatalogError> {
        self.conn().execute(
            "INSERT INTO audit (actor, action, outcome, statement, tables, row_count, byte_count, duration_ms)
             VALUES (?, 'query', ?, ?, ?, ?, ?, ?)",
            params![
                q.user,
                q.outcome,
                q.statement,
                q.tables.join(","),
                q.rows as i64,
                q.bytes as i64,
                q.duration_ms as i64
            ],
        )?;
        Ok(())
    }

    /// Records an event that is not a change, such as a sign-in attempt.
    pub fn record_event(
        &self,
        actor: &str,
        action: &str,
        target: Option<&str>,
        outcome: &str,
    ) -> Result<(), CatalogError> {
        self.conn().execute(
            "INSERT INTO audit (actor, action, target, outcome) VALUES (?, ?, ?, ?)",
            params![actor, action, target, outcome],
        )?;
        Ok(())
    }

    /// Reads the audit log, newest first.
    pub fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, CatalogError> {
        let limit = query.limit.unwrap_or(100).clamp(1, 1000) as i64;
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, strftime(occurred_at, '%Y-%m-%dT%H:%M:%S.%gZ'), actor, action, target, detail,
                    outcome, statement, tables, row_count, byte_count, duration_ms
             FROM audit
             WHERE (? IS NULL OR id < ?) AND (? IS NULL OR actor = ?) AND (? IS NULL OR action = ?)
             ORDER BY id DESC LIMIT ?",
        )?;
        let records = stmt
            .query_map(
                params![
                    query.before,
                    query.before,
                    query.actor,
                    query.actor,
                    query.action,
                    query.action,
                    limit
                ],
                |r| {
                    Ok(AuditRecord {
                        id: r.get(0)?,
                        at: r.get(1)?,
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        target: r.get(4)?,
                        detail: r.get(5)?,
                        outcome: r.get(6)?,
                        statement: r.get(7)?,
                        tables: r.get(8)?,
                        rows: r.get(9)?,
                        bytes: r.get(10)?,
                        duration_ms: r.get(11)?,
                    })
                },
            )?
            .collect::<Result<_, _>>()?;
        Ok(records)
    }
}

impl StateStore {
    /// The audit log as Arrow batches, oldest first (for the admins' `system.audit` table);
    /// `limit` caps the rows (0 gives just the schema).
    pub fn audit_arrow(
        &self,
        limit: Option<usize>,
    ) -> Result<(arrow::datatypes::SchemaRef, Vec<arrow::array::RecordBatch>), CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, occurred_at, actor, action, target, detail, outcome, statement,
                    tables AS tables_read, row_count, byte_count, duration_ms
             FROM audit ORDER BY id LIMIT ?",
        )?;
        let limit = limit.map(|l| l as i64).unwrap_or(i64::MAX);
        let arrow = stmt.query_arrow(params![limit])?;
        let schema = arrow.get_schema();
        Ok((schema, arrow.collect()))
    }
}
