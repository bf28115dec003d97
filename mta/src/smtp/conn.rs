//! One client connection: the byte stream (plain or TLS), input framing with limits
//! and timeouts, and batched output (replies are flushed only when the client has no
//! more pipelined input waiting, RFC 2920).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use memchr::memchr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

const READ_CHUNK: usize = 16 * 1024;

/// The client's byte stream.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while a STARTTLS upgrade is in progress.
    Upgrading,
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Upgrading => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Upgrading => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
            Stream::Upgrading => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Upgrading => Poll::Ready(Ok(())),
        }
    }
}

/// Why reading stopped without input.
#[derive(Debug)]
pub enum Interrupt {
    /// The client closed its side (or the connection broke).
    Closed,
    /// Nothing arrived within the timeout.
    Timeout,
    /// The server is shutting down and the session is between transactions.
    Shutdown,
}

/// A complete command line, or one that exceeded the limit (already skipped).
pub enum Line {
    Complete(BytesMut),
    TooLong,
}

pub struct Conn {
    stream: Stream,
    input: BytesMut,
    output: Vec<u8>,
    /// Set while the rest of an over-long line is being skipped.
    skipping_line: bool,
    shutdown: watch::Receiver<bool>,
}

impl Conn {
    pub fn new(stream: TcpStream, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            stream: Stream::Plain(stream),
            input: BytesMut::with_capacity(READ_CHUNK),
            output: Vec::with_capacity(512),
            skipping_line: false,
            shutdown,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Queues bytes for the client; they are sent by [`Conn::flush`], which reading
    /// does by itself once the client's pipelined input is used up.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.output
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            self.output.clear();
        }
        self.stream.flush().await
    }

    /// Reads the next command line (CRLF or bare LF terminated), at most `max_len`
    /// bytes. Over-long lines are skipped to their end and reported as [`Line::TooLong`].
    /// With `interruptible`, a server shutdown ends the wait.
    pub async fn read_line(
        &mut self,
        max_len: usize,
        timeout: Duration,
        interruptible: bool,
    ) -> Result<Line, Interrupt> {
        loop {
            if let Some(pos) = memchr(b'\n', &self.input) {
                let line = self.input.split_to(pos + 1);
                if std::mem::take(&mut self.skipping_line) || line.len() > max_len {
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Complete(line));
            }
            if self.input.len() > max_len {
                self.input.clear();
                self.skipping_line = true;
            }
            self.fill(timeout, interruptible).await?;
        }
    }

    /// Feeds buffered input to `consume` (which returns how many bytes it used and
    /// whether it is done) and reads more until it is done.
    pub async fn read_until<F>(
        &mut self,
        timeout: Duration,
        mut consume: F,
    ) -> Result<(), Interrupt>
    where
        F: FnMut(&[u8]) -> (usize, bool),
    {
        loop {
            if !self.input.is_empty() {
                let (used, done) = consume(&self.input);
                self.input.advance(used);
                if done {
                    return Ok(());
                }
            }
            self.fill(timeout, false).await?;
        }
    }

    /// Flushes pending replies, then waits for more input.
    async fn fill(&mut self, timeout: Duration, interruptible: bool) -> Result<(), Interrupt> {
        self.flush().await.map_err(|_| Interrupt::Closed)?;
        self.input.reserve(READ_CHUNK);
        let read = tokio::time::timeout(timeout, self.stream.read_buf(&mut self.input));
        let mut shutdown = self.shutdown.clone();
        let stop = async move {
            if !interruptible || shutdown.wait_for(|stop| *stop).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = read => match result {
                Err(_) => Err(Interrupt::Timeout),
                Ok(Ok(0)) | Ok(Err(_)) => Err(Interrupt::Closed),
                Ok(Ok(_)) => Ok(()),
            },
            () = stop => Err(Interrupt::Shutdown),
        }
    }

    /// Upgrades a plain connection to TLS (STARTTLS or implicit TLS). Input buffered
    /// before the upgrade is discarded: a client must not pipeline past STARTTLS
    /// (CVE-2011-0411 style injection).
    pub async fn start_tls(&mut self, acceptor: &TlsAcceptor, timeout: Duration) -> io::Result<()> {
        self.flush().await?;
        self.input.clear();
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Upgrading) else {
            return Err(io::Error::other("TLS is already active"));
        };
        let tls = tokio::time::timeout(timeout, acceptor.accept(tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    /// Sends what is pending and closes our side.
    pub async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}
