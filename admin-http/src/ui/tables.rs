//! Administering tables (versions, schedules, last syncs, "Sync now") and reading the audit log.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::{Confirm, CsrfForm, PageAdmin, PageUser, form_page, layout};
use crate::api::audit::AuditQuery;
use crate::{AppState, blocking};

/// Every table: its source and schedule, current version, and last sync.
#[utoipa::path(get, path = "/admin/tables", tag = "web",
    responses((status = 200, content_type = "text/html", body = String), (status = 303), (status = 403)))]
pub(crate) async fn tables(State(app): State<AppState>, PageAdmin(user): PageAdmin) -> Response {
    tables_page(&app, &user, None).await
}

async fn tables_page(app: &AppState, user: &PageUser, error: Option<String>) -> Response {
    let app2 = app.clone();
    let tables = match blocking(app, move |s| {
        crate::api::tables::table_infos(&app2, s, None, false)
    })
    .await
    {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let csrf = user.csrf(app);
    form_page(
        app,
        "Tables",
        user,
        error.as_deref(),
        html! {
            table #tables {
                thead { tr {
                    th { "Table" } th { "Source" } th { "Schedule" } th { "Version" } th { "Rows" }
                    th { "Bytes" } th { "Published" } th { "Last sync" } th {}
                } }
                tbody {
                    @for t in &tables {
                        tr {
                            td { code { (t.name) } }
                            td { (t.definition.as_ref().map(|d| format!("{} ({})", d.connector, d.mode.as_str())).unwrap_or_else(|| "published directly".into())) }
                            td { (t.definition.as_ref().and_then(|d| d.schedule.clone()).unwrap_or_else(|| "on demand".into())) }
                            td { (t.version.map(|v| v.to_string()).unwrap_or_default()) }
                            td { (t.rows.map(|v| v.to_string()).unwrap_or_default()) }
                            td { (t.bytes.map(|b| bytesize::ByteSize::b(b.max(0) as u64).to_string()).unwrap_or_default()) }
                            td { (t.published_at.clone().unwrap_or_default()) }
                            td.sync {
                                @if let Some(run) = &t.last_sync {
                                    span class=(format!("status {}", run.status)) { (run.status) }
                                    " " (run.ended_at.clone().unwrap_or_else(|| run.started_at.clone()))
                                    @if run.status == "running" {
                                        " · " (run.rows.unwrap_or_default()) " rows so far"
                                    }
                                    @if let Some(error) = &run.error { br; small.error { (error) } }
                                } @else { "never" }
                            }
                            td {
                                @if t.definition.is_some() {
                                    form method="post" action=(format!("/admin/tables/{}/sync", t.name)) {
                                        input type="hidden" name="csrf" value=(csrf);
                                        button type="submit" { "Sync now" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// Start a sync of a table now.
#[utoipa::path(post, path = "/admin/tables/{table}/sync", tag = "web",
    params(("table" = String, Path, description = "`schema.table`")),
    request_body(content = Confirm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303), (status = 403)))]
pub(crate) async fn sync_table(
    State(app): State<AppState>,
    PageAdmin(user): PageAdmin,
    Path(table): Path<String>,
    CsrfForm(_confirmed): CsrfForm<Confirm>,
) -> Response {
    let started = match table.parse::<quiver_catalog::TableName>() {
        Ok(name) => crate::actions::start_sync(&app, &user.principal, name, None).await,
        Err(e) => Err(e.into()),
    };
    match started {
        Ok(_) => Redirect::to("/admin/tables").into_response(),
        Err(e) => tables_page(&app, &user, Some(e.message().to_string())).await,
    }
}

/// Recent audit log entries, optionally of one action.
#[utoipa::path(get, path = "/admin/audit", tag = "web", params(AuditQuery),
    responses((status = 200, content_type = "text/html", body = String), (status = 303), (status = 403)))]
pub(crate) async fn audit(
    State(app): State<AppState>,
    PageAdmin(user): PageAdmin,
    Query(query): Query<AuditQuery>,
) -> Response {
    let query = quiver_catalog::state::audit::AuditQuery {
        limit: Some(query.limit.unwrap_or(200)),
        ..query.into()
    };
    let entries = match blocking(&app, move |s| s.audit().log(&query)).await {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    layout(
        &app,
        "Audit log",
        Some(&user),
        html! {
            form method="get" action="/admin/audit" {
                label { "Action" input type="text" name="action" placeholder="query, login, grant.create…"; }
                button type="submit" { "Filter" }
            }
            table #audit {
                thead { tr { th { "When" } th { "Who" } th { "Action" } th { "On" } th { "Outcome" } th { "Rows" } th { "ms" } } }
                tbody {
                    @for e in &entries {
                        tr {
                            td { (e.at) }
                            td { (e.actor) }
                            td { (e.action) }
                            td { @if let Some(s) = &e.statement { code { (s) } } @else { (e.target.clone().unwrap_or_default()) } }
                            td { (e.outcome) }
                            td { (e.rows.map(|r| r.to_string()).unwrap_or_default()) }
                            td { (e.duration_ms.map(|r| r.to_string()).unwrap_or_default()) }
                        }
                    }
                }
            }
        },
    )
    .into_response()
}
