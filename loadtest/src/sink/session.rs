//! One SMTP/LMTP session of the sink: a buffered reader that handles pipelined
//! commands (replies are written when the input runs dry), DATA with streaming
//! dot-unstuffing, BDAT, STARTTLS, and the fault rules.

use std::borrow::Cow;
use std::io::{self, Write as _};
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use smtp_proto::request::receiver::{BdatReceiver, DataReceiver, DummyDataReceiver};
use smtp_proto::{Error as ParseError, MailFrom, RcptTo, Request};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::domains::{DomainCounters, Holds};
use super::{ConnGuard, Delivery, FaultPlan, Shared, parse_headers};

/// Longest command line, CRLF included.
const MAX_LINE: usize = 4096;
/// Input buffer (commands and data).
const READ_BUF: usize = 64 * 1024;
/// Syntax and sequence errors before the sink hangs up.
const MAX_ERRORS: u32 = 20;

/// MAIL parameters of extensions the sink never advertises.
const UNSUPPORTED_MAIL_FLAGS: u64 = smtp_proto::MAIL_BODY_BINARYMIME
    | smtp_proto::MAIL_REQUIRETLS
    | smtp_proto::MAIL_CONPERM
    | smtp_proto::MAIL_BY_NOTIFY
    | smtp_proto::MAIL_BY_RETURN
    | smtp_proto::MAIL_BY_TRACE;
const DSN_RCPT_FLAGS: u64 = smtp_proto::RCPT_NOTIFY_SUCCESS
    | smtp_proto::RCPT_NOTIFY_FAILURE
    | smtp_proto::RCPT_NOTIFY_DELAY
    | smtp_proto::RCPT_NOTIFY_NEVER;

/// Buffered connection: input buffer with a consumed prefix, and pending replies.
struct Conn<S> {
    io: S,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(io: S, timeout: Duration) -> Self {
        Self {
            io,
            buf: vec![0; READ_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            out: Vec::with_capacity(1024),
            timeout,
        }
    }

    fn input(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.end);
        if self.start >= self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    fn discard_input(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            tokio::time::timeout(self.timeout, self.io.write_all(&self.out))
                .await
                .map_err(|_| io::ErrorKind::TimedOut)??;
            self.out.clear();
        }
        Ok(())
    }

    /// Sends pending replies and closes our side, then reads (and drops) what the
    /// client still sends for a short while, so that closing does not reset the
    /// connection under replies the client has not read yet.
    async fn linger_close(&mut self) -> io::Result<()> {
        self.flush().await?;
        let _ = self.io.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let mut drained = 0usize;
            while drained < 1 << 20 {
                match self.io.read(&mut self.buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
        })
        .await;
        Ok(())
    }

    /// Sends pending replies, then reads more input. Ok(false) at end of input.
    async fn fill(&mut self) -> io::Result<bool> {
        self.flush().await?;
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // callers consume before asking for more; never reached
            return Err(io::Error::other("input buffer full"));
        }
        let n = tokio::time::timeout(self.timeout, self.io.read(&mut self.buf[self.end..]))
            .await
            .map_err(|_| io::ErrorKind::TimedOut)??;
        self.end += n;
        Ok(n > 0)
    }
}

/// How a command leaves the session.
enum Flow {
    Continue,
    /// Flush the replies, close.
    Close,
    /// Close at once, without another word (drop fault).
    Drop,
    /// 220 sent: hand the socket to TLS.
    StartTls,
}

/// How a protocol stage ended.
enum End {
    Closed,
    StartTls,
}

/// Special local parts (before `+tag`, any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Special {
    None,
    Tempfail,
    Permfail,
    TempfailOnce,
    DropData,
}

impl Special {
    fn of(address: &str) -> Self {
        let local = address.rsplit_once('@').map_or(address, |(l, _)| l);
        let base = local.split('+').next().unwrap_or(local);
        if base.eq_ignore_ascii_case("tempfail") {
            Self::Tempfail
        } else if base.eq_ignore_ascii_case("permfail") {
            Self::Permfail
        } else if base.eq_ignore_ascii_case("tempfail-once") {
            Self::TempfailOnce
        } else if base.eq_ignore_ascii_case("dropdata") {
            Self::DropData
        } else {
            Self::None
        }
    }
}

struct Rcpt {
    address: String,
    tempfail_once: bool,
    /// Its domain's counters, when the domain has faults of its own.
    counters: Option<Arc<DomainCounters>>,
}

struct Tx {
    from: String,
    smtputf8: bool,
    rcpts: Vec<Rcpt>,
    /// Domains whose rate bucket this transaction was charged.
    charged: Vec<String>,
    /// Close mid-data (a `dropdata` recipient).
    drop_data: bool,
    /// Highest drop share among the recipients' faults.
    drop_share: f64,
    /// Delay before the data reply.
    data_delay: Duration,
    /// BDAT chunks have started arriving.
    chunking: bool,
    /// The message outgrew the size limit (BDAT: the rest is skipped).
    too_big: bool,
}

struct Session {
    sh: Arc<Shared>,
    /// The faults in force, refreshed at each MAIL.
    plan: Arc<FaultPlan>,
    helo: bool,
    tls: bool,
    tx: Option<Tx>,
    errors: u32,
    skip_line: bool,
    msg: Vec<u8>,
    /// Domains with a connection limit whose mail this connection has carried.
    holds: Holds,
}

/// Serves one connection until it ends.
pub(super) async fn run(sock: TcpStream, sh: Arc<Shared>, guard: ConnGuard) {
    let _guard = guard;
    let _ = sock.set_nodelay(true);
    let timeout = sh.config.idle_timeout;
    let mut s = Session {
        plan: sh.plan(),
        holds: Holds {
            shared: sh.clone(),
            held: Vec::new(),
        },
        sh,
        helo: false,
        tls: false,
        tx: None,
        errors: 0,
        skip_line: false,
        msg: Vec::new(),
    };
    let mut conn = Conn::new(sock, timeout);
    let greeting_delay = s.plan.global.delay;
    let kind = if s.sh.config.lmtp { "LMTP" } else { "ESMTP" };
    let greeting = format!("{} {kind} loadtest sink ready", s.sh.config.hostname);
    s.reply(&mut conn, greeting_delay, 220, "", &greeting).await;
    match s.serve(&mut conn).await {
        Ok(End::StartTls) => {}
        Ok(End::Closed) => return,
        Err(e) => return s.broken(&mut conn, e).await,
    }
    let Some(acceptor) = s.sh.tls.clone() else {
        return;
    };
    let Ok(Ok(tls)) = tokio::time::timeout(timeout, acceptor.accept(conn.io)).await else {
        return;
    };
    s.tls = true;
    s.helo = false;
    s.tx = None;
    let mut conn = Conn::new(tls, timeout);
    if let Err(e) = s.serve(&mut conn).await {
        s.broken(&mut conn, e).await;
    }
}

impl Session {
    /// After an I/O error: says goodbye on a timeout, then closes.
    async fn broken<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
        e: io::Error,
    ) {
        if e.kind() == io::ErrorKind::TimedOut {
            conn.out.clear();
            self.reply(conn, Duration::ZERO, 421, "4.4.2", "Timeout, closing")
                .await;
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.flush()).await;
        }
    }

    /// Queues one reply line (after the injected delay) and counts 4xx/5xx codes.
    async fn reply<S>(
        &mut self,
        conn: &mut Conn<S>,
        delay: Duration,
        code: u16,
        enhanced: &str,
        text: &str,
    ) {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if code >= 400 {
            self.sh.count_reply(code);
            self.sh.changed();
        }
        let out = &mut conn.out;
        if enhanced.is_empty() || !self.sh.config.extensions.enhanced_status_codes {
            let _ = write!(out, "{code} {text}\r\n");
        } else {
            let _ = write!(out, "{code} {enhanced} {text}\r\n");
        }
    }

    /// A refusal of a command out of sequence or not offered (not counted as an
    /// error: pipelining clients get these after an earlier refusal).
    async fn error<S>(
        &mut self,
        conn: &mut Conn<S>,
        code: u16,
        enhanced: &str,
        text: &str,
    ) -> Flow {
        let delay = self.global_delay();
        self.reply(conn, delay, code, enhanced, text).await;
        Flow::Continue
    }

    /// A syntax error: replies, and hangs up after too many.
    async fn syntax_error<S>(
        &mut self,
        conn: &mut Conn<S>,
        code: u16,
        enhanced: &str,
        text: &str,
    ) -> Flow {
        let delay = self.global_delay();
        self.reply(conn, delay, code, enhanced, text).await;
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            self.reply(
                conn,
                Duration::ZERO,
                421,
                "4.7.0",
                "Too many errors, closing",
            )
            .await;
            return Flow::Close;
        }
        Flow::Continue
    }

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
    ) -> io::Result<End> {
        loop {
            let input = conn.input();
            let Some(nl) = memchr::memchr(b'\n', input) else {
                if input.len() >= MAX_LINE {
                    let n = input.len();
                    conn.consume(n);
                    if !self.skip_line {
                        self.skip_line = true;
                        if let Flow::Close =
                            self.syntax_error(conn, 500, "5.5.2", "Line too long").await
                        {
                            conn.linger_close().await?;
                            return Ok(End::Closed);
                        }
                    }
                }
                if !conn.fill().await? {
                    return Ok(End::Closed);
                }
                continue;
            };
            if self.skip_line {
                conn.consume(nl + 1);
                self.skip_line = false;
                continue;
            }
            let parsed = if nl >= MAX_LINE {
                Err((500, "5.5.2", "Line too long".to_owned()))
            } else {
                parse(&input[..=nl]).map(Request::into_owned)
            };
            conn.consume(nl + 1);
            let flow = match parsed {
                Ok(req) => self.command(conn, req).await?,
                Err((code, enhanced, text)) => self.syntax_error(conn, code, enhanced, &text).await,
            };
            match flow {
                Flow::Continue => {}
                Flow::Close => {
                    conn.linger_close().await?;
                    return Ok(End::Closed);
                }
                Flow::Drop => return Ok(End::Closed),
                Flow::StartTls => {
                    conn.flush().await?;
                    // anything pipelined after STARTTLS was sent in the clear: drop it
                    conn.discard_input();
                    return Ok(End::StartTls);
                }
            }
        }
    }

    fn global_delay(&self) -> Duration {
        self.plan.global.delay
    }

    async fn ok<S>(&mut self, conn: &mut Conn<S>, code: u16, enhanced: &str, text: &str) -> Flow {
        let delay = self.global_delay();
        self.reply(conn, delay, code, enhanced, text).await;
        Flow::Continue
    }

    async fn command<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
        req: Request<String>,
    ) -> io::Result<Flow> {
        let lmtp = self.sh.config.lmtp;
        Ok(match req {
            Request::Ehlo { .. } | Request::Helo { .. } if lmtp => {
                self.error(conn, 500, "5.5.1", "This is LMTP: use LHLO")
                    .await
            }
            Request::Lhlo { .. } if !lmtp => {
                self.error(conn, 500, "5.5.1", "This is SMTP: use EHLO")
                    .await
            }
            Request::Ehlo { .. } | Request::Lhlo { .. } => self.ehlo(conn).await,
            Request::Helo { .. } => {
                self.helo = true;
                self.tx = None;
                let host = self.sh.config.hostname.clone();
                self.ok(conn, 250, "", &host).await
            }
            Request::Mail { from } => self.mail(conn, from).await,
            Request::Rcpt { to } => self.rcpt(conn, to).await,
            Request::Data => self.data(conn).await?,
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(conn, chunk_size, is_last).await?,
            Request::Rset => {
                self.tx = None;
                self.ok(conn, 250, "2.0.0", "Ok").await
            }
            Request::Noop { .. } => self.ok(conn, 250, "2.0.0", "Ok").await,
            Request::Quit => {
                self.ok(conn, 221, "2.0.0", "Bye").await;
                Flow::Close
            }
            Request::StartTls => {
                if !self.sh.config.extensions.starttls || self.tls {
                    self.error(conn, 502, "5.5.1", "STARTTLS not available")
                        .await
                } else {
                    self.ok(conn, 220, "2.0.0", "Ready to start TLS").await;
                    Flow::StartTls
                }
            }
            Request::Vrfy { .. } => {
                self.ok(conn, 252, "2.5.0", "Cannot VRFY, send some mail")
                    .await
            }
            Request::Help { .. } => self.ok(conn, 214, "2.0.0", "See RFC 5321").await,
            Request::Auth { .. }
            | Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => {
                self.syntax_error(conn, 502, "5.5.1", "Command not implemented")
                    .await
            }
        })
    }

    async fn ehlo<S>(&mut self, conn: &mut Conn<S>) -> Flow {
        self.helo = true;
        self.tx = None;
        let delay = self.global_delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let c = &self.sh.config;
        let e = c.extensions;
        let caps = smtp_wire::Capabilities {
            pipelining: e.pipelining,
            size: e.size.then_some(c.max_message_size as u64),
            eight_bit_mime: e.eight_bit_mime,
            smtputf8: e.smtputf8,
            dsn: e.dsn,
            chunking: e.chunking,
            starttls: e.starttls && !self.tls,
            enhanced_status_codes: e.enhanced_status_codes,
            auth: Vec::new(),
        };
        smtp_wire::Reply::owned(250, None, caps.ehlo_text(&c.hostname)).write_to(&mut conn.out);
        Flow::Continue
    }

    async fn mail<S>(&mut self, conn: &mut Conn<S>, from: MailFrom<String>) -> Flow {
        if !self.helo {
            return self
                .error(conn, 503, "5.5.1", "Error: send HELO/EHLO first")
                .await;
        }
        if self.tx.is_some() {
            return self
                .error(conn, 503, "5.5.1", "Error: nested MAIL command")
                .await;
        }
        let e = self.sh.config.extensions;
        let f = from.flags;
        let refusal = if f & smtp_proto::MAIL_BODY_8BITMIME != 0 && !e.eight_bit_mime {
            Some("BODY=8BITMIME not supported")
        } else if f & smtp_proto::MAIL_SMTPUTF8 != 0 && !e.smtputf8 {
            Some("SMTPUTF8 not supported")
        } else if (f & (smtp_proto::MAIL_RET_FULL | smtp_proto::MAIL_RET_HDRS) != 0
            || from.env_id.is_some())
            && !e.dsn
        {
            Some("DSN not supported")
        } else if f & UNSUPPORTED_MAIL_FLAGS != 0
            || from.trans_id.is_some()
            || from.solicit.is_some()
            || from.mtrk.is_some()
            || from.auth.is_some()
            || from.hold_for != 0
            || from.hold_until != 0
            || from.by != 0
            || from.mt_priority != 0
            || (from.size != 0 && !e.size)
        {
            Some("Unsupported MAIL parameter")
        } else {
            None
        };
        if let Some(text) = refusal {
            return self.error(conn, 555, "5.5.4", text).await;
        }
        let smtputf8 = f & smtp_proto::MAIL_SMTPUTF8 != 0;
        let delay = self.global_delay();
        if from.size > self.sh.config.max_message_size {
            self.reply(
                conn,
                delay,
                552,
                "5.3.4",
                "Message size exceeds fixed limit",
            )
            .await;
            return Flow::Continue;
        }
        if !from.address.is_ascii() && !smtputf8 {
            self.reply(
                conn,
                delay,
                553,
                "5.6.7",
                "Non-ASCII address needs SMTPUTF8",
            )
            .await;
            return Flow::Continue;
        }
        self.plan = self.sh.plan();
        let delay = self.global_delay();
        if self.plan.global_bucket.as_ref().is_some_and(|b| !b.take()) {
            self.reply(
                conn,
                delay,
                421,
                "4.7.0",
                "Rate limit exceeded, try again later",
            )
            .await;
            return Flow::Close;
        }
        self.tx = Some(Tx {
            from: from.address,
            smtputf8,
            rcpts: Vec::new(),
            charged: Vec::new(),
            drop_data: false,
            drop_share: 0.0,
            data_delay: Duration::ZERO,
            chunking: false,
            too_big: false,
        });
        self.msg.clear();
        self.sh.counters.transactions.fetch_add(1, SeqCst);
        self.reply(conn, delay, 250, "2.1.0", "Ok").await;
        Flow::Continue
    }

    async fn rcpt<S>(&mut self, conn: &mut Conn<S>, to: RcptTo<String>) -> Flow {
        let ext = self.sh.config.extensions;
        let max_rcpts = self.sh.config.max_recipients;
        let Some(tx) = &mut self.tx else {
            return self
                .error(conn, 503, "5.5.1", "Error: need MAIL command")
                .await;
        };
        let plan = self.plan.clone();
        let domain = to.address.rsplit_once('@').map_or("", |(_, d)| d);
        let (faults, own) = plan.for_domain(domain);
        let counters = own.map(|(_, p)| &p.counters);
        let delay = faults.delay;
        let refuse = |code, enh: &'static str, text: &'static str| Some((code, enh, text));
        let refusal = if tx.rcpts.len() >= max_rcpts {
            refuse(452, "4.5.3", "Too many recipients")
        } else if (to.flags & DSN_RCPT_FLAGS != 0 || to.orcpt.is_some()) && !ext.dsn {
            refuse(555, "5.5.4", "DSN not supported")
        } else if to.flags & !DSN_RCPT_FLAGS != 0 || to.rrvs != 0 {
            refuse(555, "5.5.4", "Unsupported RCPT parameter")
        } else if to.address.is_empty() {
            refuse(501, "5.1.3", "Bad recipient address syntax")
        } else if !to.address.is_ascii() && !tx.smtputf8 {
            refuse(553, "5.6.7", "Non-ASCII address needs SMTPUTF8")
        } else {
            None
        };
        if let Some((code, enh, text)) = refusal {
            self.reply(conn, delay, code, enh, text).await;
            return Flow::Continue;
        }
        let special = Special::of(&to.address);
        if matches!(special, Special::Permfail | Special::Tempfail)
            && let Some(c) = counters
        {
            c.refused();
        }
        match special {
            Special::Permfail => {
                self.reply(conn, delay, 550, "5.1.1", "Recipient rejected (permfail)")
                    .await;
                return Flow::Continue;
            }
            Special::Tempfail => {
                self.reply(conn, delay, 451, "4.3.0", "Try again later (tempfail)")
                    .await;
                return Flow::Continue;
            }
            _ => {}
        }
        if let Some((key, limit)) = own.and_then(|(k, p)| Some((k, p.faults.max_connections?)))
            && !self.holds.held.iter().any(|h| h == key)
        {
            if !self.sh.domains.hold(key, limit) {
                if let Some(c) = counters {
                    c.throttled();
                }
                self.reply(
                    conn,
                    delay,
                    421,
                    "4.7.0",
                    "Too many concurrent connections, try again later",
                )
                .await;
                return Flow::Close;
            }
            self.holds.held.push(key.to_owned());
        }
        let Some(tx) = &mut self.tx else {
            return Flow::Continue;
        };
        if let Some((key, bucket)) = own.and_then(|(k, p)| Some((k, p.bucket.as_ref()?)))
            && !tx.charged.iter().any(|c| c == key)
        {
            if !bucket.take() {
                if let Some(c) = counters {
                    c.throttled();
                }
                self.reply(
                    conn,
                    delay,
                    421,
                    "4.7.0",
                    "Rate limit exceeded, try again later",
                )
                .await;
                return Flow::Close;
            }
            tx.charged.push(key.to_owned());
        }
        let (perm, temp) = (faults.permfail_share, faults.tempfail_share);
        if perm + temp > 0.0 {
            let r = self.sh.draw();
            if r < perm + temp
                && let Some(c) = counters
            {
                c.refused();
            }
            if r < perm {
                self.reply(conn, delay, 550, "5.1.1", "Recipient rejected (injected)")
                    .await;
                return Flow::Continue;
            }
            if r < perm + temp {
                self.reply(conn, delay, 451, "4.3.0", "Try again later (injected)")
                    .await;
                return Flow::Continue;
            }
        }
        tx.drop_data |= special == Special::DropData;
        tx.drop_share = tx.drop_share.max(faults.drop_share);
        tx.data_delay = tx.data_delay.max(delay);
        tx.rcpts.push(Rcpt {
            address: to.address,
            tempfail_once: special == Special::TempfailOnce,
            counters: counters.cloned(),
        });
        self.reply(conn, delay, 250, "2.1.5", "Ok").await;
        Flow::Continue
    }

    /// Whether this transaction's connection gets dropped mid-data (decided once).
    fn decide_drop(&self) -> bool {
        let Some(tx) = &self.tx else {
            return false;
        };
        tx.drop_data || (tx.drop_share > 0.0 && self.sh.draw() < tx.drop_share)
    }

    /// The drop fault: waits for some of the data, then closes without a reply.
    async fn drop_mid_data<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
    ) -> io::Result<Flow> {
        if conn.input().is_empty() {
            conn.fill().await?;
        } else {
            conn.flush().await?;
        }
        self.tx = None;
        self.sh.counters.dropped.fetch_add(1, SeqCst);
        self.sh.changed();
        Ok(Flow::Drop)
    }

    async fn data<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
    ) -> io::Result<Flow> {
        let refusal = match &self.tx {
            None => Some((503, "Error: need MAIL command")),
            Some(tx) if tx.chunking => Some((503, "Error: BDAT in progress")),
            Some(tx) if tx.rcpts.is_empty() => Some((554, "Error: no valid recipients")),
            Some(_) => None,
        };
        if let Some((code, text)) = refusal {
            return Ok(self.error(conn, code, "5.5.1", text).await);
        }
        let drop = self.decide_drop();
        let delay = self.global_delay();
        self.reply(conn, delay, 354, "", "End data with <CR><LF>.<CR><LF>")
            .await;
        if drop {
            return self.drop_mid_data(conn).await;
        }
        let max = self.sh.config.max_message_size;
        let mut receiver = DataReceiver::new();
        // start as if after a CRLF, so that a first line "." ends the data and a
        // first line "..x" is unstuffed
        self.msg.clear();
        receiver.ingest(&mut b"\r\n".iter(), &mut self.msg);
        self.msg.clear();
        let mut skip: Option<DummyDataReceiver> = None;
        loop {
            let input = conn.input();
            let mut bytes = input.iter();
            let done = match &mut skip {
                Some(s) => s.ingest(&mut bytes),
                None => {
                    let done = receiver.ingest(&mut bytes, &mut self.msg);
                    if !done && self.msg.len() > max {
                        skip = Some(DummyDataReceiver::new_data(&receiver));
                        self.msg = Vec::new();
                    }
                    done
                }
            };
            let used = input.len() - bytes.as_slice().len();
            conn.consume(used);
            if done {
                break;
            }
            if !conn.fill().await? {
                return Ok(Flow::Drop);
            }
        }
        if skip.is_some() || self.msg.len() > max {
            self.tx = None;
            self.msg = Vec::new();
            let delay = self.global_delay();
            self.reply(
                conn,
                delay,
                552,
                "5.3.4",
                "Message size exceeds fixed limit",
            )
            .await;
            return Ok(Flow::Continue);
        }
        self.finish(conn, false).await;
        Ok(Flow::Continue)
    }

    /// Reads (or skips) `size` bytes of BDAT chunk into `self.msg`.
    async fn read_chunk<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
        size: usize,
        keep: bool,
    ) -> io::Result<bool> {
        if size == 0 {
            return Ok(true);
        }
        if keep {
            self.msg.reserve(size.min(READ_BUF * 16));
        }
        let mut receiver = BdatReceiver::new(size, false);
        let mut skip = DummyDataReceiver::new_bdat(size);
        loop {
            let input = conn.input();
            let mut bytes = input.iter();
            let done = if keep {
                receiver.ingest(&mut bytes, &mut self.msg)
            } else {
                skip.ingest(&mut bytes)
            };
            let used = input.len() - bytes.as_slice().len();
            conn.consume(used);
            if done {
                return Ok(true);
            }
            if !conn.fill().await? {
                return Ok(false);
            }
        }
    }

    async fn bdat<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
        size: usize,
        last: bool,
    ) -> io::Result<Flow> {
        if !self.sh.config.extensions.chunking {
            return Ok(self
                .syntax_error(conn, 502, "5.5.1", "BDAT not supported")
                .await);
        }
        let refusal = match &self.tx {
            None => Some((503, "Error: need MAIL command")),
            Some(tx) if tx.rcpts.is_empty() => Some((554, "Error: no valid recipients")),
            Some(_) => None,
        };
        if let Some((code, text)) = refusal {
            if !self.read_chunk(conn, size, false).await? {
                return Ok(Flow::Drop);
            }
            self.tx = None;
            return Ok(self.error(conn, code, "5.5.1", text).await);
        }
        let first = self.tx.as_ref().is_some_and(|tx| !tx.chunking);
        if first && self.decide_drop() {
            return self.drop_mid_data(conn).await;
        }
        let max = self.sh.config.max_message_size;
        let keep = match &mut self.tx {
            Some(tx) => {
                tx.chunking = true;
                if !tx.too_big && self.msg.len().saturating_add(size) > max {
                    tx.too_big = true;
                    self.msg = Vec::new();
                }
                !tx.too_big
            }
            None => false,
        };
        if !self.read_chunk(conn, size, keep).await? {
            return Ok(Flow::Drop);
        }
        let delay = self.global_delay();
        if !keep {
            self.tx = None;
            self.reply(
                conn,
                delay,
                552,
                "5.3.4",
                "Message size exceeds fixed limit",
            )
            .await;
            return Ok(Flow::Continue);
        }
        if !last {
            let text = format!("Ok: {size} octets received");
            self.reply(conn, delay, 250, "2.0.0", &text).await;
            return Ok(Flow::Continue);
        }
        self.finish(conn, true).await;
        Ok(Flow::Continue)
    }

    /// The end of a message: tempfail-once, accounting, and the reply (or, with LMTP,
    /// one reply per recipient).
    async fn finish<S>(&mut self, conn: &mut Conn<S>, bdat: bool) {
        let Some(tx) = self.tx.take() else {
            return;
        };
        let sh = self.sh.clone();
        let msg = std::mem::take(&mut self.msg);
        let info = parse_headers(&msg);
        // per recipient: accepted, or 451 from tempfail-once
        let mut fresh = Vec::with_capacity(tx.rcpts.len());
        if tx.rcpts.iter().any(|r| r.tempfail_once) {
            let key: Cow<'_, str> = match info.message_id {
                Some(id) => Cow::Borrowed(id),
                None => Cow::Owned(format!("content:{:016x}", crate::generator::fnv1a(&msg))),
            };
            for r in &tx.rcpts {
                fresh.push(r.tempfail_once && sh.first_seen(&key, &r.address));
            }
        } else {
            fresh.resize(tx.rcpts.len(), false);
        }
        let lmtp = sh.config.lmtp;
        let accepted: Vec<&str> = if lmtp {
            tx.rcpts
                .iter()
                .zip(&fresh)
                .filter(|(_, f)| !**f)
                .map(|(r, _)| r.address.as_str())
                .collect()
        } else if fresh.iter().any(|f| *f) {
            Vec::new()
        } else {
            tx.rcpts.iter().map(|r| r.address.as_str()).collect()
        };
        let queue_id = sh.queue_id();
        for (r, fresh) in tx.rcpts.iter().zip(&fresh) {
            if let Some(c) = &r.counters
                && !accepted.is_empty()
                && !(lmtp && *fresh)
            {
                c.delivered();
            }
        }
        if !accepted.is_empty() {
            sh.accept(Delivery {
                queue_id: &queue_id,
                mail_from: &tx.from,
                recipients: &accepted,
                msg: &msg,
                info: &info,
                bdat,
                tls: self.tls,
            });
        }
        let delay = tx.data_delay.max(self.global_delay());
        let ok = format!("Ok: queued as {queue_id}");
        if lmtp {
            for (i, r) in tx.rcpts.iter().enumerate() {
                let d = if i == 0 { delay } else { Duration::ZERO };
                if fresh[i] {
                    let text = format!("<{}> Try again later (tempfail-once)", r.address);
                    self.reply(conn, d, 451, "4.3.0", &text).await;
                } else {
                    let text = format!("<{}> {ok}", r.address);
                    self.reply(conn, d, 250, "2.0.0", &text).await;
                }
            }
        } else if accepted.is_empty() {
            self.reply(conn, delay, 451, "4.3.0", "Try again later (tempfail-once)")
                .await;
        } else {
            self.reply(conn, delay, 250, "2.0.0", &ok).await;
        }
        // keep the buffer's allocation for the next message
        let mut msg = msg;
        msg.clear();
        if msg.capacity() <= 1 << 20 {
            self.msg = msg;
        }
    }
}

/// Parses one command line; the error is the reply to give.
fn parse(line: &[u8]) -> Result<Request<Cow<'_, str>>, (u16, &'static str, String)> {
    if line.contains(&0) {
        return Err((500, "5.5.2", "NUL byte in command".into()));
    }
    Request::parse(&mut line.iter()).map_err(|e| match e {
        ParseError::UnknownCommand | ParseError::NeedsMoreData { .. } => {
            (500, "5.5.2", "Command unrecognized".into())
        }
        ParseError::InvalidSenderAddress => (501, "5.1.7", "Bad sender address syntax".into()),
        ParseError::InvalidRecipientAddress => {
            (501, "5.1.3", "Bad recipient address syntax".into())
        }
        ParseError::SyntaxError { syntax } => (501, "5.5.4", format!("Syntax: {syntax}")),
        ParseError::InvalidParameter { param } => (
            501,
            "5.5.4",
            format!("Invalid parameter {}", printable(param)),
        ),
        ParseError::UnsupportedParameter { param } => (
            555,
            "5.5.4",
            format!("Unsupported parameter {}", printable(&param)),
        ),
        ParseError::ResponseTooLong => (500, "5.5.2", "Line too long".into()),
        ParseError::InvalidResponse { .. } => (500, "5.5.2", "Command unrecognized".into()),
    })
}

/// Client text made safe to echo: printable ASCII, at most 64 characters.
fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(64)
        .collect()
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn special_local_parts() {
        assert_eq!(Special::of("tempfail@x.test"), Special::Tempfail);
        assert_eq!(Special::of("TempFail+7@x.test"), Special::Tempfail);
        assert_eq!(Special::of("permfail@x.test"), Special::Permfail);
        assert_eq!(Special::of("tempfail-once+a@x"), Special::TempfailOnce);
        assert_eq!(Special::of("dropdata@x"), Special::DropData);
        assert_eq!(Special::of("user1@tempfail.test"), Special::None);
        assert_eq!(Special::of("tempfailx@x"), Special::None);
        assert_eq!(Special::of("postmaster"), Special::None);
    }

    #[test]
    fn parse_maps_errors_to_replies() {
        assert!(matches!(
            parse(b"MAIL FROM:<a@b>\r\n"),
            Ok(Request::Mail { .. })
        ));
        assert_eq!(parse(b"FOO\r\n").unwrap_err().0, 500);
        assert_eq!(parse(b"MAIL FROM:<a@b> FOO=1\r\n").unwrap_err().0, 555);
        assert_eq!(parse(b"MAIL TO:<a@b>\r\n").unwrap_err().0, 501);
        assert_eq!(parse(b"NOOP\0\r\n").unwrap_err().0, 500);
    }
}
