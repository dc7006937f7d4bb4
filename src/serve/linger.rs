//! Closing a connection without losing what its client has yet to read.
//!
//! When this server ends a connection on purpose (recycling, draining), the last bytes it
//! writes matter: an HTTP/1.1 answer with `Connection: close`, or HTTP/2's final GOAWAY, whose
//! last-stream-id tells the client which of its streams were never processed and may be sent
//! again. A client may have sent more before it read them (a new HTTP/2 stream crossing the
//! GOAWAY on the wire). If the server then simply closes its socket, the kernel answers that
//! unread data with a TCP reset, and a reset can make the client lose the GOAWAY or the
//! answer still in its receive buffer: its request fails with "connection reset" or "broken
//! pipe" instead of being refused cleanly and sent again.
//!
//! So, as Go's servers do, the connection's task takes the stream back from hyper when
//! hyper is done with it, closes the writing side (TLS close_notify, then TCP FIN), and reads
//! and discards whatever the client still sends until the client closes too, or
//! [`LINGER`] has passed.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// How long a closed connection waits for its client to close too (Go's HTTP/2 server waits
/// 1 s after its final GOAWAY; its HTTP/1.1 server 0.5 s after its last answer).
pub const LINGER: Duration = Duration::from_secs(1);

/// A stream lent to hyper while the connection is served, and taken back once hyper is done.
pub struct Lent<T>(Arc<Mutex<Option<T>>>);

/// What the connection's task keeps, to take the stream back with.
pub struct Lender<T>(Arc<Mutex<Option<T>>>);

/// Lends `io`: the [`Lent`] half is given to hyper, the [`Lender`] kept.
pub fn lend<T>(io: T) -> (Lent<T>, Lender<T>) {
    let shared = Arc::new(Mutex::new(Some(io)));
    (Lent(shared.clone()), Lender(shared))
}

impl<T> Lender<T> {
    /// The stream, unless it was already taken back.
    pub fn take_back(self) -> Option<T> {
        lock(&self.0).take()
    }
}

/// A panic while the stream was polled leaves it as it was; the lock is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn taken() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the connection was closed")
}

/// Every call locks the (never contended) mutex and goes to the stream; once the stream was
/// taken back, reads and writes fail with `NotConnected`.
macro_rules! lent_call {
    ($self:ident, $io:ident => $call:expr) => {
        match lock(&$self.0).as_mut() {
            Some($io) => $call,
            None => Poll::Ready(Err(taken())),
        }
    };
}

impl<T: AsyncRead + Unpin> AsyncRead for Lent<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        lent_call!(self, io => Pin::new(io).poll_read(cx, buf))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Lent<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        lent_call!(self, io => Pin::new(io).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        lent_call!(self, io => Pin::new(io).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        lock(&self.0)
            .as_ref()
            .is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lent_call!(self, io => Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lent_call!(self, io => Pin::new(io).poll_shutdown(cx))
    }
}

/// Closes the writing side of `io` (a second shutdown is harmless), then reads and discards
/// until the client closes, errs, or `linger` has passed. `raw` is the stream to read from
/// once written to no more: for TLS, the TCP stream under it, so late records are neither
/// decrypted nor answered.
pub async fn close_gently<T, R>(mut io: T, raw: fn(&mut T) -> &mut R, linger: Duration)
where
    T: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let _ = tokio::time::timeout(linger, io.shutdown()).await;
    let raw = raw(&mut io);
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(linger, async {
        while let Ok(n) = raw.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test]
    async fn a_lent_stream_serves_until_taken_back() {
        let (ours, mut theirs) = duplex(64);
        let (mut lent, lender) = lend(ours);
        lent.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        let back = lender.take_back();
        assert!(back.is_some());
        let err = lent.write_all(b"more").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotConnected);
    }

    #[tokio::test]
    async fn closing_gently_reads_what_the_client_sends_late_then_ends_at_its_close() {
        let (ours, mut theirs) = duplex(64);
        let client = tokio::spawn(async move {
            // The server's FIN arrives; the client still sends, then closes.
            let mut got = Vec::new();
            theirs.read_to_end(&mut got).await.unwrap();
            theirs.write_all(b"late request").await.unwrap();
            theirs.shutdown().await.unwrap();
            got
        });
        let started = tokio::time::Instant::now();
        close_gently(ours, |s| s, Duration::from_secs(30)).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(client.await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn closing_gently_gives_up_on_a_client_that_never_closes() {
        let (ours, _theirs) = duplex(64);
        let linger = Duration::from_millis(200);
        let started = tokio::time::Instant::now();
        close_gently(ours, |s| s, linger).await;
        assert!(started.elapsed() >= linger);
    }
}
