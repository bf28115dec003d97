//! The connection's byte level: a plain or TLS stream, a read buffer that yields bounded
//! replies, and one write buffer sent with one write per command group.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::ClientError;
use super::reply::{MAX_LINE, Reply, ReplyBuilder};

pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Between taking the TCP stream for the TLS handshake and getting it back.
    Closed,
}

fn not_connected() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Closed => Poll::Ready(Err(not_connected())),
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
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Closed => Poll::Ready(Err(not_connected())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
}

/// An I/O error during `stage`: the peer going away is [`ClientError::Closed`].
fn io_error(stage: &'static str, e: io::Error) -> ClientError {
    use io::ErrorKind::*;
    match e.kind() {
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe | NotConnected => {
            ClientError::Closed(stage)
        }
        _ => ClientError::Io(e),
    }
}

pub(super) struct Wire {
    pub stream: Stream,
    rbuf: Vec<u8>,
    rpos: usize,
    /// Commands (or a block of data) waiting for [`Wire::flush`].
    pub wbuf: Vec<u8>,
}

impl Wire {
    pub fn new(stream: Stream) -> Self {
        Self {
            stream,
            rbuf: Vec::with_capacity(1024),
            rpos: 0,
            wbuf: Vec::with_capacity(1024),
        }
    }

    /// Whether the server sent bytes that no reply has consumed yet.
    pub fn has_unread_input(&self) -> bool {
        self.rpos < self.rbuf.len()
    }

    /// Writes the whole write buffer (one write call when the socket takes it) and
    /// empties it, within `limit`.
    pub async fn flush(&mut self, stage: &'static str, limit: Duration) -> Result<(), ClientError> {
        let Wire { stream, wbuf, .. } = self;
        let written = tokio::time::timeout(limit, async {
            stream.write_all(wbuf).await?;
            stream.flush().await
        })
        .await;
        wbuf.clear();
        match written {
            Err(_) => Err(ClientError::Timeout(stage)),
            Ok(Err(e)) => Err(io_error(stage, e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Reads one complete reply; the whole reply must arrive within `limit`.
    pub async fn read_reply(
        &mut self,
        stage: &'static str,
        limit: Duration,
    ) -> Result<Reply, ClientError> {
        match tokio::time::timeout(limit, self.read_reply_inner(stage)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout(stage)),
        }
    }

    async fn read_reply_inner(&mut self, stage: &'static str) -> Result<Reply, ClientError> {
        let protocol = |e: String| ClientError::Protocol(format!("{e} (reply to {stage})"));
        let mut builder = ReplyBuilder::default();
        loop {
            while let Some(i) = memchr::memchr(b'\n', &self.rbuf[self.rpos..]) {
                let start = self.rpos;
                let end = start + i;
                self.rpos = end + 1;
                let line = &self.rbuf[start..end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.len() > MAX_LINE {
                    return Err(protocol(format!("reply line longer than {MAX_LINE} bytes")));
                }
                if let Some(reply) = builder.push(line).map_err(protocol)? {
                    if self.rpos == self.rbuf.len() {
                        self.rbuf.clear();
                        self.rpos = 0;
                    }
                    return Ok(reply);
                }
            }
            if self.rbuf.len() - self.rpos > MAX_LINE + 1 {
                return Err(protocol(format!("reply line longer than {MAX_LINE} bytes")));
            }
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
            self.rbuf.reserve(4096);
            match self.stream.read_buf(&mut self.rbuf).await {
                Ok(0) => return Err(ClientError::Closed(stage)),
                Ok(_) => {}
                Err(e) => return Err(io_error(stage, e)),
            }
        }
    }
}
