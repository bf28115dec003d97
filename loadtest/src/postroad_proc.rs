//! `loadtest e2e --spawn-postroad`: a `postroad serve` child with a generated config
//! in a temporary directory, free ports, and delivery to the e2e sink.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::smtp_client::SmtpClient;

/// How the spawned Postroad reaches the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// MX lookups against the DNS stub at this address; MX hosts on this port.
    Mx { dns: SocketAddr, mx_port: u16 },
    /// Everything to this host:port (`relay.smarthost`).
    Smarthost(SocketAddr),
}

#[derive(Debug, Clone)]
pub struct PostroadOptions {
    pub binary: PathBuf,
    pub fsync: bool,
    /// `relay.enabled`: false for an ingress-only process (accepts and queues).
    pub relay: bool,
    pub delivery: Delivery,
    /// Inbound connections the load will open (sizes the connection limits).
    pub connections: u32,
    /// Short retry schedule, for runs where the sink injects temporary failures.
    pub fast_retries: bool,
    /// `RUST_LOG` of the child (unless RUST_LOG is set for loadtest itself).
    pub log_filter: String,
    /// Parent of the temporary directory [default: the system's].
    pub work_root: Option<PathBuf>,
    /// Keep the directory (config, spool, log) after the run.
    pub keep: bool,
    /// TOML appended to the generated config.
    pub extra_config: String,
}

/// A running `postroad serve`; killed when dropped.
pub struct PostroadProcess {
    child: Option<Child>,
    dir: tempfile::TempDir,
    smtp: SocketAddr,
    http: SocketAddr,
    config: PathBuf,
    binary: PathBuf,
    started: Instant,
}

/// A port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The ports of a spawned Postroad.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub smtp: u16,
    pub admin: u16,
    pub http: u16,
}

/// The config file `start` writes.
pub fn config_text(opts: &PostroadOptions, data_dir: &Path, ports: Ports) -> String {
    let Ports { smtp, admin, http } = ports;
    let mut c = String::new();
    let _ = writeln!(c, "# written by loadtest e2e --spawn-postroad\n");
    let _ = writeln!(c, "[server]\nhostname = \"postroad-e2e.test\"");
    let data_dir = toml::Value::String(data_dir.display().to_string());
    let _ = writeln!(c, "data_dir = {data_dir}");
    let _ = writeln!(c, "shutdown_grace_secs = 10\n");
    let _ = writeln!(
        c,
        "[spool]\n# true: every group commit is fsync'd before the 250 (the default)\nfsync = {}\n",
        opts.fsync
    );
    // room for the load's connections (and the readiness probe)
    let per_ip = (opts.connections as usize + 16).max(100);
    let _ = writeln!(
        c,
        "[smtp]\nmax_connections = {}\nmax_connections_per_ip = {per_ip}\n",
        (per_ip + 100).max(2000)
    );
    let _ = writeln!(c, "[relay]\nenabled = {}\ntls = \"none\"", opts.relay);
    match opts.delivery {
        Delivery::Mx { dns, mx_port } => {
            let _ = writeln!(c, "nameservers = [\"{dns}\"]\nmx_port = {mx_port}");
        }
        Delivery::Smarthost(addr) => {
            let _ = writeln!(c, "smarthost = \"{addr}\"");
        }
    }
    if opts.fast_retries {
        let _ = writeln!(
            c,
            "retry_first_secs = 1\nretry_max_secs = 4\nsite_backoff_secs = 1"
        );
    }
    let _ = writeln!(c, "\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n");
    let _ = writeln!(
        c,
        "[http]\nlisten = \"127.0.0.1:{http}\"\nmax_concurrent_requests = {}\n",
        opts.connections as usize + 16
    );
    let _ = writeln!(
        c,
        "[[listener]]\nname = \"relay\"\naddress = \"127.0.0.1:{smtp}\"\nrole = \"relay\"\ntls = \"none\""
    );
    if !opts.extra_config.is_empty() {
        let _ = writeln!(c, "\n# from --postroad-config-extra\n{}", opts.extra_config);
    }
    c
}

impl PostroadProcess {
    /// Writes the config, starts `postroad serve` and waits (up to 60 s) for its
    /// 220 greeting.
    pub async fn start(opts: &PostroadOptions) -> anyhow::Result<Self> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("loadtest-e2e-");
        let mut dir = match &opts.work_root {
            Some(root) => builder.tempdir_in(root),
            None => builder.tempdir(),
        }
        .context("creating the work directory")?;
        if opts.keep {
            dir.disable_cleanup(true);
        }
        let ports = Ports {
            smtp: free_port()?,
            admin: free_port()?,
            http: free_port()?,
        };
        let config = config_text(opts, &dir.path().join("data"), ports);
        let config_path = dir.path().join("postroad.toml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("postroad.log"))?;
        let mut cmd = Command::new(&opts.binary);
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| opts.log_filter.clone()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", opts.binary.display()))?;
        let mut p = Self {
            child: Some(child),
            dir,
            smtp: SocketAddr::from(([127, 0, 0, 1], ports.smtp)),
            http: SocketAddr::from(([127, 0, 0, 1], ports.http)),
            config: config_path.clone(),
            binary: opts.binary.clone(),
            started: Instant::now(),
        };
        p.wait_ready(Duration::from_secs(60)).await?;
        Ok(p)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let t = Duration::from_secs(5);
        loop {
            if let Some(status) = self.try_wait() {
                bail!(
                    "postroad exited at start ({status}); its log:\n{}",
                    self.log_tail(30)
                );
            }
            if let Ok(mut c) = SmtpClient::connect(self.smtp, t, t).await
                && c.greeting().await.is_ok()
            {
                c.quit().await;
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "postroad did not greet on {} within {timeout:?}; its log:\n{}",
                    self.smtp,
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its SMTP relay listener.
    pub fn smtp_addr(&self) -> SocketAddr {
        self.smtp
    }

    /// Its HTTP API.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// A new API key (`postroad api-key create`), for loading the HTTP API.
    pub fn create_api_key(&self) -> anyhow::Result<String> {
        let out = Command::new(&self.binary)
            .args(["api-key", "create", "--name", "loadtest", "--config"])
            .arg(&self.config)
            .output()
            .with_context(|| format!("running {} api-key create", self.binary.display()))?;
        if !out.status.success() {
            bail!(
                "postroad api-key create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// CPU seconds (user + system) it has used so far (Linux).
    pub fn cpu_secs(&self) -> Option<f64> {
        self.pid().and_then(crate::rates_file::cpu_secs)
    }

    /// The exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("postroad.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGTERM, then up to `grace` for a clean exit, then SIGKILL.
    pub async fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        terminate(&child);
        let deadline = Instant::now() + grace;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for PostroadProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[allow(unsafe_code)]
fn terminate(child: &Child) {
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

/// The child gets SIGKILL when loadtest dies (Linux), so a killed run leaves no
/// Postroad behind.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_what_the_run_needs() {
        let mut opts = PostroadOptions {
            binary: "postroad".into(),
            fsync: false,
            relay: true,
            delivery: Delivery::Mx {
                dns: "127.0.0.1:5300".parse().unwrap(),
                mx_port: 2526,
            },
            connections: 500,
            fast_retries: true,
            log_filter: "warn".into(),
            work_root: None,
            keep: false,
            extra_config: String::new(),
        };
        let ports = Ports {
            smtp: 2600,
            admin: 2601,
            http: 2602,
        };
        let c = config_text(&opts, Path::new("/tmp/x/data"), ports);
        let v: toml::Value = toml::from_str(&c).unwrap();
        assert_eq!(v["spool"]["fsync"].as_bool(), Some(false));
        assert_eq!(v["relay"]["enabled"].as_bool(), Some(true));
        assert_eq!(
            v["relay"]["nameservers"][0].as_str(),
            Some("127.0.0.1:5300")
        );
        assert_eq!(v["relay"]["mx_port"].as_integer(), Some(2526));
        assert_eq!(v["relay"]["retry_first_secs"].as_integer(), Some(1));
        assert_eq!(v["smtp"]["max_connections_per_ip"].as_integer(), Some(516));
        assert_eq!(v["listener"][0]["address"].as_str(), Some("127.0.0.1:2600"));
        assert_eq!(v["admin"]["listen"].as_str(), Some("127.0.0.1:2601"));
        assert_eq!(v["http"]["listen"].as_str(), Some("127.0.0.1:2602"));
        assert_eq!(v["server"]["data_dir"].as_str(), Some("/tmp/x/data"));
        opts.delivery = Delivery::Smarthost("127.0.0.1:9".parse().unwrap());
        opts.fast_retries = false;
        let c = config_text(&opts, Path::new("/d"), ports);
        let v: toml::Value = toml::from_str(&c).unwrap();
        assert_eq!(v["relay"]["smarthost"].as_str(), Some("127.0.0.1:9"));
        assert!(v["relay"].get("nameservers").is_none());
        assert!(v["relay"].get("retry_first_secs").is_none());
    }
}
