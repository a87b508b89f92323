//! The caller's own account: who they are, the tables they may read, their personal access
//! tokens.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use quiver_catalog::state::identity;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
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

/// What the caller may read of each table, and which grant, policy or tag brought each row
/// condition and mask.
#[utoipa::path(get, path = "/api/me/access", tag = "me",
    responses((status = 200, body = Vec<Object>), (status = 401, body = crate::error::ErrorBody)),
    security(("bearer" = []), ("session" = [])))]
pub async fn my_access(
    State(app): State<AppState>,
    Caller { principal: p, .. }: Caller,
) -> Result<Json<Vec<quiver_catalog::engine::TableAccess>>, ApiError> {
    Ok(Json(app.engine.effective_access(&p).await?))
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
    /// Read from its source by each query (`mode: remote`); its version is its schema.
    remote: bool,
    /// Rows in the version; absent when a row filter hides some of them from the caller,
    /// and for remote tables.
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
    /// What the column holds: from the table's definition, or put on a written table
    /// with `COMMENT ON COLUMN`.
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    /// The tags the column carries (its own, its table's and its schema's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
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
    let (remarks, tags) = blocking(&app, |s| {
        Ok((s.tables().column_remarks()?, s.governance().tags()?))
    })
    .await?;
    for visible in app.engine.visible_tables(&p).await? {
        let t = visible.entry;
        let described = remarks.get(&t.name);
        let columns = app
            .engine
            .table_schema(&p, &visible.name)
            .await?
            .map(|schema| {
                schema
                    .fields()
                    .iter()
                    .map(|f| CatalogColumn {
                        name: f.name().clone(),
                        data_type: f.data_type().to_string(),
                        nullable: f.is_nullable(),
                        description: described.and_then(|d| d.get(f.name())).cloned(),
                        tags: tags.of_column(&t.name, f.name()).into_iter().collect(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let counted = !visible.row_filtered && !visible.remote;
        let profile = if !counted {
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
            name: visible.name.to_string(),
            description: t.description,
            version: t.version,
            published_at: t.committed_at,
            remote: visible.remote,
            rows: counted.then_some(t.rows),
            bytes: counted.then_some(t.bytes),
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

/// A token as listed (never the secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenInfo {
    /// Id, for revoking.
    id: String,
    /// Owner.
    email: String,
    /// What the owner called it.
    name: String,
    /// The first characters of the token, e.g. `qvr_AbCd1234`.
    prefix: String,
    /// Seconds since the epoch.
    created_at: u64,
    /// Seconds since the epoch; `None` never expires.
    expires_at: Option<u64>,
    /// Seconds since the epoch, to the minute.
    last_used_at: Option<u64>,
    /// Whether it was revoked.
    revoked: bool,
}

impl From<identity::TokenInfo> for TokenInfo {
    fn from(t: identity::TokenInfo) -> Self {
        Self {
            id: t.id,
            email: t.email,
            name: t.name,
            prefix: t.prefix,
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
            revoked: t.revoked,
        }
    }
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
    let tokens = blocking(&app, move |s| s.identity().tokens(&email)).await?;
    Ok(Json(tokens.into_iter().map(Into::into).collect()))
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
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            info: info.into(),
            token,
        }),
    ))
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
