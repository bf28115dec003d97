//! `loadtest track`: the tracking routes under load. It signs open or click tokens
//! with the server's tracking key (for made-up messages, as many as `--messages`),
//! fetches `GET /t/o/TOKEN` or `GET /t/c/TOKEN` over kept-alive connections, and
//! reports requests/s and latency percentiles. Each request records an event durably
//! on the server, so this measures the whole path: the token check and the write.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use postroad_api::tracking::{Claims, Purpose, Signer};
use postroad_queue::{MessageId, Metadata};

use crate::http_client::HttpClient;
use crate::stats::Latency;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Route {
    /// `GET /t/o/TOKEN`: the open pixel (answer 200).
    Open,
    /// `GET /t/c/TOKEN`: a tracked link (answer 302).
    Click,
}

#[derive(Debug, clap::Args)]
pub struct TrackArgs {
    /// The HTTP API, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// The server's tracking key (`tracking.secret`).
    #[arg(long, env = "POSTROAD_TRACKING_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// A file holding the key: the server's `<data_dir>/tracking.key`.
    #[arg(long, conflicts_with = "key")]
    pub key_file: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "open")]
    pub route: Route,
    /// Requests in all.
    #[arg(short = 'n', long, default_value_t = 50_000)]
    pub requests: u64,
    /// Connections, each with one request at a time.
    #[arg(short = 'c', long, default_value_t = 50)]
    pub concurrency: usize,
    /// HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1.
    #[arg(long)]
    pub http2: bool,
    /// Distinct messages (tokens) the requests go round.
    #[arg(long, default_value_t = 10_000)]
    pub messages: usize,
}

/// What one connection saw.
#[derive(Default)]
struct Seen {
    latency: Latency,
    ok: u64,
    unexpected: u64,
    errors: u64,
}

pub async fn run(args: TrackArgs) -> anyhow::Result<std::process::ExitCode> {
    let key = match (&args.key, &args.key_file) {
        (Some(key), _) => key.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the key file {}", path.display()))?
            .trim()
            .to_string(),
        (None, None) => anyhow::bail!("give the server's tracking key: --key or --key-file"),
    };
    let signer = Signer::new(key.as_bytes());
    let (prefix, want) = match args.route {
        Route::Open => ("/t/o/", 200),
        Route::Click => ("/t/c/", 302),
    };
    let paths: Arc<Vec<String>> = Arc::new(
        (0..args.messages.max(1))
            .map(|i| {
                let claims = Claims {
                    purpose: match args.route {
                        Route::Open => Purpose::Open,
                        Route::Click => Purpose::Click,
                    },
                    message: MessageId::new(),
                    sender: "news@loadtest.test".into(),
                    recipient: format!("user{i}@example.test"),
                    meta: Metadata {
                        campaign: Some("loadtest".into()),
                        ..Metadata::default()
                    },
                    link: matches!(args.route, Route::Click)
                        .then(|| (0, format!("https://shop.example.test/p/{i}"))),
                };
                let token = signer.sign(&claims).expect("a small token");
                format!("{prefix}{token}")
            })
            .collect(),
    );
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (paths, next) = (paths.clone(), next.clone());
        let (addr, http2, total) = (args.addr, args.http2, args.requests);
        tasks.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut client = None;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                if client.is_none() {
                    let timeout = Duration::from_secs(10);
                    match HttpClient::connect(addr, http2, "", timeout, timeout).await {
                        Ok(c) => client = Some(c),
                        Err(_) => {
                            seen.errors += 1;
                            continue;
                        }
                    }
                }
                let Some(c) = client.as_mut() else { continue };
                let path = &paths[(n as usize) % paths.len()];
                let at = Instant::now();
                match c.request("GET", path, "text/plain", Bytes::new()).await {
                    Ok(answer) if answer.status.as_u16() == want => {
                        seen.latency.record(at.elapsed());
                        seen.ok += 1;
                    }
                    Ok(_) => seen.unexpected += 1,
                    Err(_) => {
                        seen.errors += 1;
                        client = None;
                    }
                }
            }
            seen
        }));
    }
    let mut all = Seen::default();
    for task in tasks {
        let seen = task.await?;
        all.latency.merge(&seen.latency);
        all.ok += seen.ok;
        all.unexpected += seen.unexpected;
        all.errors += seen.errors;
    }
    let elapsed = started.elapsed();
    let l = all.latency.summary();
    println!(
        "{} {prefix} requests in {:.2} s: {:.0}/s answered {want}; {} other answers, {} errors\n\
         latency ms: p50 {:.2}, p95 {:.2}, p99 {:.2}, max {:.2} ({} connections, {} tokens)",
        all.ok,
        elapsed.as_secs_f64(),
        all.ok as f64 / elapsed.as_secs_f64(),
        all.unexpected,
        all.errors,
        l.p50,
        l.p95,
        l.p99,
        l.max,
        args.concurrency,
        paths.len()
    );
    Ok(if all.unexpected + all.errors == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}
