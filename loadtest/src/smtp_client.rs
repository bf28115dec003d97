//! The load generator's SMTP client: the shared wire layer's stream and reply parser
//! (multi-line replies, length limits, garbage detection), EHLO capabilities, STARTTLS
//! and AUTH PLAIN. Commands are written into the buffer by the caller, so pipelining
//! is just "write several, flush once, read several replies".

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::ServerName;
pub use smtp_wire::{Capabilities, Reply, Stage};
use smtp_wire::{ReadError, ReplyBuffer, Stream};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Writes are gathered up to this size (a message larger than it goes out directly).
const WRITE_BUF: usize = 64 * 1024;

#[derive(Debug)]
pub enum ClientError {
    /// TCP connect failed (refused, unreachable, ...).
    Connect(std::io::Error),
    Io(std::io::Error),
    Timeout,
    /// The server closed the connection.
    Closed,
    /// The server sent something that is not an SMTP reply.
    Protocol(String),
    /// A negative reply during session set-up (greeting, EHLO, STARTTLS, AUTH).
    Refused {
        stage: Stage,
        reply: Reply,
    },
    Tls(std::io::Error),
}

impl ClientError {
    /// Short name for counting.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Io(_) => "io",
            Self::Timeout => "timeout",
            Self::Closed => "closed",
            Self::Protocol(_) => "protocol",
            Self::Refused { .. } => "refused",
            Self::Tls(_) => "tls",
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "connect: {e}"),
            Self::Io(e) => write!(f, "i/o: {e}"),
            Self::Timeout => f.write_str("timed out"),
            Self::Closed => f.write_str("connection closed by server"),
            Self::Protocol(m) => write!(f, "protocol error: {m}"),
            Self::Refused { stage, reply } => write!(f, "{stage} refused: {reply}"),
            Self::Tls(e) => write!(f, "TLS handshake: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        if smtp_wire::is_disconnect(&e) {
            Self::Closed
        } else {
            Self::Io(e)
        }
    }
}

impl From<ReadError> for ClientError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Closed => Self::Closed,
            ReadError::Io(e) => Self::Io(e),
            ReadError::Reply(e) => Self::Protocol(e.to_string()),
        }
    }
}

/// Finds the queue id in a reply text ("Ok: queued as <id>", or "id=<id>" as Exim
/// says); empty when the reply names none.
pub fn queue_id(text: &[u8]) -> &[u8] {
    const MARKERS: [&[u8]; 2] = [b"queued as ", b"id="];
    for marker in MARKERS {
        let Some(pos) = text
            .windows(marker.len())
            .position(|w| w.eq_ignore_ascii_case(marker))
        else {
            continue;
        };
        let rest = text[pos + marker.len()..].trim_ascii_start();
        let rest = rest.strip_prefix(b"<").unwrap_or(rest);
        let end = rest
            .iter()
            .position(|&b| b.is_ascii_whitespace() || matches!(b, b'>' | b')' | b',' | b';'))
            .unwrap_or(rest.len());
        if end > 0 {
            return &rest[..end];
        }
    }
    &[]
}

pub struct SmtpClient {
    stream: Stream,
    replies: ReplyBuffer,
    wbuf: Vec<u8>,
    reply: Reply,
    timeout: Duration,
    caps: Capabilities,
}

impl SmtpClient {
    /// Connects over TCP (no greeting read yet).
    pub async fn connect(
        addr: SocketAddr,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(ClientError::Connect)?;
        tcp.set_nodelay(true)?;
        Ok(Self {
            stream: Stream::Plain(tcp),
            replies: ReplyBuffer::default(),
            wbuf: Vec::with_capacity(WRITE_BUF),
            reply: Reply::new(0, "", ""),
            timeout,
            caps: Capabilities::default(),
        })
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// The last reply read.
    pub fn reply(&self) -> &Reply {
        &self.reply
    }

    /// The queue id the last reply names (see [`queue_id`]).
    pub fn queue_id(&self) -> &[u8] {
        queue_id(self.reply.text.as_bytes())
    }

    /// Reads the next reply (see [`SmtpClient::reply`]) and returns its code.
    pub async fn read_reply(&mut self) -> Result<u16, ClientError> {
        let read = self.replies.read_from(&mut self.stream);
        self.reply = tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| ClientError::Timeout)??;
        Ok(self.reply.code)
    }

    /// Buffers `data` (writing out when the buffer fills).
    pub async fn write(&mut self, data: &[u8]) -> Result<(), ClientError> {
        if self.wbuf.len() + data.len() <= WRITE_BUF {
            self.wbuf.extend_from_slice(data);
            return Ok(());
        }
        self.flush().await?;
        if data.len() < WRITE_BUF {
            self.wbuf.extend_from_slice(data);
            return Ok(());
        }
        tokio::time::timeout(self.timeout, self.stream.write_all(data))
            .await
            .map_err(|_| ClientError::Timeout)??;
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), ClientError> {
        let Self { stream, wbuf, .. } = self;
        let written = tokio::time::timeout(self.timeout, async {
            stream.write_all(wbuf).await?;
            stream.flush().await
        })
        .await;
        wbuf.clear();
        written.map_err(|_| ClientError::Timeout)??;
        Ok(())
    }

    /// Writes `cmd`, flushes, reads the reply.
    pub async fn command(&mut self, cmd: &[u8]) -> Result<u16, ClientError> {
        self.write(cmd).await?;
        self.flush().await?;
        self.read_reply().await
    }

    fn refused(&self, stage: Stage) -> ClientError {
        ClientError::Refused {
            stage,
            reply: self.reply.clone(),
        }
    }

    /// Reads the 220 greeting.
    pub async fn greeting(&mut self) -> Result<(), ClientError> {
        if self.read_reply().await? != 220 {
            return Err(self.refused(Stage::Greeting));
        }
        Ok(())
    }

    /// EHLO; on success the capabilities are updated.
    pub async fn ehlo(&mut self, name: &str) -> Result<(), ClientError> {
        let cmd = format!("EHLO {name}\r\n");
        self.command(cmd.as_bytes()).await?;
        if !self.reply.is_positive() {
            return Err(self.refused(Stage::Ehlo));
        }
        self.caps = Capabilities::parse(&self.reply);
        Ok(())
    }

    /// STARTTLS and the TLS handshake; the caller must EHLO again afterwards.
    pub async fn starttls(
        mut self,
        connector: &TlsConnector,
        server_name: ServerName<'static>,
    ) -> Result<Self, ClientError> {
        if self.command(b"STARTTLS\r\n").await? != 220 {
            return Err(self.refused(Stage::StartTls));
        }
        if self.replies.has_unread() {
            return Err(ClientError::Protocol(
                "server sent data after its STARTTLS reply".into(),
            ));
        }
        let plain = self
            .stream
            .take_plain()
            .ok_or_else(|| ClientError::Protocol("STARTTLS under TLS".into()))?;
        let tls = tokio::time::timeout(self.timeout, connector.connect(server_name, plain))
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(ClientError::Tls)?;
        self.stream = Stream::from(tls);
        self.caps = Capabilities::default();
        Ok(self)
    }

    /// AUTH PLAIN with an initial response.
    pub async fn auth_plain(&mut self, user: &str, pass: &str) -> Result<(), ClientError> {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
        let cmd = format!("AUTH PLAIN {token}\r\n");
        if self.command(cmd.as_bytes()).await? != 235 {
            return Err(self.refused(Stage::Auth));
        }
        Ok(())
    }

    /// RSET; Ok(false) when the server refused it.
    pub async fn rset(&mut self) -> Result<bool, ClientError> {
        self.command(b"RSET\r\n").await?;
        Ok(self.reply.is_positive())
    }

    /// QUIT, ignoring errors (the connection is going away anyway).
    pub async fn quit(mut self) {
        self.timeout = self.timeout.min(Duration::from_secs(2));
        let _ = self.command(b"QUIT\r\n").await;
        let _ = self.stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ids() {
        assert_eq!(queue_id(b"Ok: queued as 4XyZ12"), b"4XyZ12");
        assert_eq!(queue_id(b"queued as <0190abcd-ef>"), b"0190abcd-ef");
        assert_eq!(queue_id(b"OK id=1uAbc-000123-Xy"), b"1uAbc-000123-Xy");
        assert_eq!(queue_id(b"Ok"), b"");
        assert_eq!(queue_id(b"queued as "), b"");
    }
}
