//! The outbound SMTP client against real peers: Postfix's `smtp-sink` (one per test, on
//! a free port, killed when the test ends) and small scripted servers in this file for
//! exact per-recipient replies, STARTTLS, misbehaviour and hangs. Only 127.0.0.1.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postroad_queue::{DsnRet, Envelope, Recipient};
use postroad_relay::client::{
    ClientConfig, ClientError, Connection, EnhancedCode, Reply, Response, Stage, TlsPolicy,
    TransactionResult,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The server's reply that decided `r` (the test expects one).
fn remote(r: &Response) -> &Reply {
    r.reply()
        .unwrap_or_else(|| panic!("expected a server reply, got {r}"))
}

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

fn config(tls: TlsPolicy) -> ClientConfig {
    ClientConfig {
        tls,
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        data_timeout: Duration::from_secs(5),
        ..ClientConfig::new("client.test")
    }
}

fn envelope(sender: &str, recipients: &[&str]) -> Envelope {
    let rcpts = recipients.iter().map(|r| Recipient::new(*r)).collect();
    Envelope::new(sender, rcpts, "127.0.0.1".parse().unwrap())
}

async fn send(
    conn: &mut Connection,
    env: &Envelope,
    body: &[u8],
) -> Result<TransactionResult, ClientError> {
    let rcpts: Vec<&Recipient> = env.recipients.iter().collect();
    conn.send(env, &env.sender, &rcpts, body).await
}

/// Each reply's code, or `local <status>` for a reason of the client's own.
fn codes(replies: &[Response]) -> Vec<String> {
    replies
        .iter()
        .map(|r| match r {
            Response::Remote(r) => r.code.to_string(),
            Response::Local(l) => format!("local {}", l.enhanced),
        })
        .collect()
}

const BODY: &[u8] = b"Subject: test\r\nFrom: a@client.test\r\n\r\nHello.\r\nEnd of test.\r\n";

/// Postfix's smtp-sink on a free port; killed on drop. Every transaction is dumped to a
/// file in `dump` (`-d`).
struct Sink {
    child: Child,
    addr: SocketAddr,
    dump: tempfile::TempDir,
}

fn smtp_sink_path() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([
            PathBuf::from("/usr/sbin"),
            PathBuf::from("/usr/lib/postfix"),
        ])
        .map(|dir| dir.join("smtp-sink"))
        .find(|p| p.exists())
        .expect("smtp-sink not found: install Postfix (scripts/install-test-deps)")
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Sink {
    fn start(flags: &[&str]) -> Sink {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let dump = tempfile::tempdir().unwrap();
        // smtp-sink drops to `nobody` when started as root; it must write the dumps.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dump.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut cmd = Command::new(smtp_sink_path());
        if running_as_root() {
            cmd.args(["-u", "nobody"]);
        }
        cmd.args(flags)
            .arg("-d")
            .arg(dump.path().join("msg."))
            .arg(addr.to_string())
            .arg("100")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = cmd.spawn().expect("cannot start smtp-sink");
        let mut sink = Sink { child, addr, dump };
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "smtp-sink did not start listening on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Still running: what answered is this sink, not something else on the port.
        assert!(
            sink.child.try_wait().unwrap().is_none(),
            "smtp-sink exited (port {port} taken?)"
        );
        sink
    }

    /// The dumped transactions, once `ready` holds for them (within 5 s).
    async fn dumps(&self, ready: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut files: Vec<String> = std::fs::read_dir(self.dump.path())
                .unwrap()
                .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                .collect();
            files.sort();
            if ready(&files) {
                return files;
            }
            assert!(
                Instant::now() < deadline,
                "smtp-sink dumps never got ready: {files:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scripted SMTP server: fixed replies per command (by recipient for RCPT), with
/// optional misbehaviour. An empty reply means "never answer".
#[derive(Clone)]
struct Script {
    greeting: &'static [u8],
    extensions: Vec<&'static str>,
    /// Sent instead of the EHLO reply.
    ehlo_raw: Option<Vec<u8>>,
    /// Answers EHLO with continuation lines forever.
    ehlo_flood: bool,
    mail: &'static str,
    rcpt: fn(&str) -> &'static str,
    data: &'static str,
    end: &'static str,
    /// Closes the connection after the first line of message data.
    drop_in_data: bool,
    /// Offers STARTTLS with this configuration.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Answers STARTTLS with 220, then sends plain text instead of a handshake.
    tls_garbage: bool,
    /// Answers DATA with `data` even when no recipient was accepted (broken servers do).
    data_always: bool,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            greeting: b"220 scripted.test ESMTP\r\n",
            extensions: vec!["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"],
            ehlo_raw: None,
            ehlo_flood: false,
            mail: "250 2.1.0 Ok",
            rcpt: |_| "250 2.1.5 Ok",
            data: "354 End data with <CR><LF>.<CR><LF>",
            end: "250 2.0.0 Ok: queued",
            drop_in_data: false,
            tls: None,
            tls_garbage: false,
            data_always: false,
        }
    }
}

/// What a scripted server saw, over all its connections.
#[derive(Default, Debug)]
struct Log {
    /// Every command line, in order, without its CRLF.
    commands: Vec<String>,
    /// Each message's data as received, un-stuffed (CRLF kept, final "." removed).
    messages: Vec<Vec<u8>>,
    /// Per pipelined MAIL: whether the whole group up to DATA had arrived with it.
    whole_groups: Vec<bool>,
    /// Sessions that completed a TLS handshake.
    tls_sessions: usize,
}

type Shared = Arc<Mutex<Log>>;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn scripted(script: Script) -> (SocketAddr, Shared) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Shared::default();
    let shared = log.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (script, log) = (script.clone(), shared.clone());
            tokio::spawn(async move {
                let _ = serve(Box::new(tcp), &script, &log).await;
            });
        }
    });
    (addr, log)
}

async fn serve(stream: Box<dyn Io>, s: &Script, log: &Shared) -> io::Result<()> {
    let mut io = BufReader::new(stream);
    io.get_mut().write_all(s.greeting).await?;
    let mut in_mail = false;
    let mut accepted = 0;
    let mut tls = false;
    loop {
        let mut line = Vec::new();
        if io.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let command = String::from_utf8_lossy(&line).trim_end().to_string();
        log.lock().unwrap().commands.push(command.clone());
        let verb = command.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let reply: String = match verb.as_str() {
            "EHLO" => {
                if s.ehlo_flood {
                    loop {
                        io.get_mut().write_all(b"250-flood\r\n").await?;
                    }
                }
                if let Some(raw) = &s.ehlo_raw {
                    io.get_mut().write_all(raw).await?;
                    continue;
                }
                let mut lines = vec!["scripted.test"];
                lines.extend(&s.extensions);
                if s.tls.is_some() && !tls {
                    lines.push("STARTTLS");
                }
                let last = lines.len() - 1;
                lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
                    .collect::<Vec<_>>()
                    .join("\r\n")
            }
            "HELO" => "250 scripted.test".into(),
            "STARTTLS" => match s.tls.clone() {
                Some(config) if !tls => {
                    io.get_mut()
                        .write_all(b"220 2.0.0 Ready to start TLS\r\n")
                        .await?;
                    if s.tls_garbage {
                        io.get_mut()
                            .write_all(b"this is not a TLS handshake\r\n")
                            .await?;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        return Ok(());
                    }
                    let stream = tokio_rustls::TlsAcceptor::from(config)
                        .accept(io.into_inner())
                        .await?;
                    io = BufReader::new(Box::new(stream) as Box<dyn Io>);
                    tls = true;
                    log.lock().unwrap().tls_sessions += 1;
                    continue;
                }
                _ => "502 5.5.1 Error: command not implemented".into(),
            },
            "MAIL" => {
                accepted = 0;
                let buffered = String::from_utf8_lossy(io.buffer()).to_string();
                log.lock()
                    .unwrap()
                    .whole_groups
                    .push(buffered.ends_with("DATA\r\n"));
                in_mail = s.mail.starts_with('2');
                s.mail.into()
            }
            "RCPT" if !in_mail => "503 5.5.1 Error: need MAIL command".into(),
            "RCPT" => {
                let address = command.split(['<', '>']).nth(1).unwrap_or("");
                let reply = (s.rcpt)(address);
                if reply.starts_with('2') {
                    accepted += 1;
                }
                reply.into()
            }
            "DATA" if accepted == 0 && !s.data_always => {
                "554 5.5.1 Error: no valid recipients".into()
            }
            "DATA" if !s.data.starts_with('3') => s.data.into(),
            "DATA" => {
                io.get_mut()
                    .write_all(format!("{}\r\n", s.data).as_bytes())
                    .await?;
                let mut message = Vec::new();
                loop {
                    let mut line = Vec::new();
                    if io.read_until(b'\n', &mut line).await? == 0 {
                        return Ok(());
                    }
                    if s.drop_in_data {
                        return Ok(());
                    }
                    if line == b".\r\n" {
                        break;
                    }
                    let unstuffed = if line.starts_with(b".") {
                        &line[1..]
                    } else {
                        &line[..]
                    };
                    message.extend_from_slice(unstuffed);
                }
                log.lock().unwrap().messages.push(message);
                (in_mail, accepted) = (false, 0);
                s.end.into()
            }
            "RSET" => {
                (in_mail, accepted) = (false, 0);
                "250 2.0.0 Ok".into()
            }
            "NOOP" => "250 2.0.0 Ok".into(),
            "QUIT" => {
                io.get_mut().write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => "502 5.5.2 Error: command not recognized".into(),
        };
        if reply.is_empty() {
            std::future::pending::<()>().await;
        }
        io.get_mut()
            .write_all(format!("{reply}\r\n").as_bytes())
            .await?;
    }
}

/// A CA and a server certificate signed by it for `mx.test.example`.
struct Pki {
    roots: Arc<rustls::RootCertStore>,
    server: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Postroad test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["mx.test.example".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone(), ca.der().clone()], key)
    .unwrap();
    Pki {
        roots: Arc::new(roots),
        server: Arc::new(server),
    }
}

// ---------------------------------------------------------------------------------
// Against smtp-sink
// ---------------------------------------------------------------------------------

async fn three_recipients_to_sink(flags: &[&str], pipelined: bool) {
    let sink = Sink::start(flags);
    let mut conn = Connection::connect(sink.addr, "localhost", &config(TlsPolicy::None))
        .await
        .unwrap();
    assert_eq!(conn.extensions().pipelining, pipelined);
    assert_eq!(conn.greeting(), "smtp-sink ESMTP");
    let env = envelope(
        "sender@client.test",
        &["a@sink.test", "b@sink.test", "c@sink.test"],
    );
    let result = send(&mut conn, &env, BODY).await.unwrap();
    assert_eq!(remote(&result.mail).code, 250);
    assert_eq!(codes(&result.recipients), ["250", "250", "250"]);
    assert_eq!(
        remote(&result.recipients[0])
            .enhanced
            .map(|e| e.to_string())
            .as_deref(),
        Some("2.1.5")
    );
    assert_eq!(result.data.as_ref().map(|r| r.code), Some(250));
    assert!((0..3).all(|i| result.is_delivered(i)));

    // The same session carries a second message, with the null sender.
    let bounce = envelope("", &["d@sink.test"]);
    let result = send(
        &mut conn,
        &bounce,
        b"Subject: bounce\r\n\r\nEnd of test.\r\n",
    )
    .await
    .unwrap();
    assert!(result.is_delivered(0));
    conn.quit().await;

    let dumps = sink
        .dumps(|d| d.len() == 2 && d.iter().all(|m| m.contains("End of test.")))
        .await;
    let first = dumps.iter().find(|d| d.contains("Subject: test")).unwrap();
    assert!(
        first.contains("X-Mail-Args: <sender@client.test>\n"),
        "{first}"
    );
    for r in ["a", "b", "c"] {
        assert!(
            first.contains(&format!("X-Rcpt-Args: <{r}@sink.test>\n")),
            "{first}"
        );
    }
    assert!(first.contains("X-Helo-Args: client.test\n"), "{first}");
    assert!(first.contains("\nHello.\nEnd of test.\n"), "{first}");
    let second = dumps
        .iter()
        .find(|d| d.contains("Subject: bounce"))
        .unwrap();
    assert!(second.contains("X-Mail-Args: <>\n"), "{second}");
}

#[tokio::test]
async fn sink_pipelined_three_recipients() {
    three_recipients_to_sink(&[], true).await;
}

#[tokio::test]
async fn sink_unpipelined_three_recipients() {
    three_recipients_to_sink(&["-p"], false).await;
}

#[tokio::test]
async fn sink_ehlo_rejected_falls_back_to_helo() {
    let sink = Sink::start(&["-f", "EHLO"]);
    let mut conn = Connection::connect(sink.addr, "localhost", &config(TlsPolicy::Opportunistic))
        .await
        .unwrap();
    assert!(!conn.extensions().pipelining && !conn.is_tls());
    let env = envelope(
        "s@client.test",
        &["a@sink.test", "b@sink.test", "c@sink.test"],
    );
    let result = send(&mut conn, &env, BODY).await.unwrap();
    assert!((0..3).all(|i| result.is_delivered(i)), "{result:?}");
    let dumps = sink.dumps(|d| d.len() == 1).await;
    assert!(dumps[0].contains("X-Client-Proto: SMTP\n"), "{}", dumps[0]);
}

#[tokio::test]
async fn sink_4xx_at_mail() {
    let sink = Sink::start(&["-r", "MAIL"]);
    let mut conn = Connection::connect(sink.addr, "localhost", &config(TlsPolicy::None))
        .await
        .unwrap();
    let env = envelope("s@client.test", &["a@sink.test", "b@sink.test"]);
    let result = send(&mut conn, &env, BODY).await.unwrap();
    assert_eq!(remote(&result.mail).code, 450);
    assert_eq!(
        remote(&result.mail)
            .enhanced
            .map(|e| e.to_string())
            .as_deref(),
        Some("4.3.0")
    );
    assert!(result.mail.is_transient());
    assert_eq!(result.recipients, vec![result.mail.clone(); 2]);
    assert_eq!(result.data, None);
    // The session is still in step.
    conn.reset().await.unwrap();
    let again = send(&mut conn, &env, BODY).await.unwrap();
    assert_eq!(again.mail.code(), Some(450));
    conn.quit().await;
}

#[tokio::test]
async fn sink_5xx_greeting_is_permanent() {
    let sink = Sink::start(&["-f", "CONNECT"]);
    let err = Connection::connect(sink.addr, "localhost", &config(TlsPolicy::None))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Greeting(r) if r.code / 100 == 5),
        "{err}"
    );
    assert!(err.is_permanent());
    assert!(err.reply().is_some());
}

#[tokio::test]
async fn sink_421_at_rcpt_ends_the_session() {
    let sink = Sink::start(&["-Q", "RCPT"]);
    let mut conn = Connection::connect(sink.addr, "localhost", &config(TlsPolicy::None))
        .await
        .unwrap();
    let env = envelope("s@client.test", &["a@sink.test"]);
    let err = send(&mut conn, &env, BODY).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Rejected { stage: Stage::Rcpt, reply } if reply.code == 421),
        "{err}"
    );
    assert!(!err.is_permanent());
    assert!(matches!(
        send(&mut conn, &env, BODY).await,
        Err(ClientError::Unusable)
    ));
}

#[tokio::test]
async fn sink_disconnect_at_end_of_data_is_an_error() {
    let sink = Sink::start(&["-q", "."]);
    let mut conn = Connection::connect(sink.addr, "localhost", &config(TlsPolicy::None))
        .await
        .unwrap();
    let env = envelope("s@client.test", &["a@sink.test", "b@sink.test"]);
    let err = send(&mut conn, &env, BODY).await.unwrap_err();
    assert!(matches!(err, ClientError::Closed(Stage::Dot)), "{err}");
    assert!(!err.is_permanent() && !err.is_stale_connection());
    assert!(!conn.is_usable());
}

#[tokio::test]
async fn sink_8bit_message_without_8bitmime_is_refused() {
    let sink = Sink::start(&["-8"]);
    let mut conn = Connection::connect(sink.addr, "localhost", &config(TlsPolicy::None))
        .await
        .unwrap();
    assert!(!conn.extensions().eight_bit_mime);
    let mut env = envelope("s@client.test", &["a@sink.test", "b@sink.test"]);
    env.body_8bit = true;
    let body = "Subject: caf\u{e9}\r\n\r\nna\u{ef}ve\r\n".as_bytes();
    let result = send(&mut conn, &env, body).await.unwrap();
    let want = Response::local(EnhancedCode::new(5, 6, 3), "remote server lacks 8BITMIME");
    assert_eq!(result.mail, want);
    assert_eq!(result.recipients, vec![want.clone(); 2]);
    assert_eq!(result.data, None);
    // SMTPUTF8 is not offered by smtp-sink either.
    env.body_8bit = false;
    env.smtputf8 = true;
    let result = send(&mut conn, &env, body).await.unwrap();
    assert_eq!(
        result.mail.to_string(),
        "5.6.7 remote server lacks SMTPUTF8"
    );
    assert!(result.mail.is_permanent());
    // Nothing was sent; the session still works.
    env.smtputf8 = false;
    assert!(send(&mut conn, &env, BODY).await.unwrap().is_delivered(1));
    assert_eq!(sink.dumps(|d| d.len() == 1).await.len(), 1);
}

#[tokio::test]
async fn sink_gets_8bitmime_and_dsn_parameters() {
    let sink = Sink::start(&[]);
    let mut conn = Connection::connect(sink.addr, "localhost", &config(TlsPolicy::None))
        .await
        .unwrap();
    assert!(conn.extensions().dsn && conn.extensions().eight_bit_mime);
    let mut env = envelope("s@client.test", &["a@sink.test", "b@sink.test"]);
    env.body_8bit = true;
    env.dsn_ret = Some(DsnRet::Full);
    env.dsn_envid = Some("env id+1".into());
    env.recipients[0].notify.success = true;
    env.recipients[0].notify.failure = true;
    env.recipients[0].orcpt = Some("A=B@sink.test".into());
    env.recipients[1].notify.never = true;
    let result = send(
        &mut conn,
        &env,
        "Subject: x\r\n\r\nna\u{ef}ve\r\n".as_bytes(),
    )
    .await
    .unwrap();
    assert!(result.is_delivered(0) && result.is_delivered(1));
    let dumps = sink.dumps(|d| d.len() == 1).await;
    let d = &dumps[0];
    assert!(
        d.contains("X-Mail-Args: <s@client.test> BODY=8BITMIME RET=FULL ENVID=env+20id+2B1\n"),
        "{d}"
    );
    assert!(
        d.contains(
            "X-Rcpt-Args: <a@sink.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;A+3DB@sink.test\n"
        ),
        "{d}"
    );
    assert!(
        d.contains("X-Rcpt-Args: <b@sink.test> NOTIFY=NEVER\n"),
        "{d}"
    );
}

#[tokio::test]
async fn sink_without_starttls_and_tls_required() {
    let sink = Sink::start(&[]);
    for policy in [TlsPolicy::Required, TlsPolicy::RequiredVerify] {
        let err = Connection::connect(sink.addr, "localhost", &config(policy))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::TlsRequired), "{err}");
        assert!(!err.is_permanent());
        assert_eq!(err.response().enhanced(), EnhancedCode::parse("4.7.4"));
    }
    // Opportunistic goes on in plain text.
    let conn = Connection::connect(sink.addr, "localhost", &config(TlsPolicy::Opportunistic))
        .await
        .unwrap();
    assert!(!conn.is_tls());
}

// ---------------------------------------------------------------------------------
// Against scripted servers
// ---------------------------------------------------------------------------------

fn mixed_rcpt(address: &str) -> &'static str {
    match address.split('@').next().unwrap_or("") {
        "later" => "450 4.2.1 Mailbox busy",
        "unknown" => "550-5.1.1 No such user here\r\n550 5.1.1 Try another",
        _ => "250 2.1.5 Ok",
    }
}

async fn per_recipient_replies(pipelining: bool) {
    let mut script = Script {
        rcpt: mixed_rcpt,
        ..Script::default()
    };
    if !pipelining {
        script.extensions.retain(|e| *e != "PIPELINING");
    }
    let (addr, log) = scripted(script).await;
    let mut conn = Connection::connect(addr, "scripted.test", &config(TlsPolicy::None))
        .await
        .unwrap();
    let env = envelope(
        "s@client.test",
        &["ok@x.test", "later@x.test", "unknown@x.test", "fine@x.test"],
    );
    let result = send(&mut conn, &env, BODY).await.unwrap();
    assert_eq!(codes(&result.recipients), ["250", "450", "550", "250"]);
    assert_eq!(result.recipients[1].to_string(), "450 4.2.1 Mailbox busy");
    assert_eq!(
        remote(&result.recipients[2])
            .enhanced
            .map(|e| e.to_string())
            .as_deref(),
        Some("5.1.1")
    );
    assert_eq!(
        remote(&result.recipients[2]).text,
        "No such user here\nTry another"
    );
    assert_eq!(
        result.data.as_ref().unwrap().to_string(),
        "250 2.0.0 Ok: queued"
    );
    let delivered: Vec<bool> = (0..4).map(|i| result.is_delivered(i)).collect();
    assert_eq!(delivered, [true, false, false, true]);

    // Nobody accepted: no message, and the session is clean for the next one.
    let nobody = envelope("s@client.test", &["later@x.test", "unknown@x.test"]);
    let result = send(&mut conn, &nobody, BODY).await.unwrap();
    assert_eq!(codes(&result.recipients), ["450", "550"]);
    assert_eq!(result.data, None);
    let result = send(&mut conn, &env, b"second\r\n").await.unwrap();
    assert!(result.is_delivered(3));
    conn.quit().await;

    let log = log.lock().unwrap();
    assert_eq!(log.messages, [BODY, b"second\r\n"]);
    let data_commands = log.commands.iter().filter(|c| *c == "DATA").count();
    let rsets = log.commands.iter().filter(|c| *c == "RSET").count();
    if pipelining {
        // DATA went out with each group (and got 554 when nobody was accepted); each
        // group was one write.
        assert_eq!(data_commands, 3);
        assert_eq!(log.whole_groups, [true, true, true]);
    } else {
        assert_eq!(data_commands, 2);
        assert!(log.whole_groups.iter().all(|whole| !whole));
    }
    assert_eq!(rsets, 1);
    assert_eq!(log.commands.last().map(String::as_str), Some("QUIT"));
}

#[tokio::test]
async fn scripted_per_recipient_replies_pipelined() {
    per_recipient_replies(true).await;
}

#[tokio::test]
async fn scripted_per_recipient_replies_unpipelined() {
    per_recipient_replies(false).await;
}

#[tokio::test]
async fn scripted_mail_4xx_pipelined_stays_in_step() {
    let (addr, log) = scripted(Script {
        mail: "451 4.3.0 Try again later",
        ..Script::default()
    })
    .await;
    let mut conn = Connection::connect(addr, "scripted.test", &config(TlsPolicy::None))
        .await
        .unwrap();
    let env = envelope("s@client.test", &["a@x.test", "b@x.test", "c@x.test"]);
    let result = send(&mut conn, &env, BODY).await.unwrap();
    assert_eq!(result.mail.to_string(), "451 4.3.0 Try again later");
    // Each recipient carries the MAIL reply, not the RCPT replies that followed it.
    assert_eq!(result.recipients, vec![result.mail.clone(); 3]);
    assert_eq!(result.data, None);
    // The RCPT and DATA replies were all consumed: the next command is in step.
    conn.reset().await.unwrap();
    assert!(log.lock().unwrap().messages.is_empty());
}

#[tokio::test]
async fn scripted_data_wanted_without_recipients() {
    let (addr, log) = scripted(Script {
        rcpt: |_| "550 5.1.1 No such user",
        data_always: true,
        ..Script::default()
    })
    .await;
    let mut conn = Connection::connect(addr, "scripted.test", &config(TlsPolicy::None))
        .await
        .unwrap();
    let env = envelope("s@client.test", &["a@x.test", "b@x.test"]);
    let result = send(&mut conn, &env, BODY).await.unwrap();
    assert_eq!(codes(&result.recipients), ["550", "550"]);
    assert_eq!(result.data, None);
    // The server got an empty message for nobody instead of the body, then RSET.
    conn.reset().await.unwrap();
    let log = log.lock().unwrap();
    assert_eq!(log.messages, [b""]);
    assert_eq!(log.commands.iter().filter(|c| *c == "RSET").count(), 2);
}

#[tokio::test]
async fn scripted_data_rejected() {
    let (addr, _log) = scripted(Script {
        data: "554 5.7.1 Not from you",
        ..Script::default()
    })
    .await;
    let mut conn = Connection::connect(addr, "scripted.test", &config(TlsPolicy::None))
        .await
        .unwrap();
    let env = envelope("s@client.test", &["a@x.test"]);
    let result = send(&mut conn, &env, BODY).await.unwrap();
    assert_eq!(remote(&result.recipients[0]).code, 250);
    assert_eq!(result.data.as_ref().map(|r| r.code), Some(554));
    assert!(!result.is_delivered(0));
    conn.reset().await.unwrap();
}

#[tokio::test]
async fn scripted_final_reply_5xx_and_4xx() {
    for (end, code) in [
        ("554 5.6.0 Content rejected", 554),
        ("451 4.3.0 Queue full", 451),
    ] {
        let (addr, _log) = scripted(Script {
            end,
            ..Script::default()
        })
        .await;
        let mut conn = Connection::connect(addr, "scripted.test", &config(TlsPolicy::None))
            .await
            .unwrap();
        let env = envelope("s@client.test", &["a@x.test", "b@x.test"]);
        let result = send(&mut conn, &env, BODY).await.unwrap();
        assert_eq!(codes(&result.recipients), ["250", "250"]);
        assert_eq!(result.data.as_ref().map(|r| r.code), Some(code));
        assert!(!result.is_delivered(0) && !result.is_delivered(1));
        // The transaction is over; the session goes on.
        conn.reset().await.unwrap();
    }
}

#[tokio::test]
async fn scripted_disconnect_mid_data_is_an_error() {
    let (addr, log) = scripted(Script {
        drop_in_data: true,
        ..Script::default()
    })
    .await;
    let mut conn = Connection::connect(addr, "scripted.test", &config(TlsPolicy::None))
        .await
        .unwrap();
    let env = envelope("s@client.test", &["a@x.test", "b@x.test"]);
    // Big enough that the client is still writing when the server goes away.
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    for i in 0..50_000 {
        body.extend_from_slice(format!("line {i} of a long message\r\n").as_bytes());
    }
    let err = send(&mut conn, &env, &body).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Closed(_) | ClientError::Io(_)),
        "{err}"
    );
    assert!(!err.is_permanent());
    assert!(matches!(conn.reset().await, Err(ClientError::Unusable)));
    assert!(log.lock().unwrap().messages.is_empty());
}

#[tokio::test]
async fn scripted_size_limit() {
    let (addr, log) = scripted(Script {
        extensions: vec!["PIPELINING", "SIZE 1000"],
        ..Script::default()
    })
    .await;
    let mut conn = Connection::connect(addr, "scripted.test", &config(TlsPolicy::None))
        .await
        .unwrap();
    assert_eq!(conn.extensions().size, Some(1000));
    let env = envelope("s@client.test", &["a@x.test", "b@x.test"]);
    let big = vec![b'x'; 2000];
    let result = send(&mut conn, &env, &big).await.unwrap();
    let want = Response::local(
        EnhancedCode::new(5, 3, 4),
        "message too big for the remote server",
    );
    assert_eq!(result.mail, want);
    assert_eq!(result.recipients, vec![want.clone(); 2]);
    assert!(result.mail.is_permanent() && result.data.is_none());
    assert!(
        !log.lock()
            .unwrap()
            .commands
            .iter()
            .any(|c| c.starts_with("MAIL"))
    );
    // A small one goes, with SIZE=.
    let result = send(&mut conn, &env, BODY).await.unwrap();
    assert!(result.is_delivered(0));
    let log = log.lock().unwrap();
    let mail = log.commands.iter().find(|c| c.starts_with("MAIL")).unwrap();
    assert_eq!(
        mail,
        &format!("MAIL FROM:<s@client.test> SIZE={}", BODY.len())
    );
}

#[tokio::test]
async fn scripted_dot_stuffing_and_line_endings() {
    let (addr, log) = scripted(Script::default()).await;
    let mut conn = Connection::connect(addr, "scripted.test", &config(TlsPolicy::None))
        .await
        .unwrap();
    let env = envelope("s@client.test", &["a@x.test"]);
    let body: &[u8] =
        b"Subject: dots\r\n\r\n.\r\n..\r\n.leading dot\r\nbare lf\n.after bare lf\nmid.dle\r\n.";
    let want: &[u8] = b"Subject: dots\r\n\r\n.\r\n..\r\n.leading dot\r\nbare lf\r\n.after bare lf\r\nmid.dle\r\n.\r\n";
    assert!(send(&mut conn, &env, body).await.unwrap().is_delivered(0));
    // A body of several write blocks, with dots at the start of many lines.
    let mut big = Vec::new();
    for i in 0..20_000 {
        big.extend_from_slice(if i % 2 == 0 {
            b".dot line\r\n"
        } else {
            b"plain line\r\n"
        });
    }
    assert!(send(&mut conn, &env, &big).await.unwrap().is_delivered(0));
    assert!(send(&mut conn, &env, b"").await.unwrap().is_delivered(0));
    let log = log.lock().unwrap();
    assert_eq!(log.messages.len(), 3);
    assert_eq!(log.messages[0], want);
    assert_eq!(log.messages[1], big);
    assert_eq!(log.messages[2], b"");
}

#[tokio::test]
async fn scripted_unsafe_addresses_are_not_sent() {
    let (addr, log) = scripted(Script::default()).await;
    let mut conn = Connection::connect(addr, "scripted.test", &config(TlsPolicy::None))
        .await
        .unwrap();
    let env = envelope(
        "s@client.test",
        &["ok@x.test", "evil@x.test>\r\nRSET\r\nRCPT TO:<x@x.test"],
    );
    let result = send(&mut conn, &env, BODY).await.unwrap();
    assert_eq!(codes(&result.recipients), ["250", "local 5.1.3"]);
    assert!(result.is_delivered(0) && !result.is_delivered(1));
    assert!(
        !log.lock()
            .unwrap()
            .commands
            .iter()
            .any(|c| c.contains("evil"))
    );
}

#[tokio::test]
async fn scripted_starttls_opportunistic() {
    let pki = pki();
    let (addr, log) = scripted(Script {
        tls: Some(pki.server.clone()),
        ..Script::default()
    })
    .await;
    // Any certificate will do, whatever the name.
    let mut conn = Connection::connect(
        addr,
        "other.name.example",
        &config(TlsPolicy::Opportunistic),
    )
    .await
    .unwrap();
    assert!(conn.is_tls());
    assert!(
        !conn.extensions().starttls,
        "extensions are those said under TLS"
    );
    assert!(conn.extensions().pipelining);
    let env = envelope("s@client.test", &["a@x.test", "b@x.test"]);
    assert!(send(&mut conn, &env, BODY).await.unwrap().is_delivered(1));
    conn.quit().await;
    {
        let log = log.lock().unwrap();
        assert_eq!(log.tls_sessions, 1);
        assert_eq!(log.messages, [BODY]);
        let ehlos = log
            .commands
            .iter()
            .filter(|c| c.starts_with("EHLO"))
            .count();
        assert_eq!(ehlos, 2);
    }

    // TlsPolicy::None never asks.
    let conn = Connection::connect(addr, "mx.test.example", &config(TlsPolicy::None))
        .await
        .unwrap();
    assert!(!conn.is_tls() && conn.extensions().starttls);
}

#[tokio::test]
async fn scripted_starttls_verify() {
    let pki = pki();
    let (addr, _log) = scripted(Script {
        tls: Some(pki.server.clone()),
        ..Script::default()
    })
    .await;
    let verify = ClientConfig {
        tls_roots: pki.roots.clone(),
        ..config(TlsPolicy::RequiredVerify)
    };
    // The right name (a trailing dot, as MX names have, is fine) and the right roots.
    for name in ["mx.test.example", "mx.test.example."] {
        let mut conn = Connection::connect(addr, name, &verify).await.unwrap();
        assert!(conn.is_tls());
        let env = envelope("s@client.test", &["a@x.test"]);
        assert!(send(&mut conn, &env, BODY).await.unwrap().is_delivered(0));
    }
    // The wrong name.
    let err = Connection::connect(addr, "wrong.test.example", &verify)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Tls(_)), "{err}");
    // Roots that do not know the CA.
    let strangers = ClientConfig {
        tls_roots: self::pki().roots,
        ..config(TlsPolicy::RequiredVerify)
    };
    let err = Connection::connect(addr, "mx.test.example", &strangers)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Tls(_)), "{err}");
    assert!(!err.is_permanent());
    // Required (without verify) takes any certificate.
    let conn = Connection::connect(addr, "wrong.test.example", &config(TlsPolicy::Required))
        .await
        .unwrap();
    assert!(conn.is_tls());
}

#[tokio::test]
async fn scripted_starttls_handshake_failure() {
    let pki = pki();
    let (addr, _log) = scripted(Script {
        tls: Some(pki.server),
        tls_garbage: true,
        ..Script::default()
    })
    .await;
    let err = Connection::connect(addr, "mx.test.example", &config(TlsPolicy::Opportunistic))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Tls(_)), "{err}");
    assert_eq!(err.response().enhanced(), EnhancedCode::parse("4.7.5"));
}

#[tokio::test]
async fn scripted_garbage_is_a_protocol_error() {
    let long_line = {
        let mut l = b"250-".to_vec();
        l.extend(std::iter::repeat_n(b'x', 10_000));
        l
    };
    let too_many = "250-line\r\n".repeat(150).into_bytes();
    let cases: Vec<(&str, Script)> = vec![
        (
            "greeting",
            Script {
                greeting: b"HELLO, I am not an SMTP server\r\n",
                ..Script::default()
            },
        ),
        (
            "binary",
            Script {
                ehlo_raw: Some(vec![0, 159, 146, 150, b'\n', 1, 2, 3, b'\n']),
                ..Script::default()
            },
        ),
        (
            "mixed codes",
            Script {
                ehlo_raw: Some(b"250-scripted\r\n550 oops\r\n".to_vec()),
                ..Script::default()
            },
        ),
        (
            "long line",
            Script {
                ehlo_raw: Some(long_line),
                ..Script::default()
            },
        ),
        (
            "too many lines",
            Script {
                ehlo_raw: Some(too_many),
                ..Script::default()
            },
        ),
        (
            "endless reply",
            Script {
                ehlo_flood: true,
                ..Script::default()
            },
        ),
        (
            "354 to EHLO",
            Script {
                ehlo_raw: Some(b"354 go on\r\n".to_vec()),
                ..Script::default()
            },
        ),
    ];
    for (name, script) in cases {
        let (addr, _log) = scripted(script).await;
        // Well before the 5 s command timeout: the error comes from the parser.
        let err = tokio::time::timeout(
            Duration::from_secs(3),
            Connection::connect(addr, "scripted.test", &config(TlsPolicy::None)),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}: hung"))
        .unwrap_err();
        assert!(matches!(err, ClientError::Protocol(_)), "{name}: {err}");
        assert!(!err.is_permanent(), "{name}");
    }
}

#[tokio::test]
async fn scripted_timeouts_fire() {
    let quick = ClientConfig {
        command_timeout: Duration::from_millis(200),
        data_timeout: Duration::from_millis(200),
        ..config(TlsPolicy::None)
    };
    // A server that never greets.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let started = Instant::now();
    let err = Connection::connect(silent_addr, "silent.test", &quick)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Timeout(Stage::Greeting)),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // A server that never answers MAIL, then one that never answers after the data.
    for (script, stage) in [
        (
            Script {
                mail: "",
                ..Script::default()
            },
            Stage::Mail,
        ),
        (
            Script {
                end: "",
                ..Script::default()
            },
            Stage::Dot,
        ),
    ] {
        let (addr, _log) = scripted(script).await;
        let mut conn = Connection::connect(addr, "scripted.test", &quick)
            .await
            .unwrap();
        let env = envelope("s@client.test", &["a@x.test"]);
        let started = Instant::now();
        let err = send(&mut conn, &env, BODY).await.unwrap_err();
        assert!(
            matches!(err, ClientError::Timeout(s) if s == stage),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(!conn.is_usable());
    }
    drop(silent);

    // Nobody listening at all: a connection error, not a hang.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let err = Connection::connect(closed, "nobody.test", &quick)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Connect(_)), "{err}");
    assert_eq!(err.response().enhanced(), EnhancedCode::parse("4.4.1"));
}
