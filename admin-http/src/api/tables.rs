//! Tables for admins: definitions, versions, syncs and their history.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use quiver_catalog::state::tables::{self as registry, DefinedIn};
use quiver_catalog::{CatalogError, StateStore, TableName};
use quiver_config::{SyncMode, TableDef};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AdminCaller;
use crate::error::ApiError;
use crate::{AppState, blocking};

/// One sync run (also what `quiver sync` reads back from a running server).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SyncRun {
    /// Run id.
    pub id: i64,
    /// `schema.table`.
    pub table: String,
    /// `schedule`, `manual` or `retry`.
    pub trigger: String,
    /// Who asked (manual runs).
    pub actor: Option<String>,
    /// When it started (UTC, ISO 8601).
    pub started_at: String,
    /// When it ended, if it has.
    pub ended_at: Option<String>,
    /// `running`, `succeeded`, `failed` or `interrupted` (the server stopped during it).
    pub status: String,
    /// Rows in the version it published (so far, while running).
    pub rows: Option<i64>,
    /// Parquet bytes it wrote (so far, while running).
    pub bytes: Option<i64>,
    /// The version it published.
    pub version: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
}

impl From<registry::SyncRun> for SyncRun {
    fn from(r: registry::SyncRun) -> Self {
        Self {
            id: r.id,
            table: r.table,
            trigger: r.trigger,
            actor: r.actor,
            started_at: r.started_at,
            ended_at: r.ended_at,
            status: r.status,
            rows: r.rows,
            bytes: r.bytes,
            version: r.version,
            error: r.error,
        }
    }
}

/// A table, for admins: its definition (when it is synced from a source), its current
/// version (once published) and its sync status.
#[derive(Debug, Serialize, ToSchema)]
pub struct TableInfo {
    /// `schema.table`.
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    /// `config` (the configuration file), `api`, or absent for a table published without a
    /// definition (the demo data).
    #[schema(value_type = Option<String>)]
    pub(crate) origin: Option<DefinedIn>,
    /// What to sync and when; secrets appear as the `${ENV}` references they are stored as.
    #[schema(value_type = Option<Object>)]
    pub(crate) definition: Option<TableDef>,
    /// Current version; absent until the first sync succeeds.
    pub(crate) version: Option<i64>,
    /// Rows in the current version; absent for a remote table (its rows stay at the source).
    pub(crate) rows: Option<i64>,
    /// Parquet bytes in the current version.
    pub(crate) bytes: Option<i64>,
    /// When the current version was published (UTC).
    pub(crate) published_at: Option<String>,
    /// Object-store folder of the current version.
    pub(crate) location: Option<String>,
    /// The latest sync run (a running one shows its progress so far).
    pub(crate) last_sync: Option<SyncRun>,
    /// Per-column statistics of the current version.
    #[schema(value_type = Option<Object>)]
    profile: Option<serde_json::Value>,
}

/// Every table: definitions and published versions, by name.
pub(crate) fn table_infos(
    app: &AppState,
    state: &StateStore,
    only: Option<&TableName>,
    with_profile: bool,
) -> Result<Vec<TableInfo>, CatalogError> {
    // Runs first: a run read as succeeded has its version committed (same transaction), so
    // the tables read next include it.
    let runs = state.tables().sync_runs(only, None, 1000)?;
    let published = state.tables().list()?;
    let definitions = state.tables().definitions()?;
    let mut names: Vec<TableName> = published
        .iter()
        .map(|t| t.name.clone())
        .chain(definitions.iter().map(|d| d.name.clone()))
        .filter(|n| only.is_none_or(|o| o == n))
        .collect();
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        let entry = published.iter().find(|t| t.name == name);
        let definition = definitions.iter().find(|d| d.name == name);
        let copied = definition.is_none_or(|d| d.def.mode != SyncMode::Remote);
        let profile = match (entry, with_profile) {
            (Some(e), true) => state.tables().version_details(&name, e.version)?.1,
            _ => None,
        };
        out.push(TableInfo {
            description: entry
                .and_then(|e| e.description.clone())
                .or_else(|| definition.and_then(|d| d.def.description.clone())),
            origin: definition.map(|d| d.origin),
            definition: definition.map(|d| d.def.clone()),
            version: entry.map(|e| e.version),
            rows: entry.filter(|_| copied).map(|e| e.rows),
            bytes: entry.map(|e| e.bytes),
            published_at: entry.map(|e| e.committed_at.clone()),
            location: entry.map(|e| e.location.clone()),
            last_sync: match runs.iter().find(|r| r.table == name.to_string()) {
                Some(run) => Some(run.clone()),
                // More tables than recent runs: ask for this one's.
                None if runs.len() == 1000 => state.tables().sync_runs(Some(&name), None, 1)?.pop(),
                None => None,
            }
            .map(|run| with_progress(app, run)),
            profile,
            name: name.to_string(),
        });
    }
    Ok(out)
}

/// A run as the API shows it: a running run's rows and bytes so far.
fn with_progress(app: &AppState, run: registry::SyncRun) -> SyncRun {
    let mut run = SyncRun::from(run);
    if run.status == "running"
        && let Ok(name) = run.table.parse::<TableName>()
        && let Some(running) = app.orchestrator.running(&name)
        && running.run == run.id
    {
        run.rows = Some(running.progress.rows() as i64);
        run.bytes = Some(running.progress.bytes() as i64);
    }
    run
}

fn table_name(name: &str) -> Result<TableName, ApiError> {
    Ok(name.parse()?)
}

async fn table_info(app: &AppState, name: TableName) -> Result<TableInfo, ApiError> {
    let app2 = app.clone();
    blocking(app, move |s| {
        table_infos(&app2, s, Some(&name), true)?
            .pop()
            .ok_or_else(|| CatalogError::NotFound(format!("no table `{name}`")))
    })
    .await
}

/// Every table, defined or published.
#[utoipa::path(get, path = "/api/admin/tables", tag = "admin",
    responses((status = 200, body = Vec<TableInfo>), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn tables(
    State(app): State<AppState>,
    _: AdminCaller,
) -> Result<Json<Vec<TableInfo>>, ApiError> {
    let app2 = app.clone();
    Ok(Json(
        blocking(&app, move |s| table_infos(&app2, s, None, false)).await?,
    ))
}

/// Register a table synced from a source. The definition is checked completely (name,
/// connector options, schedule, mode) and every problem is reported; secrets must be
/// `${ENV}` references. The first sync runs on its schedule, or when asked.
#[utoipa::path(post, path = "/api/admin/tables", tag = "admin",
    request_body(content = Object, description = "A table definition: `name`, `connector`, `options`, `schedule`, `mode`, `watermark`, `primary_key`, `description`"),
    responses((status = 201, body = TableInfo), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn create_table(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Json(body): Json<serde_json::Value>,
) -> Result<(StatusCode, Json<TableInfo>), ApiError> {
    let def = parse_definition(body)?;
    let name = table_name(&def.name)?;
    let actor = p.email().to_string();
    let n = name.clone();
    blocking(&app, move |s| s.tables().define_table(&actor, &n, &def)).await?;
    Ok((StatusCode::CREATED, Json(table_info(&app, name).await?)))
}

/// A definition from JSON, checked completely; 422 lists every problem.
fn parse_definition(body: serde_json::Value) -> Result<TableDef, ApiError> {
    let def: TableDef = serde_path_to_error::deserialize(body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("`{}`: {}", e.path(), e.inner()),
        )
    })?;
    let problems = quiver_orchestrator::validate(&def);
    if problems.is_empty() {
        Ok(def)
    } else {
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        ))
    }
}

/// One table, with the profile of its current version.
#[utoipa::path(get, path = "/api/admin/tables/{table}", tag = "admin",
    params(("table" = String, Path, description = "`schema.table`")),
    responses((status = 200, body = TableInfo), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn table(
    State(app): State<AppState>,
    _: AdminCaller,
    Path(table): Path<String>,
) -> Result<Json<TableInfo>, ApiError> {
    let name = table_name(&table)?;
    Ok(Json(table_info(&app, name).await?))
}

/// `PATCH /api/admin/tables/{table}` body: the fields to change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TableUpdate {
    /// New description; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    description: Option<Option<String>>,
    /// New schedule; `null` syncs only when asked.
    #[serde(default, deserialize_with = "present")]
    schedule: Option<Option<String>>,
    /// New connector options (replacing the old ones).
    #[schema(value_type = Option<Object>)]
    options: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Tells a field set to `null` (`Some(None)`) from a missing one (`None`).
fn present<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Change a table's description, schedule or connector options.
#[utoipa::path(patch, path = "/api/admin/tables/{table}", tag = "admin",
    params(("table" = String, Path, description = "`schema.table`")), request_body = TableUpdate,
    responses((status = 200, body = TableInfo), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn update_table(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Path(table): Path<String>,
    Json(body): Json<TableUpdate>,
) -> Result<Json<TableInfo>, ApiError> {
    let name = table_name(&table)?;
    let actor = p.email().to_string();
    let n = name.clone();
    let definition = blocking(&app, move |s| s.tables().definition(&n)).await?;
    match definition {
        Some(d) => {
            let mut def = d.def;
            if let Some(description) = body.description {
                def.description = description;
            }
            if let Some(schedule) = body.schedule {
                def.schedule = schedule;
            }
            if let Some(options) = body.options {
                def.options = options;
            }
            let def =
                parse_definition(serde_json::to_value(&def).map_err(|e| ApiError::internal(&e))?)?;
            let n = name.clone();
            blocking(&app, move |s| s.tables().redefine_table(&actor, &n, &def)).await?;
        }
        None => {
            if body.schedule.is_some() || body.options.is_some() {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!(
                        "`{name}` has no definition (it was published directly); only its description can change"
                    ),
                ));
            }
            let description = body.description.flatten();
            let n = name.clone();
            blocking(&app, move |s| {
                s.tables()
                    .set_table_description(&actor, &n, description.as_deref())
            })
            .await?;
        }
    }
    Ok(Json(table_info(&app, name).await?))
}

/// Delete a table: it stops being queryable at once and is no longer synced. Its files are
/// removed after the retention period.
#[utoipa::path(delete, path = "/api/admin/tables/{table}", tag = "admin",
    params(("table" = String, Path, description = "`schema.table`")),
    responses((status = 204), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn delete_table(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Path(table): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = table_name(&table)?;
    let actor = p.email().to_string();
    if app.orchestrator.running(&name).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("a sync of `{name}` is running; delete the table when it has finished"),
        ));
    }
    blocking(&app, move |s| {
        if s.tables()
            .definition(&name)?
            .is_some_and(|d| d.origin == DefinedIn::Config)
        {
            return Err(CatalogError::Conflict(format!(
                "`{name}` is defined in the configuration file; remove it there (and restart) first"
            )));
        }
        s.tables().delete_table(&actor, &name)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/admin/tables/{table}/sync` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SyncStarted {
    /// The run, to follow in `GET /api/admin/syncs`.
    run: i64,
    /// `running`.
    status: String,
}

/// Options of a sync started through the API.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// Jira tables only: load every issue this JQL matches (a backfill) instead of the
    /// consistency check, e.g. `project = ABC`.
    jql: Option<String>,
}

/// Start a sync of a defined table now. It runs in the background: follow it in
/// `GET /api/admin/syncs?table=…`. For a Jira table (`jira.*`) this runs the consistency
/// check, or with `jql` a backfill, recorded as runs of `jira.issues`.
#[utoipa::path(post, path = "/api/admin/tables/{table}/sync", tag = "admin",
    params(("table" = String, Path, description = "`schema.table`")),
    request_body(content = Option<SyncRequest>, description = "Optional"),
    responses((status = 202, body = SyncStarted), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn sync_table(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Path(table): Path<String>,
    request: Option<Json<SyncRequest>>,
) -> Result<(StatusCode, Json<SyncStarted>), ApiError> {
    let name = table_name(&table)?;
    let jql = request.and_then(|Json(r)| r.jql);
    let run = crate::actions::start_sync(&app, &p, name, jql).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(SyncStarted {
            run,
            status: "running".into(),
        }),
    ))
}

/// `GET /api/admin/syncs` filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SyncQuery {
    /// Only runs of this `schema.table`.
    table: Option<String>,
    /// Only runs with a smaller id (paging: pass the last id seen).
    before: Option<i64>,
    /// At most this many (default 50, at most 1000).
    limit: Option<usize>,
}

/// Sync history, newest first: start, end, rows, bytes, version, status and error.
#[utoipa::path(get, path = "/api/admin/syncs", tag = "admin", params(SyncQuery),
    responses((status = 200, body = Vec<SyncRun>), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn syncs(
    State(app): State<AppState>,
    _: AdminCaller,
    Query(query): Query<SyncQuery>,
) -> Result<Json<Vec<SyncRun>>, ApiError> {
    let table = query.table.as_deref().map(table_name).transpose()?;
    let runs = blocking(&app, move |s| {
        s.tables()
            .sync_runs(table.as_ref(), query.before, query.limit.unwrap_or(50))
    })
    .await?;
    Ok(Json(
        runs.into_iter().map(|r| with_progress(&app, r)).collect(),
    ))
}
