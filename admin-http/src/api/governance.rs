//! Tags on schemas, tables and columns, and the masking policies bound to them.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use quiver_catalog::state::governance::Policy;
use quiver_catalog::{CatalogError, TableName};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AdminCaller;
use crate::error::ApiError;
use crate::{AppState, blocking};

/// A table's tags: its own, those it inherits from its schema, and its columns' own (a
/// column carries all three).
#[derive(Debug, Serialize, ToSchema)]
pub struct TableTags {
    /// The table's own tags.
    table: BTreeSet<String>,
    /// Its schema's tags, which every column of the table carries too.
    inherited: BTreeSet<String>,
    /// Columns with tags of their own.
    columns: BTreeMap<String, BTreeSet<String>>,
}

/// `PUT /api/admin/tables/{table}/tags` body: replaces the table's own and its columns' tags.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTableTags {
    /// The table's own tags.
    #[serde(default)]
    #[schema(example = json!(["finance"]))]
    table: BTreeSet<String>,
    /// Column → its own tags.
    #[serde(default)]
    #[schema(example = json!({"c_phone": ["pii.phone"]}))]
    columns: BTreeMap<String, BTreeSet<String>>,
}

/// A schema's tags, which every column of its tables carries.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SchemaTags {
    /// The schema's tags.
    #[schema(example = json!(["pii"]))]
    schema: BTreeSet<String>,
}

/// A table's tags.
#[utoipa::path(get, path = "/api/admin/tables/{table}/tags", tag = "admin",
    params(("table" = String, Path, description = "`schema.table`")),
    responses((status = 200, body = TableTags), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn table_tags(
    State(app): State<AppState>,
    _: AdminCaller,
    Path(table): Path<String>,
) -> Result<Json<TableTags>, ApiError> {
    let name: TableName = table.parse()?;
    let tags = blocking(&app, |s| s.governance().tags()).await?;
    Ok(Json(TableTags {
        table: tags.of_table(&name),
        inherited: tags.of_schema(name.schema()),
        columns: tags.own_columns(&name),
    }))
}

/// Replace a table's own and its columns' tags. The table must exist; the columns named
/// must be its columns once it has data.
#[utoipa::path(put, path = "/api/admin/tables/{table}/tags", tag = "admin",
    params(("table" = String, Path, description = "`schema.table`")), request_body = NewTableTags,
    responses((status = 200, body = TableTags), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn set_table_tags(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Path(table): Path<String>,
    Json(body): Json<NewTableTags>,
) -> Result<Json<TableTags>, ApiError> {
    let name: TableName = table.parse()?;
    let (published, defined) = {
        let name = name.clone();
        blocking(&app, move |s| {
            Ok((
                s.tables().get(&name).is_ok(),
                s.tables().definition(&name)?.is_some(),
            ))
        })
        .await?
    };
    if !published && !defined {
        return Err(CatalogError::NotFound(format!("no table `{name}`")).into());
    }
    if let Some(schema) = app.engine.table_schema(&p, &name).await?
        && let Some(unknown) = body
            .columns
            .keys()
            .find(|c| schema.field_with_name(c).is_err())
    {
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        return Err(CatalogError::InvalidInput(format!(
            "`{name}` has no column `{unknown}`; its columns are {}",
            columns.join(", ")
        ))
        .into());
    }
    let email = p.email().to_string();
    let stored = name.clone();
    blocking(&app, move |s| {
        s.governance()
            .set_table_tags(&email, &stored, &body.table, &body.columns)
    })
    .await?;
    table_tags(State(app), AdminCaller(p), Path(name.to_string())).await
}

/// A schema's tags.
#[utoipa::path(get, path = "/api/admin/schemas/{schema}/tags", tag = "admin",
    params(("schema" = String, Path)),
    responses((status = 200, body = SchemaTags), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn schema_tags(
    State(app): State<AppState>,
    _: AdminCaller,
    Path(schema): Path<String>,
) -> Result<Json<SchemaTags>, ApiError> {
    let tags = blocking(&app, |s| s.governance().tags()).await?;
    Ok(Json(SchemaTags {
        schema: tags.of_schema(&schema),
    }))
}

/// Replace a schema's tags (every column of its tables, present and future, carries them).
#[utoipa::path(put, path = "/api/admin/schemas/{schema}/tags", tag = "admin",
    params(("schema" = String, Path)), request_body = SchemaTags,
    responses((status = 200, body = SchemaTags), (status = 422, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn set_schema_tags(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Path(schema): Path<String>,
    Json(body): Json<SchemaTags>,
) -> Result<Json<SchemaTags>, ApiError> {
    let email = p.email().to_string();
    let stored = schema.clone();
    blocking(&app, move |s| {
        s.governance()
            .set_schema_tags(&email, &stored, &body.schema)
    })
    .await?;
    schema_tags(State(app), AdminCaller(p), Path(schema)).await
}

/// Every policy.
#[utoipa::path(get, path = "/api/admin/policies", tag = "admin",
    responses((status = 200, body = Vec<Object>), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn policies(
    State(app): State<AppState>,
    _: AdminCaller,
) -> Result<Json<Vec<Policy>>, ApiError> {
    Ok(Json(blocking(&app, |s| s.governance().policies()).await?))
}

/// Create a masking policy: every column carrying `tag` (or a tag below it, `pii` covers
/// `pii.email`) is shown through `mask` to everyone outside `except_groups` (admins see
/// values as they are).
#[utoipa::path(post, path = "/api/admin/policies", tag = "admin", request_body = Object,
    responses((status = 201, body = Object), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn create_policy(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Json(body): Json<Policy>,
) -> Result<(StatusCode, Json<Policy>), ApiError> {
    let policy = app.engine.create_policy(p.email(), &body).await?;
    Ok((StatusCode::CREATED, Json(policy)))
}

/// Delete a policy.
#[utoipa::path(delete, path = "/api/admin/policies/{name}", tag = "admin", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn delete_policy(
    State(app): State<AppState>,
    AdminCaller(p): AdminCaller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let email = p.email().to_string();
    blocking(&app, move |s| s.governance().delete_policy(&email, &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}
