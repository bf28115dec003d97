//! One SMTP session: the RFC 5321 state machine with ESMTP extensions, relay policy,
//! AUTH and limits. Every input gets a reply; nothing a client sends can panic it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use postroad_queue::{
    DeliveryEvent, DsnRet, Envelope, EventKind, MessageId, Notify, QueueError, Recipient, unix_ms,
};
use smtp_proto::request::receiver::{BdatReceiver, DataReceiver, DummyDataReceiver};
use smtp_proto::{MailFrom, RcptTo, Request};

use super::command::{self, printable};
use super::conn::{Conn, Interrupt, Line};
use super::received::Trace;
use super::reply::{self, Reply};
use super::server::{Admission, Shared};
use crate::config::{ListenerConfig, Role, TlsMode};

/// Why a session ended early; the reply (if any) has been queued already.
#[derive(Debug)]
pub enum End {
    Quit,
    Interrupted(Interrupt),
    Limit,
}

impl From<Interrupt> for End {
    fn from(i: Interrupt) -> Self {
        End::Interrupted(i)
    }
}

type Flow = Result<(), End>;

struct Transaction {
    sender: String,
    body_8bit: bool,
    smtputf8: bool,
    dsn_ret: Option<DsnRet>,
    dsn_envid: Option<String>,
    recipients: Vec<Recipient>,
    /// A BDAT transfer in progress.
    chunks: Option<Chunks>,
}

/// The message being assembled from BDAT chunks.
struct Chunks {
    id: MessageId,
    message: Vec<u8>,
    header_len: usize,
    too_big: bool,
}

pub struct Session {
    shared: Arc<Shared>,
    listener: Arc<ListenerConfig>,
    conn: Conn,
    peer: SocketAddr,
    helo: Option<String>,
    esmtp: bool,
    auth_identity: Option<String>,
    tx: Option<Transaction>,
    errors: u32,
    commands_without_mail: u32,
}

impl Session {
    pub fn new(
        shared: Arc<Shared>,
        listener: Arc<ListenerConfig>,
        conn: Conn,
        peer: SocketAddr,
    ) -> Self {
        Self {
            shared,
            listener,
            conn,
            peer,
            helo: None,
            esmtp: false,
            auth_identity: None,
            tx: None,
            errors: 0,
            commands_without_mail: 0,
        }
    }

    /// Serves the client until it quits, fails or is timed out. The connection-limit
    /// places in `admission` are given back before the connection is closed, so a client
    /// that has seen the close can reconnect at once.
    pub async fn run(mut self, admission: Admission) {
        let started = Instant::now();
        let end = self.serve().await;
        drop(admission);
        self.conn.close().await;
        tracing::debug!(peer = %self.peer, listener = %self.listener.name, ?end, elapsed = ?started.elapsed(), "session ended");
    }

    async fn serve(&mut self) -> Flow {
        if self.listener.tls == TlsMode::Implicit {
            let Some(acceptor) = self.shared.tls.clone() else {
                return Err(End::Limit);
            };
            if let Err(e) = self
                .conn
                .start_tls(&acceptor, self.limits_tls_timeout())
                .await
            {
                tracing::debug!(peer = %self.peer, "implicit TLS handshake failed: {e}");
                return Err(End::Interrupted(Interrupt::Closed));
            }
        }
        let greeting = Reply::owned(220, "", format!("{} ESMTP Postroad", self.shared.hostname));
        self.send(&greeting);
        loop {
            let idle = Duration::from_secs(self.shared.smtp.idle_timeout_secs);
            let line = match self
                .conn
                .read_line(self.shared.smtp.max_line_length, idle, true)
                .await
            {
                Ok(Line::Complete(line)) => line,
                Ok(Line::TooLong) => {
                    self.refuse(reply::LINE_TOO_LONG)?;
                    continue;
                }
                Err(interrupt) => return Err(self.interrupted(interrupt)),
            };
            self.command(&line).await?;
        }
    }

    fn interrupted(&mut self, interrupt: Interrupt) -> End {
        match interrupt {
            Interrupt::Timeout => self.send(&reply::TIMEOUT),
            Interrupt::Shutdown => self.send(&reply::SHUTTING_DOWN),
            Interrupt::Closed => {}
        }
        End::Interrupted(interrupt)
    }

    fn send(&mut self, reply: &Reply) {
        reply.write_to(self.conn.output());
    }

    /// Sends an error reply and counts it against `max_errors`.
    fn refuse(&mut self, reply: Reply) -> Flow {
        self.send(&reply);
        self.errors += 1;
        if self.errors >= self.shared.smtp.max_errors {
            self.send(&reply::TOO_MANY_ERRORS);
            tracing::info!(peer = %self.peer, "too many errors, disconnecting");
            return Err(End::Limit);
        }
        Ok(())
    }

    fn answer(&mut self, result: Result<Reply, Reply>) -> Flow {
        match result {
            Ok(reply) => {
                self.send(&reply);
                Ok(())
            }
            Err(reply) => self.refuse(reply),
        }
    }

    fn limits_tls_timeout(&self) -> Duration {
        Duration::from_secs(self.shared.smtp.tls_handshake_timeout_secs)
    }

    async fn command(&mut self, line: &[u8]) -> Flow {
        let request = match command::parse(line) {
            Ok(request) => request,
            Err(reply) => return self.refuse(reply),
        };
        match &request {
            Request::Mail { .. }
            | Request::Rcpt { .. }
            | Request::Data
            | Request::Bdat { .. }
            | Request::Quit => {}
            _ => {
                self.commands_without_mail += 1;
                if self.commands_without_mail > self.shared.smtp.max_commands_without_mail {
                    self.send(&reply::TOO_MANY_COMMANDS);
                    return Err(End::Limit);
                }
            }
        }
        match request {
            Request::Ehlo { host } => {
                let r = self.hello(&host, true);
                self.answer(r)
            }
            Request::Helo { host } => {
                let r = self.hello(&host, false);
                self.answer(r)
            }
            Request::Mail { from } => {
                let r = self.mail(from);
                self.answer(r)
            }
            Request::Rcpt { to } => {
                let r = self.rcpt(to);
                self.answer(r)
            }
            Request::Data => self.data().await,
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(chunk_size, is_last).await,
            Request::Rset => {
                self.tx = None;
                self.answer(Ok(reply::OK))
            }
            Request::Noop { .. } => self.answer(Ok(reply::OK)),
            Request::Quit => {
                self.send(&reply::BYE);
                Err(End::Quit)
            }
            Request::Vrfy { .. } => self.refuse(reply::VRFY_DISABLED),
            Request::Help { .. } => self.answer(Ok(Reply::new(
                214,
                "2.0.0",
                "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT STARTTLS AUTH",
            ))),
            Request::StartTls => self.starttls().await,
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, &initial_response).await,
            Request::Lhlo { .. }
            | Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => self.refuse(reply::NOT_IMPLEMENTED),
        }
    }

    fn starttls_offered(&self) -> bool {
        self.listener.tls == TlsMode::Starttls && self.shared.tls.is_some() && !self.conn.is_tls()
    }

    fn auth_offered(&self) -> bool {
        self.conn.is_tls() && !self.shared.credentials.is_empty() && self.auth_identity.is_none()
    }

    fn hello(&mut self, host: &str, esmtp: bool) -> Result<Reply, Reply> {
        if host.is_empty() {
            return Err(Reply::new(501, "5.5.4", "Syntax: EHLO hostname"));
        }
        self.tx = None;
        self.helo = Some(printable(host));
        self.esmtp = esmtp;
        let hostname = &self.shared.hostname;
        if !esmtp {
            return Ok(Reply::owned(250, "", hostname.clone()));
        }
        let mut lines = vec![
            format!("{hostname} Hello {} [{}]", printable(host), self.peer.ip()),
            "PIPELINING".to_string(),
            format!("SIZE {}", self.shared.smtp.max_message_size),
            "8BITMIME".to_string(),
            "SMTPUTF8".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "CHUNKING".to_string(),
            "DSN".to_string(),
        ];
        if self.starttls_offered() {
            lines.push("STARTTLS".to_string());
        }
        if self.auth_offered() {
            lines.push("AUTH PLAIN LOGIN".to_string());
        }
        Ok(Reply::owned(250, "", lines.join("\n")))
    }
}

/// MAIL parameters Postroad does not advertise; a client that sends them gets `555`.
const UNADVERTISED_MAIL_FLAGS: u64 = smtp_proto::MAIL_BODY_BINARYMIME
    | smtp_proto::MAIL_REQUIRETLS
    | smtp_proto::MAIL_CONPERM
    | smtp_proto::MAIL_BY_NOTIFY
    | smtp_proto::MAIL_BY_RETURN
    | smtp_proto::MAIL_BY_TRACE;

impl Session {
    fn relay_allowed(&self) -> bool {
        if self.auth_identity.is_some() {
            return true;
        }
        let ip = self.peer.ip().to_canonical();
        self.listener.role == Role::Relay
            && self
                .shared
                .smtp
                .relay_networks
                .iter()
                .any(|net| net.contains(&ip))
    }

    fn mail(&mut self, from: MailFrom<std::borrow::Cow<'_, str>>) -> Result<Reply, Reply> {
        if self.helo.is_none() {
            return Err(reply::NEED_HELO);
        }
        if self.tx.is_some() {
            return Err(reply::NESTED_MAIL);
        }
        if self.listener.role == Role::Submission && self.auth_identity.is_none() {
            return Err(reply::AUTH_REQUIRED);
        }
        if from.flags & UNADVERTISED_MAIL_FLAGS != 0
            || from.hold_for != 0
            || from.hold_until != 0
            || from.mtrk.is_some()
            || from.trans_id.is_some()
            || from.solicit.is_some()
            || from.mt_priority != 0
            || from.by != 0
        {
            return Err(Reply::new(
                555,
                "5.5.4",
                "Error: unsupported MAIL parameter",
            ));
        }
        let smtputf8 = from.flags & smtp_proto::MAIL_SMTPUTF8 != 0;
        if !smtputf8 && !from.address.is_ascii() {
            return Err(reply::NEEDS_SMTPUTF8);
        }
        if from.size > self.shared.smtp.max_message_size {
            return Err(reply::TOO_BIG);
        }
        let dsn_ret = if from.flags & smtp_proto::MAIL_RET_FULL != 0 {
            Some(DsnRet::Full)
        } else if from.flags & smtp_proto::MAIL_RET_HDRS != 0 {
            Some(DsnRet::Headers)
        } else {
            None
        };
        self.tx = Some(Transaction {
            sender: from.address.into_owned(),
            body_8bit: from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0,
            smtputf8,
            dsn_ret,
            dsn_envid: from.env_id.map(|e| e.into_owned()),
            recipients: Vec::new(),
            chunks: None,
        });
        self.commands_without_mail = 0;
        Ok(reply::SENDER_OK)
    }

    fn rcpt(&mut self, to: RcptTo<std::borrow::Cow<'_, str>>) -> Result<Reply, Reply> {
        let relay_allowed = self.relay_allowed();
        let max = self.shared.smtp.max_recipients;
        let Some(tx) = self.tx.as_mut() else {
            return Err(reply::NEED_MAIL);
        };
        if tx.chunks.is_some() {
            return Err(Reply::new(
                503,
                "5.5.1",
                "Error: RCPT not allowed during BDAT",
            ));
        }
        if to.address.is_empty() {
            return Err(reply::EMPTY_RECIPIENT);
        }
        if !tx.smtputf8 && !to.address.is_ascii() {
            return Err(reply::NEEDS_SMTPUTF8);
        }
        if !relay_allowed {
            tracing::info!(peer = %self.peer, rcpt = %printable(&to.address), "relay access denied");
            return Err(Reply::owned(
                554,
                "5.7.1",
                format!("<{}>: Relay access denied", printable(&to.address)),
            ));
        }
        if tx.recipients.len() >= max {
            // RFC 5321 4.5.3.1.10: a temporary reply the client is expected to handle;
            // it does not count as a client error.
            return Ok(reply::TOO_MANY_RECIPIENTS);
        }
        let duplicate = tx
            .recipients
            .iter()
            .any(|r| r.address.eq_ignore_ascii_case(&to.address));
        if !duplicate {
            tx.recipients.push(Recipient {
                address: to.address.into_owned(),
                notify: Notify {
                    success: to.flags & smtp_proto::RCPT_NOTIFY_SUCCESS != 0,
                    failure: to.flags & smtp_proto::RCPT_NOTIFY_FAILURE != 0,
                    delay: to.flags & smtp_proto::RCPT_NOTIFY_DELAY != 0,
                    never: to.flags & smtp_proto::RCPT_NOTIFY_NEVER != 0,
                },
                orcpt: to.orcpt.map(|o| o.into_owned()),
                attempts: 0,
            });
        }
        Ok(reply::RECIPIENT_OK)
    }

    fn data_timeout(&self) -> Duration {
        Duration::from_secs(self.shared.smtp.data_timeout_secs)
    }

    /// The message buffer for a new transaction, starting with our `Received:` header.
    fn new_message(&self, tx: &Transaction, id: MessageId) -> Vec<u8> {
        let header = Trace {
            helo: self.helo.as_deref().unwrap_or_default(),
            client_ip: self.peer.ip().to_canonical(),
            hostname: &self.shared.hostname,
            esmtp: self.esmtp,
            tls: self.conn.is_tls(),
            authenticated: self.auth_identity.is_some(),
            smtputf8: tx.smtputf8,
            id,
            single_recipient: match tx.recipients.as_slice() {
                [only] => Some(only.address.as_str()),
                _ => None,
            },
        }
        .header();
        let mut message = Vec::with_capacity(header.len() + 16 * 1024);
        message.extend_from_slice(header.as_bytes());
        message
    }

    async fn data(&mut self) -> Flow {
        let check = match &self.tx {
            None => Err(reply::NEED_MAIL),
            Some(tx) if tx.chunks.is_some() => Err(reply::DATA_AFTER_BDAT),
            Some(tx) if tx.recipients.is_empty() => Err(reply::NEED_RCPT),
            Some(tx) => Ok(tx),
        };
        let id = MessageId::new();
        let mut message = match check {
            Ok(tx) => self.new_message(tx, id),
            Err(reply) => return self.refuse(reply),
        };
        let header_len = message.len();
        let max = self.shared.smtp.max_message_size;
        self.send(&reply::START_DATA);

        let mut receiver = DataReceiver::new();
        // The receiver starts mid-line; DATA's reply ended a line, so tell it, or an
        // empty message (`.` at once) would not end and a first line `..x` would keep
        // its stuffing dot.
        receiver.ingest(&mut b"\r\n".iter(), &mut Vec::new());
        let mut discard: Option<DummyDataReceiver> = None;
        let timeout = self.data_timeout();
        let read = self
            .conn
            .read_until(timeout, |input| {
                let mut bytes = input.iter();
                let done = match &mut discard {
                    Some(skip) => skip.ingest(&mut bytes),
                    None => {
                        let done = receiver.ingest(&mut bytes, &mut message);
                        // Until the end is seen, the CR of a split final CRLF may sit in
                        // the buffer: allow for it, so where reads split never matters.
                        if message.len() - header_len > max + usize::from(!done) {
                            discard = Some(DummyDataReceiver::new_data(&receiver));
                            message = Vec::new();
                        }
                        done
                    }
                };
                (input.len() - bytes.as_slice().len(), done)
            })
            .await;
        if let Err(interrupt) = read {
            return Err(self.interrupted(interrupt));
        }
        let Some(tx) = self.tx.take() else {
            return Ok(());
        };
        if discard.is_some() {
            return self.refuse(reply::TOO_BIG);
        }
        self.accept(tx, id, message).await
    }

    async fn bdat(&mut self, size: usize, last: bool) -> Flow {
        let max = self.shared.smtp.max_message_size;
        let refusal = match &self.tx {
            None => Some(reply::NEED_MAIL),
            Some(tx) if tx.recipients.is_empty() => Some(reply::NEED_RCPT),
            Some(_) => None,
        };
        if let Some(reply) = refusal {
            self.skip_chunk(size).await?;
            return self.refuse(reply);
        }
        if self.tx.as_ref().is_some_and(|tx| tx.chunks.is_none()) {
            let id = MessageId::new();
            let message = self
                .tx
                .as_ref()
                .map(|tx| self.new_message(tx, id))
                .unwrap_or_default();
            let header_len = message.len();
            if let Some(tx) = self.tx.as_mut() {
                tx.chunks = Some(Chunks {
                    id,
                    message,
                    header_len,
                    too_big: false,
                });
            }
        }
        let timeout = self.data_timeout();
        let Session { tx, conn, .. } = self;
        let Some(chunks) = tx.as_mut().and_then(|tx| tx.chunks.as_mut()) else {
            return Ok(());
        };
        if (chunks.message.len() - chunks.header_len).saturating_add(size) > max {
            chunks.too_big = true;
            chunks.message = Vec::new();
        }
        let read = if chunks.too_big {
            Self::skip(conn, size, timeout).await
        } else if size == 0 {
            Ok(())
        } else {
            chunks.message.reserve(size);
            let mut receiver = BdatReceiver::new(size, last);
            let message = &mut chunks.message;
            conn.read_until(timeout, |input| {
                let mut bytes = input.iter();
                let done = receiver.ingest(&mut bytes, message);
                (input.len() - bytes.as_slice().len(), done)
            })
            .await
        };
        let too_big = chunks.too_big;
        if let Err(interrupt) = read {
            return Err(self.interrupted(interrupt));
        }
        if too_big {
            self.tx = None;
            return self.refuse(reply::TOO_BIG);
        }
        if !last {
            self.send(&Reply::owned(
                250,
                "2.0.0",
                format!("Ok: {size} octets received"),
            ));
            return Ok(());
        }
        let Some(mut tx) = self.tx.take() else {
            return Ok(());
        };
        let Some(chunks) = tx.chunks.take() else {
            return Ok(());
        };
        self.accept(tx, chunks.id, chunks.message).await
    }

    async fn skip_chunk(&mut self, size: usize) -> Flow {
        let timeout = self.data_timeout();
        match Self::skip(&mut self.conn, size, timeout).await {
            Ok(()) => Ok(()),
            Err(interrupt) => Err(self.interrupted(interrupt)),
        }
    }

    async fn skip(conn: &mut Conn, size: usize, timeout: Duration) -> Result<(), Interrupt> {
        if size == 0 {
            return Ok(());
        }
        let mut skip = DummyDataReceiver::new_bdat(size);
        conn.read_until(timeout, |input| {
            let mut bytes = input.iter();
            let done = skip.ingest(&mut bytes);
            (input.len() - bytes.as_slice().len(), done)
        })
        .await
    }

    /// Stores the message; replies 250 only once the queue says it is durable.
    async fn accept(&mut self, tx: Transaction, id: MessageId, message: Vec<u8>) -> Flow {
        let size = message.len();
        let recipients = tx.recipients.len();
        let envelope = Envelope {
            id,
            sender: tx.sender,
            recipients: tx.recipients,
            auth_identity: self.auth_identity.clone(),
            client_ip: self.peer.ip().to_canonical(),
            helo: self.helo.clone().unwrap_or_default(),
            received_at_ms: unix_ms(std::time::SystemTime::now()),
            requeued_at_ms: None,
            size: size as u64,
            priority: 0,
            body_8bit: tx.body_8bit,
            smtputf8: tx.smtputf8,
            dsn_ret: tx.dsn_ret,
            dsn_envid: tx.dsn_envid,
            tenant: None,
            campaign: None,
        };
        let sender = printable(&envelope.sender);
        let started = Instant::now();
        let queued_events = self
            .shared
            .events
            .as_ref()
            .map(|_| queued_events(&envelope));
        match self
            .shared
            .queue
            .enqueue(envelope, Bytes::from(message))
            .await
        {
            Ok(()) => {
                tracing::info!(%id, from = %sender, recipients, size, client = %self.peer.ip(), durable_in = ?started.elapsed(), "queued");
                self.send(&Reply::owned(250, "2.0.0", format!("Ok: queued as {id}")));
                if let Some(waker) = &self.shared.relay_waker {
                    waker.notify_one();
                }
                if let (Some(tx), Some(events)) = (&self.shared.events, queued_events) {
                    for event in events {
                        if tx.send(event).await.is_err() {
                            break;
                        }
                    }
                }
            }
            Err(e @ QueueError::TooLarge { .. }) => {
                tracing::info!(%id, client = %self.peer.ip(), "refused: {e}");
                self.send(&reply::TOO_BIG);
            }
            Err(e) => {
                tracing::error!(%id, client = %self.peer.ip(), "cannot queue message: {e}");
                self.send(&reply::QUEUE_ERROR);
            }
        }
        Ok(())
    }

    async fn starttls(&mut self) -> Flow {
        if self.conn.is_tls() {
            return self.refuse(reply::TLS_ACTIVE);
        }
        let Some(acceptor) = self.shared.tls.clone().filter(|_| self.starttls_offered()) else {
            return self.refuse(reply::TLS_UNAVAILABLE);
        };
        self.send(&reply::READY_TLS);
        if let Err(e) = self
            .conn
            .start_tls(&acceptor, self.limits_tls_timeout())
            .await
        {
            tracing::debug!(peer = %self.peer, "STARTTLS handshake failed: {e}");
            return Err(End::Interrupted(Interrupt::Closed));
        }
        // RFC 3207 4.2: forget everything learned before TLS.
        self.helo = None;
        self.esmtp = false;
        self.tx = None;
        Ok(())
    }

    async fn auth(&mut self, mechanism: u64, initial: &str) -> Flow {
        let refusal = if self.auth_identity.is_some() {
            Some(reply::AUTH_ALREADY)
        } else if self.helo.is_none() {
            Some(reply::NEED_HELO)
        } else if self.tx.is_some() {
            Some(reply::AUTH_IN_TRANSACTION)
        } else if !self.conn.is_tls() {
            Some(reply::AUTH_NEEDS_TLS)
        } else if self.shared.credentials.is_empty() {
            Some(reply::AUTH_UNAVAILABLE)
        } else {
            None
        };
        if let Some(reply) = refusal {
            return self.refuse(reply);
        }
        let (username, password) = match mechanism {
            smtp_proto::AUTH_PLAIN => {
                let response = if initial.is_empty() {
                    self.challenge("").await?
                } else {
                    decode(initial)
                };
                match response.and_then(|r| parse_plain(&r)) {
                    Ok(pair) => pair,
                    Err(reply) => return self.refuse(reply),
                }
            }
            smtp_proto::AUTH_LOGIN => {
                let user = if initial.is_empty() {
                    self.challenge("VXNlcm5hbWU6").await?
                } else {
                    decode(initial)
                };
                let user = match user {
                    Ok(user) => user,
                    Err(reply) => return self.refuse(reply),
                };
                match self.challenge("UGFzc3dvcmQ6").await? {
                    Ok(password) => (
                        String::from_utf8_lossy(&user).into_owned(),
                        String::from_utf8_lossy(&password).into_owned(),
                    ),
                    Err(reply) => return self.refuse(reply),
                }
            }
            _ => return self.refuse(reply::AUTH_MECHANISM),
        };
        if self.shared.credentials.verify(&username, &password).await {
            tracing::info!(peer = %self.peer, user = %printable(&username), "authenticated");
            self.auth_identity = Some(username);
            self.send(&reply::AUTH_OK);
            Ok(())
        } else {
            tracing::warn!(peer = %self.peer, user = %printable(&username), "authentication failed");
            self.refuse(reply::AUTH_FAILED)
        }
    }

    /// Sends a `334` challenge and decodes the client's base64 answer.
    async fn challenge(&mut self, prompt: &str) -> Result<Result<Vec<u8>, Reply>, End> {
        self.send(&Reply::owned(334, "", prompt.to_string()));
        let idle = Duration::from_secs(self.shared.smtp.idle_timeout_secs);
        match self
            .conn
            .read_line(self.shared.smtp.max_line_length, idle, false)
            .await
        {
            Ok(Line::Complete(line)) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\r', '\n']);
                if text == "*" {
                    Ok(Err(reply::AUTH_CANCELLED))
                } else {
                    Ok(decode(text))
                }
            }
            Ok(Line::TooLong) => Ok(Err(reply::LINE_TOO_LONG)),
            Err(interrupt) => Err(self.interrupted(interrupt)),
        }
    }
}

/// One `queued` event per recipient.
fn queued_events(envelope: &Envelope) -> Vec<DeliveryEvent> {
    envelope
        .recipients
        .iter()
        .map(|r| DeliveryEvent {
            event_id: uuid::Uuid::now_v7(),
            kind: EventKind::Queued,
            message_id: envelope.id,
            sender: envelope.sender.clone(),
            recipient: r.address.clone(),
            domain: r.domain(),
            at_ms: envelope.received_at_ms,
            attempt: 0,
            remote_host: None,
            reply: None,
            tenant: envelope.tenant.clone(),
            campaign: envelope.campaign.clone(),
        })
        .collect()
}

fn decode(text: &str) -> Result<Vec<u8>, Reply> {
    if text == "=" {
        return Ok(Vec::new());
    }
    BASE64
        .decode(text.trim())
        .map_err(|_| reply::AUTH_BAD_BASE64)
}

/// RFC 4616: `authzid NUL authcid NUL passwd`; an authzid other than the user is refused.
fn parse_plain(response: &[u8]) -> Result<(String, String), Reply> {
    let mut parts = response.split(|&b| b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reply::new(
            501,
            "5.5.2",
            "Error: malformed AUTH PLAIN response",
        ));
    };
    if !authzid.is_empty() && authzid != user {
        return Err(reply::AUTH_FAILED);
    }
    Ok((
        String::from_utf8_lossy(user).into_owned(),
        String::from_utf8_lossy(password).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_response_forms() {
        assert_eq!(
            parse_plain(b"\0app\0pw").unwrap(),
            ("app".into(), "pw".into())
        );
        assert_eq!(
            parse_plain(b"app\0app\0pw").unwrap(),
            ("app".into(), "pw".into())
        );
        assert_eq!(
            parse_plain(b"other\0app\0pw").unwrap_err(),
            reply::AUTH_FAILED
        );
        assert_eq!(parse_plain(b"app\0pw").unwrap_err().code, 501);
        assert_eq!(decode("=").unwrap(), Vec::<u8>::new());
        assert_eq!(decode("!!").unwrap_err(), reply::AUTH_BAD_BASE64);
    }
}
