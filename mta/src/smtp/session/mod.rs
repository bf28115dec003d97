//! One SMTP session: the RFC 5321 state machine and its limits, each verb in its own
//! module ([`hello`], [`starttls`], [`auth`], [`mail`], [`rcpt`], [`data`] for DATA
//! and BDAT). Every input gets a reply; nothing a client sends can panic it.

mod auth;
mod data;
mod hello;
mod mail;
mod rcpt;
mod report;
mod starttls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postroad_queue::{DsnRet, MessageId, Recipient};
use smtp_proto::Request;

use super::budget::Reservation;
use super::command;
use super::conn::{Conn, Interrupt, Line};
use super::reply::{self, Reply};
use super::server::{Admission, Shared};
use crate::config::{ListenerConfig, TlsMode};

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
    /// The recipients are at the bounce domains: the message is a report, read into
    /// events instead of being queued.
    report: bool,
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
        Instant::now() + self.shared.smtp.idle_timeout
    }

    fn limits_tls_timeout(&self) -> Duration {
        self.shared.smtp.tls_handshake_timeout
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
}
