//! The audit log, and a consistent backup of the whole state.

use axum::Json;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use quiver_catalog::CatalogError;
use quiver_catalog::state::audit;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AdminCaller;
use crate::error::ApiError;
use crate::{AppState, blocking};

/// One entry of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditRecord {
    /// Increasing id; page with `before`.
    id: i64,
    /// UTC time, ISO 8601.
    at: String,
    /// Who: an e-mail, or `quiver admin` for the command line.
    actor: String,
    /// What: `query`, `login`, `user.create`, `grant.revoke`, …
    action: String,
    /// On what: a user, a group, `schema.table`, …
    target: Option<String>,
    /// JSON details of the change.
    detail: Option<String>,
    /// `ok`, or what went wrong.
    outcome: String,
    /// The SQL of a query.
    statement: Option<String>,
    /// Tables a query read, comma-separated.
    tables: Option<String>,
    /// Rows a query returned.
    rows: Option<i64>,
    /// Bytes a query sent.
    bytes: Option<i64>,
    /// How long a query ran.
    duration_ms: Option<i64>,
}

impl From<audit::AuditRecord> for AuditRecord {
    fn from(r: audit::AuditRecord) -> Self {
        Self {
            id: r.id,
            at: r.at,
            actor: r.actor,
            action: r.action,
            target: r.target,
            detail: r.detail,
            outcome: r.outcome,
            statement: r.statement,
            tables: r.tables,
            rows: r.rows,
            bytes: r.bytes,
            duration_ms: r.duration_ms,
        }
    }
}

/// Which entries to read, newest first.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
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

impl From<AuditQuery> for audit::AuditQuery {
    fn from(q: AuditQuery) -> Self {
        Self {
            limit: q.limit,
            before: q.before,
            actor: q.actor,
            action: q.action,
        }
    }
}

/// The audit log, newest first; page with `before`.
#[utoipa::path(get, path = "/api/admin/audit", tag = "admin", params(AuditQuery),
    responses((status = 200, body = Vec<AuditRecord>), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn audit(
    State(app): State<AppState>,
    _: AdminCaller,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Vec<AuditRecord>>, ApiError> {
    let query = query.into();
    let entries = blocking(&app, move |s| s.audit().log(&query)).await?;
    Ok(Json(entries.into_iter().map(Into::into).collect()))
}

/// A consistent copy of the whole state (users, groups, grants, tokens, tables and their
/// versions, sync runs, audit) as a Quiver state file: what `quiver state backup` saves while
/// the server holds its embedded state. Written to the scratch directory, streamed, removed.
#[utoipa::path(post, path = "/api/admin/state/backup", tag = "admin",
    responses((status = 200, content_type = "application/octet-stream", description = "a Quiver state file (DuckDB)"),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn backup_state(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
) -> Result<axum::response::Response, ApiError> {
    let dir = app.orchestrator.scratch().to_path_buf();
    let path = dir.join(format!("backup-{:016x}.duckdb", rand::random::<u64>()));
    let actor = p.email().to_string();
    let file = {
        let path = path.clone();
        blocking(&app, move |s| {
            std::fs::create_dir_all(&dir).map_err(|e| {
                CatalogError::Internal(format!("cannot create {}: {e}", dir.display()))
            })?;
            let written = s.backup_to(&path);
            let file = written.and_then(|_| {
                std::fs::File::open(&path).map_err(|e| {
                    CatalogError::Internal(format!("cannot read {}: {e}", path.display()))
                })
            });
            // The open file stays readable once its name is gone (nothing is left behind).
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(path.with_extension("duckdb.wal"));
            let file = file?;
            s.audit().record_event(&actor, "state.backup", None, "ok")?;
            Ok(file)
        })
        .await?
    };
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(
        tokio::fs::File::from_std(file),
    ));
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        body,
    )
        .into_response())
}

/// `GET /api/admin/access-history` filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AccessHistoryQuery {
    /// Only reads of this table (`schema.table`).
    table: Option<String>,
    /// Only reads that showed or filtered on this column.
    column: Option<String>,
    /// Only this user's.
    user: Option<String>,
    /// At most this many statements (default 100, at most 1000).
    limit: Option<usize>,
}

/// Who read which columns: one row per statement and table, newest first — the columns in
/// its output, those used only to choose rows, the grants and policies that shaped what
/// the user saw, and the output columns they saw masked (also `system.access_history`).
#[utoipa::path(get, path = "/api/admin/access-history", tag = "admin", params(AccessHistoryQuery),
    responses((status = 200, body = Vec<Object>), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn access_history(
    State(app): State<AppState>,
    _: AdminCaller,
    Query(q): Query<AccessHistoryQuery>,
) -> Result<Json<Vec<audit::AccessRow>>, ApiError> {
    let filter = audit::AccessFilter {
        table: q.table,
        column: q.column,
        user: q.user.map(|u| u.trim().to_lowercase()),
        limit: q.limit,
    };
    Ok(Json(
        blocking(&app, move |s| s.audit().access_history(&filter)).await?,
    ))
}
