//! Grants: which groups may read which tables, rows and columns, and write which schemas.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use quiver_catalog::state::access;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AdminCaller;
use crate::error::ApiError;
use crate::{AppState, blocking};

/// A grant: members of `group` may read `table`, only the rows `row_filter` keeps, with
/// `column_masks` applied (a column mapped to `null` is hidden).
#[derive(Debug, Serialize, ToSchema)]
pub struct Grant {
    /// Grant id, for revoking.
    id: i64,
    /// The group it is granted to.
    group: String,
    /// `schema.table` or `schema.*`.
    #[schema(example = "tpch.customer")]
    table: String,
    /// SQL predicate over the table's columns; may use `current_user()`.
    row_filter: Option<String>,
    /// Column → SQL expression replacing its value, or `null` to hide the column.
    column_masks: BTreeMap<String, Option<String>>,
    /// `read`, or `write` (read, and create, replace, append to and drop tables).
    #[schema(example = "read")]
    privilege: String,
}

impl From<access::Grant> for Grant {
    fn from(g: access::Grant) -> Self {
        Self {
            id: g.id,
            group: g.group,
            table: g.table.to_string(),
            row_filter: g.row_filter,
            column_masks: g.column_masks,
            privilege: g.privilege.to_string(),
        }
    }
}

/// `POST /api/admin/grants` body; validated against the table before it is stored.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGrant {
    /// The group to grant to.
    group: String,
    /// `schema.table` or `schema.*`.
    table: String,
    /// SQL predicate over the table's columns.
    #[serde(default)]
    row_filter: Option<String>,
    /// Column → SQL expression, or `null` to hide the column.
    #[serde(default)]
    column_masks: BTreeMap<String, Option<String>>,
    /// `read` (the default), or `write`: only on a whole schema (`sandbox.*`) that no sync
    /// keeps tables in.
    #[serde(default)]
    #[schema(example = "read")]
    privilege: Option<String>,
}

impl TryFrom<NewGrant> for access::NewGrant {
    type Error = quiver_catalog::CatalogError;

    fn try_from(g: NewGrant) -> Result<Self, Self::Error> {
        Ok(Self {
            group: g.group,
            table: g.table,
            row_filter: g.row_filter,
            column_masks: g.column_masks,
            privilege: g
                .privilege
                .as_deref()
                .map(str::parse)
                .transpose()?
                .unwrap_or_default(),
        })
    }
}

/// Every grant.
#[utoipa::path(get, path = "/api/admin/grants", tag = "admin",
    responses((status = 200, body = Vec<Grant>), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn grants(
    State(app): State<AppState>,
    _: AdminCaller,
) -> Result<Json<Vec<Grant>>, ApiError> {
    let grants = blocking(&app, |s| s.access().grants()).await?;
    Ok(Json(grants.into_iter().map(Into::into).collect()))
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
    let grant = app
        .engine
        .create_grant(p.email(), &body.try_into()?)
        .await?;
    Ok((StatusCode::CREATED, Json(grant.into())))
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
