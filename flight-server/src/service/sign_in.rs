//! How a Flight SQL caller is signed in: the `authorization` header of every call (a bearer
//! token, or Basic credentials from clients that skip the handshake) and the handshake
//! that trades an e-mail and password for a token — all through the shared
//! [`Authenticator`].

use arrow_flight::{HandshakeRequest, HandshakeResponse};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use futures::stream;
use quiver_catalog::Principal;
use quiver_catalog::auth::authenticator::{BearerError, Credentials, Edge, SignInError};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{internal, to_status};

use super::{BoxStream, QuiverFlightSql};

impl QuiverFlightSql {
    /// The principal behind a call's `authorization: Bearer …` header.
    pub(super) async fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| {
                Status::unauthenticated(
                    "authentication required: connect with a user name and password, or a bearer token",
                )
            })?
            .to_str()
            .map_err(|_| Status::unauthenticated("malformed authorization header"))?;
        // Clients that skip the handshake send Basic credentials with every call.
        if let Some((email, password)) = parse_basic(header) {
            let address = request.remote_addr().map(|a| a.ip().to_string());
            let credentials = Credentials::Password { email, password };
            return self
                .auth
                .basic(credentials, Edge::Flight, address.as_deref())
                .await
                .map_err(sign_in_status);
        }
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                Status::unauthenticated(
                    "expected `authorization: Bearer <token>`; obtain a token with the Basic-auth handshake",
                )
            })?;
        match self.auth.bearer(token).await {
            Ok(bearer) => Ok(bearer.principal),
            Err(BearerError::Failed(e)) => Err(to_status(e)),
            Err(refused) => Err(Status::unauthenticated(refused.to_string())),
        }
    }

    pub(super) async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<BoxStream<HandshakeResponse>>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Status::unauthenticated(
                    "the handshake needs Basic credentials (e-mail and password)",
                )
            })?;
        // A client that already holds a bearer token may handshake with it.
        if header.starts_with("Bearer ") || header.starts_with("bearer ") {
            self.principal(&request).await?;
            let value = MetadataValue::try_from(header).map_err(|e| internal(&e))?;
            let mut response: Response<BoxStream<HandshakeResponse>> = Response::new(Box::pin(
                stream::iter([Ok::<_, Status>(HandshakeResponse::default())]),
            ));
            response.metadata_mut().insert("authorization", value);
            return Ok(response);
        }
        let (user, password) = parse_basic(header).ok_or_else(|| {
            Status::unauthenticated("malformed Basic credentials in the authorization header")
        })?;
        let address = request.remote_addr().map(|a| a.ip().to_string());
        let credentials = Credentials::Password {
            email: user,
            password,
        };
        let token = self
            .auth
            .sign_in(credentials, Edge::Flight, address.as_deref())
            .await
            .map_err(sign_in_status)?
            .token;
        let value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|e| internal(&e))?;
        let payload = HandshakeResponse {
            protocol_version: 0,
            payload: token.into(),
        };
        let mut response: Response<BoxStream<HandshakeResponse>> =
            Response::new(Box::pin(stream::iter([Ok::<_, Status>(payload)])));
        response.metadata_mut().insert("authorization", value);
        Ok(response)
    }
}

/// The status of a refused sign-in.
pub(super) fn sign_in_status(error: SignInError) -> Status {
    match error {
        e @ SignInError::Throttled(_) => Status::resource_exhausted(e.to_string()),
        SignInError::Refused => Status::unauthenticated("invalid e-mail or password"),
        SignInError::Failed(e) => to_status(e),
    }
}

/// The user and password of a Basic `authorization` header.
pub(crate) fn parse_basic(header: &str) -> Option<(String, String)> {
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    // Some clients (the Go ADBC driver) send unpadded base64.
    let encoded = encoded.trim().trim_end_matches('=');
    let decoded = String::from_utf8(STANDARD_NO_PAD.decode(encoded).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}
