//! The JSON API: the caller's own account and tokens, and the admin endpoints for users,
//! groups, members, grants and the audit log. Every change goes through the state store,
//! which validates and audits it.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use quiver_catalog::access::{Grant, Member, MembershipSource, NewGrant, User, UserUpdate};
use quiver_catalog::audit::{AuditQuery, AuditRecord};
use quiver_catalog::tokens::TokenInfo;
use serde::{Deserialize, Serialize};

use crate::auth::{AdminCaller, Caller};
use crate::error::ApiError;
use crate::{AppState, blocking};

/// `GET /api/me` answer.
#[derive(Debug, Serialize)]
pub struct Me {
    email: String,
    groups: Vec<String>,
    is_admin: bool,
}

/// `GET /api/me`.
pub async fn me(Caller(p): Caller) -> Json<Me> {
    Json(Me {
        email: p.email().to_string(),
        groups: p.groups().to_vec(),
        is_admin: p.is_admin(),
    })
}

/// `POST /api/me/tokens` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: String,
    expires_in_days: Option<u32>,
}

/// A token just created: the secret is in this answer and nowhere else.
#[derive(Debug, Serialize)]
pub struct CreatedToken {
    #[serde(flatten)]
    info: TokenInfo,
    token: String,
}

/// `GET /api/me/tokens`.
pub async fn my_tokens(
    State(app): State<AppState>,
    Caller(p): Caller,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    let email = p.email().to_string();
    Ok(Json(blocking(&app, move |s| s.tokens(&email)).await?))
}

/// `POST /api/me/tokens`.
pub async fn create_token(
    State(app): State<AppState>,
    Caller(p): Caller,
    Json(body): Json<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let email = p.email().to_string();
    let (info, token) = blocking(&app, move |s| {
        s.create_token(&email, &email, &body.name, body.expires_in_days)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { info, token })))
}

/// `DELETE /api/me/tokens/{id}`.
pub async fn revoke_token(
    State(app): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let email = p.email().to_string();
    blocking(&app, move |s| s.revoke_token(&email, Some(&email), &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- users ------------------------------------------------------------------------------

/// `POST /api/admin/users` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    email: String,
    password: Option<String>,
    name: Option<String>,
}

/// `GET /api/admin/users`.
pub async fn users(
    State(app): State<AppState>,
    _: AdminCaller,
) -> Result<Json<Vec<User>>, ApiError> {
    Ok(Json(blocking(&app, |s| s.users()).await?))
}

/// `POST /api/admin/users`.
pub async fn create_user(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Json(body): Json<NewUser>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let actor = p.email().to_string();
    let user = blocking(&app, move |s| {
        s.create_user(
            &actor,
            &body.email,
            body.name.as_deref(),
            body.password.as_deref(),
        )
    })
    .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// `PATCH /api/admin/users/{email}` body: any of `name`, `password`, `active`.
pub async fn update_user(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Path(email): Path<String>,
    Json(body): Json<UserUpdate>,
) -> Result<Json<User>, ApiError> {
    let actor = p.email().to_string();
    Ok(Json(
        blocking(&app, move |s| s.update_user(&actor, &email, &body)).await?,
    ))
}

/// `DELETE /api/admin/users/{email}`.
pub async fn delete_user(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Path(email): Path<String>,
) -> Result<StatusCode, ApiError> {
    let actor = p.email().to_string();
    blocking(&app, move |s| s.delete_user(&actor, &email)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- groups -----------------------------------------------------------------------------

/// `POST /api/admin/groups` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    name: String,
}

/// A group as listed.
#[derive(Debug, Serialize)]
pub struct GroupInfo {
    name: String,
}

/// `GET /api/admin/groups`.
pub async fn groups(
    State(app): State<AppState>,
    _: AdminCaller,
) -> Result<Json<Vec<GroupInfo>>, ApiError> {
    let names = blocking(&app, |s| s.groups()).await?;
    Ok(Json(
        names.into_iter().map(|name| GroupInfo { name }).collect(),
    ))
}

/// `POST /api/admin/groups`.
pub async fn create_group(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Json(body): Json<NewGroup>,
) -> Result<(StatusCode, Json<GroupInfo>), ApiError> {
    let actor = p.email().to_string();
    let name = body.name.clone();
    blocking(&app, move |s| s.create_group(&actor, &body.name)).await?;
    Ok((StatusCode::CREATED, Json(GroupInfo { name })))
}

/// `DELETE /api/admin/groups/{name}`.
pub async fn delete_group(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let actor = p.email().to_string();
    blocking(&app, move |s| s.delete_group(&actor, &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/admin/groups/{name}/members` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    email: String,
}

/// `GET /api/admin/groups/{name}/members`.
pub async fn members(
    State(app): State<AppState>,
    _: AdminCaller,
    Path(name): Path<String>,
) -> Result<Json<Vec<Member>>, ApiError> {
    Ok(Json(blocking(&app, move |s| s.members(&name)).await?))
}

/// `POST /api/admin/groups/{name}/members`.
pub async fn add_member(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Path(name): Path<String>,
    Json(body): Json<NewMember>,
) -> Result<StatusCode, ApiError> {
    let actor = p.email().to_string();
    blocking(&app, move |s| {
        s.add_member(&actor, &name, &body.email, MembershipSource::Admin)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/admin/groups/{name}/members/{email}`.
pub async fn remove_member(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Path((name, email)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let actor = p.email().to_string();
    blocking(&app, move |s| s.remove_member(&actor, &name, &email)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- grants -----------------------------------------------------------------------------

/// `GET /api/admin/grants`.
pub async fn grants(
    State(app): State<AppState>,
    _: AdminCaller,
) -> Result<Json<Vec<Grant>>, ApiError> {
    Ok(Json(blocking(&app, |s| s.grants()).await?))
}

/// `POST /api/admin/grants`: validated against the table's columns before it is saved.
pub async fn create_grant(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Json(body): Json<NewGrant>,
) -> Result<(StatusCode, Json<Grant>), ApiError> {
    let grant = app.engine.create_grant(p.email(), &body).await?;
    Ok((StatusCode::CREATED, Json(grant)))
}

/// `DELETE /api/admin/grants/{id}`.
pub async fn revoke_grant(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let actor = p.email().to_string();
    blocking(&app, move |s| s.revoke_grant(&actor, id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- audit ------------------------------------------------------------------------------

/// `GET /api/admin/audit?limit=&before=&actor=&action=`, newest first.
pub async fn audit(
    State(app): State<AppState>,
    _: AdminCaller,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Vec<AuditRecord>>, ApiError> {
    Ok(Json(blocking(&app, move |s| s.audit_log(&query)).await?))
}
