//! Messages in flight: each claimed message is split into jobs (one per site and
//! transaction); when its last job reports, the per-recipient outcomes become one
//! queue resolution and one event per recipient.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use postroad_bounce::verp::ReturnPaths;
use postroad_queue::{
    Claimed, DeliveryEvent, EnhancedCode, Envelope, EventKind, Queue, Recipient, Resolution,
    Response, unix_ms,
};
use tokio::sync::OwnedSemaphorePermit;

use crate::client::{ClientConfig, Connection, TlsPolicy};
use crate::config::RelayConfig;
use crate::dsn;
use crate::retry::RetryPolicy;
use crate::transport::Transport;

/// What every delivery task needs.
pub struct Context {
    pub config: RelayConfig,
    pub client: ClientConfig,
    pub queue: Arc<dyn Queue>,
    pub retry: RetryPolicy,
    /// With `[bounces]` domains: each copy leaves with its own VERP return path.
    pub return_paths: Option<Arc<ReturnPaths>>,
}

impl Context {
    /// The envelope sender of a transaction: the VERP return path of its one
    /// recipient when return paths are on, else the message's (a null sender stays
    /// null: reports are never sent about reports).
    pub fn sender<'a>(&self, envelope: &'a Envelope, recipients: &[&Recipient]) -> Cow<'a, str> {
        match (&self.return_paths, recipients) {
            (Some(paths), [recipient]) if !envelope.sender.is_empty() => {
                Cow::Owned(paths.return_path(envelope.id.as_u128(), &recipient.address))
            }
            _ => Cow::Borrowed(&envelope.sender),
        }
    }

    /// Most recipients of one SMTP transaction: one each with VERP return paths.
    pub fn recipients_per_transaction(&self) -> usize {
        if self.return_paths.is_some() {
            1
        } else {
            self.config.max_recipients_per_transaction
        }
    }

    /// The client settings with a route's TLS policy.
    pub fn client_config(&self, tls: TlsPolicy) -> ClientConfig {
        ClientConfig {
            tls,
            ..self.client.clone()
        }
    }
}

/// What an attempt decided for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The receiving server took it.
    Delivered,
    /// Try again later.
    Deferred,
    /// Never try again.
    Bounced,
    /// Not sent: the address is on the suppression list, for this reason
    /// (`hard-bounce`, `complaint`, ...).
    Suppressed(&'static str),
}

/// What happened to one recipient in this attempt: what was decided, why (the reply,
/// or a local reason), which host (or provider) answered, and the id a provider gave
/// the message it accepted.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub disposition: Disposition,
    pub response: Response,
    pub host: Option<String>,
    pub provider_message_id: Option<String>,
}

impl Outcome {
    pub fn deferred(response: Response, host: Option<String>) -> Self {
        Self {
            disposition: Disposition::Deferred,
            response,
            host,
            provider_message_id: None,
        }
    }

    pub fn bounced(response: Response, host: Option<String>) -> Self {
        Self {
            disposition: Disposition::Bounced,
            response,
            host,
            provider_message_id: None,
        }
    }

    /// Not sent, for the suppression list's `reason` (or because its campaign was
    /// cancelled: [`crate::gate::CANCELLED`]).
    pub fn suppressed(reason: &'static str) -> Self {
        let text = if reason == crate::gate::CANCELLED {
            "not sent: its campaign was cancelled".to_string()
        } else {
            format!("recipient is on the suppression list ({reason})")
        };
        Self {
            disposition: Disposition::Suppressed(reason),
            response: Response::local(EnhancedCode::new(5, 7, 1), text),
            host: None,
            provider_message_id: None,
        }
    }

    /// Taken by a provider, under the id it gave.
    pub fn accepted(response: Response, host: String, provider_message_id: Option<String>) -> Self {
        Self {
            disposition: Disposition::Delivered,
            response,
            host: Some(host),
            provider_message_id,
        }
    }

    /// Classifies what decided the attempt: a 2xx reply delivers, a 5xx reply (or a
    /// local reason with a 5.x.x status) bounces, anything else defers.
    pub fn decided_by(response: Response, host: Option<String>) -> Self {
        let disposition = match &response {
            Response::Remote(r) if r.is_positive() => Disposition::Delivered,
            Response::Remote(r) if r.is_permanent() => Disposition::Bounced,
            Response::Local(l) if l.enhanced.is_permanent() => Disposition::Bounced,
            _ => Disposition::Deferred,
        };
        Self {
            disposition,
            response,
            host,
            provider_message_id: None,
        }
    }
}

/// A claimed message being delivered.
pub struct InFlight {
    pub claimed: Claimed,
    outcomes: Mutex<Vec<Option<Outcome>>>,
    pending_jobs: AtomicUsize,
    /// Its place among the messages in flight (and, for bulk mail, in bulk's share):
    /// given back when it is resolved.
    _permits: (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>),
}

impl InFlight {
    pub fn new(
        claimed: Claimed,
        permit: OwnedSemaphorePermit,
        bulk_permit: Option<OwnedSemaphorePermit>,
    ) -> Arc<Self> {
        let n = claimed.envelope.recipients.len();
        Arc::new(Self {
            claimed,
            outcomes: Mutex::new(vec![None; n]),
            pending_jobs: AtomicUsize::new(0),
            _permits: (permit, bulk_permit),
        })
    }

    /// Records outcomes decided without a job (routing failures).
    pub fn set(&self, recipients: &[usize], outcome: &Outcome) {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        for &i in recipients {
            outcomes[i] = Some(outcome.clone());
        }
    }

    /// Creates the jobs (recipients, and the transports that take what the first
    /// defers); the message is finished when all of them have reported.
    pub fn jobs(self: &Arc<Self>, groups: Vec<(Vec<usize>, Fallbacks)>) -> Vec<Job> {
        self.pending_jobs.store(groups.len(), Ordering::SeqCst);
        groups
            .into_iter()
            .map(|(recipients, fallbacks)| Job {
                message: self.clone(),
                recipients,
                fallbacks,
            })
            .collect()
    }
}

/// The transports after the current one in a route, in the order they are tried.
pub type Fallbacks = Vec<Arc<dyn Transport>>;

/// Some recipients of one message, for one transaction at one site (or one request to
/// a provider), and where what it defers goes next.
pub struct Job {
    pub message: Arc<InFlight>,
    pub recipients: Vec<usize>,
    pub fallbacks: Fallbacks,
}

impl Job {
    /// Reports this job's outcomes; the last job of a message resolves it. Recipients
    /// deferred while the route has a fallback go to it, in the same attempt.
    pub fn complete(self, outcomes: Vec<Outcome>, ctx: &Arc<Context>) {
        let mut deferred = Vec::new();
        let mut reply = None;
        if !self.fallbacks.is_empty() {
            for (&recipient, outcome) in self.recipients.iter().zip(&outcomes) {
                if outcome.disposition == Disposition::Deferred {
                    deferred.push(recipient);
                    reply.get_or_insert_with(|| outcome.response.to_string());
                }
            }
        }
        // Recorded before anything is passed on: a passed-on recipient keeps its
        // deferral until the next transport reports (it always does), and that report
        // must not be overwritten by this one.
        self.message.set_each(&self.recipients, outcomes);
        if let Some(reply) = reply {
            self.pass_on(deferred, &reply, ctx);
        }
        if self.message.pending_jobs.fetch_sub(1, Ordering::SeqCst) == 1 {
            tokio::spawn(finish(self.message, ctx.clone()));
        }
    }

    /// Gives `recipients` to the route's next transport, in jobs of the size it takes.
    fn pass_on(&self, recipients: Vec<usize>, reply: &str, ctx: &Arc<Context>) {
        let Some((next, rest)) = self.fallbacks.split_first() else {
            return;
        };
        tracing::info!(
            id = %self.message.claimed.envelope.id,
            recipients = recipients.len(),
            to = next.name(),
            %reply,
            "deferred; passing to the next transport of the route"
        );
        metrics::counter!("postroad_fallovers_total", "to" => next.name().to_string()).increment(1);
        let chunks = recipients.chunks(next.max_recipients(ctx).max(1));
        // Counted before this job reports, so the message cannot finish in between.
        self.message
            .pending_jobs
            .fetch_add(chunks.len(), Ordering::SeqCst);
        for chunk in chunks {
            next.clone().submit(
                Job {
                    message: self.message.clone(),
                    recipients: chunk.to_vec(),
                    fallbacks: rest.to_vec(),
                },
                ctx,
            );
        }
    }

    pub fn fail_all(self, outcome: Outcome, ctx: &Arc<Context>) {
        let outcomes = vec![outcome; self.recipients.len()];
        self.complete(outcomes, ctx);
    }
}

impl InFlight {
    fn set_each(&self, recipients: &[usize], results: Vec<Outcome>) {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        for (&i, outcome) in recipients.iter().zip(results) {
            outcomes[i] = Some(outcome);
        }
    }
}

/// How a delivery attempt left the connection.
pub enum Attempt {
    /// The job is reported; the session can carry the next message.
    Reusable,
    /// The job is reported; the session is dead.
    Dead,
    /// A reused session turned out closed before MAIL was answered: nothing was sent,
    /// the job is handed back to be tried at once on a new connection.
    Stale(Job),
}

/// What an attempt tells the site's adaptive control.
#[derive(Debug, Default)]
pub struct Report {
    /// Recipients the server took.
    pub delivered: usize,
    /// The first reply that asked us to slow down ([`Response::is_throttle`]).
    pub throttle: Option<Response>,
    /// The server's other replies (temporary and permanent), for the reply rules.
    pub replies: Vec<String>,
}

impl Report {
    fn of<'a>(responses: impl IntoIterator<Item = &'a Response>) -> Self {
        let mut report = Report::default();
        for response in responses {
            match response {
                Response::Remote(r) if r.is_positive() => report.delivered += 1,
                Response::Remote(_) => {
                    if response.is_throttle() && report.throttle.is_none() {
                        report.throttle = Some(response.clone());
                    }
                    report.replies.push(response.to_string());
                }
                Response::Local(_) => {}
            }
        }
        report
    }
}

/// Delivers one job over an open session. `bounces` names the reply rule, if any,
/// that turns a temporary reply into a bounce.
pub async fn deliver(
    conn: &mut Connection,
    job: Job,
    ctx: &Arc<Context>,
    bounces: &(dyn Fn(&Response) -> Option<String> + Sync),
) -> (Attempt, Report) {
    let claimed = &job.message.claimed;
    let envelope = &claimed.envelope;
    let recipients: Vec<_> = job
        .recipients
        .iter()
        .map(|&i| &envelope.recipients[i])
        .collect();
    let host = conn.peer().to_string();
    let sender = ctx.sender(envelope, &recipients);
    match conn
        .send(envelope, &sender, &recipients, &claimed.body)
        .await
    {
        Ok(result) => {
            let outcomes = result
                .recipients
                .into_iter()
                .map(|rcpt| {
                    let host = Some(host.clone());
                    match (rcpt, &result.data) {
                        (Response::Remote(r), Some(data)) if r.is_positive() => {
                            Outcome::decided_by(data.clone().into(), host)
                        }
                        (Response::Remote(r), None) if r.is_positive() => Outcome::deferred(
                            Response::local(
                                EnhancedCode::new(4, 4, 2),
                                "no reply to the message data",
                            ),
                            host,
                        ),
                        (rcpt, _) => Outcome::decided_by(rcpt, host),
                    }
                })
                .map(|outcome| bounced_by_rule(outcome, bounces))
                .collect::<Vec<Outcome>>();
            let report = Report::of(outcomes.iter().map(|o| &o.response));
            job.complete(outcomes, ctx);
            (Attempt::Reusable, report)
        }
        Err(e) if e.is_stale_connection() => (Attempt::Stale(job), Report::default()),
        Err(e) => {
            tracing::info!(%host, id = %envelope.id, "delivery attempt failed: {e}");
            let response = e.response();
            let report = Report::of([&response]);
            let host = Some(host);
            let outcome = if e.is_permanent() {
                Outcome::decided_by(response, host)
            } else {
                bounced_by_rule(Outcome::deferred(response, host), bounces)
            };
            job.fail_all(outcome, ctx);
            (Attempt::Dead, report)
        }
    }
}

/// A deferral that a reply rule says to bounce, bounced (and logged).
fn bounced_by_rule(
    outcome: Outcome,
    bounces: &(dyn Fn(&Response) -> Option<String> + Sync),
) -> Outcome {
    if outcome.disposition != Disposition::Deferred {
        return outcome;
    }
    match bounces(&outcome.response) {
        Some(rule) => {
            tracing::info!(%rule, reply = %outcome.response, "automation bounces a temporary failure");
            Outcome {
                disposition: Disposition::Bounced,
                ..outcome
            }
        }
        None => outcome,
    }
}

/// Why a recipient was not delivered, in the bounce classifier's words (the same
/// names as for asynchronous bounces); none for a delivery.
fn reason(kind: EventKind, response: &Response) -> Option<String> {
    match kind {
        EventKind::Expired => Some(postroad_bounce::Reason::Expired.as_str().into()),
        EventKind::Bounced | EventKind::Deferred => {
            let enhanced = response.enhanced().map(|e| e.to_string());
            let (reason, _) = postroad_bounce::classify_reply(
                response.code(),
                enhanced.as_deref(),
                response.text(),
            );
            Some(reason.as_str().into())
        }
        _ => None,
    }
}

/// Turns the outcomes into one queue resolution and the events.
async fn finish(message: Arc<InFlight>, ctx: Arc<Context>) {
    let outcomes = std::mem::take(&mut *message.outcomes.lock().unwrap_or_else(|e| e.into_inner()));
    let envelope = &message.claimed.envelope;
    let now = SystemTime::now();
    let expired = ctx.retry.expired(envelope.age_base_ms(), now);
    let mut retry = Vec::new();
    let mut dead = Vec::new();
    let mut reasons = Vec::new();
    let mut events = Vec::with_capacity(outcomes.len());
    // Recipients whose sender wants a notice (failure, or success when asked).
    let mut noticed: Vec<(usize, dsn::Action, bool)> = Vec::new();
    for (index, (recipient, outcome)) in envelope.recipients.iter().zip(outcomes).enumerate() {
        let attempt = recipient.attempts + 1;
        let Some(Outcome {
            disposition,
            response,
            host,
            provider_message_id,
        }) = outcome
        else {
            // Every recipient is in some job or routing result; this is a bug guard.
            tracing::error!(id = %envelope.id, rcpt = %recipient.address, "recipient without an outcome; retrying it");
            retry.push(recipient.clone());
            continue;
        };
        let action = match disposition {
            Disposition::Delivered => Some((dsn::Action::Delivered, false)),
            Disposition::Bounced => Some((dsn::Action::Failed, false)),
            Disposition::Deferred if expired => Some((dsn::Action::Failed, true)),
            Disposition::Deferred => None,
            // Not sent, as the list wants: the sender learns of it as of a failure.
            Disposition::Suppressed(_) => Some((dsn::Action::Failed, false)),
        };
        if let Some((action, expired)) = action
            && dsn::wanted(envelope, recipient, action)
        {
            noticed.push((index, action, expired));
        }
        let kind = match disposition {
            Disposition::Delivered => {
                let since = unix_ms(now).saturating_sub(envelope.received_at_ms);
                metrics::histogram!("postroad_delivery_seconds").record(since as f64 / 1000.0);
                EventKind::Delivered
            }
            Disposition::Bounced => {
                reasons.push(format!("<{}>: {response}", recipient.address));
                dead.push(recipient.clone());
                EventKind::Bounced
            }
            Disposition::Deferred if expired => {
                reasons.push(format!(
                    "<{}>: expired after {attempt} attempts; last: {response}",
                    recipient.address
                ));
                dead.push(recipient.clone());
                EventKind::Expired
            }
            Disposition::Deferred => {
                let mut again = recipient.clone();
                again.attempts = attempt;
                retry.push(again);
                EventKind::Deferred
            }
            Disposition::Suppressed(_) => EventKind::Suppressed,
        };
        let reason = match disposition {
            Disposition::Suppressed(why) => Some(why.to_string()),
            _ => reason(kind, &response),
        };
        events.push(DeliveryEvent {
            attempt,
            remote_host: host,
            reason,
            reply: Some(response),
            provider_message_id,
            ..DeliveryEvent::new(kind, envelope, recipient, unix_ms(now))
        });
    }
    let until = retry
        .iter()
        .map(|r| r.attempts)
        .min()
        .map(|attempts| now + ctx.retry.delay(attempts));
    for event in &events {
        tracing::info!(
            id = %event.message_id,
            to = %event.recipient,
            status = %event.kind,
            attempt = event.attempt,
            relay = event.remote_host.as_deref().unwrap_or("none"),
            reply = %event.reply.as_ref().map(ToString::to_string).unwrap_or_default(),
            "delivery"
        );
    }
    if !noticed.is_empty() {
        dsn::queue_notices(
            &message.claimed,
            &events,
            &noticed,
            ctx.queue.as_ref(),
            &ctx.client.helo_name,
            unix_ms(now),
        )
        .await;
    }
    let resolution = Resolution {
        retry: until.map(|until| {
            let mut again = envelope.clone();
            again.recipients = retry;
            (again, until)
        }),
        dead: (!dead.is_empty()).then(|| (dead, reasons.join("\n"))),
        events,
    };
    if let Err(e) = ctx.queue.resolve(envelope.id, resolution).await {
        // The message stays claimed until restart, when it is delivered again.
        tracing::error!(id = %envelope.id, "cannot record the delivery outcome: {e}");
    }
}

/// Resolves a message none of whose recipients needed a connection (every domain failed
/// routing; the outcomes are already set).
pub fn finish_without_jobs(message: Arc<InFlight>, ctx: &Arc<Context>) {
    tokio::spawn(finish(message, ctx.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_decides_an_outcome() {
        let remote = |code| Response::Remote(postroad_queue::Reply::owned(code, None, ""));
        let local = |e: &'static str| Response::local(EnhancedCode::from_static(e), "");
        for (response, expected) in [
            (remote(250), Disposition::Delivered),
            (remote(451), Disposition::Deferred),
            (remote(550), Disposition::Bounced),
            (local("4.4.1"), Disposition::Deferred),
            (local("5.1.10"), Disposition::Bounced),
        ] {
            let outcome = Outcome::decided_by(response.clone(), None);
            assert_eq!(outcome.disposition, expected, "{response}");
        }
    }
}
