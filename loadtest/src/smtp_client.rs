//! A minimal async SMTP client: buffered I/O over plain TCP or TLS, a strict reply
//! reader (multi-line replies, length limits, garbage detection), EHLO capabilities,
//! STARTTLS and AUTH PLAIN. Commands are written into the buffer by the caller, so
//! pipelining is just "write several, flush once, read several replies".

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
    BufWriter,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Longest reply line accepted (RFC 5321 says 512; be lenient).
pub const MAX_LINE: u64 = 4096;
/// Most lines in one reply.
pub const MAX_REPLY_LINES: usize = 256;

const READ_BUF: usize = 8 * 1024;
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
        stage: &'static str,
        code: u16,
        text: String,
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
            Self::Refused { stage, code, text } => write!(f, "{stage} refused: {code} {text}"),
            Self::Tls(e) => write!(f, "TLS handshake: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// One SMTP reply: the code and the text of its lines joined by '\n'.
#[derive(Debug, Default, Clone)]
pub struct Reply {
    pub code: u16,
    pub text: Vec<u8>,
}

impl Reply {
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        self.text.split(|&b| b == b'\n')
    }

    pub fn text_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.text)
    }

    /// The queue id from "250 2.0.0 Ok: queued as <id>" (also "id=<id>", as Exim says);
    /// empty when the reply names none.
    pub fn queue_id(&self) -> &[u8] {
        queue_id(&self.text)
    }
}

/// Finds the queue id in a reply text, see [`Reply::queue_id`].
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

/// Parses one reply line (without line ending) into (code, is-last-line, text).
pub fn parse_reply_line(line: &[u8]) -> Result<(u16, bool, &[u8]), ClientError> {
    let bad = || {
        let shown: String = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
        ClientError::Protocol(format!("not an SMTP reply line: {shown:?}"))
    };
    if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    if !(b'2'..=b'5').contains(&line[0]) {
        return Err(bad());
    }
    let code = u16::from(line[0] - b'0') * 100
        + u16::from(line[1] - b'0') * 10
        + u16::from(line[2] - b'0');
    match line.get(3) {
        None => Ok((code, true, &[])),
        Some(b' ') => Ok((code, true, &line[4..])),
        Some(b'-') => Ok((code, false, &line[4..])),
        Some(_) => Err(bad()),
    }
}

/// Reads one complete (possibly multi-line) reply into `reply`; `line` is scratch.
pub async fn read_reply<R: AsyncBufRead + Unpin>(
    r: &mut R,
    line: &mut Vec<u8>,
    reply: &mut Reply,
) -> Result<u16, ClientError> {
    reply.code = 0;
    reply.text.clear();
    for n in 0..MAX_REPLY_LINES {
        line.clear();
        let read = (&mut *r).take(MAX_LINE).read_until(b'\n', line).await?;
        if read == 0 {
            return Err(ClientError::Closed);
        }
        if line.last() != Some(&b'\n') {
            return Err(if read as u64 >= MAX_LINE {
                ClientError::Protocol("reply line too long".into())
            } else {
                ClientError::Closed
            });
        }
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let (code, last, text) = parse_reply_line(line)?;
        if n == 0 {
            reply.code = code;
        } else if code != reply.code {
            return Err(ClientError::Protocol(format!(
                "multi-line reply changes code from {} to {code}",
                reply.code
            )));
        } else {
            reply.text.push(b'\n');
        }
        reply.text.extend_from_slice(text);
        if last {
            return Ok(code);
        }
    }
    Err(ClientError::Protocol("reply has too many lines".into()))
}

/// What the server said it supports in its EHLO reply.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pub pipelining: bool,
    pub chunking: bool,
    pub starttls: bool,
    pub auth_plain: bool,
    pub eight_bit_mime: bool,
    pub enhanced_status_codes: bool,
    pub smtputf8: bool,
    pub size: Option<u64>,
}

impl Capabilities {
    pub fn parse(reply: &Reply) -> Self {
        let mut caps = Self::default();
        for line in reply.lines().skip(1) {
            let line = String::from_utf8_lossy(line);
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "CHUNKING" => caps.chunking = true,
                "STARTTLS" => caps.starttls = true,
                "8BITMIME" => caps.eight_bit_mime = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "SIZE" => caps.size = words.next().and_then(|s| s.parse().ok()),
                "AUTH" => {
                    caps.auth_plain |= words.any(|m| m.eq_ignore_ascii_case("PLAIN"));
                }
                _ => {}
            }
        }
        caps
    }
}

/// Anything the client can talk over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + ?Sized> Io for T {}

type Stream = BufReader<BufWriter<Box<dyn Io>>>;

pub struct SmtpClient {
    io: Stream,
    line: Vec<u8>,
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
        Ok(Self::from_stream(Box::new(tcp), timeout))
    }

    pub fn from_stream(io: Box<dyn Io>, timeout: Duration) -> Self {
        Self {
            io: wrap(io),
            line: Vec::with_capacity(512),
            reply: Reply::default(),
            timeout,
            caps: Capabilities::default(),
        }
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// The last reply read.
    pub fn reply(&self) -> &Reply {
        &self.reply
    }

    pub async fn read_reply(&mut self) -> Result<u16, ClientError> {
        tokio::time::timeout(
            self.timeout,
            read_reply(&mut self.io, &mut self.line, &mut self.reply),
        )
        .await
        .map_err(|_| ClientError::Timeout)?
    }

    /// Buffers `data` (writing out when the buffer fills).
    pub async fn write(&mut self, data: &[u8]) -> Result<(), ClientError> {
        tokio::time::timeout(self.timeout, self.io.write_all(data))
            .await
            .map_err(|_| ClientError::Timeout)??;
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), ClientError> {
        tokio::time::timeout(self.timeout, self.io.flush())
            .await
            .map_err(|_| ClientError::Timeout)??;
        Ok(())
    }

    /// Writes `cmd`, flushes, reads the reply.
    pub async fn command(&mut self, cmd: &[u8]) -> Result<u16, ClientError> {
        self.write(cmd).await?;
        self.flush().await?;
        self.read_reply().await
    }

    fn refused(&self, stage: &'static str) -> ClientError {
        ClientError::Refused {
            stage,
            code: self.reply.code,
            text: self.reply.text_lossy().into_owned(),
        }
    }

    /// Reads the 220 greeting.
    pub async fn greeting(&mut self) -> Result<(), ClientError> {
        if self.read_reply().await? != 220 {
            return Err(self.refused("greeting"));
        }
        Ok(())
    }

    /// EHLO; on success the capabilities are updated.
    pub async fn ehlo(&mut self, name: &str) -> Result<(), ClientError> {
        let cmd = format!("EHLO {name}\r\n");
        if !(200..300).contains(&self.command(cmd.as_bytes()).await?) {
            return Err(self.refused("EHLO"));
        }
        self.caps = Capabilities::parse(&self.reply);
        Ok(())
    }

    /// STARTTLS and the TLS handshake; the caller must EHLO again afterwards.
    pub async fn starttls(
        self,
        connector: &TlsConnector,
        server_name: ServerName<'static>,
    ) -> Result<Self, ClientError> {
        let mut this = self;
        if this.command(b"STARTTLS\r\n").await? != 220 {
            return Err(this.refused("STARTTLS"));
        }
        if !this.io.buffer().is_empty() || !this.io.get_ref().buffer().is_empty() {
            return Err(ClientError::Protocol(
                "server sent data after its STARTTLS reply".into(),
            ));
        }
        let Self {
            io, line, timeout, ..
        } = this;
        let plain = io.into_inner().into_inner();
        let tls = tokio::time::timeout(timeout, connector.connect(server_name, plain))
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(ClientError::Tls)?;
        Ok(Self {
            io: wrap(Box::new(tls)),
            line,
            reply: Reply::default(),
            timeout,
            caps: Capabilities::default(),
        })
    }

    /// AUTH PLAIN with an initial response.
    pub async fn auth_plain(&mut self, user: &str, pass: &str) -> Result<(), ClientError> {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
        let cmd = format!("AUTH PLAIN {token}\r\n");
        if self.command(cmd.as_bytes()).await? != 235 {
            return Err(self.refused("AUTH"));
        }
        Ok(())
    }

    /// RSET; Ok(false) when the server refused it.
    pub async fn rset(&mut self) -> Result<bool, ClientError> {
        Ok((200..300).contains(&self.command(b"RSET\r\n").await?))
    }

    /// QUIT, ignoring errors (the connection is going away anyway).
    pub async fn quit(mut self) {
        self.timeout = self.timeout.min(Duration::from_secs(2));
        let _ = self.command(b"QUIT\r\n").await;
        let _ = self.io.shutdown().await;
    }
}

fn wrap(io: Box<dyn Io>) -> Stream {
    BufReader::with_capacity(READ_BUF, BufWriter::with_capacity(WRITE_BUF, io))
}

/// A TLS client config that accepts any server certificate (test servers use
/// self-signed ones) but still checks handshake signatures; ring only.
pub fn insecure_tls_config() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse_all(input: &[u8]) -> Vec<Result<(u16, String), String>> {
        let mut r = input;
        let mut line = Vec::new();
        let mut reply = Reply::default();
        let mut out = Vec::new();
        loop {
            match read_reply(&mut r, &mut line, &mut reply).await {
                Ok(code) => out.push(Ok((code, reply.text_lossy().into_owned()))),
                Err(ClientError::Closed) => return out,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }

    #[tokio::test]
    async fn single_and_multi_line_replies() {
        let got = parse_all(
            b"220 mx.test ESMTP\r\n250-mx.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n354\r\n250 ok\n",
        )
        .await;
        assert_eq!(
            got,
            vec![
                Ok((220, "mx.test ESMTP".into())),
                Ok((250, "mx.test\nPIPELINING\nCHUNKING".into())),
                Ok((354, String::new())),
                Ok((250, "ok".into())),
            ]
        );
    }

    #[tokio::test]
    async fn garbage_is_a_protocol_error() {
        for input in [
            &b"hello there\r\n"[..],
            b"25\r\n",
            b"2x0 nope\r\n",
            b"250_underscore\r\n",
            b"650 bad class\r\n",
            b"250-first\r\n550 second\r\n",
            b"\r\n",
        ] {
            let got = parse_all(input).await;
            assert!(
                matches!(got.last(), Some(Err(e)) if e.starts_with("protocol error")),
                "{:?} -> {got:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[tokio::test]
    async fn truncated_and_oversized() {
        // connection closed in the middle of a line or a multi-line reply
        assert_eq!(parse_all(b"250 o").await, vec![]);
        assert_eq!(parse_all(b"250-one\r\n").await, vec![]);
        let mut long = b"250 ".to_vec();
        long.resize(MAX_LINE as usize * 2, b'x');
        long.extend_from_slice(b"\r\n");
        let got = parse_all(&long).await;
        assert!(
            matches!(&got[..], [Err(e)] if e.contains("too long")),
            "{got:?}"
        );
    }

    #[test]
    fn ehlo_capabilities() {
        let reply = Reply {
            code: 250,
            text: b"mx.test Hello\nPIPELINING\nsize 10240000\nAUTH LOGIN PLAIN\nSTARTTLS\nchunking\n8BITMIME"
                .to_vec(),
        };
        let caps = Capabilities::parse(&reply);
        assert_eq!(
            caps,
            Capabilities {
                pipelining: true,
                chunking: true,
                starttls: true,
                auth_plain: true,
                eight_bit_mime: true,
                enhanced_status_codes: false,
                smtputf8: false,
                size: Some(10_240_000),
            }
        );
        // the greeting line is not a capability
        let reply = Reply {
            code: 250,
            text: b"PIPELINING".to_vec(),
        };
        assert!(!Capabilities::parse(&reply).pipelining);
    }

    #[test]
    fn queue_ids() {
        assert_eq!(queue_id(b"2.0.0 Ok: queued as 4XyZ12"), b"4XyZ12");
        assert_eq!(queue_id(b"2.0.0 queued as <0190abcd-ef>"), b"0190abcd-ef");
        assert_eq!(queue_id(b"OK id=1uAbc-000123-Xy"), b"1uAbc-000123-Xy");
        assert_eq!(queue_id(b"Ok"), b"");
        assert_eq!(queue_id(b"queued as "), b"");
    }
}
