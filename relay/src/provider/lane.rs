//! One provider as a transport: requests in flight bounded by `max_concurrency`, its
//! quota (`max_message_rate`, shared through Redis when configured) under adaptive
//! control (a throttle cuts the rate, success raises it back), a circuit breaker, and
//! a pause while the account cannot send or the provider said to wait.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use postroad_queue::{EnhancedCode, Response};
use serde::Serialize;
use tokio::time::Instant;

use super::circuit::{Breaker, State};
use super::slots::PrioritySlots;
use super::{Api, ProviderConfig, ProviderKind, Refusal, Submission};
use crate::adaptive::Controller;
use crate::deliver::{Context, Job, Outcome};
use crate::pace::Pacer;
use crate::shared_rate::SharedRate;
use crate::site::local_reply;
use crate::transport::Transport;

pub struct ProviderLane {
    name: String,
    kind: ProviderKind,
    api: Api,
    /// What events name as the remote host: `sendgrid [api.sendgrid.com]`.
    remote: String,
    /// Request slots (`max_concurrency`), handed out high before normal before bulk.
    slots: PrioritySlots,
    pacer: Pacer,
    shared: Option<SharedRate>,
    control: Mutex<Controller>,
    breaker: Mutex<Breaker>,
    /// Until when it rests, and why.
    paused: Mutex<Option<(Instant, String)>>,
    pause_for: Duration,
    in_flight: AtomicUsize,
}

/// What `postroad queue providers` shows of a provider.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderView {
    pub name: String,
    pub kind: ProviderKind,
    pub host: String,
    /// `normal`; `backoff` while adaptive control holds the rate below the quota;
    /// `paused` while it rests; `open` / `half-open` with the circuit breaker.
    pub state: &'static str,
    /// Until when (Unix milliseconds) the state holds, and why.
    pub until_ms: Option<u64>,
    pub reason: Option<String>,
    /// Recipients per second allowed now (`None`: no limit).
    pub message_rate: Option<f64>,
    pub in_flight: usize,
    /// Jobs waiting for a request slot.
    pub queued: usize,
}

impl ProviderLane {
    pub fn new(
        name: &str,
        config: &ProviderConfig,
        http: reqwest::Client,
        redis: Option<&postroad_redis_link::RedisLink>,
    ) -> Result<Arc<Self>, String> {
        let api = Api::new(config, http).map_err(|e| format!("relay.providers.{name}: {e}"))?;
        let rate = config.max_message_rate.map(|r| r.per_sec());
        Ok(Arc::new(Self {
            remote: format!("{name} [{}]", api.host()),
            name: name.to_string(),
            kind: config.kind,
            api,
            slots: PrioritySlots::new(config.max_concurrency),
            pacer: Pacer::new(rate),
            shared: rate
                .and(redis)
                .map(|link| SharedRate::new(link.clone(), &format!("provider:{name}"))),
            control: Mutex::new(Controller::new(
                true,
                rate,
                config.max_concurrency,
                Instant::now(),
            )),
            breaker: Mutex::new(Breaker::new(config.circuit_failures, config.circuit_open)),
            paused: Mutex::new(None),
            pause_for: config.pause,
            in_flight: AtomicUsize::new(0),
        }))
    }

    async fn run(self: Arc<Self>, job: Job, ctx: Arc<Context>) {
        let priority = job.message.claimed.envelope.meta.priority;
        let _slot = self.slots.acquire(priority).await;
        if let Some(reply) = self.held() {
            self.count("held");
            let outcome = Outcome::deferred(reply, Some(self.remote.clone()));
            return self.finish(job, &ctx, outcome);
        }
        let n = job.recipients.len();
        self.pacer.acquire_many(n).await;
        let rate = lock(&self.control).limits().rate;
        if let Some(shared) = &self.shared
            && let Some(rate) = rate
        {
            for _ in 0..n {
                shared.acquire(rate).await;
            }
        }
        {
            let mut control = lock(&self.control);
            let now = Instant::now();
            for _ in 0..n {
                control.sending(now);
            }
        }
        let claimed = &job.message.claimed;
        let submission = Submission {
            id: claimed.envelope.id,
            recipients: job
                .recipients
                .iter()
                .map(|&i| claimed.envelope.recipients[i].address.as_str())
                .collect(),
            body: &claimed.body,
            meta: &claimed.envelope.meta,
        };
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let result = self.api.send(&submission).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let outcome = self.judge(result, &submission);
        self.finish(job, &ctx, outcome);
    }

    /// Applies an answer to the lane's state and turns it into the job's outcome.
    fn judge(
        &self,
        result: Result<super::Accepted, Refusal>,
        submission: &Submission<'_>,
    ) -> Outcome {
        let now = Instant::now();
        let remote = Some(self.remote.clone());
        let answered = || lock(&self.breaker).succeeded();
        match result {
            Ok(accepted) => {
                answered();
                self.count("accepted");
                if let Some(limits) = lock(&self.control).delivered(now) {
                    self.pacer.set_rate(limits.rate);
                }
                let text = match &accepted.message_id {
                    Some(id) => format!("accepted by {} as {id}", self.name),
                    None => format!("accepted by {}", self.name),
                };
                Outcome::accepted(
                    Response::local(EnhancedCode::new(2, 0, 0), text),
                    self.remote.clone(),
                    accepted.message_id,
                )
            }
            Err(Refusal::Temporary {
                response,
                throttle: true,
                hold,
            }) => {
                answered();
                self.count("throttled");
                if let Some(limits) =
                    lock(&self.control).throttled(response.to_string(), false, now)
                {
                    self.pacer.set_rate(limits.rate);
                    tracing::info!(provider = %self.name, rate = ?limits.rate, reply = %response, "provider throttled; rate cut");
                }
                if let Some(hold) = hold {
                    self.pause(now + hold, format!("rate limited: {response}"));
                }
                Outcome::deferred(response, remote)
            }
            Err(Refusal::Temporary { response, .. }) => {
                self.count("failed");
                if lock(&self.breaker).failed(now) {
                    tracing::warn!(provider = %self.name, reply = %response, "provider failing; circuit opened");
                }
                Outcome::deferred(response, remote)
            }
            Err(Refusal::Permanent(response)) => {
                answered();
                self.count("rejected");
                tracing::info!(provider = %self.name, id = %submission.id, reply = %response, "provider refused the message");
                Outcome::bounced(response, remote)
            }
            Err(Refusal::Paused(response)) => {
                answered();
                self.count("paused");
                tracing::warn!(provider = %self.name, reply = %response, pause = ?self.pause_for, "provider account cannot send; pausing it");
                self.pause(now + self.pause_for, response.to_string());
                Outcome::deferred(response, remote)
            }
        }
    }

    fn finish(&self, job: Job, ctx: &Arc<Context>, outcome: Outcome) {
        let outcomes = vec![outcome; job.recipients.len()];
        job.complete(outcomes, ctx);
    }

    fn count(&self, result: &'static str) {
        metrics::counter!("postroad_provider_requests_total", "provider" => self.name.clone(), "result" => result)
            .increment(1);
    }

    fn pause(&self, until: Instant, why: String) {
        let mut paused = lock(&self.paused);
        if paused.as_ref().is_none_or(|(at, _)| *at < until) {
            *paused = Some((until, why));
        }
    }

    /// Why nothing may be sent now: a pause, or an open circuit.
    fn held(&self) -> Option<Response> {
        let now = Instant::now();
        if let Some((until, why)) = lock(&self.paused).clone().filter(|(until, _)| now < *until) {
            let left = until.saturating_duration_since(now).as_secs();
            return Some(local_reply(
                "4.7.0",
                format!("{} paused for {left} s more: {why}", self.name),
            ));
        }
        let mut breaker = lock(&self.breaker);
        if breaker.allow(now) {
            return None;
        }
        let wait = match breaker.state() {
            State::Open { until } => format!(
                "; next probe in {} s",
                until.saturating_duration_since(now).as_secs()
            ),
            _ => "; a probe is out".into(),
        };
        Some(local_reply(
            "4.4.1",
            format!("{} circuit open after repeated failures{wait}", self.name),
        ))
    }

    pub fn view(&self) -> ProviderView {
        let now = Instant::now();
        let unix = |at: Instant| {
            postroad_queue::unix_ms(SystemTime::now() + at.saturating_duration_since(now))
        };
        let paused = lock(&self.paused).clone().filter(|(until, _)| now < *until);
        let circuit = lock(&self.breaker).state();
        let (limits, backoff) = {
            let control = lock(&self.control);
            (control.limits(), control.backoff())
        };
        let (state, until_ms, reason) = match (paused, circuit) {
            (Some((until, why)), _) => ("paused", Some(unix(until)), Some(why)),
            (None, State::Open { until }) => {
                ("open", Some(unix(until)), Some("repeated failures".into()))
            }
            (None, State::HalfOpen) => ("half-open", None, Some("probing after failures".into())),
            (None, State::Closed { .. }) if backoff.is_some() => ("backoff", None, backoff),
            _ => ("normal", None, None),
        };
        ProviderView {
            name: self.name.clone(),
            kind: self.kind,
            host: self.api.host().to_string(),
            state,
            until_ms,
            reason,
            message_rate: limits.rate,
            in_flight: self.in_flight.load(Ordering::SeqCst),
            queued: self.slots.waiting(),
        }
    }
}

impl Transport for ProviderLane {
    fn name(&self) -> &str {
        &self.name
    }

    fn max_recipients(&self, _ctx: &Context) -> usize {
        self.api.max_recipients()
    }

    fn submit(self: Arc<Self>, job: Job, ctx: &Arc<Context>) {
        tokio::spawn(self.run(job, ctx.clone()));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
