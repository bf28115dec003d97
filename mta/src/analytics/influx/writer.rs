//! Sends points to InfluxDB: every interval the sink's tally becomes lines in a
//! bounded buffer, which goes out oldest first in `/write` requests of at most
//! `batch_size` lines. A failed request keeps its lines and waits (1 s doubling to a
//! minute); lines InfluxDB refuses as malformed (400) are dropped, as retrying cannot
//! help; a full buffer drops its oldest lines. Drops are counted and logged.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use postroad_queue::{Queue, unix_ms};
use tokio_util::sync::CancellationToken;

use super::{InfluxConfig, InfluxSink};

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How much of an error answer a log line quotes.
const MAX_QUOTED: usize = 300;

/// What became of one request.
enum Sent {
    Written,
    /// The lines are malformed or refused for good (400): not sent again.
    Rejected(String),
    /// The database does not exist (yet).
    NoDatabase,
    /// Try again later.
    Failed(String),
}

pub struct InfluxWriter {
    config: InfluxConfig,
    host: String,
    client: reqwest::Client,
    write_url: reqwest::Url,
    query_url: reqwest::Url,
    /// Lines waiting to be written, oldest first, each ending in `\n`.
    buffer: VecDeque<String>,
    backoff: Duration,
    retry_at: Option<Instant>,
    /// Since when requests fail (for the log line when they work again).
    failing_since: Option<Instant>,
}

impl InfluxWriter {
    /// A writer for `config` (validated), tagging points with `host`.
    pub fn new(config: &InfluxConfig, host: &str) -> Result<Self, String> {
        // With a trailing slash, `join` keeps a path prefix (a proxy's /influx/).
        let base = reqwest::Url::parse(&format!("{}/", config.url.trim_end_matches('/')))
            .map_err(|e| format!("influx.url: {e}"))?;
        let mut write_url = base.join("write").map_err(|e| e.to_string())?;
        {
            let mut q = write_url.query_pairs_mut();
            q.append_pair("db", &config.database)
                .append_pair("precision", "ms");
            if !config.retention_policy.is_empty() {
                q.append_pair("rp", &config.retention_policy);
            }
        }
        let query_url = base.join("query").map_err(|e| e.to_string())?;
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| format!("cannot build the InfluxDB client: {e}"))?;
        Ok(Self {
            config: config.clone(),
            host: host.to_string(),
            client,
            write_url,
            query_url,
            buffer: VecDeque::new(),
            backoff: FIRST_BACKOFF,
            retry_at: None,
            failing_since: None,
        })
    }

    /// Writes an interval's points every `interval_secs` until `stop`; then what is
    /// left, trying for at most `timeout_secs`.
    pub async fn run(
        mut self,
        sink: Arc<InfluxSink>,
        queue: Arc<dyn Queue>,
        stop: CancellationToken,
    ) {
        if self.config.create_database {
            self.create_database().await;
        }
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            self.collect(&sink, queue.as_ref()).await;
            self.flush().await;
        }
        self.collect(&sink, queue.as_ref()).await;
        self.retry_at = None;
        let _ = tokio::time::timeout(self.config.timeout, self.flush()).await;
        if !self.buffer.is_empty() {
            tracing::warn!(
                points = self.buffer.len(),
                "influx: points not written at shutdown are dropped"
            );
            self.drop_lines(self.buffer.len(), "dropped");
        }
    }

    /// The interval's points into the buffer, the oldest out when it overflows.
    async fn collect(&mut self, sink: &InfluxSink, queue: &dyn Queue) {
        let stats = match queue.stats().await {
            Ok(stats) => Some(stats),
            Err(e) => {
                tracing::debug!(error = %e, "influx: no queue counts this interval");
                None
            }
        };
        let at_ms = unix_ms(SystemTime::now());
        for point in sink.take().points(&self.host, at_ms, stats.as_ref()) {
            let mut line = String::new();
            point.write_line(&mut line);
            if !line.is_empty() {
                self.buffer.push_back(line);
            }
        }
        let over = self
            .buffer
            .len()
            .saturating_sub(self.config.max_buffered_points);
        if over > 0 {
            tracing::warn!(
                points = over,
                "influx: buffer full (influx.max_buffered_points); oldest points dropped"
            );
            self.drop_lines(over, "dropped");
        }
        metrics::gauge!("postroad_influx_buffered_points").set(self.buffer.len() as f64);
    }

    /// Sends what is buffered, batch after batch, until it is sent or a request fails.
    async fn flush(&mut self) {
        while !self.buffer.is_empty() {
            if !self.flush_once().await {
                break;
            }
        }
        metrics::gauge!("postroad_influx_buffered_points").set(self.buffer.len() as f64);
    }

    /// Sends one batch unless waiting out a failure; whether another may follow.
    async fn flush_once(&mut self) -> bool {
        if self.buffer.is_empty() || self.retry_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        let n = self.buffer.len().min(self.config.batch_size);
        let body: String = self.buffer.iter().take(n).map(String::as_str).collect();
        match self.post(body).await {
            Sent::Written => {
                self.drop_lines(n, "written");
                if let Some(since) = self.failing_since.take() {
                    tracing::info!(
                        after = ?since.elapsed(),
                        "influx: writes work again"
                    );
                }
                self.backoff = FIRST_BACKOFF;
                self.retry_at = None;
                true
            }
            Sent::Rejected(reason) => {
                // A partial write stores the valid lines; all count as rejected here.
                tracing::error!(points = n, %reason, "influx: points refused as malformed; dropped");
                self.drop_lines(n, "rejected");
                true
            }
            Sent::NoDatabase => {
                if self.config.create_database {
                    self.create_database().await;
                }
                self.fail(format!(
                    "database {:?} does not exist",
                    self.config.database
                ));
                false
            }
            Sent::Failed(reason) => {
                self.fail(reason);
                false
            }
        }
    }

    fn fail(&mut self, reason: String) {
        self.failing_since.get_or_insert_with(Instant::now);
        tracing::warn!(
            %reason,
            buffered = self.buffer.len(),
            retry_in = ?self.backoff,
            "influx: write failed; points kept for the next try"
        );
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    fn drop_lines(&mut self, n: usize, outcome: &'static str) {
        self.buffer.drain(..n);
        metrics::counter!("postroad_influx_points_total", "outcome" => outcome).increment(n as u64);
    }

    fn request(&self, url: reqwest::Url) -> reqwest::RequestBuilder {
        let request = self.client.post(url);
        if self.config.username.is_empty() {
            request
        } else {
            request.basic_auth(&self.config.username, Some(&self.config.password))
        }
    }

    async fn post(&self, body: String) -> Sent {
        let answer = match self.request(self.write_url.clone()).body(body).send().await {
            Ok(answer) => answer,
            Err(e) => return Sent::Failed(e.to_string()),
        };
        let status = answer.status();
        if status.is_success() {
            return Sent::Written;
        }
        let text = quoted(answer.text().await.unwrap_or_default());
        match status.as_u16() {
            404 if text.contains("database not found") => Sent::NoDatabase,
            400 => Sent::Rejected(text),
            _ => Sent::Failed(format!("{status}: {text}")),
        }
    }

    /// `CREATE DATABASE` (which does nothing when it exists); a failure is logged.
    async fn create_database(&self) {
        let statement = format!(
            "CREATE DATABASE \"{}\"",
            self.config
                .database
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
        );
        let outcome = self
            .request(self.query_url.clone())
            .form(&[("q", statement)])
            .send()
            .await;
        match outcome {
            Ok(answer) if answer.status().is_success() => {
                tracing::debug!(database = %self.config.database, "influx: database ready");
            }
            Ok(answer) => {
                let status = answer.status();
                let text = quoted(answer.text().await.unwrap_or_default());
                tracing::warn!(database = %self.config.database, "influx: cannot create the database: {status}: {text}");
            }
            Err(e) => {
                tracing::warn!(database = %self.config.database, error = %e, "influx: cannot create the database");
            }
        }
    }
}

fn quoted(mut text: String) -> String {
    if text.len() > MAX_QUOTED {
        let mut end = MAX_QUOTED;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text.trim().to_string()
}
