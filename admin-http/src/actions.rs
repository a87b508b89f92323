//! What the JSON API and the web pages both do that is more than one state-store call, so a
//! button and an endpoint cannot drift apart (checks, audit rows, push sources' jobs).

use axum::http::StatusCode;
use quiver_catalog::{Principal, TableName};
use quiver_orchestrator::Trigger;

use crate::error::ApiError;
use crate::{AppState, blocking};

/// Starts a sync of `name` now, for `actor`, and audits it; returns the run. For a Jira
/// table (a push source's, `jira.*`) this is the consistency check, or with `jql` a backfill.
pub(crate) async fn start_sync(
    app: &AppState,
    actor: &Principal,
    name: TableName,
    jql: Option<String>,
) -> Result<i64, ApiError> {
    let trigger = Trigger::Manual(actor.email().to_string());
    let run = match jql.filter(|j| !j.trim().is_empty()) {
        Some(jql) if app.orchestrator.push(name.schema()).is_some() => {
            app.orchestrator.start_push(
                name.schema(),
                quiver_orchestrator::PushJob::Backfill(jql),
                trigger,
            )?
        }
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "`jql` applies to Jira tables (jira.*) only",
            ));
        }
        None => app.orchestrator.start(&name, trigger)?,
    };
    let actor = actor.email().to_string();
    blocking(app, move |s| {
        s.audit()
            .record_event(&actor, "table.sync", Some(&name.to_string()), "ok")
    })
    .await?;
    Ok(run)
}
