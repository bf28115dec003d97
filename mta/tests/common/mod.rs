//! Test support: run the real `postroad` binary with a generated config, and talk to it
//! as a plain SMTP client.
#![allow(dead_code)]

pub mod app_stores;
pub mod campaigns;
pub mod dkim_keys;
pub mod http;
pub mod influxdb;
pub mod kafka_env;
pub mod mariadb;
pub mod moto;
pub mod overtaking;
pub mod relay_env;
pub mod sendgrid;
pub mod webhook_receiver;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const USER: &str = "app";
pub const PASSWORD: &str = "s3cret-pw";

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_postroad")
}

/// The argon2 hash of [`PASSWORD`], computed once by `postroad passwd`.
pub fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let mut child = Command::new(binary())
            .arg("passwd")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run postroad passwd");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(PASSWORD.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "postroad passwd failed");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
}

/// A port nobody listens on right now, from below the kernel's ephemeral range
/// (32768 and up here), so no client connection can take it between this check and
/// the server's bind; each port is handed out once per test process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Start at a point that depends on the process, so test binaries run one after
    // another do not all try the same ports first.
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let next = NEXT.get_or_init(|| AtomicU32::new(std::process::id()));
    loop {
        let port = 20_000 + (next.fetch_add(1, Ordering::SeqCst) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A running `postroad serve` with its own data directory and ports.
pub struct Server {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub relay: u16,
    pub submission: u16,
    pub submissions: u16,
    /// The HTTP API's port (unless the test's config has its own `[http]`).
    pub http: u16,
    /// Extra `serve` arguments (e.g. `--roles relay`).
    args: Vec<String>,
}

impl Server {
    /// Starts a server; `extra` is appended to the generated config (it may add
    /// `[smtp]`, `[spool]` or `[tls]` sections).
    pub fn start(extra: &str) -> Server {
        Self::start_with(extra, &[])
    }

    /// Like [`Server::start`], with extra `serve` arguments.
    pub fn start_with(extra: &str, args: &[&str]) -> Server {
        let mut server = Self::configure(extra, args);
        server.launch();
        server
    }

    /// Writes the config and data directory path, but starts nothing (see
    /// [`Server::restart`]).
    pub fn configure(extra: &str, args: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (relay, submission, submissions) = (free_port(), free_port(), free_port());
        // Each server gets its own admin port, and delivery only where a test asks for
        // it (so no test ever looks up real MX hosts).
        let mut extra = extra.to_string();
        if !extra.contains("[admin]") {
            extra.push_str(&format!(
                "\n[admin]\nlisten = \"127.0.0.1:{}\"\n",
                free_port()
            ));
        }
        let http = free_port();
        if !extra.contains("[http]") {
            extra.push_str(&format!("\n[http]\nlisten = \"127.0.0.1:{http}\"\n"));
        }
        if !extra.contains("[relay]") {
            extra.push_str("\n[relay]\nenabled = false\n");
        }
        let config = format!(
            r#"[server]
hostname = "mx.postroad.test"
data_dir = "{data}"
shutdown_grace_secs = 10

[[auth.users]]
username = "{USER}"
password_hash = "{hash}"

[[listener]]
name = "relay"
address = "127.0.0.1:{relay}"
role = "relay"
tls = "starttls"

[[listener]]
name = "submission"
address = "127.0.0.1:{submission}"
role = "submission"
tls = "starttls"

[[listener]]
name = "submissions"
address = "127.0.0.1:{submissions}"
role = "submission"
tls = "implicit"

{extra}
"#,
            data = dir.path().join("data").display(),
            hash = password_hash(),
        );
        let config_path = dir.path().join("postroad.toml");
        std::fs::write(&config_path, config).unwrap();
        Server {
            child: None,
            dir,
            config_path,
            relay,
            submission,
            submissions,
            http,
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let mut cmd = Command::new(binary());
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .args(&self.args)
            // POSTROAD_TEST_RUST_LOG: more detail from the servers when a test is studied.
            .env(
                "RUST_LOG",
                std::env::var("POSTROAD_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(spawn_tied_to_test_process(cmd));
        self.wait_ready();
    }

    /// Whether this server has SMTP listeners (not `--roles relay` only).
    fn has_listeners(&self) -> bool {
        let roles = self.args.iter().position(|a| a == "--roles");
        roles.is_none_or(|i| self.args.get(i + 1).is_some_and(|r| r.contains("ingress")))
    }

    /// Waits until the relay listener answers with its 220 greeting (or, without
    /// listeners, until the server logs that it is ready).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let starts_before = self.log().matches("postroad ready").count();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("postroad exited at start ({status}):\n{}", self.log());
            }
            if !self.has_listeners() {
                if self.log().matches("postroad ready").count() > starts_before {
                    return;
                }
            } else if TcpStream::connect(("127.0.0.1", self.relay)).is_ok() {
                // Leave cleanly, so this probe holds no connection slot afterwards.
                let mut c = Client::greeted(self.relay);
                c.expect("QUIT", 221);
                assert!(c.is_closed());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postroad did not become ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (up to 30 s) until the log has `needle` in it.
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the log never said {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGTERM);
            let status = child.wait().unwrap();
            assert!(
                status.success(),
                "postroad exited with {status}:\n{}",
                self.log()
            );
        }
    }

    /// SIGTERM without waiting: the server drains while the test looks on.
    pub fn terminate(&self) {
        let child = self.child.as_ref().expect("the server runs");
        signal(child, libc::SIGTERM);
    }

    /// The admin endpoint's address (`admin.listen` of the config).
    pub fn admin_url(&self) -> String {
        let config: toml::Value =
            toml::from_str(&std::fs::read_to_string(&self.config_path).unwrap()).unwrap();
        format!("http://{}", config["admin"]["listen"].as_str().unwrap())
    }

    /// SIGHUP: reload what can be reloaded (the shaping file).
    pub fn hangup(&self) {
        let child = self.child.as_ref().expect("the server runs");
        signal(child, libc::SIGHUP);
    }

    /// SIGKILL: the crash case.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the server first");
        self.launch();
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Opens the spool of a stopped server.
    pub fn open_spool(&self) -> postroad_queue::Spool {
        assert!(
            self.child.is_none(),
            "stop the server before opening its spool"
        );
        postroad_queue::Spool::open(postroad_queue::SpoolConfig::new(
            self.data_dir().join("spool"),
        ))
        .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

#[allow(unsafe_code)]
fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Spawns `cmd` so that it is killed when the test process ends, even when the server
/// is held in a `static` that is never dropped: PR_SET_PDEATHSIG fires when the
/// spawning *thread* exits, so spawn from a thread that lives as long as the process.
#[allow(unsafe_code)]
fn spawn_tied_to_test_process(mut cmd: Command) -> Child {
    use std::os::unix::process::CommandExt;
    use std::sync::mpsc;
    static SPAWNER: OnceLock<mpsc::Sender<(Command, mpsc::Sender<Child>)>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<(Command, mpsc::Sender<Child>)>();
        std::thread::spawn(move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn().expect("spawn postroad"));
            }
            loop {
                std::thread::park();
            }
        });
        tx
    });
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner.send((cmd, tx)).unwrap();
    rx.recv().unwrap()
}

/// A line-level SMTP client for protocol tests.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

pub use smtp_wire::Reply;

impl Client {
    pub fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// Connects and checks the greeting.
    pub fn greeted(port: u16) -> Client {
        let mut c = Client::connect(port);
        let r = c.reply();
        assert_eq!(r.code, 220, "{r:?}");
        c
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// Sends bytes; false when the connection is gone.
    pub fn send_raw_checked(&mut self, bytes: &[u8]) -> bool {
        self.writer.write_all(bytes).is_ok()
    }

    /// Sends one command line (CRLF added) and returns the reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Sends a command and asserts the reply code.
    pub fn expect(&mut self, line: &str, code: u16) -> Reply {
        let r = self.cmd(line);
        assert_eq!(r.code, code, "{line} -> {r:?}");
        r
    }

    /// Reads one (possibly multi-line) reply; panics when the server closes first or
    /// sends something that is not a reply.
    pub fn reply(&mut self) -> Reply {
        self.try_reply()
            .unwrap_or_else(|| panic!("the server closed the connection instead of replying"))
    }

    /// Reads one reply; `None` when the server closed the connection first.
    pub fn try_reply(&mut self) -> Option<Reply> {
        let mut parser = smtp_wire::ReplyParser::default();
        loop {
            let mut line = Vec::new();
            match self.reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            match parser.push(line) {
                Ok(Some(reply)) => return Some(reply),
                Ok(None) => {}
                Err(e) => panic!("not an SMTP reply: {e}"),
            }
        }
    }

    /// Sends one command line and reads the reply; `None` when the server closed the
    /// connection.
    pub fn try_cmd(&mut self, line: &str) -> Option<Reply> {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .ok()?;
        self.try_reply()
    }

    /// True when the server has closed the connection (EOF on read).
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0) | Err(_))
    }

    pub fn half_close(&mut self) {
        self.writer.shutdown(Shutdown::Write).unwrap();
    }

    /// EHLO, MAIL, RCPT..., DATA with `body` (dot-stuffed here); returns the final reply.
    pub fn send_mail(&mut self, from: &str, to: &[&str], body: &str) -> Reply {
        self.expect("EHLO client.test", 250);
        self.expect(&format!("MAIL FROM:<{from}>"), 250);
        for rcpt in to {
            self.expect(&format!("RCPT TO:<{rcpt}>"), 250);
        }
        self.expect("DATA", 354);
        self.send_raw(&dot_stuff(body));
        self.send_raw(b".\r\n");
        self.reply()
    }
}

/// CRLF line endings and RFC 5321 dot-stuffing; ends with CRLF.
pub fn dot_stuff(body: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in body.lines() {
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The queue id from `250 2.0.0 Ok: queued as <id>`.
pub fn queued_id(reply: &Reply) -> postroad_queue::MessageId {
    let text = reply.to_string();
    let id = text
        .rsplit("queued as ")
        .next()
        .filter(|_| reply.code == 250)
        .unwrap_or_else(|| panic!("not a queued reply: {text}"));
    id.trim()
        .parse()
        .unwrap_or_else(|_| panic!("bad id in {text}"))
}

/// A moment to kill a server at: `min_ms` plus up to `spread_ms`, different each call
/// and run.
pub fn kill_moment(min_ms: u64, spread_ms: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    Duration::from_millis(min_ms + u64::from(nanos) % spread_ms.max(1))
}

/// Polls `done` every 200 ms until it holds; fails after `timeout`, saying `what`
/// did not happen, with `log()` (the server's).
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} within {timeout:?}; server log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs an external program, returning (success, stdout+stderr).
pub fn run(program: &str, args: &[&str], stdin: Option<&[u8]>) -> (bool, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} (installed by .ci/run): {e}"));
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs swaks against 127.0.0.1:`port` with `args`.
pub fn swaks(port: &str, args: &[&str]) -> (bool, String) {
    let mut all = vec!["--server", "127.0.0.1", "--port", port];
    all.extend_from_slice(args);
    run("swaks", &all, None)
}

pub fn scripts_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients"))
}
