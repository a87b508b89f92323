//! The web UI: server-rendered pages (maud; no build step, no JavaScript needed) for signing
//! in, getting credentials for one's tools, browsing the catalog, and administering users,
//! groups, grants and tables. Pages use the session cookie; every form that changes
//! something carries the session's CSRF token ([`CsrfForm`]), and the sign-in form its own.
//!
//! This file holds what every page shares: the visitor extractors, the frame, the CSRF check.
//! One file per page family: [`sign_in`], [`connect`], [`catalog`], [`users`], [`groups`],
//! [`grants`], [`tables`] (with the audit log).

mod catalog;
mod connect;
mod grants;
mod groups;
mod sign_in;
mod tables;
mod users;

pub(crate) use catalog::*;
pub(crate) use connect::*;
pub(crate) use grants::*;
pub(crate) use groups::*;
pub(crate) use sign_in::*;
pub(crate) use tables::*;
pub(crate) use users::*;

use axum::Form;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use quiver_catalog::Principal;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::session::{SESSION_COOKIE, cookie};

/// A signed-in visitor of the pages; anyone else is sent to the sign-in page.
pub(crate) struct PageUser {
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
pub(crate) struct PageAdmin(PageUser);

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

/// The one style sheet (no build step, no external assets).
const STYLE: &str = include_str!("style.css");

/// The headers every response carries. Pages run no script and load nothing from elsewhere,
/// so the policy allows only the inline style sheet above (by its hash), images of this
/// server, forms posting back to it, and no framing (clickjacking).
pub(crate) async fn security_headers(request: Request, next: axum::middleware::Next) -> Response {
    use axum::http::{HeaderValue, header};
    use std::sync::LazyLock;
    static POLICY: LazyLock<HeaderValue> = LazyLock::new(|| {
        use base64::Engine;
        use sha2::Digest;
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(STYLE));
        HeaderValue::from_str(&format!(
            "default-src 'none'; style-src 'sha256-{hash}'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        ))
        .expect("an ASCII policy")
    });
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert_with(|| POLICY.clone());
    response
}

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

/// A form that changes something, with the session's CSRF token checked: a forged or stale
/// form is refused (403) before the handler runs. The handler's [`PageUser`] or
/// [`PageAdmin`] has already authenticated the session.
pub(crate) struct CsrfForm<T>(pub T);

/// A form that carries the session's CSRF token (field `csrf`).
pub(crate) trait Csrf {
    /// The token sent with the form.
    fn csrf(&self) -> &str;
}

/// Implements [`Csrf`] for forms whose field `csrf` holds the token.
macro_rules! csrf_field {
    ($($form:ty),*) => {
        $(impl crate::ui::Csrf for $form {
            fn csrf(&self) -> &str {
                &self.csrf
            }
        })*
    };
}
pub(crate) use csrf_field;

impl<T: Csrf + DeserializeOwned + Send> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(request: Request, app: &AppState) -> Result<Self, Response> {
        let session = cookie(request.headers(), SESSION_COOKIE).map(String::from);
        let Form(form) = Form::<T>::from_request(request, app)
            .await
            .map_err(IntoResponse::into_response)?;
        match session {
            Some(session) if app.sessions.csrf_ok(&session, form.csrf()) => Ok(CsrfForm(form)),
            _ => Err(html_response(
                StatusCode::FORBIDDEN,
                layout(
                    app,
                    "Expired form",
                    None,
                    html! { p.error { "This form expired or did not come from Quiver. Reload the page and try again." } },
                ),
            )),
        }
    }
}

/// A form carrying only the CSRF token (buttons: revoke, delete, sync, sign out).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct Confirm {
    csrf: String,
}

csrf_field!(Confirm);
