//! Quiver's Arrow Flight SQL endpoint.
//!
//! - [`service`]: the `FlightSqlService`, one file per call family (sign-in, admission,
//!   statements, prepared statements, catalog calls, sessions) over the per-principal
//!   sessions of `quiver-catalog`; [`rpc`]: the gRPC service around it, with the calls
//!   `FlightSqlService` cannot answer (`GetSchema`).
//! - [`stream`]: results streamed batch by batch with cancellation, a deadline, the result
//!   limits and a log line.
//! - `plans`: statements planned at `GetFlightInfo`, kept for their `DoGet`.
//! - `session_store`: what Flight SQL sessions remember (the schema unqualified names are
//!   looked up in), found by cookie or credential.
//! - [`ticket`]: signed, self-contained tickets and prepared-statement handles.
//! - [`metadata`]: `GetSqlInfo` / `GetXdbcTypeInfo` answers for JDBC, SQLAlchemy and ADBC.
//! - `upload`: IPC streams clients send (bound parameters), sized before they are decoded.
//! - `listener`: connections accepted (TLS included); those that stay silent are dropped.
//! - [`error`]: the one mapping from errors to gRPC statuses.

pub(crate) mod error;
mod listener;
pub(crate) mod metadata;
mod plans;
pub(crate) mod rpc;
pub(crate) mod service;
mod session_store;
pub mod stream;
pub(crate) mod ticket;
mod upload;

use std::future::Future;
use std::path::Path;

use arrow_flight::flight_service_server::FlightServiceServer;
use quiver_catalog::engine::distributed::{PRINCIPAL_HEADER, PROOF_HEADER};
pub use service::{FlightOptions, QuiverFlightSql};
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::{Request, Status};

/// Largest message accepted from clients (bound parameters, handshakes).
const MAX_DECODING_MESSAGE: usize = 64 * 1024 * 1024;

/// Errors starting the Flight SQL listener.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A TLS certificate or key file could not be read.
    #[error("cannot read TLS file {path}: {reason}")]
    TlsFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The certificate and key do not make a TLS configuration.
    #[error("the TLS certificate and key cannot be used: {0}")]
    TlsConfig(#[source] tokio_rustls::rustls::Error),
    /// The gRPC server failed.
    #[error("Flight SQL server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves Flight SQL on `listener` until `shutdown` resolves, then drains in-flight calls.
/// `tls` is a (certificate, key) pair of PEM files. On a cluster, the same listener also
/// runs other replicas' distributed stages (see `quiver_catalog::engine::distributed`), for callers
/// that prove they are one.
pub async fn serve(
    listener: TcpListener,
    service: QuiverFlightSql,
    tls: Option<(&Path, &Path)>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let max_encoding = service_max_message(&service);
    let worker = service
        .engine()
        .distribution()
        .cloned()
        .map(|distribution| {
            let worker = quiver_catalog::engine::worker::worker(service.engine().clone());
            InterceptedService::new(worker.into_worker_server(), move |request: Request<()>| {
                let header = |name| request.metadata().get(name).and_then(|v| v.to_str().ok());
                match (header(PRINCIPAL_HEADER), header(PROOF_HEADER)) {
                    (Some(principal), Some(proof)) if distribution.admits(principal, proof) => {
                        Ok(request)
                    }
                    _ => Err(Status::unauthenticated(
                        "distributed stages are accepted only from this cluster's replicas",
                    )),
                }
            })
        });
    let auth = service.authenticator().clone();
    let svc = FlightServiceServer::new(rpc::FlightSqlRpc(service))
        .max_decoding_message_size(MAX_DECODING_MESSAGE)
        .max_encoding_message_size(max_encoding);
    let svc = service::SignIn::new(svc, auth);
    let tls = tls
        .map(|(cert, key)| listener::tls_acceptor(cert, key))
        .transpose()?;
    Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .add_service(svc)
        .add_optional_service(worker)
        .serve_with_incoming_shutdown(listener::accept(listener, tls), shutdown)
        .await?;
    Ok(())
}

/// Headroom over the data size: the encoder's target excludes IPC headers.
fn service_max_message(service: &QuiverFlightSql) -> usize {
    service.max_message_size() + 1024 * 1024
}
