//! The Connect page: the Flight SQL URI, ready-to-copy snippets for each client, and the
//! visitor's personal access tokens.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::{Confirm, CsrfForm, PageUser, csrf_field, form_page};
use crate::{AppState, blocking};

async fn connect_page(
    app: &AppState,
    user: &PageUser,
    created: Option<(String, String)>,
    error: Option<String>,
) -> Response {
    let email = user.principal.email().to_string();
    let tokens = match blocking(app, move |s| s.identity().tokens(&email)).await {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let uri = &app.flight_url;
    let email = user.principal.email();
    let csrf = user.csrf(app);
    let adbc = format!(
        "import adbc_driver_flightsql.dbapi as flight_sql\n\nconn = flight_sql.connect(\n    \"{uri}\",\n    autocommit=True,\n    db_kwargs={{\"adbc.flight.sql.authorization_header\": \"Bearer <your token>\"}},\n)\nwith conn.cursor() as cur:\n    cur.execute(\"SELECT 1\")\n    print(cur.fetch_arrow_table())"
    );
    let polars = "import polars as pl\n\ndf = pl.read_database(\"SELECT * FROM tpch.nation\", connection=conn)";
    let pandas = "df = conn.cursor().execute(\"SELECT * FROM tpch.nation\").fetch_df()";
    let (host, tls) = match uri.split_once("://") {
        Some((scheme, rest)) => (rest.to_string(), scheme == "grpc+tls"),
        None => (uri.clone(), false),
    };
    let jdbc = format!(
        "jdbc:arrow-flight-sql://{host}/?useEncryption={tls}&user={email}&password=<your token>"
    );
    form_page(
        app,
        "Connect",
        user,
        error.as_deref(),
        html! {
            @if let Some((name, secret)) = &created {
                div.notice role="status" {
                    p { "Your new token " strong { (name) } " — copy it now; it is not shown again:" }
                    pre { code #new-token { (secret) } }
                }
            }
            p { "Flight SQL endpoint: " code #flight-uri { (uri) } ". Sign in with your e-mail and password, or with a personal access token." }
            h2 { "Python (ADBC)" }
            pre { code { (adbc) } }
            h2 { "polars" }
            pre { code { (polars) } }
            h2 { "pandas" }
            pre { code { (pandas) } }
            h2 { "DBeaver / JDBC" }
            p { "Driver: Arrow Flight SQL JDBC. URL:" }
            pre { code { (jdbc) } }
            h2 { "Personal access tokens" }
            table #tokens {
                thead { tr { th { "Name" } th { "Token" } th { "Created" } th { "Last used" } th { "Expires" } th { "" } } }
                tbody {
                    @for t in &tokens {
                        tr {
                            td { (t.name) }
                            td { code { (t.prefix) "…" } }
                            td { (date(Some(t.created_at))) }
                            td { (date(t.last_used_at)) }
                            td { @if t.revoked { "revoked" } @else { (date(t.expires_at)) } }
                            td {
                                @if !t.revoked {
                                    form.inline method="post" action=(format!("/connect/tokens/{}/revoke", t.id)) {
                                        input type="hidden" name="csrf" value=(csrf);
                                        button type="submit" aria-label=(format!("Revoke {}", t.name)) { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            form method="post" action="/connect/tokens" {
                fieldset {
                    legend { "New token" }
                    input type="hidden" name="csrf" value=(csrf);
                    label { "Name" input type="text" name="name" required placeholder="laptop notebook"; }
                    label { "Expires in days (empty: never)" input type="number" name="expires_in_days" min="1" max="3650" value="90"; }
                    button type="submit" { "Create token" }
                }
            }
        },
    )
}

fn date(epoch: Option<u64>) -> String {
    epoch
        .and_then(|s| chrono::DateTime::from_timestamp(s as i64, 0))
        .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "—".into())
}

/// The Connect page: the Flight SQL URI, ready-to-copy snippets and your tokens.
#[utoipa::path(get, path = "/connect", tag = "web",
    responses((status = 200, content_type = "text/html", body = String), (status = 303)))]
pub(crate) async fn connect(State(app): State<AppState>, user: PageUser) -> Response {
    connect_page(&app, &user, None, None).await
}

/// The new-token form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct TokenForm {
    name: String,
    expires_in_days: Option<String>,
    csrf: String,
}

/// Create a personal access token; the page shows it once.
#[utoipa::path(post, path = "/connect/tokens", tag = "web",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, content_type = "text/html", body = String), (status = 303)))]
pub(crate) async fn create_token(
    State(app): State<AppState>,
    user: PageUser,
    CsrfForm(form): CsrfForm<TokenForm>,
) -> Response {
    let days = match form.expires_in_days.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(d) => match d.parse::<u32>() {
            Ok(d) => Some(d),
            Err(_) => {
                return connect_page(
                    &app,
                    &user,
                    None,
                    Some(format!("`{d}` is not a number of days")),
                )
                .await;
            }
        },
    };
    let email = user.principal.email().to_string();
    let name = form.name.clone();
    let origin = user.origin.clone();
    match blocking(&app, move |s| {
        s.identity()
            .create_token(&email, &email, &name, days, origin.as_ref())
    })
    .await
    {
        Ok((info, secret)) => connect_page(&app, &user, Some((info.name, secret)), None).await,
        Err(e) => connect_page(&app, &user, None, Some(e.message().to_string())).await,
    }
}

/// Revoke one of your tokens.
#[utoipa::path(post, path = "/connect/tokens/{id}/revoke", tag = "web",
    params(("id" = String, Path)),
    request_body(content = Confirm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303)))]
pub(crate) async fn revoke_token(
    State(app): State<AppState>,
    user: PageUser,
    Path(id): Path<String>,
    CsrfForm(_confirmed): CsrfForm<Confirm>,
) -> Response {
    let email = user.principal.email().to_string();
    match blocking(&app, move |s| {
        s.identity().revoke_token(&email, Some(&email), &id)
    })
    .await
    {
        Ok(()) => Redirect::to("/connect").into_response(),
        Err(e) => connect_page(&app, &user, None, Some(e.message().to_string())).await,
    }
}

csrf_field!(TokenForm);
