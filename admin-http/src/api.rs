//! The JSON API: the caller's own account and tokens, and the admin endpoints for users,
//! groups, members, grants and the audit log. Every change goes through the state store,
//! which validates and audits it.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use quiver_catalog::state::access::{Grant, NewGrant};
use quiver_catalog::state::audit::{AuditQuery, AuditRecord};
use quiver_catalog::state::identity::ClientInfo;
use quiver_catalog::state::identity::TokenInfo;
use quiver_catalog::state::identity::{Member, MembershipSource, User, UserUpdate};
use quiver_catalog::state::tables::{Origin, SyncRun};
use quiver_catalog::{CatalogError, StateStore, TableName};
use quiver_config::TableDef;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{AdminCaller, Caller};
use crate::error::ApiError;
use crate::{AppState, blocking};

/// `GET /api/me` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    email: String,
    groups: Vec<String>,
    is_admin: bool,
}

/// The signed-in user.
#[utoipa::path(get, path = "/api/me", tag = "me",
    responses((status = 200, body = Me), (status = 401, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn me(Caller { principal: p, .. }: Caller) -> Json<Me> {
    Json(Me {
        email: p.email().to_string(),
        groups: p.groups().to_vec(),
        is_admin: p.is_admin(),
    })
}

/// A table in the caller's catalog.
#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogTable {
    /// `schema.table`.
    name: String,
    description: Option<String>,
    /// Current version.
    version: i64,
    /// When that version was published (UTC).
    published_at: String,
    /// Rows in the version; absent when a row filter hides some of them from the caller.
    rows: Option<i64>,
    /// Parquet bytes in the version; absent like `rows`.
    bytes: Option<i64>,
    /// The columns the caller sees (hidden ones are absent; masked ones keep their type).
    columns: Vec<CatalogColumn>,
    /// Statistics of the version's columns (nulls, distinct estimate, min, max, top values)
    /// from the last sync: only for columns the caller sees unmasked, and absent when a row
    /// filter applies (they would describe hidden rows).
    #[schema(value_type = Option<Object>)]
    pub(crate) profile: Option<serde_json::Value>,
}

/// A column: name and Arrow type.
#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogColumn {
    name: String,
    #[serde(rename = "type")]
    data_type: String,
    nullable: bool,
}

/// The tables the caller may read, with their visible columns and freshness.
#[utoipa::path(get, path = "/api/catalog", tag = "me",
    responses((status = 200, body = Vec<CatalogTable>), (status = 401, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn catalog(
    State(app): State<AppState>,
    Caller { principal: p, .. }: Caller,
) -> Result<Json<Vec<CatalogTable>>, ApiError> {
    let mut out = Vec::new();
    for visible in app.engine.visible_tables(&p).await? {
        let t = visible.entry;
        let columns = app
            .engine
            .table_schema(&p, &t.name)
            .await?
            .map(|schema| {
                schema
                    .fields()
                    .iter()
                    .map(|f| CatalogColumn {
                        name: f.name().clone(),
                        data_type: f.data_type().to_string(),
                        nullable: f.is_nullable(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let profile = if visible.row_filtered {
            None
        } else {
            let (name, version) = (t.name.clone(), t.version);
            let stored = blocking(&app, move |s| s.tables().version_details(&name, version))
                .await?
                .1;
            stored.map(|mut profile| {
                if let Some(columns) = profile["columns"].as_array_mut() {
                    columns.retain(|c| {
                        c["name"]
                            .as_str()
                            .is_some_and(|n| visible.clear_columns.iter().any(|v| v == n))
                    });
                }
                profile
            })
        };
        out.push(CatalogTable {
            profile,
            name: t.name.to_string(),
            description: t.description,
            version: t.version,
            published_at: t.committed_at,
            rows: (!visible.row_filtered).then_some(t.rows),
            bytes: (!visible.row_filtered).then_some(t.bytes),
            columns,
        });
    }
    Ok(Json(out))
}

/// `POST /api/me/tokens` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: String,
    expires_in_days: Option<u32>,
}

/// A token just created: the secret is in this answer and nowhere else.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    info: TokenInfo,
    token: String,
}

/// Your personal access tokens (never their secrets).
#[utoipa::path(get, path = "/api/me/tokens", tag = "me",
    responses((status = 200, body = Vec<TokenInfo>), (status = 401, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn my_tokens(
    State(app): State<AppState>,
    Caller { principal: p, .. }: Caller,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    let email = p.email().to_string();
    Ok(Json(
        blocking(&app, move |s| s.identity().tokens(&email)).await?,
    ))
}

/// Create a personal access token; the answer is the only time it is shown.
#[utoipa::path(post, path = "/api/me/tokens", tag = "me", request_body = NewToken,
    responses((status = 201, body = CreatedToken), (status = 422, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn create_token(
    State(app): State<AppState>,
    Caller {
        principal: p,
        origin,
        ..
    }: Caller,
    Json(body): Json<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let email = p.email().to_string();
    let (info, token) = blocking(&app, move |s| {
        s.identity().create_token(
            &email,
            &email,
            &body.name,
            body.expires_in_days,
            origin.as_ref(),
        )
    })
    .await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { info, token })))
}

/// Revoke one of your tokens.
#[utoipa::path(delete, path = "/api/me/tokens/{id}", tag = "me", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn revoke_token(
    State(app): State<AppState>,
    Caller { principal: p, .. }: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let email = p.email().to_string();
    blocking(&app, move |s| {
        s.identity().revoke_token(&email, Some(&email), &id)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- users ------------------------------------------------------------------------------

/// `POST /api/admin/users` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    email: String,
    password: Option<String>,
    name: Option<String>,
}

/// Every user.
#[utoipa::path(get, path = "/api/admin/users", tag = "admin",
    responses((status = 200, body = Vec<User>), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn users(
    State(app): State<AppState>,
    _: AdminCaller,
) -> Result<Json<Vec<User>>, ApiError> {
    Ok(Json(blocking(&app, |s| s.identity().users()).await?))
}

/// Create a user (without a password, the user signs in through OIDC or tokens).
#[utoipa::path(post, path = "/api/admin/users", tag = "admin", request_body = NewUser,
    responses((status = 201, body = User), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn create_user(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Json(body): Json<NewUser>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let actor = p.email().to_string();
    let user = blocking(&app, move |s| {
        s.identity().create_user(
            &actor,
            &body.email,
            body.name.as_deref(),
            body.password.as_deref(),
        )
    })
    .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Change a user's name, password or active flag.
#[utoipa::path(patch, path = "/api/admin/users/{email}", tag = "admin", params(("email" = String, Path)), request_body = UserUpdate,
    responses((status = 200, body = User), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn update_user(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Path(email): Path<String>,
    Json(body): Json<UserUpdate>,
) -> Result<Json<User>, ApiError> {
    let actor = p.email().to_string();
    Ok(Json(
        blocking(&app, move |s| {
            s.identity().update_user(&actor, &email, &body)
        })
        .await?,
    ))
}

/// Delete a user with memberships and tokens.
#[utoipa::path(delete, path = "/api/admin/users/{email}", tag = "admin", params(("email" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn delete_user(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Path(email): Path<String>,
) -> Result<StatusCode, ApiError> {
    let actor = p.email().to_string();
    blocking(&app, move |s| s.identity().delete_user(&actor, &email)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- groups -----------------------------------------------------------------------------

/// `POST /api/admin/groups` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    name: String,
}

/// A group as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupInfo {
    name: String,
}

/// Every group.
#[utoipa::path(get, path = "/api/admin/groups", tag = "admin",
    responses((status = 200, body = Vec<GroupInfo>), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn groups(
    State(app): State<AppState>,
    _: AdminCaller,
) -> Result<Json<Vec<GroupInfo>>, ApiError> {
    let names = blocking(&app, |s| s.identity().groups()).await?;
    Ok(Json(
        names.into_iter().map(|name| GroupInfo { name }).collect(),
    ))
}

/// Create a group.
#[utoipa::path(post, path = "/api/admin/groups", tag = "admin", request_body = NewGroup,
    responses((status = 201, body = GroupInfo), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn create_group(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Json(body): Json<NewGroup>,
) -> Result<(StatusCode, Json<GroupInfo>), ApiError> {
    let actor = p.email().to_string();
    let name = body.name.clone();
    blocking(&app, move |s| s.identity().create_group(&actor, &body.name)).await?;
    Ok((StatusCode::CREATED, Json(GroupInfo { name })))
}

/// Delete a group with its memberships and grants.
#[utoipa::path(delete, path = "/api/admin/groups/{name}", tag = "admin", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn delete_group(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let actor = p.email().to_string();
    blocking(&app, move |s| s.identity().delete_group(&actor, &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/admin/groups/{name}/members` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    email: String,
}

/// A group's members.
#[utoipa::path(get, path = "/api/admin/groups/{name}/members", tag = "admin", params(("name" = String, Path)),
    responses((status = 200, body = Vec<Member>), (status = 404, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn members(
    State(app): State<AppState>,
    _: AdminCaller,
    Path(name): Path<String>,
) -> Result<Json<Vec<Member>>, ApiError> {
    Ok(Json(
        blocking(&app, move |s| s.identity().members(&name)).await?,
    ))
}

/// Add a user to a group.
#[utoipa::path(post, path = "/api/admin/groups/{name}/members", tag = "admin", params(("name" = String, Path)), request_body = NewMember,
    responses((status = 204), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn add_member(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Path(name): Path<String>,
    Json(body): Json<NewMember>,
) -> Result<StatusCode, ApiError> {
    let actor = p.email().to_string();
    blocking(&app, move |s| {
        s.identity()
            .add_member(&actor, &name, &body.email, MembershipSource::Admin)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a user from a group.
#[utoipa::path(delete, path = "/api/admin/groups/{name}/members/{email}", tag = "admin", params(("name" = String, Path), ("email" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn remove_member(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Path((name, email)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let actor = p.email().to_string();
    blocking(&app, move |s| {
        s.identity().remove_member(&actor, &name, &email)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- grants -----------------------------------------------------------------------------

/// Every grant.
#[utoipa::path(get, path = "/api/admin/grants", tag = "admin",
    responses((status = 200, body = Vec<Grant>), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn grants(
    State(app): State<AppState>,
    _: AdminCaller,
) -> Result<Json<Vec<Grant>>, ApiError> {
    Ok(Json(blocking(&app, |s| s.access().grants()).await?))
}

/// Grant a table or schema to a group, with an optional row filter and column masks,
/// validated against the table's columns before it is saved.
#[utoipa::path(post, path = "/api/admin/grants", tag = "admin", request_body = NewGrant,
    responses((status = 201, body = Grant), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn create_grant(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Json(body): Json<NewGrant>,
) -> Result<(StatusCode, Json<Grant>), ApiError> {
    let grant = app.engine.create_grant(p.email(), &body).await?;
    Ok((StatusCode::CREATED, Json(grant)))
}

/// Revoke a grant.
#[utoipa::path(delete, path = "/api/admin/grants/{id}", tag = "admin", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn revoke_grant(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let actor = p.email().to_string();
    blocking(&app, move |s| s.access().revoke_grant(&actor, id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- audit ------------------------------------------------------------------------------

/// The audit log, newest first; page with `before`.
#[utoipa::path(get, path = "/api/admin/audit", tag = "admin", params(AuditQuery),
    responses((status = 200, body = Vec<AuditRecord>), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn audit(
    State(app): State<AppState>,
    _: AdminCaller,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Vec<AuditRecord>>, ApiError> {
    Ok(Json(blocking(&app, move |s| s.audit().log(&query)).await?))
}

// ----- state backup -----------------------------------------------------------------------

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

// ----- service accounts -------------------------------------------------------------------

/// `POST /api/admin/service-accounts` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewServiceAccount {
    /// The account the service acts as; created (without a password) when missing.
    email: String,
    /// What the credentials are for.
    name: String,
}

/// Client credentials just created: the secret is in this answer and nowhere else.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedClient {
    #[serde(flatten)]
    info: ClientInfo,
    client_secret: String,
    /// Where to exchange them for a bearer token (`grant_type=client_credentials`).
    token_endpoint: &'static str,
}

/// Every service account's client credentials (never their secrets).
#[utoipa::path(get, path = "/api/admin/service-accounts", tag = "admin",
    responses((status = 200, body = Vec<ClientInfo>), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn service_accounts(
    State(app): State<AppState>,
    _: AdminCaller,
) -> Result<Json<Vec<ClientInfo>>, ApiError> {
    Ok(Json(blocking(&app, |s| s.identity().clients()).await?))
}

/// Create OAuth client credentials for a service account; grant it access through its
/// groups like any user.
#[utoipa::path(post, path = "/api/admin/service-accounts", tag = "admin", request_body = NewServiceAccount,
    responses((status = 201, body = CreatedClient), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn create_service_account(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Json(body): Json<NewServiceAccount>,
) -> Result<(StatusCode, Json<CreatedClient>), ApiError> {
    let actor = p.email().to_string();
    let (info, client_secret) = blocking(&app, move |s| {
        s.identity().create_client(&actor, &body.email, &body.name)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedClient {
            info,
            client_secret,
            token_endpoint: "/oauth/token",
        }),
    ))
}

/// Revoke a service account's client credentials.
#[utoipa::path(delete, path = "/api/admin/service-accounts/{client_id}", tag = "admin",
    params(("client_id" = String, Path)),
    responses((status = 204), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn revoke_service_account(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Path(client_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let actor = p.email().to_string();
    blocking(&app, move |s| {
        s.identity().revoke_client(&actor, &client_id)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- tables -----------------------------------------------------------------------------

/// A table, for admins: its definition (when it is synced from a source), its current
/// version (once published) and its sync status.
#[derive(Debug, Serialize, ToSchema)]
pub struct TableInfo {
    /// `schema.table`.
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    /// `config` (the configuration file), `api`, or absent for a table published without a
    /// definition (the demo data).
    pub(crate) origin: Option<Origin>,
    /// What to sync and when; secrets appear as the `${ENV}` references they are stored as.
    #[schema(value_type = Option<Object>)]
    pub(crate) definition: Option<TableDef>,
    /// Current version; absent until the first sync succeeds.
    pub(crate) version: Option<i64>,
    /// Rows in the current version.
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
            rows: entry.map(|e| e.rows),
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

/// A running run's rows and bytes so far.
fn with_progress(app: &AppState, mut run: SyncRun) -> SyncRun {
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
            .is_some_and(|d| d.origin == Origin::Config)
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
