//! One client connection: the byte stream (plain or TLS), input framing with limits
//! and deadlines, and batched output (replies are flushed only when the client has no
//! more pipelined input waiting, RFC 2920).
//!
//! Every wait is bounded by a deadline for the whole thing waited for (a command line,
//! a message), not per read, so a client trickling one byte a second cannot keep a
//! session; writes have their own timeout, so a client that never reads cannot either;
//! and while the server is under connection pressure every wait is cut short.

use std::io;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use memchr::memchr;
use smtp_wire::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

const READ_CHUNK: usize = 16 * 1024;

/// Why reading stopped without input.
#[derive(Debug)]
pub enum Interrupt {
    /// The client closed its side, the connection broke, or the client did not take
    /// our replies within the write timeout.
    Closed,
    /// The client did not send what it had to within its deadline.
    Timeout,
    /// The server is shutting down and the session is between transactions.
    Shutdown,
}

/// A complete command line, or one that exceeded the limit (already skipped).
pub enum Line {
    Complete(BytesMut),
    TooLong,
}

/// What a [`Conn::read_until`] consumer says after looking at the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// It wants more input.
    More,
    /// It has all it needs.
    Done,
    /// It cannot take more input until the caller does something (find memory for it);
    /// `read_until` returns so the caller can, and nothing more is read meanwhile.
    Blocked,
}

/// The connection-wide time limits, and the server's stress signal.
#[derive(Clone)]
pub struct IoLimits {
    /// How long the client may take to accept our pending replies.
    pub write_timeout: Duration,
    /// Every wait is at most this long while the server is under stress.
    pub stress_timeout: Duration,
    /// `Some(since)` while the server is under connection pressure.
    pub stress: watch::Receiver<Option<Instant>>,
}

pub struct Conn {
    stream: Stream,
    input: BytesMut,
    output: Vec<u8>,
    /// Set while the rest of an over-long line is being skipped.
    skipping_line: bool,
    shutdown: CancellationToken,
    limits: IoLimits,
}

impl Conn {
    pub fn new(stream: TcpStream, shutdown: CancellationToken, limits: IoLimits) -> Self {
        Self {
            stream: Stream::Plain(stream),
            input: BytesMut::with_capacity(READ_CHUNK),
            output: Vec::with_capacity(512),
            skipping_line: false,
            shutdown,
            limits,
        }
    }

    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// Queues bytes for the client; they are sent by [`Conn::flush`], which reading
    /// does by itself once the client's pipelined input is used up.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.output
    }

    /// Sends the pending replies. A client that does not take them within the write
    /// timeout (it pipelines and never reads) gets `TimedOut`.
    pub async fn flush(&mut self) -> io::Result<()> {
        let limit = self.stressed_limit(Instant::now() + self.limits.write_timeout);
        let write = async {
            if !self.output.is_empty() {
                self.stream.write_all(&self.output).await?;
                self.output.clear();
            }
            self.stream.flush().await
        };
        tokio::time::timeout_at(limit.into(), write)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client does not read"))?
    }

    /// `deadline`, brought forward to the stress timeout while the server is under
    /// stress (counted from when the stress began, or from now if later).
    fn stressed_limit(&self, deadline: Instant) -> Instant {
        match *self.limits.stress.borrow() {
            Some(since) => deadline.min(since.max(Instant::now()) + self.limits.stress_timeout),
            None => deadline,
        }
    }

    /// Reads the next command line (CRLF or bare LF terminated), at most `max_len`
    /// bytes, all of it by `deadline` (however it trickles in). Over-long lines are
    /// skipped to their end and reported as [`Line::TooLong`]. With `interruptible`, a
    /// server shutdown ends the wait.
    pub async fn read_line(
        &mut self,
        max_len: usize,
        deadline: Instant,
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
            self.fill(deadline, interruptible).await?;
        }
    }

    /// Feeds buffered input to `consume` (which returns how many bytes it used and
    /// whether it wants more) and reads more until it is done or blocked. Each read
    /// waits at most `idle`, and nothing is read past `deadline`.
    pub async fn read_until<F>(
        &mut self,
        deadline: Instant,
        idle: Duration,
        mut consume: F,
    ) -> Result<Fed, Interrupt>
    where
        F: FnMut(&[u8]) -> (usize, Fed),
    {
        loop {
            // A consumer may take only part of the input at a time: offer it the rest
            // before reading more.
            while !self.input.is_empty() {
                let (used, fed) = consume(&self.input);
                self.input.advance(used);
                if fed != Fed::More {
                    return Ok(fed);
                }
                if used == 0 {
                    break;
                }
            }
            self.fill(deadline.min(Instant::now() + idle), false)
                .await?;
        }
    }

    /// Flushes pending replies, then waits for more input until `deadline` (or the
    /// stress timeout, whichever comes first; a stress that begins during the wait
    /// shortens it).
    async fn fill(&mut self, deadline: Instant, interruptible: bool) -> Result<(), Interrupt> {
        self.flush().await.map_err(|_| Interrupt::Closed)?;
        self.input.reserve(READ_CHUNK);
        let shutdown = self.shutdown.clone();
        let mut stress = self.limits.stress.clone();
        stress.mark_unchanged();
        loop {
            let limit = self.stressed_limit(deadline);
            let stop = async {
                if interruptible {
                    shutdown.cancelled().await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            let stress_changed = async {
                if stress.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            // Reading into a BytesMut is cancel safe: a read that loses the race has
            // taken nothing.
            tokio::select! {
                result = tokio::time::timeout_at(limit.into(), self.stream.read_buf(&mut self.input)) => {
                    return match result {
                        Err(_) => Err(Interrupt::Timeout),
                        Ok(Ok(0)) | Ok(Err(_)) => Err(Interrupt::Closed),
                        Ok(Ok(_)) => Ok(()),
                    };
                }
                () = stop => return Err(Interrupt::Shutdown),
                () = stress_changed => continue,
            }
        }
    }

    /// Upgrades a plain connection to TLS (STARTTLS or implicit TLS). Input buffered
    /// before the upgrade is discarded: a client must not pipeline past STARTTLS
    /// (CVE-2011-0411 style injection).
    pub async fn start_tls(&mut self, acceptor: &TlsAcceptor, timeout: Duration) -> io::Result<()> {
        self.flush().await?;
        self.input.clear();
        let Some(tcp) = self.stream.take_plain() else {
            return Err(io::Error::other("TLS is already active"));
        };
        let timeout = self.stressed_limit(Instant::now() + timeout);
        let tls = tokio::time::timeout_at(timeout.into(), acceptor.accept(tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        self.stream = Stream::from(tls);
        Ok(())
    }

    /// Sends what is pending (within the write timeout) and closes our side.
    pub async fn close(&mut self) {
        if self.flush().await.is_ok() {
            let limit = self.stressed_limit(Instant::now() + self.limits.write_timeout);
            let _ = tokio::time::timeout_at(limit.into(), self.stream.shutdown()).await;
        }
    }
}
