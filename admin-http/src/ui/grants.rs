//! Administering grants: tables to groups, with row filters and column masks.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use quiver_catalog::state::access::NewGrant;
use serde::Deserialize;

use super::{Confirm, CsrfForm, PageAdmin, PageUser, csrf_field, form_page};
use crate::{AppState, blocking};

async fn grants_page(app: &AppState, user: &PageUser, error: Option<String>) -> Response {
    let (grants, groups, tables) = match blocking(app, |s| {
        Ok((
            s.access().grants()?,
            s.identity().groups()?,
            s.tables().list()?,
        ))
    })
    .await
    {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let csrf = user.csrf(app);
    form_page(
        app,
        "Grants",
        user,
        error.as_deref(),
        html! {
            table #grants {
                thead { tr { th { "Group" } th { "Table" } th { "Privilege" } th { "Row filter" } th { "Column masks" } th { "" } } }
                tbody {
                    @for g in &grants {
                        tr {
                            td { (g.group) }
                            td { code { (g.table.to_string()) } }
                            td.privilege { (g.privilege.as_str()) }
                            td { @if let Some(f) = &g.row_filter { code { (f) } } @else { "all rows" } }
                            td {
                                @for (c, m) in &g.column_masks {
                                    div { code { (c) } " → " @if let Some(m) = m { code { (m) } } @else { "hidden" } }
                                }
                            }
                            td {
                                form.inline method="post" action=(format!("/admin/grants/{}/revoke", g.id)) {
                                    input type="hidden" name="csrf" value=(csrf);
                                    button type="submit" { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
            form method="post" action="/admin/grants" {
                fieldset {
                    legend { "New grant" }
                    input type="hidden" name="csrf" value=(csrf);
                    label { "Group"
                        select name="group" required {
                            @for g in &groups { @if g != "Admin" { option value=(g) { (g) } } }
                        }
                    }
                    label { "Table (schema.table or schema.*)"
                        input type="text" name="table" list="known-tables" required;
                        datalist #known-tables { @for t in &tables { option value=(t.name.to_string()) {} } }
                    }
                    label { "Privilege"
                        select name="privilege" {
                            option value="read" selected { "read" }
                            option value="write" { "write (whole schema: schema.*; read, create, replace, append, drop)" }
                        }
                    }
                    label { "Row filter (SQL condition; empty: all rows)" input type="text" name="row_filter" placeholder="region = 'EU'"; }
                    label { "Column masks, one per line: column = SQL expression" textarea name="masks" rows="3" placeholder="email = left(email, 2) || '…'" {} }
                    label { "Hidden columns (comma-separated)" input type="text" name="hidden"; }
                    button type="submit" { "Grant" }
                }
            }
        },
    )
}

/// Administer grants.
#[utoipa::path(get, path = "/admin/grants", tag = "web",
    responses((status = 200, content_type = "text/html", body = String), (status = 303), (status = 403)))]
pub(crate) async fn grants(State(app): State<AppState>, PageAdmin(user): PageAdmin) -> Response {
    grants_page(&app, &user, None).await
}

/// The new-grant form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct GrantForm {
    group: String,
    table: String,
    row_filter: Option<String>,
    masks: Option<String>,
    hidden: Option<String>,
    /// `read` (default) or `write`.
    privilege: Option<String>,
    csrf: String,
}

/// Grant a table to a group (validated like the API).
#[utoipa::path(post, path = "/admin/grants", tag = "web",
    request_body(content = GrantForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303), (status = 403), (status = 422)))]
pub(crate) async fn create_grant(
    State(app): State<AppState>,
    PageAdmin(user): PageAdmin,
    CsrfForm(form): CsrfForm<GrantForm>,
) -> Response {
    let mut column_masks = BTreeMap::new();
    for line in form.masks.as_deref().unwrap_or_default().lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((column, expr)) = line.split_once('=') else {
            return grants_page(
                &app,
                &user,
                Some(format!(
                    "mask `{line}` should read `column = SQL expression`"
                )),
            )
            .await;
        };
        column_masks.insert(column.trim().to_string(), Some(expr.trim().to_string()));
    }
    for column in form.hidden.as_deref().unwrap_or_default().split(',') {
        let column = column.trim();
        if !column.is_empty() {
            column_masks.insert(column.to_string(), None);
        }
    }
    let grant = NewGrant {
        group: form.group,
        table: form.table,
        row_filter: form.row_filter.filter(|f| !f.trim().is_empty()),
        column_masks,
        privilege: match form.privilege.as_deref().unwrap_or("read").parse() {
            Ok(privilege) => privilege,
            Err(e) => return grants_page(&app, &user, Some(format!("{e}"))).await,
        },
    };
    match app
        .engine
        .create_grant(user.principal.email(), &grant)
        .await
    {
        Ok(_) => Redirect::to("/admin/grants").into_response(),
        Err(e) => grants_page(&app, &user, Some(e.to_string())).await,
    }
}

/// Revoke a grant.
#[utoipa::path(post, path = "/admin/grants/{id}/revoke", tag = "web", params(("id" = i64, Path)),
    request_body(content = Confirm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303), (status = 403), (status = 422)))]
pub(crate) async fn revoke_grant(
    State(app): State<AppState>,
    PageAdmin(user): PageAdmin,
    Path(id): Path<i64>,
    CsrfForm(_confirmed): CsrfForm<Confirm>,
) -> Response {
    let actor = user.principal.email().to_string();
    match blocking(&app, move |s| s.access().revoke_grant(&actor, id)).await {
        Ok(()) => Redirect::to("/admin/grants").into_response(),
        Err(e) => grants_page(&app, &user, Some(e.message().to_string())).await,
    }
}

csrf_field!(GrantForm);
