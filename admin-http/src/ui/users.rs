//! Administering users: add, activate, deactivate.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use quiver_catalog::state::identity::UserUpdate;
use serde::Deserialize;

use super::{CsrfForm, PageAdmin, PageUser, csrf_field, form_page};
use crate::{AppState, blocking};

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
pub(crate) async fn users(State(app): State<AppState>, PageAdmin(user): PageAdmin) -> Response {
    users_page(&app, &user, None).await
}

/// The new-user form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct UserForm {
    email: String,
    name: Option<String>,
    password: Option<String>,
    csrf: String,
}

/// Add a user.
#[utoipa::path(post, path = "/admin/users", tag = "web",
    request_body(content = UserForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303), (status = 403), (status = 422)))]
pub(crate) async fn create_user(
    State(app): State<AppState>,
    PageAdmin(user): PageAdmin,
    CsrfForm(form): CsrfForm<UserForm>,
) -> Response {
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
pub(crate) struct ActiveForm {
    active: bool,
    csrf: String,
}

/// Activate or deactivate a user.
#[utoipa::path(post, path = "/admin/users/{email}/active", tag = "web", params(("email" = String, Path)),
    request_body(content = ActiveForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303), (status = 403), (status = 422)))]
pub(crate) async fn set_active(
    State(app): State<AppState>,
    PageAdmin(user): PageAdmin,
    Path(email): Path<String>,
    CsrfForm(form): CsrfForm<ActiveForm>,
) -> Response {
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

csrf_field!(UserForm, ActiveForm);
