//! "View as": an admin runs a statement as another user, through exactly the planning,
//! policies and limits of that user's own queries, and sees the rows (or the error) that
//! user would get. Audited as the admin acting for the user.

use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use axum::Json;
use axum::extract::State;
use futures::StreamExt;
use quiver_catalog::CatalogError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AdminCaller;
use crate::error::ApiError;
use crate::{AppState, blocking};

/// Rows a preview returns unless asked for fewer; the most it returns.
const DEFAULT_ROWS: usize = 100;
const MAX_ROWS: usize = 10_000;
/// A preview stops reading once its rows hold this many bytes of JSON.
const MAX_BYTES: usize = 8 * 1024 * 1024;
/// How long a preview may run.
const TIMEOUT: Duration = Duration::from_secs(60);

/// `POST /api/admin/preview` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// The user to act as (their groups, attributes and policies apply).
    #[serde(rename = "as")]
    #[schema(example = "ana@example.com")]
    as_user: String,
    /// A read-only statement.
    #[schema(example = "SELECT * FROM tpch.customer LIMIT 10")]
    sql: String,
    /// At most this many rows (default 100, at most 10 000).
    #[serde(default)]
    max_rows: Option<usize>,
}

/// What the user would get: the rows, or the error their statement fails with.
#[derive(Debug, Serialize, ToSchema)]
pub struct Preview {
    /// The user acted as.
    #[serde(rename = "as")]
    as_user: String,
    /// Output columns: name and Arrow type.
    columns: Vec<PreviewColumn>,
    /// Rows as JSON objects.
    #[schema(value_type = Vec<Object>)]
    rows: Vec<serde_json::Value>,
    /// More rows followed (cut at `max_rows` or 8 MiB).
    truncated: bool,
    /// Per table read, whether policies held rows back or masked columns (as the user's
    /// Flight SQL `FlightInfo` says in its `app_metadata`).
    #[schema(value_type = Object)]
    policy: std::collections::BTreeMap<String, quiver_catalog::engine::PolicyEffect>,
    /// The error the user's statement fails with, in the words the user would read.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// One output column.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewColumn {
    name: String,
    #[serde(rename = "type")]
    data_type: String,
}

/// Run a statement as another user ("view as"): the rows, or the error, exactly as that
/// user would get them. Writes are refused; the audit log records the admin acting for the
/// user.
#[utoipa::path(post, path = "/api/admin/preview", tag = "admin", request_body = PreviewRequest,
    responses((status = 200, body = Preview), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn preview(
    State(app): State<AppState>,
    AdminCaller(admin): AdminCaller,
    Json(body): Json<PreviewRequest>,
) -> Result<Json<Preview>, ApiError> {
    let email = body.as_user.trim().to_lowercase();
    let principal = {
        let email = email.clone();
        blocking(&app, move |s| s.identity().principal(&email)).await?
    }
    .ok_or_else(|| CatalogError::NotFound(format!("no active user `{email}`")))?;
    let max_rows = body.max_rows.unwrap_or(DEFAULT_ROWS).clamp(1, MAX_ROWS);
    let started = Instant::now();
    let run = async {
        let planned = app.engine.plan(&principal, &body.sql, None, None).await?;
        if planned.write.is_some() {
            return Err(CatalogError::InvalidQuery(
                "a preview only reads: it runs queries, not statements that write".into(),
            ));
        }
        let mut stream = app.engine.execute(&planned, Vec::new()).await?;
        let schema = stream.schema();
        let mut rows = Vec::new();
        let (mut bytes, mut truncated) = (0, false);
        while let Some(batch) = stream.next().await {
            for row in to_json(&batch?)? {
                if rows.len() == max_rows || bytes > MAX_BYTES {
                    truncated = true;
                    break;
                }
                bytes += row.to_string().len();
                rows.push(row);
            }
            if truncated {
                break;
            }
        }
        let policy = app
            .engine
            .policy_effects(&principal, &planned.tables)
            .await?;
        Ok((planned.tables, schema, rows, truncated, policy))
    };
    let outcome = match tokio::time::timeout(TIMEOUT, run).await {
        Ok(result) => result,
        Err(_) => Err(CatalogError::InvalidQuery(format!(
            "the preview ran longer than {} s and was stopped",
            TIMEOUT.as_secs()
        ))),
    };
    let (tables, answer) = match outcome {
        Ok((tables, schema, rows, truncated, policy)) => (
            tables,
            Preview {
                as_user: email.clone(),
                columns: schema
                    .fields()
                    .iter()
                    .map(|f| PreviewColumn {
                        name: f.name().clone(),
                        data_type: f.data_type().to_string(),
                    })
                    .collect(),
                rows,
                truncated,
                policy,
                error: None,
            },
        ),
        Err(e) => (
            Vec::new(),
            Preview {
                as_user: email.clone(),
                columns: Vec::new(),
                rows: Vec::new(),
                truncated: false,
                policy: Default::default(),
                error: Some(user_message(e)),
            },
        ),
    };
    let record = quiver_catalog::state::audit::PreviewRecord {
        admin: admin.email().to_string(),
        user: email,
        statement: body.sql,
        tables,
        rows: answer.rows.len() as u64,
        duration_ms: started.elapsed().as_millis() as u64,
        outcome: answer
            .error
            .as_ref()
            .map_or("ok".into(), |e| format!("error: {e}")),
    };
    blocking(&app, move |s| s.audit().record_preview(&record)).await?;
    Ok(Json(answer))
}

/// Rows of `batch` as JSON objects.
fn to_json(batch: &RecordBatch) -> Result<Vec<serde_json::Value>, CatalogError> {
    let mut writer = arrow_json::ArrayWriter::new(Vec::new());
    writer
        .write(batch)
        .and_then(|()| writer.finish())
        .map_err(|e| CatalogError::Internal(format!("rows to JSON: {e}")))?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| CatalogError::Internal(format!("rows to JSON: {e}")))
}

/// The message a user reads for `error` on Flight SQL: DataFusion's root cause without its
/// backtrace, Quiver's own messages as they are, nothing of internal failures.
fn user_message(error: CatalogError) -> String {
    match error {
        CatalogError::Query(e) => e.find_root().strip_backtrace(),
        e @ (CatalogError::Storage(_)
        | CatalogError::State(_)
        | CatalogError::StateLocked(_)
        | CatalogError::StateUnavailable(..)
        | CatalogError::Internal(_)) => {
            tracing::error!(error = %e, "preview failed inside the server");
            "internal error; the server log has the details".into()
        }
        CatalogError::InvalidName(m)
        | CatalogError::InvalidQuery(m)
        | CatalogError::InvalidInput(m)
        | CatalogError::NotFound(m)
        | CatalogError::TableNotFound(m)
        | CatalogError::Conflict(m)
        | CatalogError::AlreadyExists(m)
        | CatalogError::Aborted(m)
        | CatalogError::PermissionDenied(m)
        | CatalogError::Unsupported(m) => m,
        e => e.to_string(),
    }
}
