//! Signing in and out: the password form (with a CSRF cookie of its own, since there is no
//! session yet), the identity providers' buttons, and the header's sign-out button.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use quiver_catalog::auth::authenticator::{Credentials, Edge, SignInError, SignedIn};
use serde::Deserialize;

use super::{Confirm, CsrfForm, PageUser, html_response, layout};
use crate::error::ApiError;
use crate::session::{self, SESSION_COOKIE, cookie, is_https};
use crate::{AppState, blocking};

/// The cookie holding the sign-in form's CSRF token (there is no session yet).
const LOGIN_CSRF_COOKIE: &str = "quiver_login_csrf";

/// `GET /`: the Connect page when signed in, else the sign-in page.
#[utoipa::path(get, path = "/", tag = "web", responses((status = 303)))]
pub(crate) async fn home(headers: HeaderMap) -> Redirect {
    if cookie(&headers, SESSION_COOKIE).is_some() {
        Redirect::to("/connect")
    } else {
        Redirect::to("/login")
    }
}

/// `?next=` of the sign-in page.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct Next {
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
pub(crate) async fn login_form(
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
pub(crate) struct LoginForm {
    email: String,
    password: String,
    next: Option<String>,
    csrf: String,
}

/// Password sign-in from the form: sets the session cookie and goes on to `next`.
#[utoipa::path(post, path = "/login", tag = "web",
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303), (status = 401, content_type = "text/html", body = String)))]
pub(crate) async fn login_submit(
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
        Err(SignInError::Refused | SignInError::Deactivated) => {
            return retry(StatusCode::UNAUTHORIZED, "Invalid e-mail or password.");
        }
        Err(SignInError::Failed(e)) => return ApiError::from(e).into_response(),
    };
    let mut response = Redirect::to(&next).into_response();
    session::start(&mut response, &app.sessions, &token, expires_at, https);
    response
}

/// Sign out from the page header.
#[utoipa::path(post, path = "/logout", tag = "web",
    request_body(content = Confirm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303)))]
pub(crate) async fn logout(
    State(app): State<AppState>,
    user: PageUser,
    CsrfForm(_confirmed): CsrfForm<Confirm>,
) -> Response {
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
    session::end(&mut response);
    response
}
