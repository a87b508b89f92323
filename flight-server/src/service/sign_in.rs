//! How a Flight SQL caller is signed in: [`SignIn`], a layer in front of the service, reads
//! the `authorization` header of every call (a bearer token, or Basic credentials from
//! clients that skip the handshake) and puts the [`Principal`] in the request, where the
//! calls find it ([`signed_in`]); the handshake trades an e-mail and password for a token.
//! All through the shared [`Authenticator`].

use std::sync::Arc;
use std::task::{Context, Poll};

use arrow_flight::{HandshakeRequest, HandshakeResponse};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use futures::future::BoxFuture;
use futures::stream;
use quiver_catalog::Principal;
use quiver_catalog::auth::authenticator::{
    Authenticator, BearerError, Credentials, Edge, SignInError,
};
use tonic::metadata::MetadataValue;
use tonic::server::NamedService;
use tonic::transport::server::TcpConnectInfo;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{internal, to_status};

use super::{BoxStream, QuiverFlightSql};

impl QuiverFlightSql {
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
            authenticate(&self.auth, Some(header), None).await?;
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

/// The principal [`SignIn`] found for a call.
pub(crate) fn signed_in<T>(request: &Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::internal("the call was not signed in"))
}

/// Signs every call but the handshake in before the Flight service sees it: a call without
/// valid credentials is answered here, and one with them carries its [`Principal`].
#[derive(Clone)]
pub(crate) struct SignIn<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S> SignIn<S> {
    /// `inner` behind sign-in through `auth`.
    pub(crate) fn new(inner: S, auth: Arc<Authenticator>) -> Self {
        Self { inner, auth }
    }
}

impl<S: NamedService> NamedService for SignIn<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for SignIn<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The service that was polled ready serves this call; its clone the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            if !request.uri().path().ends_with("/Handshake") {
                let address = request
                    .extensions()
                    .get::<TcpConnectInfo>()
                    .and_then(TcpConnectInfo::remote_addr)
                    .map(|a| a.ip().to_string());
                let header = request
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .map(|v| v.to_str().unwrap_or_default());
                match authenticate(&auth, header, address.as_deref()).await {
                    Ok(principal) => {
                        request.extensions_mut().insert(principal);
                    }
                    Err(status) => return Ok(status.into_http()),
                }
            }
            inner.call(request).await
        })
    }
}

/// The principal behind an `authorization` header: a bearer token, or Basic credentials.
async fn authenticate(
    auth: &Authenticator,
    header: Option<&str>,
    address: Option<&str>,
) -> Result<Principal, Status> {
    let header = header.ok_or_else(|| {
        Status::unauthenticated(
            "authentication required: connect with a user name and password, or a bearer token",
        )
    })?;
    if header.is_empty() {
        return Err(Status::unauthenticated("malformed authorization header"));
    }
    // Clients that skip the handshake send Basic credentials with every call.
    if let Some((email, password)) = parse_basic(header) {
        let credentials = Credentials::Password { email, password };
        return auth
            .basic(credentials, Edge::Flight, address)
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
    match auth.bearer(token).await {
        Ok(bearer) => Ok(bearer.principal),
        Err(BearerError::Failed(e)) => Err(to_status(e)),
        Err(refused) => Err(Status::unauthenticated(refused.to_string())),
    }
}

/// The status of a refused sign-in.
pub(super) fn sign_in_status(error: SignInError) -> Status {
    match error {
        e @ SignInError::Throttled(_) => Status::resource_exhausted(e.to_string()),
        SignInError::Refused => Status::unauthenticated("invalid e-mail or password"),
        e @ SignInError::Deactivated => Status::permission_denied(e.to_string()),
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
