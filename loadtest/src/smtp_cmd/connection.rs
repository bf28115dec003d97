//! One connection of `loadtest smtp`: sessions opened (STARTTLS, AUTH) and reused,
//! and transactions sent as the server allows (pipelined, BDAT or DATA).

use super::*;

enum Outcome {
    /// 2xx after the end of data; the reply (with the queue id) is the client's last.
    /// The recipients refused at RCPT are in `Bufs::refused`.
    Accepted {
        /// When the end of data was written.
        data_done: Instant,
    },
    /// A negative reply; `reset` when a transaction may still be open.
    Rejected { code: u16, reset: bool },
}

/// Per-worker reusable buffers.
struct Bufs {
    msg: MessageGen,
    cmds: Vec<u8>,
    to: String,
    /// Positions (0-based) of the recipients refused at RCPT, this message.
    refused: Vec<u64>,
    /// Open loop: the scheduled time for `X-Loadtest-Sent-At` (Unix µs).
    stamp_at: Option<u64>,
}

impl Bufs {
    /// Sets `X-Loadtest-Sent-At` (when stamping): the scheduled time in open loop,
    /// now otherwise.
    fn stamp(&mut self) {
        match self.stamp_at {
            Some(us) => self.msg.stamp(us),
            None => self.msg.stamp_now(),
        }
    }
}

async fn open_session(sh: &Shared) -> Result<SmtpClient, ClientError> {
    let turn = sh
        .next_addr
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let addr = sh.addrs[turn % sh.addrs.len()];
    let mut c = SmtpClient::connect(addr, sh.connect_timeout, sh.timeout).await?;
    c.greeting().await?;
    c.ehlo(&sh.helo).await?;
    if let Some((connector, name)) = &sh.tls {
        if !c.capabilities().starttls {
            return Err(ClientError::Protocol(
                "server does not offer STARTTLS".into(),
            ));
        }
        c = c.starttls(connector, name.clone()).await?;
        c.ehlo(&sh.helo).await?;
    }
    if let Some((user, pass)) = &sh.auth {
        c.auth_plain(user, pass).await?;
    }
    Ok(c)
}

pub(super) async fn run(sh: Arc<Shared>, ack: Option<mpsc::Sender<AckRecord>>) -> Counters {
    let mut st = Counters::default();
    let mut msg = MessageGen::new(sh.template.clone(), sh.run_id, &sh.from, &sh.date);
    if sh.stamp {
        msg = msg.with_stamp();
    }
    let mut bufs = Bufs {
        msg,
        cmds: Vec::with_capacity(256),
        to: String::with_capacity(64),
        refused: Vec::new(),
        stamp_at: None,
    };
    let mut client: Option<SmtpClient> = None;
    let mut on_conn = 0u64;
    let mut pipelining = false;
    let mut bdat = false;
    let mut backoff_n = 0u32;

    'messages: while let Some(Claim { seq, ticket }) = sh.schedule.claim().await {
        // a session to send on
        loop {
            if let (Some(limit), Some(_)) = (sh.per_connection, &client)
                && on_conn >= limit
            {
                client.take().expect("checked").quit().await;
            }
            if client.is_some() {
                break;
            }
            if sh.schedule.stopped() {
                break 'messages;
            }
            match open_session(&sh).await {
                Ok(c) => {
                    sh.connect_failures.connected();
                    backoff_n = 0;
                    st.connections += 1;
                    on_conn = 0;
                    let caps = c.capabilities();
                    pipelining = match sh.pipelining {
                        Pipelining::Auto => caps.pipelining,
                        Pipelining::On => true,
                        Pipelining::Off => false,
                    };
                    bdat = sh.bdat && caps.chunking;
                    if sh.bdat && !caps.chunking && !sh.warned_no_chunking.swap(true, Relaxed) {
                        eprintln!("warning: server does not offer CHUNKING; using DATA");
                    }
                    let _ = sh.mode.set(format!(
                        "{}{}{}",
                        if bdat { "BDAT" } else { "DATA" },
                        if pipelining { ", pipelining" } else { "" },
                        if sh.tls.is_some() { ", STARTTLS" } else { "" },
                    ));
                    client = Some(c);
                }
                Err(e) => {
                    st.error(e.kind(), e.to_string());
                    if !sh.connect_failures.failed(&sh.schedule, &e) && sh.stop_on_error {
                        sh.schedule.stop_with(format!("--stop-on-error: {e}"));
                    }
                    sh.schedule.backoff(&mut backoff_n).await;
                }
            }
        }
        let c = client.as_mut().expect("connected above");
        st.sent += 1;
        on_conn += 1;
        // open loop: stamp and measure from the scheduled time, however late we are
        bufs.stamp_at = ticket.map(|t| t.due_unix_us);
        if let Some(t) = &ticket {
            let lag = tokio::time::Instant::now().saturating_duration_since(t.due);
            sh.tally.send_lag().record(lag);
        }
        match transact(c, &mut bufs, &sh, seq, pipelining, bdat).await {
            Ok(Outcome::Accepted { data_done }) => {
                let now = Instant::now();
                let from = ticket.map_or(data_done, |t| t.due.into_std());
                let latency = now.saturating_duration_since(from);
                st.accepted += 1;
                st.rcpt_rejected += bufs.refused.len() as u64;
                st.accepted_bytes += bufs.msg.len() as u64;
                sh.tally.latency().record(latency);
                sh.timeline.accepted(unix_micros(), latency);
                if let Some(t) = &sh.tracker {
                    t.accepted(seq, &bufs.refused);
                }
                if let Some(tx) = &ack {
                    let _ = tx.send(AckRecord {
                        queue_id: c.queue_id().to_vec(),
                        seq,
                        checksum: bufs.msg.checksum(),
                    });
                }
                sh.tally.done.fetch_add(1, Relaxed);
            }
            Ok(Outcome::Rejected { code, reset }) => {
                st.reject(code);
                sh.timeline.failed(unix_micros());
                sh.tally.done.fetch_add(1, Relaxed);
                sh.tally.failed.fetch_add(1, Relaxed);
                if sh.stop_on_error {
                    sh.schedule.stop_with(format!(
                        "--stop-on-error: message {seq} rejected: {}",
                        c.reply()
                    ));
                }
                if code == 421 {
                    client = None; // the server is closing the connection
                    sh.schedule.backoff(&mut backoff_n).await;
                } else if reset && !matches!(c.rset().await, Ok(true)) {
                    client = None;
                }
            }
            Err(e) => {
                st.error(e.kind(), e.to_string());
                st.failed_in_flight += 1;
                sh.timeline.failed(unix_micros());
                sh.tally.done.fetch_add(1, Relaxed);
                sh.tally.failed.fetch_add(1, Relaxed);
                client = None;
                if sh.stop_on_error {
                    sh.schedule
                        .stop_with(format!("--stop-on-error: message {seq}: {e}"));
                }
                sh.schedule.backoff(&mut backoff_n).await;
            }
        }
    }
    if let Some(c) = client {
        c.quit().await;
    }
    st
}

/// Sleeps 10 ms, 20 ms, ... up to 1 s, waking early when the run stops.
fn rcpt_cmd(buf: &mut Vec<u8>, n: u64, mix: &DomainMix) {
    let domain = mix.pick(n);
    use std::io::Write as _;
    write!(buf, "RCPT TO:<user{n}@{domain}>\r\n").expect("write to Vec");
}

/// One message transaction: MAIL, RCPT..., DATA or BDAT.
async fn transact(
    c: &mut SmtpClient,
    b: &mut Bufs,
    sh: &Shared,
    seq: u64,
    pipelining: bool,
    bdat: bool,
) -> Result<Outcome, ClientError> {
    let k = sh.recipients;
    let first_user = (seq - 1) * k + 1;
    b.to.clear();
    b.refused.clear();
    let _ = write!(b.to, "user{first_user}@{}", sh.mix.pick(first_user));
    if let Some(mix) = &sh.size_mix {
        b.msg.set_template(sh.templates[mix.pick(seq)].clone());
    }
    b.msg.prepare(seq, &b.to);
    let positive = |code: u16| (200..300).contains(&code);

    if pipelining {
        b.cmds.clear();
        b.cmds.extend_from_slice(&sh.mail_cmd);
        for i in 0..k {
            rcpt_cmd(&mut b.cmds, first_user + i, &sh.mix);
        }
        if bdat {
            use std::io::Write as _;
            write!(b.cmds, "BDAT {} LAST\r\n", b.msg.len()).expect("write to Vec");
            c.write(&b.cmds).await?;
            b.stamp();
            for part in b.msg.parts_raw() {
                c.write(part).await?;
            }
        } else {
            b.cmds.extend_from_slice(b"DATA\r\n");
            c.write(&b.cmds).await?;
        }
        c.flush().await?;
        let t0 = Instant::now();

        let mail = c.read_reply().await?;
        if mail == 421 {
            return Ok(Outcome::Rejected {
                code: 421,
                reset: false,
            });
        }
        let mut ok = 0;
        let mut first_bad = None;
        for i in 0..k {
            let code = c.read_reply().await?;
            if code == 421 {
                return Ok(Outcome::Rejected { code, reset: false });
            }
            if positive(code) {
                ok += 1;
            } else {
                first_bad.get_or_insert(code);
                b.refused.push(i);
            }
        }
        let last = c.read_reply().await?;
        let culprit = |last: u16| {
            if !positive(mail) {
                mail
            } else if ok == 0 {
                first_bad.unwrap_or(last)
            } else {
                last
            }
        };
        if bdat {
            if positive(mail) && ok > 0 && positive(last) {
                return Ok(Outcome::Accepted { data_done: t0 });
            }
            return Ok(Outcome::Rejected {
                code: culprit(last),
                reset: last != 421,
            });
        }
        if last != 354 {
            return Ok(Outcome::Rejected {
                code: culprit(last),
                reset: last != 421,
            });
        }
        if !positive(mail) || ok == 0 {
            // DATA was accepted although nothing can be delivered: end it empty
            c.write(b".\r\n").await?;
            c.flush().await?;
            c.read_reply().await?;
            return Ok(Outcome::Rejected {
                code: culprit(last),
                reset: true,
            });
        }
        return send_data(c, b).await;
    }

    // one command at a time
    let mail = c.command(&sh.mail_cmd).await?;
    if !positive(mail) {
        return Ok(Outcome::Rejected {
            code: mail,
            reset: false,
        });
    }
    let mut ok = 0;
    let mut first_bad = None;
    for i in 0..k {
        b.cmds.clear();
        rcpt_cmd(&mut b.cmds, first_user + i, &sh.mix);
        let code = c.command(&b.cmds).await?;
        if code == 421 {
            return Ok(Outcome::Rejected { code, reset: false });
        }
        if positive(code) {
            ok += 1;
        } else {
            first_bad.get_or_insert(code);
            b.refused.push(i);
        }
    }
    if ok == 0 {
        return Ok(Outcome::Rejected {
            code: first_bad.unwrap_or(554),
            reset: true,
        });
    }
    if bdat {
        use std::io::Write as _;
        b.cmds.clear();
        write!(b.cmds, "BDAT {} LAST\r\n", b.msg.len()).expect("write to Vec");
        c.write(&b.cmds).await?;
        b.stamp();
        for part in b.msg.parts_raw() {
            c.write(part).await?;
        }
        c.flush().await?;
        let t0 = Instant::now();
        let code = c.read_reply().await?;
        if positive(code) {
            return Ok(Outcome::Accepted { data_done: t0 });
        }
        return Ok(Outcome::Rejected {
            code,
            reset: code != 421,
        });
    }
    let data = c.command(b"DATA\r\n").await?;
    if data != 354 {
        return Ok(Outcome::Rejected {
            code: data,
            reset: data != 421,
        });
    }
    send_data(c, b).await
}

/// After a 354: the dot-stuffed message, ".", and the final reply.
async fn send_data(c: &mut SmtpClient, b: &mut Bufs) -> Result<Outcome, ClientError> {
    b.stamp();
    for part in b.msg.parts_stuffed() {
        c.write(part).await?;
    }
    c.write(b".\r\n").await?;
    c.flush().await?;
    let t0 = Instant::now();
    let code = c.read_reply().await?;
    if (200..300).contains(&code) {
        Ok(Outcome::Accepted { data_done: t0 })
    } else {
        Ok(Outcome::Rejected { code, reset: false })
    }
}
