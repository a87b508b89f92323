//! Accepting Flight SQL connections: Nagle off, the TLS handshake, and a deadline for the
//! first words. A peer that has not finished its TLS handshake, or has not sent the first
//! bytes of the HTTP/2 preface on the (decrypted) connection, within [`GREETING_DEADLINE`]
//! is dropped. hyper waits for a preface forever, so silent connections would otherwise pile
//! up until the process runs out of file descriptors. TLS is accepted here rather than by
//! tonic so that the deadline sees the decrypted bytes, not the handshake's.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::either::Either;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::ServeError;

/// An accepted connection, plain or TLS, within its greeting deadline.
pub(crate) type Connection = Greeted<Either<TcpStream, TlsStream<TcpStream>>>;

/// Connections accepted on `listener` (TLS ones once their handshake is done), until the
/// stream is dropped, which closes the listening socket. Handshakes run concurrently, so a
/// slow one holds up no other client.
pub(crate) fn accept(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
) -> ReceiverStream<io::Result<Connection>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let tcp = match accepted {
                Ok((tcp, _)) => tcp,
                Err(error) => {
                    // Out of file descriptors, or a peer gone before its accept: go on shortly.
                    tracing::warn!(%error, "cannot accept a Flight SQL connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // tonic's own TCP settings do not reach a listener we bound: disable Nagle here,
            // or every small response waits ~40 ms for the client's delayed ACK.
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::warn!(%error, "cannot disable Nagle's algorithm");
            }
            let info = tcp.connect_info();
            let Some(acceptor) = &tls else {
                if tx
                    .send(Ok(Greeted::new(Either::Left(tcp), info)))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(GREETING_DEADLINE, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(Greeted::new(Either::Right(stream), info))).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake not finished within the deadline"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// The TLS acceptor for a certificate chain and key in PEM files, offering HTTP/2 only.
pub(crate) fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ServeError> {
    let unreadable = |path: &Path, reason: String| ServeError::TlsFile {
        path: path.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| unreadable(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(unreadable(cert, "no certificate in it".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| unreadable(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| {
            builder
                .with_no_client_auth()
                .with_single_cert(chain, key_der)
        })
        .map_err(ServeError::TlsConfig)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// How long a new connection may stay silent.
pub(crate) const GREETING_DEADLINE: Duration = Duration::from_secs(10);

/// The bytes that open an HTTP/2 connection (`PRI * HTTP/2.0…`); a TLS hello is longer.
const PREFACE_LEN: usize = 24;

/// A connection that fails its reads once [`GREETING_DEADLINE`] has passed without its
/// first [`PREFACE_LEN`] bytes.
pub(crate) struct Greeted<IO> {
    inner: IO,
    info: TcpConnectInfo,
    deadline: Option<Pin<Box<Sleep>>>,
    needed: usize,
}

impl<IO> Greeted<IO> {
    /// `inner`, just accepted from the peer `info` describes.
    pub(crate) fn new(inner: IO, info: TcpConnectInfo) -> Self {
        Self::within(inner, info, GREETING_DEADLINE)
    }

    /// `inner`, which must greet within `deadline`.
    fn within(inner: IO, info: TcpConnectInfo, deadline: Duration) -> Self {
        Self {
            inner,
            info,
            deadline: Some(Box::pin(tokio::time::sleep(deadline))),
            needed: PREFACE_LEN,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Greeted<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Some(deadline) = &mut this.deadline {
            match &polled {
                Poll::Ready(Ok(())) => {
                    let read = buf.filled().len() - before;
                    this.needed = this.needed.saturating_sub(read);
                    if this.needed == 0 || read == 0 {
                        this.deadline = None;
                    }
                }
                Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent nothing within the greeting deadline",
                    )));
                }
                _ => {}
            }
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Greeted<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The peer's addresses, as taken from the TCP stream under any TLS.
impl<IO> Connected for Greeted<IO> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn nowhere() -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: None,
            remote_addr: None,
        }
    }

    #[tokio::test]
    async fn a_silent_peer_is_dropped_and_a_talking_one_is_not() {
        let deadline = Duration::from_millis(100);
        let (mut client, server) = tokio::io::duplex(64);
        let mut silent = Greeted::within(server, nowhere(), deadline);
        let mut buf = [0u8; 8];
        let error = silent.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);

        let (mut client2, server2) = tokio::io::duplex(64);
        let mut talking = Greeted::within(server2, nowhere(), deadline);
        client2.write_all(&[b'P'; PREFACE_LEN]).await.unwrap();
        let mut buf = [0u8; PREFACE_LEN];
        talking.read_exact(&mut buf).await.unwrap();
        // Past the greeting, quiet is fine: the read waits for the next bytes.
        let wait = tokio::time::timeout(deadline * 3, talking.read(&mut buf)).await;
        assert!(wait.is_err(), "a greeted connection must not time out");
        client.shutdown().await.unwrap();
    }
}
