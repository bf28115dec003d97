//! The outbound SMTP client: one [`Connection`] to one host, carrying any number of
//! transactions ([`Connection::send`]).
//!
//! - Commands are pipelined (RFC 2920) when the server offers PIPELINING: MAIL, every
//!   RCPT and DATA go out in one write, then the replies are read in order. Otherwise
//!   one command at a time.
//! - Every reply is kept whole ([`Reply`]: code, enhanced code, text), one per
//!   recipient; a recipient we refused to send ourselves gets a [`Response::Local`]. A recipient is delivered only if its RCPT got 2xx *and* the reply after
//!   the data is 2xx.
//! - `Ok` from [`Connection::send`] means the session is clean and can carry the next
//!   transaction (RSET was sent after a transaction that did not reach its data).
//!   `Err` means the session is dead and no recipient of that transaction may be
//!   counted as delivered; every later call on it returns [`ClientError::Unusable`].
//! - Every read and write has a timeout; replies are bounded ([`MAX_LINE`] bytes per
//!   line, [`smtp_wire::MAX_LINES`] lines), so a broken or hostile server gets a
//!   [`ClientError::Protocol`] or [`ClientError::Timeout`], never a hang.
//! - STARTTLS per [`TlsPolicy`]; the data is dot-stuffed while it is written, a block
//!   at a time, so a message is never copied whole.

mod data;
mod tls;
mod wire;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use postroad_queue::{Envelope, Recipient};
use serde::{Deserialize, Serialize};
use smtp_wire::Stream;
pub use smtp_wire::{Capabilities, EnhancedCode, MAX_LINE, Reply, Response, Stage};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use wire::Wire;

/// Data is written in blocks of this size (one write call each).
const WRITE_BLOCK: usize = 64 * 1024;
/// Longest wait for each step of QUIT (it is a courtesy).
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// When to use STARTTLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsPolicy {
    /// Never.
    None,
    /// When the server offers it; any certificate is accepted (encryption without
    /// authentication, Postfix's `may`). A server that rejects STARTTLS gets plain text.
    #[default]
    Opportunistic,
    /// Always; the certificate is not checked (Postfix's `encrypt`).
    Required,
    /// Always, with a certificate chain valid for the MX host name (Postfix's `verify`).
    #[serde(rename = "verify")]
    RequiredVerify,
}

impl fmt::Display for TlsPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsPolicy::None => "none",
            TlsPolicy::Opportunistic => "opportunistic",
            TlsPolicy::Required => "required",
            TlsPolicy::RequiredVerify => "verify",
        })
    }
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Our name in EHLO/HELO.
    pub helo_name: String,
    pub tls: TlsPolicy,
    /// TCP connect.
    pub connect_timeout: Duration,
    /// Each command reply: greeting, EHLO, STARTTLS (and the TLS handshake), MAIL,
    /// RCPT, DATA, RSET (RFC 5321 4.5.3.2: 5 minutes), and writing the commands.
    pub command_timeout: Duration,
    /// Each block of message data written, and the reply after the final `.`
    /// (RFC 5321 4.5.3.2: 10 minutes for that reply).
    pub data_timeout: Duration,
    /// Trust anchors for [`TlsPolicy::RequiredVerify`].
    pub tls_roots: Arc<rustls::RootCertStore>,
}

impl ClientConfig {
    /// RFC 5321's timeouts, opportunistic TLS, no trust anchors.
    pub fn new(helo_name: impl Into<String>) -> Self {
        Self {
            helo_name: helo_name.into(),
            tls: TlsPolicy::Opportunistic,
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            tls_roots: Arc::new(rustls::RootCertStore::empty()),
        }
    }
}

/// The replies of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionResult {
    /// The MAIL reply (or the local reason the transaction was not attempted).
    pub mail: Response,
    /// One per recipient given, in the same order: its RCPT reply, or the MAIL reply
    /// when MAIL failed, or a local reason.
    pub recipients: Vec<Response>,
    /// The reply that ended the data phase: the reply after the final `.`, or the
    /// server's refusal of the DATA command itself. `None` when MAIL failed or no
    /// RCPT was accepted.
    pub data: Option<Reply>,
}

impl TransactionResult {
    /// Whether recipient `i` was delivered: RCPT 2xx and data 2xx.
    pub fn is_delivered(&self, i: usize) -> bool {
        matches!(self.recipients.get(i), Some(Response::Remote(r)) if r.is_positive())
            && self.data.as_ref().is_some_and(Reply::is_positive)
    }

    /// A transaction not attempted: `reason` for MAIL and every recipient.
    fn refused(reason: Response, recipients: usize) -> Self {
        Self {
            recipients: vec![reason.clone(); recipients],
            mail: reason,
            data: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    #[error("timed out waiting for {0}")]
    Timeout(Stage),
    #[error("connection closed by the server during {0}")]
    Closed(Stage),
    #[error("I/O error: {0}")]
    Io(io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("TLS is required but the server does not offer STARTTLS")]
    TlsRequired,
    #[error("greeting: {0}")]
    Greeting(Reply),
    #[error("EHLO/HELO rejected: {0}")]
    Ehlo(Reply),
    /// A reply that ends the session: 421 to any command, or a refused STARTTLS (when
    /// TLS is required) or RSET.
    #[error("{stage} answered: {reply}")]
    Rejected { stage: Stage, reply: Reply },
    #[error("the connection failed earlier and cannot be used")]
    Unusable,
}

impl ClientError {
    /// The server's reply that caused the error, if there is one.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            ClientError::Greeting(r)
            | ClientError::Ehlo(r)
            | ClientError::Rejected { reply: r, .. } => Some(r),
            _ => None,
        }
    }

    /// Whether the host refuses us for good (a 5xx greeting or EHLO+HELO). Everything
    /// else (connection, timeouts, TLS, protocol errors, 4xx) is worth another try.
    pub fn is_permanent(&self) -> bool {
        match self {
            ClientError::Greeting(r) | ClientError::Ehlo(r) => r.is_permanent(),
            _ => false,
        }
    }

    /// The error as what decided the attempt: the server's reply when it gave one,
    /// else a local reason with an RFC 3463 status: `4.4.1` no answer, `4.4.2`
    /// connection lost, `4.5.0` protocol, `4.7.4` TLS required, `4.7.5` TLS failed.
    pub fn response(&self) -> Response {
        if let Some(reply) = self.reply() {
            return Response::Remote(reply.clone());
        }
        let status = match self {
            ClientError::Connect(_) | ClientError::Timeout(Stage::Connect) => "4.4.1",
            ClientError::Protocol(_) => "4.5.0",
            ClientError::Tls(_) => "4.7.5",
            ClientError::TlsRequired => "4.7.4",
            _ => "4.4.2",
        };
        Response::local(EnhancedCode::from_static(status), self.to_string())
    }

    /// The server closed a reused session before answering MAIL: nothing of the
    /// transaction was accepted, so it can be retried at once on a new connection.
    pub fn is_stale_connection(&self) -> bool {
        matches!(self, ClientError::Closed(Stage::Mail))
    }
}

/// An established session: greeted, EHLO'd (or HELO'd), and under TLS if the policy
/// and the server agreed.
pub struct Connection {
    wire: Wire,
    peer: SocketAddr,
    greeting: String,
    ext: Capabilities,
    tls: bool,
    usable: bool,
    command_timeout: Duration,
    data_timeout: Duration,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .field("tls", &self.tls)
            .field("usable", &self.usable)
            .field("extensions", &self.ext)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects to `addr`, reads the greeting, says EHLO (HELO if EHLO gets 5xx), and
    /// does STARTTLS as `config.tls` says (then EHLO again). `server_name` is the MX
    /// host name, for SNI and for certificate verification.
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        config: &ClientConfig,
    ) -> Result<Connection, ClientError> {
        let tcp = match tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr)).await
        {
            Err(_) => return Err(ClientError::Timeout(Stage::Connect)),
            Ok(Err(e)) => return Err(ClientError::Connect(e)),
            Ok(Ok(tcp)) => tcp,
        };
        // Commands are written a group at a time; nothing gains from Nagle.
        let _ = tcp.set_nodelay(true);
        let mut conn = Connection {
            wire: Wire::new(Stream::Plain(tcp)),
            peer: addr,
            greeting: String::new(),
            ext: Capabilities::default(),
            tls: false,
            usable: true,
            command_timeout: config.command_timeout,
            data_timeout: config.data_timeout,
        };
        match conn.open(server_name, config).await {
            Ok(()) => Ok(conn),
            Err(e) => {
                // Still in step with the server: say goodbye (RFC 5321 3.1, 3.8).
                if matches!(
                    e,
                    ClientError::Greeting(_) | ClientError::Ehlo(_) | ClientError::TlsRequired
                ) {
                    conn.quit().await;
                }
                Err(e)
            }
        }
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    pub fn extensions(&self) -> &Capabilities {
        &self.ext
    }

    /// The greeting's text (after the code), lines joined with `\n`.
    pub fn greeting(&self) -> &str {
        &self.greeting
    }

    /// False once an error has broken the session.
    pub fn is_usable(&self) -> bool {
        self.usable
    }

    async fn open(&mut self, server_name: &str, config: &ClientConfig) -> Result<(), ClientError> {
        let greeting = self
            .wire
            .read_reply(Stage::Greeting, self.command_timeout)
            .await?;
        if !greeting.is_positive() {
            return Err(ClientError::Greeting(greeting));
        }
        self.greeting = greeting.text.into_owned();
        self.hello(&config.helo_name).await?;
        match config.tls {
            TlsPolicy::None => Ok(()),
            TlsPolicy::Opportunistic if !self.ext.starttls => Ok(()),
            TlsPolicy::Required | TlsPolicy::RequiredVerify if !self.ext.starttls => {
                Err(ClientError::TlsRequired)
            }
            policy => self.starttls(server_name, policy, config).await,
        }
    }

    /// EHLO, or HELO when EHLO gets a 5xx (the server does not know ESMTP).
    async fn hello(&mut self, helo_name: &str) -> Result<(), ClientError> {
        let name =
            if helo_name.is_empty() || !data::is_safe_path(helo_name) || helo_name.contains(' ') {
                "localhost"
            } else {
                helo_name
            };
        self.command(&format!("EHLO {name}"), Stage::Ehlo).await?;
        let ehlo = self.reply(Stage::Ehlo, self.command_timeout).await?;
        if ehlo.is_positive() {
            self.ext = Capabilities::parse(&ehlo);
            return Ok(());
        }
        if !ehlo.is_permanent() {
            return Err(ClientError::Ehlo(ehlo));
        }
        self.command(&format!("HELO {name}"), Stage::Ehlo).await?;
        let helo = self.reply(Stage::Ehlo, self.command_timeout).await?;
        if !helo.is_positive() {
            return Err(ClientError::Ehlo(helo));
        }
        self.ext = Capabilities::default();
        Ok(())
    }

    async fn starttls(
        &mut self,
        server_name: &str,
        policy: TlsPolicy,
        config: &ClientConfig,
    ) -> Result<(), ClientError> {
        self.command("STARTTLS", Stage::StartTls).await?;
        let reply = self.reply(Stage::StartTls, self.command_timeout).await?;
        if !reply.is_positive() {
            return match policy {
                // Encryption was only a wish: carry on in plain text.
                TlsPolicy::Opportunistic => Ok(()),
                _ => Err(ClientError::Rejected {
                    stage: Stage::StartTls,
                    reply,
                }),
            };
        }
        // Anything the server sent after its 220 was sent in the clear and would be
        // taken as coming from the TLS session (CVE-2011-0411 in reverse).
        if self.wire.has_unread_input() {
            return Err(ClientError::Protocol(
                "data after the STARTTLS reply".into(),
            ));
        }
        let verify = policy == TlsPolicy::RequiredVerify;
        let tls_config = if verify {
            tls::verifying(&config.tls_roots).map_err(ClientError::Tls)?
        } else {
            smtp_wire::tls::unverified_client()
        };
        let name =
            tls::server_name(server_name, self.peer.ip(), verify).map_err(ClientError::Tls)?;
        let Some(tcp) = self.wire.stream.take_plain() else {
            return Err(ClientError::Protocol(
                "STARTTLS on a session already under TLS".into(),
            ));
        };
        let connector = tokio_rustls::TlsConnector::from(tls_config);
        match tokio::time::timeout(self.command_timeout, connector.connect(name, tcp)).await {
            Ok(Ok(stream)) => self.wire.stream = Stream::from(stream),
            Ok(Err(e)) => return Err(ClientError::Tls(e.to_string())),
            Err(_) => return Err(ClientError::Tls("handshake timed out".into())),
        }
        self.tls = true;
        // RFC 3207 4.2: forget everything learned before TLS.
        self.ext = Capabilities::default();
        self.hello(&config.helo_name).await
    }

    /// One transaction: MAIL, RCPT for each of `recipients`, DATA and `body`.
    ///
    /// Not attempted (a synthesized permanent reply for MAIL and every recipient) when
    /// the body is bigger than the server's SIZE (`552 5.3.4`), the message is 8-bit and
    /// the server lacks 8BITMIME (`554 5.6.3`), or it needs SMTPUTF8 and the server
    /// lacks it (`553 5.6.7`). A recipient address with control characters gets
    /// `553 5.1.3` and is not sent.
    pub async fn send(
        &mut self,
        envelope: &Envelope,
        sender: &str,
        recipients: &[&Recipient],
        body: &[u8],
    ) -> Result<TransactionResult, ClientError> {
        if !self.usable {
            return Err(ClientError::Unusable);
        }
        let result = self.transaction(envelope, sender, recipients, body).await;
        self.usable = result.is_ok();
        result
    }

    /// RSET.
    pub async fn reset(&mut self) -> Result<(), ClientError> {
        if !self.usable {
            return Err(ClientError::Unusable);
        }
        let result = self.rset().await;
        self.usable = result.is_ok();
        result
    }

    /// QUIT and close, best effort, waiting at most a few seconds.
    pub async fn quit(mut self) {
        if self.usable {
            let limit = self.command_timeout.min(QUIT_TIMEOUT);
            self.wire.wbuf.extend_from_slice(b"QUIT\r\n");
            if self.wire.flush(Stage::Quit, limit).await.is_ok() {
                let _ = self.wire.read_reply(Stage::Quit, limit).await;
            }
        }
        let _ = tokio::time::timeout(QUIT_TIMEOUT, self.wire.stream.shutdown()).await;
    }

    /// Why the transaction cannot be sent to this server at all, if it cannot.
    fn refusal(&self, envelope: &Envelope, sender: &str, body: &[u8]) -> Option<Response> {
        let (status, text) = if self
            .ext
            .size_limit()
            .is_some_and(|limit| body.len() as u64 > limit)
        {
            ("5.3.4", "message too big for the remote server")
        } else if envelope.body_8bit && !self.ext.eight_bit_mime {
            ("5.6.3", "remote server lacks 8BITMIME")
        } else if envelope.smtputf8 && !self.ext.smtputf8 {
            ("5.6.7", "remote server lacks SMTPUTF8")
        } else if !data::is_safe_path(sender) {
            ("5.1.7", "sender address contains control characters")
        } else {
            return None;
        };
        Some(Response::local(EnhancedCode::from_static(status), text))
    }

    async fn transaction(
        &mut self,
        envelope: &Envelope,
        sender: &str,
        recipients: &[&Recipient],
        body: &[u8],
    ) -> Result<TransactionResult, ClientError> {
        if let Some(reply) = self.refusal(envelope, sender, body) {
            return Ok(TransactionResult::refused(reply, recipients.len()));
        }
        let mut replies: Vec<Option<Response>> = recipients
            .iter()
            .map(|r| {
                (!data::is_safe_path(&r.address)).then(|| {
                    Response::local(
                        EnhancedCode::new(5, 1, 3),
                        "recipient address contains control characters",
                    )
                })
            })
            .collect();
        let sent: Vec<usize> = (0..recipients.len())
            .filter(|&i| replies[i].is_none())
            .collect();
        if sent.is_empty() {
            let none = Response::local(EnhancedCode::new(5, 5, 1), "no valid recipients");
            return Ok(finish(none.clone(), replies, &none, None));
        }

        data::mail_from(&mut self.wire.wbuf, sender, envelope, body.len(), &self.ext);
        let mut accepted = 0usize;
        if self.ext.pipelining {
            for &i in &sent {
                data::rcpt_to(&mut self.wire.wbuf, recipients[i], &self.ext);
            }
            self.wire.wbuf.extend_from_slice(b"DATA\r\n");
            self.wire.flush(Stage::Mail, self.command_timeout).await?;
            let mail = Response::from(self.reply(Stage::Mail, self.command_timeout).await?);
            let mail_ok = matches!(&mail, Response::Remote(r) if r.is_positive());
            for &i in &sent {
                let rcpt = self.reply(Stage::Rcpt, self.command_timeout).await?;
                if mail_ok {
                    accepted += usize::from(rcpt.is_positive());
                    replies[i] = Some(rcpt.into());
                }
            }
            let data = self.reply(Stage::Data, self.command_timeout).await?;
            if accepted > 0 && data.is_intermediate() {
                let last = self.send_data(body).await?;
                return Ok(finish(mail.clone(), replies, &mail, Some(last)));
            }
            if data.is_intermediate() {
                // No recipient, yet the server wants the data: send an empty message,
                // which it cannot deliver to anyone.
                self.wire.wbuf.extend_from_slice(b".\r\n");
                self.wire.flush(Stage::Dot, self.command_timeout).await?;
                self.reply(Stage::Dot, self.data_timeout).await?;
            }
            self.rset().await?;
            let data = (accepted > 0).then_some(data);
            Ok(finish(mail.clone(), replies, &mail, data))
        } else {
            self.wire.flush(Stage::Mail, self.command_timeout).await?;
            let reply = self.reply(Stage::Mail, self.command_timeout).await?;
            let mail_ok = reply.is_positive();
            let mail = Response::from(reply);
            if !mail_ok {
                return Ok(finish(mail.clone(), replies, &mail, None));
            }
            for &i in &sent {
                data::rcpt_to(&mut self.wire.wbuf, recipients[i], &self.ext);
                self.wire.flush(Stage::Rcpt, self.command_timeout).await?;
                let rcpt = self.reply(Stage::Rcpt, self.command_timeout).await?;
                accepted += usize::from(rcpt.is_positive());
                replies[i] = Some(rcpt.into());
            }
            if accepted == 0 {
                self.rset().await?;
                return Ok(finish(mail.clone(), replies, &mail, None));
            }
            self.command("DATA", Stage::Data).await?;
            let data = self.reply(Stage::Data, self.command_timeout).await?;
            let data = if data.is_intermediate() {
                self.send_data(body).await?
            } else {
                self.rset().await?;
                data
            };
            Ok(finish(mail.clone(), replies, &mail, Some(data)))
        }
    }

    /// Writes the message data a block at a time and reads the reply after the `.`.
    async fn send_data(&mut self, body: &[u8]) -> Result<Reply, ClientError> {
        let mut encoder = data::DataEncoder::new(body);
        loop {
            let done = encoder.fill(&mut self.wire.wbuf, WRITE_BLOCK);
            self.wire.flush(Stage::Dot, self.data_timeout).await?;
            if done {
                break;
            }
        }
        self.reply(Stage::Dot, self.data_timeout).await
    }

    async fn rset(&mut self) -> Result<(), ClientError> {
        self.command("RSET", Stage::Rset).await?;
        let reply = self.reply(Stage::Rset, self.command_timeout).await?;
        if !reply.is_positive() {
            return Err(ClientError::Rejected {
                stage: Stage::Rset,
                reply,
            });
        }
        Ok(())
    }

    /// Writes one command line.
    async fn command(&mut self, line: &str, stage: Stage) -> Result<(), ClientError> {
        self.wire.wbuf.extend_from_slice(line.as_bytes());
        self.wire.wbuf.extend_from_slice(b"\r\n");
        self.wire.flush(stage, self.command_timeout).await
    }

    /// Reads the reply to `command`. 421 (the server is closing) is an error, and so are
    /// a 3xx to anything but DATA and a 2xx to DATA (out of step with the server).
    async fn reply(&mut self, stage: Stage, limit: Duration) -> Result<Reply, ClientError> {
        let reply = self.wire.read_reply(stage, limit).await?;
        if reply.code == 421 {
            return Err(ClientError::Rejected { stage, reply });
        }
        if reply.is_intermediate() && stage != Stage::Data {
            return Err(ClientError::Protocol(format!(
                "unexpected reply to {stage}: {reply}"
            )));
        }
        if reply.is_positive() && stage == Stage::Data {
            return Err(ClientError::Protocol(format!(
                "DATA answered {reply} instead of 354"
            )));
        }
        Ok(reply)
    }
}

/// The result: recipients not given a reply (not sent) get `fallback`.
fn finish(
    mail: Response,
    replies: Vec<Option<Response>>,
    fallback: &Response,
    data: Option<Reply>,
) -> TransactionResult {
    TransactionResult {
        mail,
        recipients: replies
            .into_iter()
            .map(|r| r.unwrap_or_else(|| fallback.clone()))
            .collect(),
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_policy_names() {
        #[derive(Deserialize, Serialize)]
        struct T {
            tls: TlsPolicy,
        }
        for (name, policy) in [
            ("none", TlsPolicy::None),
            ("opportunistic", TlsPolicy::Opportunistic),
            ("required", TlsPolicy::Required),
            ("verify", TlsPolicy::RequiredVerify),
        ] {
            let t: T = toml::from_str(&format!("tls = {name:?}")).unwrap();
            assert_eq!(t.tls, policy);
            assert_eq!(policy.to_string(), name);
        }
        assert!(toml::from_str::<T>("tls = \"RequiredVerify\"").is_err());
    }

    #[test]
    fn error_classes() {
        let r = |code| Reply::owned(code, None, "x");
        assert!(ClientError::Greeting(r(554)).is_permanent());
        assert!(!ClientError::Greeting(r(421)).is_permanent());
        assert!(ClientError::Ehlo(r(550)).is_permanent());
        assert!(!ClientError::TlsRequired.is_permanent());
        assert!(!ClientError::Timeout(Stage::Mail).is_permanent());
        assert_eq!(
            ClientError::TlsRequired.response().enhanced(),
            Some(EnhancedCode::new(4, 7, 4))
        );
        assert_eq!(ClientError::TlsRequired.response().code(), None);
        assert_eq!(
            ClientError::Timeout(Stage::Connect).response().enhanced(),
            Some(EnhancedCode::new(4, 4, 1))
        );
        assert_eq!(
            ClientError::Greeting(r(554)).response(),
            Response::Remote(r(554))
        );
        assert!(ClientError::Closed(Stage::Mail).is_stale_connection());
        assert!(!ClientError::Closed(Stage::Dot).is_stale_connection());
        assert_eq!(ClientError::Greeting(r(554)).reply(), Some(&r(554)));
    }
}
