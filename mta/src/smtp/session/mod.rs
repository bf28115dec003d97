//! One SMTP session: the RFC 5321 state machine with ESMTP extensions, relay policy,
//! AUTH ([`auth`]), DATA/BDAT ([`data`]) and limits. Every input gets a reply; nothing
//! a client sends can panic it.

mod auth;
mod data;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postroad_queue::{DsnRet, MessageId, Notify, Recipient};
use smtp_proto::{MailFrom, RcptTo, Request};

use super::budget::Reservation;
use super::command::{self, printable};
use super::conn::{Conn, Interrupt, Line};
use super::reply::{self, EnhancedCode, Reply};
use super::server::{Admission, Shared};
use crate::config::{ListenerConfig, Role, TlsMode};
use smtp_wire::Capabilities;

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
    /// What MAIL's `SIZE=` declared (0 if nothing).
    declared_size: usize,
    recipients: Vec<Recipient>,
    /// A BDAT transfer in progress.
    chunks: Option<Chunks>,
}

/// The message being assembled from BDAT chunks.
struct Chunks {
    id: MessageId,
    message: Vec<u8>,
    header_len: usize,
    /// Memory held for `message`.
    reservation: Reservation,
    /// When the last chunk must have arrived.
    deadline: Instant,
    /// Set once the message is refused; later chunks are read and dropped.
    refused: Option<Reply>,
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
        let greeting = Reply::owned(
            220,
            None,
            format!("{} ESMTP Postroad", self.shared.hostname),
        );
        self.send(&greeting);
        loop {
            let line = match self
                .conn
                .read_line(
                    self.shared.smtp.max_line_length,
                    self.command_deadline(),
                    true,
                )
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

    /// When the next command line must have arrived, for a wait starting now.
    fn command_deadline(&self) -> Instant {
        Instant::now() + Duration::from_secs(self.shared.smtp.idle_timeout_secs)
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
            return Ok(Reply::owned(250, None, hostname.clone()));
        }
        let caps = Capabilities {
            pipelining: true,
            size: Some(self.shared.smtp.max_message_size as u64),
            eight_bit_mime: true,
            smtputf8: true,
            dsn: true,
            chunking: true,
            starttls: self.starttls_offered(),
            enhanced_status_codes: true,
            auth: if self.auth_offered() {
                vec!["PLAIN".into(), "LOGIN".into()]
            } else {
                Vec::new()
            },
        };
        let first = format!("{hostname} Hello {} [{}]", printable(host), self.peer.ip());
        Ok(Reply::owned(250, None, caps.ehlo_text(&first)))
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
            declared_size: from.size,
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
                Some(EnhancedCode::new(5, 7, 1)),
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
}
