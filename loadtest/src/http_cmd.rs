//! `loadtest http`: push messages at Postroad's HTTP API (`POST /v1/messages`, or
//! `/v1/messages/batch` with `--batch K`) over many kept-alive connections, closed loop
//! or open loop at `--rate`, in any of the three forms, and report accepted/s and
//! latency as `loadtest smtp` does.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use clap::{Args, ValueEnum};
use serde::Deserialize;

use crate::generator::{BodyTemplate, MessageGen, rfc5322_date, unix_micros};
use crate::http_client::HttpClient;
use crate::load_page::{command_line, html_report};
use crate::mix::DomainMix;
use crate::run::{self, Clock, ConnectFailures, Limits, RunArgs, Running, Tally, Watch};
use crate::schedule::{Claim, Schedule};
use crate::smtp_cmd::{Hooks, RunResult};
use crate::stats::{Counters, Report};
use crate::timeline::Timeline;

/// The template `--form template` renders (created or replaced at the start).
pub const TEMPLATE: &str = "loadtest";

/// Messages sent when neither `--messages` nor `--duration` is given.
const DEFAULT_MESSAGES: u64 = 1000;
/// Template-form messages go to this many users (`userId` = sequence number modulo it),
/// so that Postroad looks their preferences up, as for real traffic.
const USERS: u64 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Form {
    /// from, to, subject, text: Postroad builds the MIME message.
    Explicit,
    /// emailType + recipient + templateData: Postroad renders the `loadtest` template.
    Template,
    /// The generator's MIME message, base64 in `raw`.
    Raw,
}

/// How messages go over HTTP (shared with `loadtest e2e --via http`).
#[derive(Debug, Clone, Args)]
pub struct HttpOptions {
    /// Message form.
    #[arg(long, value_enum, default_value = "explicit")]
    pub form: Form,

    /// Messages per request; above 1, POST /v1/messages/batch.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch: u32,

    /// HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1.
    #[arg(long)]
    pub http2: bool,

    /// API key (`postroad api-key create`).
    #[arg(long, env = "POSTROAD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// The API, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,

    #[command(flatten)]
    pub run: RunArgs,

    #[command(flatten)]
    pub http: HttpOptions,

    /// Recipients per message (the template form has one).
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub recipients: u32,

    /// Recipient domain; recipients are userN@DOMAIN.
    #[arg(long, value_name = "DOMAIN", default_value = "example.test")]
    pub to_domain: String,
}

struct Shared {
    addr: SocketAddr,
    options: HttpOptions,
    key: String,
    path: &'static str,
    recipients: u64,
    mix: Arc<DomainMix>,
    from: String,
    /// The text part, JSON-escaped (with its quotes).
    text_json: String,
    raw: Arc<BodyTemplate>,
    date: String,
    run_id: u64,
    stamp: bool,
    timeout: Duration,
    connect_timeout: Duration,
    stop_on_error: bool,
    schedule: Schedule,
    timeline: Arc<Timeline>,
    tracker: Option<Arc<crate::tracker::Tracker>>,
    connect_failures: ConnectFailures,
    tally: Tally,
}

impl Running for Shared {
    fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    fn tally(&self) -> &Tally {
        &self.tally
    }
}

/// One item of a batch answer.
#[derive(Deserialize)]
struct ItemResult {
    status: String,
}

#[derive(Deserialize)]
struct BatchAnswer {
    results: Vec<ItemResult>,
}

impl Shared {
    /// A new connection to the API, as the arguments ask.
    async fn connect(&self) -> Result<HttpClient, crate::http_client::HttpError> {
        HttpClient::connect(
            self.addr,
            self.options.http2,
            &self.key,
            self.connect_timeout,
            self.timeout,
        )
        .await
    }

    /// The recipients of message `seq`: userN@domain, N = (seq - 1) * K + 1 ...
    fn recipients_of(&self, seq: u64) -> impl Iterator<Item = String> + '_ {
        let first = (seq - 1) * self.recipients + 1;
        (first..first + self.recipients).map(|n| format!("user{n}@{}", self.mix.pick(n)))
    }

    fn extra_headers(&self, seq: u64, stamp_at: Option<u64>) -> String {
        let mut headers = format!(
            "\"Message-ID\":\"<{:016x}.{seq}@loadtest.invalid>\"",
            self.run_id
        );
        if self.stamp {
            let at = stamp_at.unwrap_or_else(unix_micros);
            let _ = write!(headers, ",\"X-Loadtest-Sent-At\":\"{at}\"");
        }
        headers
    }

    /// One message as JSON.
    fn message(&self, generator: &mut MessageGen, seq: u64, stamp_at: Option<u64>) -> String {
        let to: Vec<String> = self.recipients_of(seq).collect();
        let to_json = serde_json::to_string(&to).unwrap_or_default();
        match self.options.form {
            Form::Explicit => format!(
                "{{\"from\":{},\"to\":{to_json},\"subject\":\"loadtest {seq}\",\"text\":{},\"headers\":{{{}}}}}",
                json_str(&self.from),
                self.text_json,
                self.extra_headers(seq, stamp_at),
            ),
            Form::Template => format!(
                "{{\"userId\":{},\"emailType\":\"{TEMPLATE}\",\"recipient\":{},\"from\":{},\"templateData\":{{\"seq\":{seq},\"body\":{}}},\"headers\":{{{}}}}}",
                seq % USERS,
                json_str(&to[0]),
                json_str(&self.from),
                self.text_json,
                self.extra_headers(seq, stamp_at),
            ),
            Form::Raw => {
                generator.prepare(seq, &to[0]);
                match stamp_at {
                    Some(us) => generator.stamp(us),
                    None => generator.stamp_now(),
                }
                let mut mime = Vec::with_capacity(generator.len());
                for part in generator.parts_raw() {
                    mime.extend_from_slice(part);
                }
                format!(
                    "{{\"raw\":\"{}\",\"from\":{},\"to\":{to_json}}}",
                    STANDARD.encode(&mime),
                    json_str(&self.from)
                )
            }
        }
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Entry point of `loadtest http`.
pub async fn run(args: HttpArgs) -> anyhow::Result<ExitCode> {
    let result = execute_with(&args, Hooks::default()).await?;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(result.report.text().as_bytes());
    let _ = out.flush();
    drop(out);
    if let Some(path) = &args.run.json {
        let json = serde_json::to_vec_pretty(&result.report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.run.html {
        let html = html_report(&result.report, &command_line());
        std::fs::write(path, html).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if result.report.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Creates (a new version of) the template the template form renders.
async fn put_template(sh: &Shared) -> anyhow::Result<()> {
    let mut client = sh
        .connect()
        .await
        .with_context(|| format!("connecting to {}", sh.addr))?;
    let template = r#"{"subject": "loadtest {{ seq }}", "text": "{{ body }}"}"#;
    let answer = client
        .request(
            "PUT",
            &format!("/v1/templates/{TEMPLATE}"),
            "application/json",
            Bytes::from_static(template.as_bytes()),
        )
        .await?;
    if !answer.status.is_success() {
        bail!(
            "PUT /v1/templates/{TEMPLATE}: {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    Ok(())
}

/// The run, with what `hooks` plugs in (`loadtest e2e`).
pub async fn execute_with(args: &HttpArgs, hooks: Hooks) -> anyhow::Result<RunResult> {
    let addr = tokio::net::lookup_host(args.addr.as_str())
        .await
        .with_context(|| format!("resolving {}", args.addr))?
        .next()
        .with_context(|| format!("{} resolves to no address", args.addr))?;
    let key = args
        .http
        .api_key
        .clone()
        .context("no API key: give --api-key or POSTROAD_API_KEY (postroad api-key create)")?;
    if args.http.form == Form::Template && args.recipients != 1 {
        bail!("the template form has one recipient per message: --recipients 1");
    }
    if args.run.timeout <= 0.0 || args.run.connect_timeout <= 0.0 {
        bail!("timeouts must be positive");
    }
    let limits = Limits::from_flags(
        args.run.messages,
        args.run.duration,
        args.run.rate,
        DEFAULT_MESSAGES,
    )?;
    let mix = match hooks.mix {
        Some(m) => m,
        None => Arc::new(
            DomainMix::parse(&args.to_domain).map_err(|e| anyhow::anyhow!("--to-domain: {e}"))?,
        ),
    };
    let run_id: u64 = hooks.run_id.unwrap_or_else(rand::random);
    let unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let text = text_body(args.run.size);
    let clock = Clock::start(hooks.timeline);
    let schedule = limits.schedule(args.run.rate, &clock)?;
    let shared = Arc::new(Shared {
        addr,
        options: args.http.clone(),
        key,
        path: if args.http.batch > 1 {
            "/v1/messages/batch"
        } else {
            "/v1/messages"
        },
        recipients: u64::from(args.recipients),
        mix: mix.clone(),
        from: args.run.from.clone(),
        text_json: json_str(&text),
        raw: Arc::new(BodyTemplate::new(args.run.size, run_id)),
        date: rfc5322_date(unix),
        run_id,
        stamp: args.run.stamp || hooks.stamp,
        timeout: Duration::from_secs_f64(args.run.timeout),
        connect_timeout: Duration::from_secs_f64(args.run.connect_timeout),
        stop_on_error: args.run.stop_on_error,
        schedule,
        timeline: clock.timeline.clone(),
        tracker: hooks.tracker.clone(),
        connect_failures: ConnectFailures::new(args.run.max_connect_failures),
        tally: Tally::default(),
    });
    if args.http.form == Form::Template {
        put_template(&shared).await?;
    }

    let watch = Watch::start(
        shared.clone(),
        args.run.no_progress,
        limits,
        clock.start,
        hooks.progress.clone(),
        "requests",
    );
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.run.connections {
        workers.spawn(worker(shared.clone()));
    }
    let counters = run::join(workers).await;
    let elapsed = clock.start.elapsed();
    watch.finish();

    let form = format!("{:?}", args.http.form).to_lowercase();
    let mut mode = format!(
        "HTTP{}, {form} form, {} bytes/body, {} rcpt/msg, {} msg/request",
        if args.http.http2 { "/2 (h2c)" } else { "/1.1" },
        args.run.size,
        args.recipients,
        args.http.batch
    );
    if let Some(r) = args.run.rate {
        let _ = write!(mode, ", open loop at {r} msg/s");
    }
    let mut report = Report::new(
        format!("http://{}{}", args.addr, shared.path),
        mode,
        args.run.connections as usize,
        &counters,
        &shared.tally.latency(),
        elapsed,
        shared.schedule.stop_reason(),
    );
    run::close_report(
        &mut report,
        args.run.rate,
        "request sent",
        &shared.tally,
        &mix,
        &clock.timeline,
    );
    Ok(RunResult {
        report,
        ack_error: None,
        start_us: clock.start_us,
        run_id,
    })
}

/// `size` bytes of text in lines of at most 76 characters.
fn text_body(size: usize) -> String {
    const LINE: &str =
        "The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs.";
    let mut text = String::with_capacity(size + 80);
    while text.len() < size {
        let room = size - text.len();
        if room <= 1 {
            text.push('\n');
            break;
        }
        let take = (room - 1).min(74);
        text.push_str(&LINE[..take]);
        text.push('\n');
    }
    text
}

/// Claims up to `batch` messages (one request); the first claim's ticket dates it.
async fn claim_request(sh: &Shared) -> Option<(Vec<u64>, Option<crate::pacer::Ticket>)> {
    let mut seqs = Vec::with_capacity(sh.options.batch as usize);
    let mut first_ticket = None;
    while seqs.len() < sh.options.batch as usize {
        let Some(Claim { seq, ticket }) = sh.schedule.claim().await else {
            break;
        };
        if first_ticket.is_none() {
            first_ticket = ticket;
        }
        seqs.push(seq);
    }
    (!seqs.is_empty()).then_some((seqs, first_ticket))
}

async fn worker(sh: Arc<Shared>) -> Counters {
    let mut st = Counters::default();
    let mut generator = MessageGen::new(sh.raw.clone(), sh.run_id, &sh.from, &sh.date);
    if sh.stamp {
        generator = generator.with_stamp();
    }
    let mut client: Option<HttpClient> = None;
    let mut backoff_n = 0u32;
    'requests: while let Some((seqs, ticket)) = claim_request(&sh).await {
        while client.is_none() {
            if sh.schedule.stopped() {
                break 'requests;
            }
            match sh.connect().await {
                Ok(c) => {
                    sh.connect_failures.connected();
                    backoff_n = 0;
                    st.connections += 1;
                    client = Some(c);
                }
                Err(e) => {
                    st.error(e.kind(), e.to_string());
                    sh.connect_failures.failed(&sh.schedule, &e);
                    sh.schedule.backoff(&mut backoff_n).await;
                }
            }
        }
        let c = client.as_mut().expect("connected above");
        let stamp_at = ticket.as_ref().map(|t| t.due_unix_us);
        if let Some(t) = &ticket {
            let lag = tokio::time::Instant::now().saturating_duration_since(t.due);
            sh.tally.send_lag().record(lag);
        }
        let mut body = String::new();
        if sh.options.batch > 1 {
            body.push_str("{\"messages\":[");
            for (i, seq) in seqs.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(&sh.message(&mut generator, *seq, stamp_at));
            }
            body.push_str("]}");
        } else {
            body = sh.message(&mut generator, seqs[0], stamp_at);
        }
        let bytes = body.len() as u64;
        st.sent += seqs.len() as u64;
        let sent_at = Instant::now();
        let answer = c
            .request("POST", sh.path, "application/json", Bytes::from(body))
            .await;
        let now = Instant::now();
        let from = ticket.map_or(sent_at, |t| t.due.into_std());
        let latency = now.saturating_duration_since(from);
        match answer {
            Ok(answer) => {
                let accepted: Vec<bool> = if answer.status.as_u16() == 202 {
                    vec![true]
                } else if answer.status.as_u16() == 200 && sh.options.batch > 1 {
                    match serde_json::from_slice::<BatchAnswer>(&answer.body) {
                        Ok(b) => b.results.iter().map(|r| r.status == "accepted").collect(),
                        Err(_) => vec![false; seqs.len()],
                    }
                } else {
                    vec![false; seqs.len()]
                };
                for (seq, ok) in seqs
                    .iter()
                    .zip(accepted.iter().chain(std::iter::repeat(&false)))
                {
                    if *ok {
                        st.accepted += 1;
                        st.accepted_bytes += bytes / seqs.len() as u64;
                        sh.tally.latency().record(latency);
                        sh.timeline.accepted(unix_micros(), latency);
                        if let Some(t) = &sh.tracker {
                            t.accepted(*seq, &[]);
                        }
                    } else {
                        st.reject(answer.status.as_u16());
                        st.last_error = Some(format!(
                            "{}: {}",
                            answer.status,
                            String::from_utf8_lossy(&answer.body)
                                .chars()
                                .take(300)
                                .collect::<String>()
                        ));
                        sh.timeline.failed(unix_micros());
                        sh.tally.failed.fetch_add(1, Relaxed);
                        if sh.stop_on_error {
                            sh.schedule.stop_with(format!(
                                "--stop-on-error: message {seq} refused: {}",
                                answer.status
                            ));
                        }
                    }
                    sh.tally.done.fetch_add(1, Relaxed);
                }
            }
            Err(e) => {
                st.error(e.kind(), e.to_string());
                st.failed_in_flight += seqs.len() as u64;
                for _ in &seqs {
                    sh.timeline.failed(unix_micros());
                }
                sh.tally.done.fetch_add(seqs.len() as u64, Relaxed);
                sh.tally.failed.fetch_add(seqs.len() as u64, Relaxed);
                client = None;
                if sh.stop_on_error {
                    sh.schedule.stop_with(format!("--stop-on-error: {e}"));
                }
                sh.schedule.backoff(&mut backoff_n).await;
            }
        }
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_bodies_have_the_size_asked_for_in_short_lines() {
        for size in [0, 1, 2, 75, 76, 4096] {
            let text = text_body(size);
            assert_eq!(text.len(), size, "{size}");
            assert!(text.lines().all(|l| l.len() <= 76));
        }
    }
}
