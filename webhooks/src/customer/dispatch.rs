//! Delivering the queued events: one task per endpoint with events waiting (and the
//! lease on it), which POSTs them in batches of `max_batch`, oldest first, and moves
//! on only when the endpoint answered 2xx. A failed batch is tried again, the same
//! batch (same `Postroad-Batch-Id`, signed anew), after a wait that doubles from
//! `retry_first_secs` up to `retry_max_secs`; once its oldest event has waited
//! `give_up_secs`, it goes to the endpoint's dead letters and the next one is tried.
//! Requests in progress are limited to `concurrency` over all endpoints, and each one
//! to `timeout_secs`, so a slow endpoint holds one slot for at most that long.
//!
//! Each request:
//!
//! ```text
//! POST <url>
//! Content-Type: application/json
//! Postroad-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">
//! Postroad-Batch-Id: <endpoint id>-<first seq>-<last seq>
//!
//! {"endpointId":"...","batchId":"...","events":[{...},{...}]}
//! ```

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use postroad_queue::unix_ms;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{CustomerHooks, Endpoint, Queued, guard, signature};

/// How long a lease on an endpoint lasts at least (longer with a long
/// `timeout_secs`): renewed before every request and while waiting to retry, so after
/// a crash another process takes the endpoint over within this time.
const MIN_LEASE: Duration = Duration::from_secs(15);
/// How often the store is asked which endpoints have events waiting (besides when
/// this process queues some), and the endpoints are reloaded.
const POLL: Duration = Duration::from_secs(1);
const RELOAD: Duration = Duration::from_secs(5);
/// Most bytes of an endpoint's answer kept in a failure's description.
const MAX_ERROR_BODY: usize = 200;

/// Delivers every endpoint's events. Cheap to share.
pub struct Dispatcher {
    hooks: Arc<CustomerHooks>,
    http: reqwest::Client,
    /// Names this process in leases.
    owner: String,
    requests: Arc<Semaphore>,
}

impl Dispatcher {
    /// `owner` names this process among those sharing the store (host name and pid).
    pub fn new(hooks: Arc<CustomerHooks>, owner: &str) -> Result<Arc<Self>, String> {
        let config = hooks.config();
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Postroad-Webhooks/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(60));
        if !config.allow_private_networks {
            http = http.dns_resolver(Arc::new(guard::PublicOnly));
        }
        let http = http
            .build()
            .map_err(|e| format!("cannot set up the webhook HTTP client: {e}"))?;
        Ok(Arc::new(Self {
            requests: Arc::new(Semaphore::new(config.concurrency)),
            hooks,
            http,
            owner: owner.to_string(),
        }))
    }

    /// Delivers until `stop`; then lets the requests in progress finish (each within
    /// `timeout_secs`). What is not delivered waits in the store.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tasks: JoinSet<String> = JoinSet::new();
        let mut running: HashSet<String> = HashSet::new();
        let mut reload = tokio::time::interval(RELOAD);
        reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.hooks.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                _ = reload.tick() => {
                    if let Err(e) = self.hooks.reload().await {
                        tracing::warn!("cannot reload the webhook endpoints: {e}");
                    }
                }
                Some(done) = tasks.join_next() => {
                    if let Ok(id) = done {
                        running.remove(&id);
                    }
                    continue;
                }
            }
            let waiting = match self.hooks.store().waiting().await {
                Ok(waiting) => waiting,
                Err(e) => {
                    tracing::warn!("cannot read the webhook outbox: {e}");
                    continue;
                }
            };
            let endpoints = self.hooks.endpoints();
            for id in waiting {
                if running.contains(&id) {
                    continue;
                }
                let Some(endpoint) = endpoints.iter().find(|e| e.id == id).cloned() else {
                    continue; // registered elsewhere a moment ago: the next reload knows it
                };
                running.insert(id);
                tasks.spawn(self.clone().deliver(endpoint, stop.clone()));
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Delivers one endpoint's events until its outbox is empty, another process holds
    /// its lease, or `stop`; the endpoint's id.
    async fn deliver(self: Arc<Self>, endpoint: Endpoint, stop: CancellationToken) -> String {
        let config = self.hooks.config().clone();
        let store = self.hooks.store().clone();
        let lease = MIN_LEASE.max(Duration::from_secs(config.timeout_secs * 2 + 5));
        let mut batch: Vec<Queued> = Vec::new();
        let mut failures = 0u32;
        while !stop.is_cancelled() {
            if !self.lease(&endpoint, lease).await {
                break;
            }
            if batch.is_empty() {
                match store.next(&endpoint.id, config.max_batch).await {
                    Ok(next) if next.is_empty() => break,
                    Ok(next) => batch = next,
                    Err(e) => {
                        tracing::warn!(endpoint = %endpoint.id, "cannot read the webhook outbox: {e}");
                        break;
                    }
                }
            }
            let (first, last) = (batch[0].seq, batch[batch.len() - 1].seq);
            let result = {
                let Ok(_slot) = self.requests.acquire().await else {
                    break;
                };
                self.post(&endpoint, &batch).await
            };
            match result {
                Ok(()) => {
                    metrics::counter!("postroad_webhook_requests_total", "result" => "delivered")
                        .increment(1);
                    metrics::counter!("postroad_webhook_events_delivered_total")
                        .increment(batch.len() as u64);
                    if let Err(e) = store.delivered(&endpoint.id, last).await {
                        // Delivered again later: receivers dedupe by event id.
                        tracing::warn!(endpoint = %endpoint.id, "cannot mark webhook events delivered: {e}");
                        break;
                    }
                    batch.clear();
                    failures = 0;
                }
                Err(error) => {
                    metrics::counter!("postroad_webhook_requests_total", "result" => "failed")
                        .increment(1);
                    failures += 1;
                    let waited = now_ms().saturating_sub(batch[0].queued_at_ms);
                    if waited >= config.give_up_secs * 1000 {
                        tracing::warn!(endpoint = %endpoint.id, url = %endpoint.url, events = batch.len(), %error, "webhook batch given up: dead letters");
                        match store.give_up(&endpoint.id, last, &error, now_ms()).await {
                            Ok(n) => {
                                metrics::counter!("postroad_webhook_events_dead_total").increment(n)
                            }
                            Err(e) => {
                                tracing::warn!(endpoint = %endpoint.id, "cannot move webhook events to the dead letters: {e}");
                                break;
                            }
                        }
                        batch.clear();
                        failures = 0;
                        continue;
                    }
                    let wait = backoff(&config, failures);
                    tracing::info!(endpoint = %endpoint.id, url = %endpoint.url, batch = %format!("{first}-{last}"), %error, "webhook batch failed; again in {wait:?}");
                    // Waits holding the lease, so no other process takes the endpoint
                    // (and sends later events before this batch).
                    let until = tokio::time::Instant::now() + wait;
                    let mut held = true;
                    while held && tokio::time::Instant::now() < until {
                        let nap = (lease / 3).min(until - tokio::time::Instant::now());
                        tokio::select! {
                            () = stop.cancelled() => break,
                            () = tokio::time::sleep(nap) => {}
                        }
                        held = self.lease(&endpoint, lease).await;
                    }
                    if !held || stop.is_cancelled() {
                        break;
                    }
                }
            }
        }
        endpoint.id
    }

    /// Takes or renews the lease on `endpoint`; whether this process has it.
    async fn lease(&self, endpoint: &Endpoint, lease: Duration) -> bool {
        let now = now_ms();
        let until = now + lease.as_millis() as u64;
        match self
            .hooks
            .store()
            .lease(&endpoint.id, &self.owner, now, until)
            .await
        {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(endpoint = %endpoint.id, "cannot lease the webhook endpoint: {e}");
                false
            }
        }
    }

    /// One request with `batch`; why it failed.
    async fn post(&self, endpoint: &Endpoint, batch: &[Queued]) -> Result<(), String> {
        let url = reqwest::Url::parse(&endpoint.url).map_err(|e| format!("bad URL: {e}"))?;
        if !self.hooks.config().allow_private_networks
            && let Some(ip) = guard::literal_ip(&url)
            && !guard::is_public(ip)
        {
            return Err(format!("{ip} is not a public address"));
        }
        let batch_id = format!(
            "{}-{}-{}",
            endpoint.id,
            batch[0].seq,
            batch[batch.len() - 1].seq
        );
        let body = body(&endpoint.id, &batch_id, batch);
        let signed = signature::sign(&endpoint.secret, now_ms() / 1000, body.as_bytes());
        let response = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signature::HEADER, signed)
            .header("Postroad-Batch-Id", &batch_id)
            .body(body)
            .send()
            .await
            .map_err(describe)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let mut text: String = text.chars().filter(|c| !c.is_control()).collect();
        if let Some((at, _)) = text.char_indices().nth(MAX_ERROR_BODY) {
            text.truncate(at);
        }
        Err(format!("HTTP {status}: {text}").trim_end().to_string())
    }
}

/// The JSON of a request: the stored events as they are.
fn body(endpoint_id: &str, batch_id: &str, batch: &[Queued]) -> String {
    let size: usize = batch.iter().map(|q| q.payload.len() + 1).sum();
    let mut body = String::with_capacity(size + 128);
    body.push_str("{\"endpointId\":\"");
    body.push_str(endpoint_id);
    body.push_str("\",\"batchId\":\"");
    body.push_str(batch_id);
    body.push_str("\",\"events\":[");
    for (i, queued) in batch.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&queued.payload);
    }
    body.push_str("]}");
    body
}

/// A transport failure, with its causes.
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The wait after the `failures`-th failure of a batch.
fn backoff(config: &super::DeliveryConfig, failures: u32) -> Duration {
    let secs = config
        .retry_first_secs
        .saturating_mul(1u64 << failures.saturating_sub(1).min(30))
        .min(config.retry_max_secs);
    Duration::from_secs(secs)
}

fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap() {
        let config = super::super::DeliveryConfig {
            retry_first_secs: 5,
            retry_max_secs: 600,
            ..Default::default()
        };
        let waits: Vec<u64> = (1..=9).map(|n| backoff(&config, n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 600, 600]);
        assert_eq!(backoff(&config, u32::MAX).as_secs(), 600);
    }

    #[test]
    fn a_request_body_carries_the_events_as_stored() {
        let queued = |seq, payload: &str| Queued {
            seq,
            event_id: format!("e{seq}"),
            payload: payload.into(),
            queued_at_ms: 0,
        };
        let body = body(
            "ep",
            "ep-1-2",
            &[queued(1, r#"{"a":1}"#), queued(2, r#"{"b":2}"#)],
        );
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"endpointId": "ep", "batchId": "ep-1-2",
                               "events": [{"a": 1}, {"b": 2}]})
        );
    }
}
