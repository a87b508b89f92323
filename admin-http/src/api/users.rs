//! Users, groups and group members.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use quiver_catalog::state::identity::{self, MembershipSource};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AdminCaller;
use crate::error::ApiError;
use crate::{AppState, blocking};

/// A user account.
#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    /// E-mail, the user's name everywhere.
    email: String,
    /// Display name.
    name: Option<String>,
    /// Inactive users cannot sign in and their tokens stop working.
    active: bool,
    /// Whether the user can sign in with a password (others use OIDC or tokens).
    has_password: bool,
    /// Groups, sorted, `Everyone` included.
    groups: Vec<String>,
}

impl From<identity::User> for User {
    fn from(u: identity::User) -> Self {
        Self {
            email: u.email,
            name: u.name,
            active: u.active,
            has_password: u.has_password,
            groups: u.groups,
        }
    }
}

/// `PATCH /api/admin/users/{email}` body: the fields to change; the others stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    /// New display name.
    name: Option<String>,
    /// New password.
    password: Option<String>,
    /// Activate or deactivate.
    active: Option<bool>,
}

impl From<UserUpdate> for identity::UserUpdate {
    fn from(u: UserUpdate) -> Self {
        Self {
            name: u.name,
            password: u.password,
            active: u.active,
        }
    }
}

/// A group member.
#[derive(Debug, Serialize, ToSchema)]
pub struct Member {
    /// The member's e-mail.
    email: String,
    /// Where the membership came from: `admin`, `idp`, `bootstrap`, or `everyone` for the
    /// implicit `Everyone` membership.
    source: String,
}

impl From<identity::Member> for Member {
    fn from(m: identity::Member) -> Self {
        Self {
            email: m.email,
            source: m.source,
        }
    }
}

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
    let users = blocking(&app, |s| s.identity().users()).await?;
    Ok(Json(users.into_iter().map(Into::into).collect()))
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
    Ok((StatusCode::CREATED, Json(user.into())))
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
    let update = body.into();
    let user = blocking(&app, move |s| {
        s.identity().update_user(&actor, &email, &update)
    })
    .await?;
    Ok(Json(user.into()))
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

/// A user's attributes, read in conditions as `user_attribute('name')`.
#[utoipa::path(get, path = "/api/admin/users/{email}/attributes", tag = "admin", params(("email" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn attributes(
    State(app): State<AppState>,
    _: AdminCaller,
    Path(email): Path<String>,
) -> Result<Json<identity::Attributes>, ApiError> {
    let attributes = blocking(&app, move |s| {
        s.identity().user(&email)?;
        s.identity().attributes(&email)
    })
    .await?;
    Ok(Json(attributes))
}

/// Replace a user's attributes: name → a string (or number, kept as text) or a list of
/// them, e.g. `{"region": "EU", "teams": ["a", "b"]}`. `{}` removes them all.
#[utoipa::path(put, path = "/api/admin/users/{email}/attributes", tag = "admin", params(("email" = String, Path)),
    request_body(content = Object, example = json!({"region": "EU", "teams": ["a", "b"]})),
    responses((status = 200, body = Object), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn set_attributes(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Path(email): Path<String>,
    Json(body): Json<serde_json::Map<String, serde_json::Value>>,
) -> Result<Json<identity::Attributes>, ApiError> {
    let attributes = body
        .iter()
        .map(|(name, value)| {
            Ok((
                name.clone(),
                identity::AttributeValue::from_json(name, value)?,
            ))
        })
        .collect::<Result<identity::Attributes, quiver_catalog::CatalogError>>()?;
    let actor = p.email().to_string();
    let stored = blocking(&app, move |s| {
        s.identity().set_attributes(&actor, &email, &attributes)
    })
    .await?;
    Ok(Json(stored))
}

/// What a user may read of each table, and why (as `GET /api/me/access` shows them).
#[utoipa::path(get, path = "/api/admin/users/{email}/access", tag = "admin", params(("email" = String, Path)),
    responses((status = 200, body = Vec<Object>), (status = 404, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn access(
    State(app): State<AppState>,
    _: AdminCaller,
    Path(email): Path<String>,
) -> Result<Json<Vec<quiver_catalog::engine::TableAccess>>, ApiError> {
    let principal = {
        let email = email.clone();
        blocking(&app, move |s| {
            s.identity().principal(&email.trim().to_lowercase())
        })
        .await?
    }
    .ok_or_else(|| quiver_catalog::CatalogError::NotFound(format!("no active user `{email}`")))?;
    Ok(Json(app.engine.effective_access(&principal).await?))
}

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
    let members = blocking(&app, move |s| s.identity().members(&name)).await?;
    Ok(Json(members.into_iter().map(Into::into).collect()))
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
