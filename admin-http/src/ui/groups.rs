//! Administering groups and their members.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use quiver_catalog::state::identity::MembershipSource;
use serde::Deserialize;

use super::{Confirm, CsrfForm, PageAdmin, PageUser, csrf_field, form_page};
use crate::{AppState, blocking};

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
pub(crate) async fn groups(State(app): State<AppState>, PageAdmin(user): PageAdmin) -> Response {
    groups_page(&app, &user, None).await
}

/// A form naming a group or a member.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct NameForm {
    name: Option<String>,
    email: Option<String>,
    csrf: String,
}

/// Add a group.
#[utoipa::path(post, path = "/admin/groups", tag = "web",
    request_body(content = NameForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303), (status = 403), (status = 422)))]
pub(crate) async fn create_group(
    State(app): State<AppState>,
    PageAdmin(user): PageAdmin,
    CsrfForm(form): CsrfForm<NameForm>,
) -> Response {
    let actor = user.principal.email().to_string();
    let name = form.name.unwrap_or_default();
    match blocking(&app, move |s| s.identity().create_group(&actor, &name)).await {
        Ok(()) => Redirect::to("/admin/groups").into_response(),
        Err(e) => groups_page(&app, &user, Some(e.message().to_string())).await,
    }
}

/// Delete a group.
#[utoipa::path(post, path = "/admin/groups/{name}/delete", tag = "web", params(("name" = String, Path)),
    request_body(content = Confirm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303), (status = 403), (status = 422)))]
pub(crate) async fn delete_group(
    State(app): State<AppState>,
    PageAdmin(user): PageAdmin,
    Path(name): Path<String>,
    CsrfForm(_confirmed): CsrfForm<Confirm>,
) -> Response {
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
pub(crate) async fn add_member(
    State(app): State<AppState>,
    PageAdmin(user): PageAdmin,
    Path(name): Path<String>,
    CsrfForm(form): CsrfForm<NameForm>,
) -> Response {
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
    request_body(content = Confirm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303), (status = 403), (status = 422)))]
pub(crate) async fn remove_member(
    State(app): State<AppState>,
    PageAdmin(user): PageAdmin,
    Path((name, email)): Path<(String, String)>,
    CsrfForm(_confirmed): CsrfForm<Confirm>,
) -> Response {
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

csrf_field!(NameForm);
