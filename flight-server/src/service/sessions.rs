//! Session calls (`SetSessionOptions`, `GetSessionOptions`, `CloseSession`) over the
//! session store ([`crate::session_store`]).

use arrow_flight::flight_service_server::FlightService;
use futures::stream;
use prost::Message;
use quiver_catalog::{CATALOG_NAME, Principal};
use tonic::{Request, Response, Status};

use crate::error::to_status;
use crate::session_store::{self, Caller, proto as session};

use super::{BoxStream, QuiverFlightSql};

impl QuiverFlightSql {
    /// `SetSessionOptions`: `catalog` must be Quiver's; `schema` one the caller can see
    /// (a schema it cannot see is refused exactly like one that does not exist). Each
    /// refused option is named in the result; the others are kept.
    pub(super) async fn set_session_options(
        &self,
        principal: &Principal,
        caller: &Caller,
        body: &[u8],
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let request = session::SetSessionOptionsRequest::decode(body)
            .map_err(|_| Status::invalid_argument("malformed SetSessionOptionsRequest"))?;
        let visible: std::collections::BTreeSet<String> = self
            .engine
            .visible_tables(principal)
            .await
            .map_err(to_status)?
            .iter()
            .map(|t| t.name.schema().to_string())
            .chain(principal.is_admin().then(|| "system".to_string()))
            .chain(self.engine.personal_schemas().map(String::from))
            .collect();
        let mut errors = std::collections::HashMap::new();
        let mut schema = None;
        for (name, value) in request.session_options {
            let text = match value.option_value {
                Some(session::Value::StringValue(text)) => Some(text),
                None => None,
                Some(_) => {
                    errors.insert(name, session::ErrorValue::InvalidValue);
                    continue;
                }
            };
            match name.as_str() {
                "catalog" if text.as_deref().is_none_or(|c| c == CATALOG_NAME) => {}
                "schema" if text.as_ref().is_none_or(|s| visible.contains(s)) => {
                    schema = Some(text);
                }
                "catalog" | "schema" => {
                    errors.insert(name, session::ErrorValue::InvalidValue);
                }
                _ => {
                    errors.insert(name, session::ErrorValue::InvalidName);
                }
            }
        }
        let id = self.sessions.update(caller, principal.email(), |options| {
            if let Some(schema) = schema {
                options.schema = schema;
            }
        });
        let result = session::SetSessionOptionsResult {
            errors: errors
                .into_iter()
                .map(|(name, value)| {
                    let error = session::SetSessionOptionsError {
                        value: value as i32,
                    };
                    (name, error)
                })
                .collect(),
        };
        Ok(action_result(result.encode_to_vec(), Some(&id)))
    }

    /// The schema `request`'s session looks unqualified names up in, if it chose one.
    pub(super) fn session_schema<T>(
        &self,
        request: &Request<T>,
        principal: &Principal,
    ) -> Option<String> {
        self.session(request, principal).schema
    }

    /// What the caller's session holds: its schema and temporary tables.
    pub(super) fn session<T>(
        &self,
        request: &Request<T>,
        principal: &Principal,
    ) -> crate::session_store::Options {
        self.sessions
            .options(&Caller::of(request), principal.email())
    }

    /// The caller's temporary tables, making its session (and them) on first use.
    pub(super) fn temp_tables<T>(
        &self,
        request: &Request<T>,
        principal: &Principal,
    ) -> Result<std::sync::Arc<quiver_catalog::engine::TempTables>, Status> {
        if let Some(temp) = self.session(request, principal).temp {
            return Ok(temp);
        }
        let made = self.engine.temp_tables().map_err(to_status)?;
        let mut temp = None;
        self.sessions
            .update(&Caller::of(request), principal.email(), |options| {
                temp = Some(options.temp.get_or_insert(made).clone());
            });
        temp.ok_or_else(|| Status::internal("no session"))
    }

    /// `GetSessionOptions`: the catalog, and the schema in force (the one set, else where
    /// unqualified names resolve).
    pub(super) fn get_session_options(
        &self,
        principal: &Principal,
        caller: &Caller,
    ) -> Response<<Self as FlightService>::DoActionStream> {
        let options = self.sessions.options(caller, principal.email());
        let mut result = session::GetSessionOptionsResult::default();
        let text = |s: String| session::SessionOptionValue {
            option_value: Some(session::Value::StringValue(s)),
        };
        result
            .session_options
            .insert("catalog".into(), text(CATALOG_NAME.into()));
        let schema = options
            .schema
            .unwrap_or_else(|| quiver_catalog::engine::DEFAULT_SCHEMA.into());
        result.session_options.insert("schema".into(), text(schema));
        action_result(result.encode_to_vec(), None)
    }

    /// `CloseSession`: forgets the session's options.
    pub(super) fn close_session(
        &self,
        principal: &Principal,
        caller: &Caller,
    ) -> Response<<Self as FlightService>::DoActionStream> {
        self.sessions.close(caller, principal.email());
        let result = session::CloseSessionResult {
            status: session::CloseStatus::Closed as i32,
        };
        action_result(result.encode_to_vec(), None)
    }
}

/// One action result, with the session cookie when there is one to set.
pub(super) fn action_result(
    body: Vec<u8>,
    session: Option<&str>,
) -> Response<BoxStream<arrow_flight::Result>> {
    let result = arrow_flight::Result { body: body.into() };
    let mut response: Response<BoxStream<arrow_flight::Result>> =
        Response::new(Box::pin(stream::iter([Ok::<_, Status>(result)])));
    if let Some(id) = session
        && let Ok(cookie) = format!("{}={id}", session_store::COOKIE).parse()
    {
        response.metadata_mut().insert("set-cookie", cookie);
    }
    response
}
