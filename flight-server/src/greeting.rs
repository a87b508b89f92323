//! Accepted connections must speak in time: a peer that has not sent the first bytes of a
//! connection — the HTTP/2 preface, or a TLS hello — within [`GREETING_DEADLINE`] is
//! dropped. hyper waits for a preface forever, so silent connections would otherwise pile
//! up until the process runs out of file descriptors.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tonic::transport::server::Connected;

/// How long a new connection may stay silent.
pub const GREETING_DEADLINE: Duration = Duration::from_secs(10);

/// The bytes that open an HTTP/2 connection (`PRI * HTTP/2.0…`); a TLS hello is longer.
const PREFACE_LEN: usize = 24;

/// A connection that fails its reads once [`GREETING_DEADLINE`] has passed without its
/// first [`PREFACE_LEN`] bytes.
pub struct Greeted<IO> {
    inner: IO,
    deadline: Option<Pin<Box<Sleep>>>,
    needed: usize,
}

impl<IO> Greeted<IO> {
    /// `inner`, just accepted.
    pub fn new(inner: IO) -> Self {
        Self::within(inner, GREETING_DEADLINE)
    }

    /// `inner`, which must greet within `deadline`.
    fn within(inner: IO, deadline: Duration) -> Self {
        Self {
            inner,
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

impl<IO: Connected> Connected for Greeted<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_silent_peer_is_dropped_and_a_talking_one_is_not() {
        let deadline = Duration::from_millis(100);
        let (mut client, server) = tokio::io::duplex(64);
        let mut silent = Greeted::within(server, deadline);
        let mut buf = [0u8; 8];
        let error = silent.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);

        let (mut client2, server2) = tokio::io::duplex(64);
        let mut talking = Greeted::within(server2, deadline);
        client2.write_all(&[b'P'; PREFACE_LEN]).await.unwrap();
        let mut buf = [0u8; PREFACE_LEN];
        talking.read_exact(&mut buf).await.unwrap();
        // Past the greeting, quiet is fine: the read waits for the next bytes.
        let wait = tokio::time::timeout(deadline * 3, talking.read(&mut buf)).await;
        assert!(wait.is_err(), "a greeted connection must not time out");
        client.shutdown().await.unwrap();
    }
}
