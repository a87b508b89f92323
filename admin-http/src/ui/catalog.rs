//! The catalog page: the tables the visitor may read, with their columns and freshness.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;

use super::{PageUser, layout};
use crate::{AppState, blocking};

/// The tables you may read: columns, freshness, row counts.
#[utoipa::path(get, path = "/catalog", tag = "web",
    responses((status = 200, content_type = "text/html", body = String), (status = 303)))]
pub(crate) async fn catalog(State(app): State<AppState>, user: PageUser) -> Response {
    let tables = match app.engine.visible_tables(&user.principal).await {
        Ok(t) => t,
        Err(e) => return crate::error::ApiError::from(e).into_response(),
    };
    let described = match blocking(&app, |s| s.tables().column_remarks()).await {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    let mut rows = Vec::new();
    for t in tables {
        let schema = app
            .engine
            .table_schema(&user.principal, &t.name)
            .await
            .ok()
            .flatten();
        rows.push((t, schema));
    }
    layout(
        &app,
        "Catalog",
        Some(&user),
        html! {
            @if rows.is_empty() {
                p #no-tables { "You cannot read any table yet. Ask an administrator for access." }
            }
            @for (visible, schema) in &rows {
                @let t = &visible.entry;
                section.table id=(format!("table-{}", visible.name)) {
                    h2 { code { (visible.name) } }
                    @if let Some(d) = &t.description { p { (d) } }
                    p {
                        @if visible.remote {
                            "read from its source by each query · schema of " (t.committed_at)
                        } @else {
                            @if !visible.row_filtered { (t.rows) " rows · " }
                            "version " (t.version) " · published " (t.committed_at)
                        }
                    }
                    @let columns = described.get(&t.name);
                    @if let Some(schema) = schema {
                        table {
                            thead { tr { th { "Column" } th { "Type" } th { "Description" } } }
                            tbody {
                                @for f in schema.fields() {
                                    tr {
                                        td { code { (f.name()) } }
                                        td { (f.data_type().to_string()) }
                                        td { (columns.and_then(|c| c.get(f.name())).map(String::as_str).unwrap_or_default()) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
    .into_response()
}
