//! The web UI: server-rendered pages (maud; no build step, no JavaScript needed) for signing
//! in, getting credentials for one's tools, browsing the catalog, and administering users,
//! groups, grants and tables. Pages use the session cookie; every form that changes
//! something carries the session's CSRF token, and the sign-in form its own.

use std::collections::BTreeMap;

use axum::Form;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use quiver_catalog::Principal;
use quiver_catalog::authenticator::{Credentials, Edge, SignInError, SignedIn};
use quiver_catalog::identity::unix_now;
use quiver_catalog::state::access::NewGrant;
use quiver_catalog::state::audit::AuditQuery;
use quiver_catalog::state::identity::{MembershipSource, UserUpdate};
use serde::Deserialize;

use crate::error::ApiError;
use crate::session::{SESSION_COOKIE, cookie, is_https, start_cookies};
use crate::{AppState, blocking};

/// The cookie holding the sign-in form's CSRF token (there is no session yet).
const LOGIN_CSRF_COOKIE: &str = "quiver_login_csrf";

/// A signed-in visitor of the pages; anyone else is sent to the sign-in page.
pub struct PageUser {
    principal: Principal,
    session: String,
    /// The session token, verified: what signing out ends.
    verified: Option<quiver_catalog::Verified>,
    /// The credential tokens made on these pages end with.
    origin: Option<quiver_catalog::Origin>,
}

impl PageUser {
    fn csrf(&self, app: &AppState) -> String {
        app.sessions.csrf_for(&self.session)
    }
}

impl FromRequestParts<AppState> for PageUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Response> {
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let to_login = || {
            Redirect::to(&format!(
                "/login?next={}",
                url::form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>()
            ))
            .into_response()
        };
        let Some(session) = cookie(&parts.headers, SESSION_COOKIE).map(String::from) else {
            return Err(to_login());
        };
        let (principal, verified, origin) = crate::auth::resolve_bearer(app, &session)
            .await
            .map_err(IntoResponse::into_response)?
            .ok_or_else(to_login)?;
        Ok(PageUser {
            principal,
            session,
            verified,
            origin,
        })
    }
}

/// A signed-in administrator; other signed-in users get 403.
pub struct PageAdmin(PageUser);

impl FromRequestParts<AppState> for PageAdmin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Response> {
        let user = PageUser::from_request_parts(parts, app).await?;
        if !user.principal.is_admin() {
            let body = layout(
                app,
                "Administrators only",
                Some(&user),
                html! { p.error { "This page is for administrators." } },
            );
            return Err((StatusCode::FORBIDDEN, body).into_response());
        }
        Ok(PageAdmin(user))
    }
}

const STYLE: &str = r#"
body{font-family:system-ui,sans-serif;max-width:64rem;margin:0 auto;padding:0 1rem;color:#1d2330}
nav{display:flex;gap:1rem;align-items:center;border-bottom:1px solid #dde;padding:.75rem 0;margin-bottom:1rem}
nav .me{margin-left:auto;color:#667}
nav form{display:inline}
a{color:#2450b3}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #eef;vertical-align:top}
code,pre{background:#f4f5f9;border-radius:4px}
pre{padding:.75rem;overflow-x:auto}
.error{background:#fde8e8;color:#8a1c1c;padding:.5rem .75rem;border-radius:4px}
.notice{background:#e8f5e9;padding:.5rem .75rem;border-radius:4px}
form.inline{display:inline}
fieldset{border:1px solid #dde;border-radius:6px;margin:1rem 0}
label{display:block;margin:.6rem 0}
label>input,label>textarea,label>select{display:block;margin-top:.25rem}
input[type=text],input[type=email],input[type=password],input[type=number],textarea{width:100%;max-width:32rem;padding:.3rem}
button{padding:.3rem .8rem}
"#;

/// The frame of every page.
fn layout(app: &AppState, title: &str, user: Option<&PageUser>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Quiver" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                nav {
                    strong { "Quiver" }
                    @if let Some(user) = user {
                        a href="/connect" { "Connect" }
                        a href="/catalog" { "Catalog" }
                        @if user.principal.is_admin() {
                            a href="/admin/users" { "Users" }
                            a href="/admin/groups" { "Groups" }
                            a href="/admin/grants" { "Grants" }
                            a href="/admin/tables" { "Tables" }
                            a href="/admin/audit" { "Audit" }
                        }
                        span.me { (user.principal.email()) }
                        form method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(user.csrf(app));
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                h1 { (title) }
                (body)
            }
        }
    }
}

fn html_response(status: StatusCode, markup: Markup) -> Response {
    (status, markup).into_response()
}

/// A signed-in page that may carry the error of the form just sent: then it answers 422 and
/// shows the error above the page.
fn form_page(
    app: &AppState,
    title: &str,
    user: &PageUser,
    error: Option<&str>,
    body: Markup,
) -> Response {
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    html_response(
        status,
        layout(
            app,
            title,
            Some(user),
            html! {
                @if let Some(error) = error { p.error role="alert" { (error) } }
                (body)
            },
        ),
    )
}

/// The refusal of a form whose CSRF token is not the session's; `None` when it is.
fn csrf_rejection(app: &AppState, user: &PageUser, presented: &str) -> Option<Response> {
    if app.sessions.csrf_ok(&user.session, presented) {
        None
    } else {
        Some(html_response(
            StatusCode::FORBIDDEN,
            layout(
                app,
                "Expired form",
                Some(user),
                html! { p.error { "This form expired or did not come from Quiver. Reload the page and try again." } },
            ),
        ))
    }
}

// ----- sign-in --------------------------------------------------------------------------------

/// `GET /`: the Connect page when signed in, else the sign-in page.
#[utoipa::path(get, path = "/", tag = "web", responses((status = 303)))]
pub async fn home(headers: HeaderMap) -> Redirect {
    if cookie(&headers, SESSION_COOKIE).is_some() {
        Redirect::to("/connect")
    } else {
        Redirect::to("/login")
    }
}

/// `?next=` of the sign-in page.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Next {
    next: Option<String>,
}

fn login_page(app: &AppState, next: &str, csrf: &str, error: Option<&str>) -> Markup {
    layout(
        app,
        "Sign in",
        None,
        html! {
            @if let Some(error) = error { p.error role="alert" { (error) } }
            form method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="next" value=(next);
                label { "E-mail" input type="email" name="email" autocomplete="username" required; }
                label { "Password" input type="password" name="password" autocomplete="current-password" required; }
                button type="submit" { "Sign in" }
            }
            @let buttons = app.oidc.buttons();
            @if !buttons.is_empty() {
                p { "or" }
                @for (name, label) in buttons {
                    p {
                        a.button href=(format!("/auth/oidc/{name}/login?next={}",
                            url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>())) {
                            "Sign in with " (label)
                        }
                    }
                }
            }
        },
    )
}

fn with_login_csrf(mut response: Response, token: &str, https: bool) -> Response {
    let secure = if https { "; Secure" } else { "" };
    if let Ok(value) = HeaderValue::from_str(&format!(
        "{LOGIN_CSRF_COOKIE}={token}; Path=/login; HttpOnly; SameSite=Strict; Max-Age=3600{secure}"
    )) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

fn local_next(next: Option<&str>) -> String {
    next.filter(|n| crate::oidc::is_local_path(n) && *n != "/login")
        .unwrap_or("/connect")
        .to_string()
}

/// The sign-in page: a password form and one button per identity provider.
#[utoipa::path(get, path = "/login", tag = "web", params(Next),
    responses((status = 200, content_type = "text/html", body = String)))]
pub async fn login_form(
    State(app): State<AppState>,
    Query(q): Query<Next>,
    headers: HeaderMap,
) -> Response {
    let token = crate::session::random_token();
    let next = local_next(q.next.as_deref());
    with_login_csrf(
        login_page(&app, &next, &token, None).into_response(),
        &token,
        is_https(&headers),
    )
}

/// The sign-in form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct LoginForm {
    email: String,
    password: String,
    next: Option<String>,
    csrf: String,
}

/// Password sign-in from the form: sets the session cookie and goes on to `next`.
#[utoipa::path(post, path = "/login", tag = "web",
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303), (status = 401, content_type = "text/html", body = String)))]
pub async fn login_submit(
    State(app): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = local_next(form.next.as_deref());
    let https = is_https(&headers);
    let retry = |status: StatusCode, error: &str| {
        let token = crate::session::random_token();
        with_login_csrf(
            html_response(status, login_page(&app, &next, &token, Some(error))),
            &token,
            https,
        )
    };
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if expected.is_empty()
        || !bool::from(subtle::ConstantTimeEq::ct_eq(
            expected.as_bytes(),
            form.csrf.as_bytes(),
        ))
    {
        return retry(
            StatusCode::FORBIDDEN,
            "The sign-in form expired. Please try again.",
        );
    }
    let address = peer.ip().to_string();
    let credentials = Credentials::Password {
        email: form.email.clone(),
        password: form.password.clone(),
    };
    let (token, expires_at) = match app
        .auth
        .sign_in(credentials, Edge::Web, Some(&address))
        .await
    {
        Ok(SignedIn {
            token, expires_at, ..
        }) => (token, expires_at),
        Err(SignInError::Throttled(wait)) => {
            return retry(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "Too many failed sign-in attempts; try again in {} s.",
                    wait.as_secs().max(1)
                ),
            );
        }
        Err(SignInError::Refused) => {
            return retry(StatusCode::UNAUTHORIZED, "Invalid e-mail or password.");
        }
        Err(SignInError::Failed(e)) => return ApiError::from(e).into_response(),
    };
    let mut response = Redirect::to(&next).into_response();
    for c in start_cookies(
        &app.sessions,
        &token,
        expires_at.saturating_sub(unix_now()),
        https,
    ) {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

/// A form carrying only the CSRF token.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CsrfForm {
    csrf: String,
}

/// Sign out from the page header.
#[utoipa::path(post, path = "/logout", tag = "web",
    request_body(content = CsrfForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303)))]
pub async fn logout(
    State(app): State<AppState>,
    user: PageUser,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(r) = csrf_rejection(&app, &user, &form.csrf) {
        return r;
    }
    if let Some(session) = user.verified.clone() {
        let email = user.principal.email().to_string();
        if let Err(e) = blocking(&app, move |s| {
            s.identity().end_session(&email, &session.jti, session.exp)
        })
        .await
        {
            return e.into_response();
        }
    }
    let mut response = Redirect::to("/login").into_response();
    for c in crate::session::end_cookies() {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

// ----- connect --------------------------------------------------------------------------------

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
        "import adbc_driver_flightsql.dbapi as flight_sql\n\nconn = flight_sql.connect(\n    \"{uri}\",\n    db_kwargs={{\"adbc.flight.sql.authorization_header\": \"Bearer <your token>\"}},\n)\nwith conn.cursor() as cur:\n    cur.execute(\"SELECT 1\")\n    print(cur.fetch_arrow_table())"
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
pub async fn connect(State(app): State<AppState>, user: PageUser) -> Response {
    connect_page(&app, &user, None, None).await
}

/// The new-token form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TokenForm {
    name: String,
    expires_in_days: Option<String>,
    csrf: String,
}

/// Create a personal access token; the page shows it once.
#[utoipa::path(post, path = "/connect/tokens", tag = "web",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, content_type = "text/html", body = String), (status = 303)))]
pub async fn create_token(
    State(app): State<AppState>,
    user: PageUser,
    Form(form): Form<TokenForm>,
) -> Response {
    if let Some(r) = csrf_rejection(&app, &user, &form.csrf) {
        return r;
    }
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
    request_body(content = CsrfForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303)))]
pub async fn revoke_token(
    State(app): State<AppState>,
    user: PageUser,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(r) = csrf_rejection(&app, &user, &form.csrf) {
        return r;
    }
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

// ----- catalog --------------------------------------------------------------------------------

/// The tables you may read: columns, freshness, row counts.
#[utoipa::path(get, path = "/catalog", tag = "web",
    responses((status = 200, content_type = "text/html", body = String), (status = 303)))]
pub async fn catalog(State(app): State<AppState>, user: PageUser) -> Response {
    let tables = match app.engine.visible_tables(&user.principal).await {
        Ok(t) => t,
        Err(e) => return crate::error::ApiError::from(e).into_response(),
    };
    let mut rows = Vec::new();
    for t in tables {
        let schema = app
            .engine
            .table_schema(&user.principal, &t.entry.name)
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
                section.table id=(format!("table-{}", t.name)) {
                    h2 { code { (t.name) } }
                    @if let Some(d) = &t.description { p { (d) } }
                    p {
                        @if !visible.row_filtered { (t.rows) " rows · " }
                        "version " (t.version) " · published " (t.committed_at)
                    }
                    @if let Some(schema) = schema {
                        table {
                            thead { tr { th { "Column" } th { "Type" } } }
                            tbody {
                                @for f in schema.fields() {
                                    tr { td { code { (f.name()) } } td { (f.data_type().to_string()) } }
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

// ----- admin: users ---------------------------------------------------------------------------

async fn users_page(app: &AppState, user: &PageUser, error: Option<String>) -> Response {
    let users = match blocking(app, |s| s.identity().users()).await {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let csrf = user.csrf(app);
    form_page(
        app,
        "Users",
        user,
        error.as_deref(),
        html! {
            table #users {
                thead { tr { th { "E-mail" } th { "Name" } th { "Groups" } th { "Status" } th { "" } } }
                tbody {
                    @for u in &users {
                        tr {
                            td { (u.email) }
                            td { (u.name.clone().unwrap_or_default()) }
                            td { (u.groups.join(", ")) }
                            td { @if u.active { "active" } @else { "deactivated" } }
                            td {
                                form.inline method="post" action=(format!("/admin/users/{}/active", u.email)) {
                                    input type="hidden" name="csrf" value=(csrf);
                                    input type="hidden" name="active" value=(if u.active { "false" } else { "true" });
                                    button type="submit" { @if u.active { "Deactivate" } @else { "Activate" } }
                                }
                            }
                        }
                    }
                }
            }
            form method="post" action="/admin/users" {
                fieldset {
                    legend { "New user" }
                    input type="hidden" name="csrf" value=(csrf);
                    label { "E-mail" input type="email" name="email" required; }
                    label { "Name" input type="text" name="name"; }
                    label { "Password (empty: signs in through an identity provider or tokens)" input type="password" name="password" autocomplete="new-password"; }
                    button type="submit" { "Add user" }
                }
            }
        },
    )
}

/// Administer users.
#[utoipa::path(get, path = "/admin/users", tag = "web",
    responses((status = 200, content_type = "text/html", body = String), (status = 303), (status = 403)))]
pub async fn users(State(app): State<AppState>, PageAdmin(user): PageAdmin) -> Response {
    users_page(&app, &user, None).await
}

/// The new-user form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct UserForm {
    email: String,
    name: Option<String>,
    password: Option<String>,
    csrf: String,
}

/// Add a user.
#[utoipa::path(post, path = "/admin/users", tag = "web",
    request_body(content = UserForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303), (status = 403), (status = 422)))]
pub async fn create_user(
    State(app): State<AppState>,
    PageAdmin(user): PageAdmin,
    Form(form): Form<UserForm>,
) -> Response {
    if let Some(r) = csrf_rejection(&app, &user, &form.csrf) {
        return r;
    }
    let actor = user.principal.email().to_string();
    let result = blocking(&app, move |s| {
        s.identity().create_user(
            &actor,
            &form.email,
            form.name.as_deref().filter(|n| !n.is_empty()),
            form.password.as_deref().filter(|p| !p.is_empty()),
        )
    })
    .await;
    match result {
        Ok(_) => Redirect::to("/admin/users").into_response(),
        Err(e) => users_page(&app, &user, Some(e.message().to_string())).await,
    }
}

/// The activate/deactivate form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ActiveForm {
    active: bool,
    csrf: String,
}

/// Activate or deactivate a user.
#[utoipa::path(post, path = "/admin/users/{email}/active", tag = "web", params(("email" = String, Path)),
    request_body(content = ActiveForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303), (status = 403), (status = 422)))]
pub async fn set_active(
    State(app): State<AppState>,
    PageAdmin(user): PageAdmin,
    Path(email): Path<String>,
    Form(form): Form<ActiveForm>,
) -> Response {
    if let Some(r) = csrf_rejection(&app, &user, &form.csrf) {
        return r;
    }
    let actor = user.principal.email().to_string();
    let update = UserUpdate {
        active: Some(form.active),
        ..Default::default()
    };
    match blocking(&app, move |s| {
        s.identity().update_user(&actor, &email, &update)
    })
    .await
    {
        Ok(_) => Redirect::to("/admin/users").into_response(),
        Err(e) => users_page(&app, &user, Some(e.message().to_string())).await,
    }
}

// ----- admin: groups --------------------------------------------------------------------------

async fn groups_page(app: &AppState, user: &PageUser, error: Option<String>) -> Response {
    let groups = match blocking(app, |s| {
        s.identity()
            .groups()?
            .into_iter()
            .map(|g| {
                let members = s.identity().members(&g)?;
                Ok((g, members))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let csrf = user.csrf(app);
    form_page(
        app,
        "Groups",
        user,
        error.as_deref(),
        html! {
            @for (g, members) in &groups {
                section.group id=(format!("group-{g}")) {
                    h2 { (g) }
                    ul {
                        @for m in members {
                            li {
                                (m.email) " (" (m.source) ")"
                                @if g != "Everyone" {
                                    " "
                                    form.inline method="post" action=(format!("/admin/groups/{g}/members/{}/remove", m.email)) {
                                        input type="hidden" name="csrf" value=(csrf);
                                        button type="submit" { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                    @if g != "Everyone" {
                        form.inline method="post" action=(format!("/admin/groups/{g}/members")) {
                            input type="hidden" name="csrf" value=(csrf);
                            input type="email" name="email" placeholder="e-mail" required aria-label=(format!("Add to {g}"));
                            button type="submit" { "Add member" }
                        }
                    }
                    @if g != "Everyone" && g != "Admin" {
                        " "
                        form.inline method="post" action=(format!("/admin/groups/{g}/delete")) {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Delete group" }
                        }
                    }
                }
            }
            form method="post" action="/admin/groups" {
                fieldset {
                    legend { "New group" }
                    input type="hidden" name="csrf" value=(csrf);
                    label { "Name" input type="text" name="name" required; }
                    button type="submit" { "Add group" }
                }
            }
        },
    )
}

/// Administer groups and their members.
#[utoipa::path(get, path = "/admin/groups", tag = "web",
    responses((status = 200, content_type = "text/html", body = String), (status = 303), (status = 403)))]
pub async fn groups(State(app): State<AppState>, PageAdmin(user): PageAdmin) -> Response {
    groups_page(&app, &user, None).await
}

/// A form naming a group or a member.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NameForm {
    name: Option<String>,
    email: Option<String>,
    csrf: String,
}

/// Add a group.
#[utoipa::path(post, path = "/admin/groups", tag = "web",
    request_body(content = NameForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303), (status = 403), (status = 422)))]
pub async fn create_group(
    State(app): State<AppState>,
    PageAdmin(user): PageAdmin,
    Form(form): Form<NameForm>,
) -> Response {
    if let Some(r) = csrf_rejection(&app, &user, &form.csrf) {
        return r;
    }
    let actor = user.principal.email().to_string();
    let name = form.name.unwrap_or_default();
    match blocking(&app, move |s| s.identity().create_group(&actor, &name)).await {
        Ok(()) => Redirect::to("/admin/groups").into_response(),
        Err(e) => groups_page(&app, &user, Some(e.message().to_string())).await,
    }
}

/// Delete a group.
#[utoipa::path(post, path = "/admin/groups/{name}/delete", tag = "web", params(("name" = String, Path)),
    request_body(content = CsrfForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303), (status = 403), (status = 422)))]
pub async fn delete_group(
    State(app): State<AppState>,
    PageAdmin(user): PageAdmin,
    Path(name): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(r) = csrf_rejection(&app, &user, &form.csrf) {
        return r;
    }
    let actor = user.principal.email().to_string();
    match blocking(&app, move |s| s.identity().delete_group(&actor, &name)).await {
        Ok(()) => Redirect::to("/admin/groups").into_response(),
        Err(e) => groups_page(&app, &user, Some(e.message().to_string())).await,
    }
}

/// Add a member.
#[utoipa::path(post, path = "/admin/groups/{name}/members", tag = "web", params(("name" = String, Path)),
    request_body(content = NameForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303), (status = 403), (status = 422)))]
pub async fn add_member(
    State(app): State<AppState>,
    PageAdmin(user): PageAdmin,
    Path(name): Path<String>,
    Form(form): Form<NameForm>,
) -> Response {
    if let Some(r) = csrf_rejection(&app, &user, &form.csrf) {
        return r;
    }
    let actor = user.principal.email().to_string();
    let email = form.email.unwrap_or_default();
    match blocking(&app, move |s| {
        s.identity()
            .add_member(&actor, &name, &email, MembershipSource::Admin)
    })
    .await
    {
        Ok(()) => Redirect::to("/admin/groups").into_response(),
        Err(e) => groups_page(&app, &user, Some(e.message().to_string())).await,
    }
}

/// Remove a member.
#[utoipa::path(post, path = "/admin/groups/{name}/members/{email}/remove", tag = "web",
    params(("name" = String, Path), ("email" = String, Path)),
    request_body(content = CsrfForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303), (status = 403), (status = 422)))]
pub async fn remove_member(
    State(app): State<AppState>,
    PageAdmin(user): PageAdmin,
    Path((name, email)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(r) = csrf_rejection(&app, &user, &form.csrf) {
        return r;
    }
    let actor = user.principal.email().to_string();
    match blocking(&app, move |s| {
        s.identity().remove_member(&actor, &name, &email)
    })
    .await
    {
        Ok(()) => Redirect::to("/admin/groups").into_response(),
        Err(e) => groups_page(&app, &user, Some(e.message().to_string())).await,
    }
}

// ----- admin: grants --------------------------------------------------------------------------

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
                thead { tr { th { "Group" } th { "Table" } th { "Row filter" } th { "Column masks" } th { "" } } }
                tbody {
                    @for g in &grants {
                        tr {
                            td { (g.group) }
                            td { code { (g.table.to_string()) } }
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
pub async fn grants(State(app): State<AppState>, PageAdmin(user): PageAdmin) -> Response {
    grants_page(&app, &user, None).await
}

/// The new-grant form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct GrantForm {
    group: String,
    table: String,
    row_filter: Option<String>,
    masks: Option<String>,
    hidden: Option<String>,
    csrf: String,
}

/// Grant a table to a group (validated like the API).
#[utoipa::path(post, path = "/admin/grants", tag = "web",
    request_body(content = GrantForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303), (status = 403), (status = 422)))]
pub async fn create_grant(
    State(app): State<AppState>,
    PageAdmin(user): PageAdmin,
    Form(form): Form<GrantForm>,
) -> Response {
    if let Some(r) = csrf_rejection(&app, &user, &form.csrf) {
        return r;
    }
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
    request_body(content = CsrfForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303), (status = 403), (status = 422)))]
pub async fn revoke_grant(
    State(app): State<AppState>,
    PageAdmin(user): PageAdmin,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(r) = csrf_rejection(&app, &user, &form.csrf) {
        return r;
    }
    let actor = user.principal.email().to_string();
    match blocking(&app, move |s| s.access().revoke_grant(&actor, id)).await {
        Ok(()) => Redirect::to("/admin/grants").into_response(),
        Err(e) => grants_page(&app, &user, Some(e.message().to_string())).await,
    }
}

// ----- admin: tables and audit ----------------------------------------------------------------

/// Every table: its source and schedule, current version, and last sync.
#[utoipa::path(get, path = "/admin/tables", tag = "web",
    responses((status = 200, content_type = "text/html", body = String), (status = 303), (status = 403)))]
pub async fn tables(State(app): State<AppState>, PageAdmin(user): PageAdmin) -> Response {
    tables_page(&app, &user, None).await
}

async fn tables_page(app: &AppState, user: &PageUser, error: Option<String>) -> Response {
    let app2 = app.clone();
    let tables = match blocking(app, move |s| crate::api::table_infos(&app2, s, None, false)).await
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
    request_body(content = CsrfForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303), (status = 403)))]
pub async fn sync_table(
    State(app): State<AppState>,
    PageAdmin(user): PageAdmin,
    Path(table): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(r) = csrf_rejection(&app, &user, &form.csrf) {
        return r;
    }
    let started = table
        .parse::<quiver_catalog::TableName>()
        .map_err(crate::error::ApiError::from)
        .and_then(|name| {
            app.orchestrator
                .start(
                    &name,
                    quiver_orchestrator::Trigger::Manual(user.principal.email().to_string()),
                )
                .map_err(crate::error::ApiError::from)
        });
    match started {
        Ok(_) => Redirect::to("/admin/tables").into_response(),
        Err(e) => tables_page(&app, &user, Some(e.message().to_string())).await,
    }
}

/// Recent audit log entries, optionally of one action.
#[utoipa::path(get, path = "/admin/audit", tag = "web", params(AuditQuery),
    responses((status = 200, content_type = "text/html", body = String), (status = 303), (status = 403)))]
pub async fn audit(
    State(app): State<AppState>,
    PageAdmin(user): PageAdmin,
    Query(query): Query<AuditQuery>,
) -> Response {
    let query = AuditQuery {
        limit: Some(query.limit.unwrap_or(200)),
        ..query
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
