//! Messages in flight: each claimed message is split into jobs (one per site and
//! transaction); when its last job reports, the per-recipient outcomes become one
//! queue resolution and one event per recipient.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use postroad_queue::{Claimed, DeliveryEvent, EventKind, Queue, RemoteReply, Resolution, unix_ms};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::client::{ClientConfig, ClientError, Connection, TlsPolicy};
use crate::config::RelayConfig;
use crate::retry::RetryPolicy;

/// What every delivery task needs.
pub struct Context {
    pub config: RelayConfig,
    pub client: ClientConfig,
    pub queue: Arc<dyn Queue>,
    pub retry: RetryPolicy,
    pub events: Option<mpsc::Sender<DeliveryEvent>>,
}

impl Context {
    /// The client settings with a route's TLS policy.
    pub fn client_config(&self, tls: TlsPolicy) -> ClientConfig {
        ClientConfig {
            tls,
            ..self.client.clone()
        }
    }
}

/// What happened to one recipient in this attempt.
#[derive(Debug, Clone)]
pub enum Outcome {
    Delivered {
        reply: RemoteReply,
        host: Option<String>,
    },
    Temporary {
        reply: RemoteReply,
        host: Option<String>,
    },
    Permanent {
        reply: RemoteReply,
        host: Option<String>,
    },
}

impl Outcome {
    pub fn temporary(reply: RemoteReply, host: Option<String>) -> Self {
        Outcome::Temporary { reply, host }
    }

    pub fn permanent(reply: RemoteReply, host: Option<String>) -> Self {
        Outcome::Permanent { reply, host }
    }

    /// Classifies a remote reply: 2xx delivered, 5xx permanent, anything else temporary.
    fn from_reply(reply: RemoteReply, host: &str) -> Self {
        let host = Some(host.to_string());
        match reply.code {
            200..=299 => Outcome::Delivered { reply, host },
            500..=599 => Outcome::Permanent { reply, host },
            _ => Outcome::Temporary { reply, host },
        }
    }
}

/// A claimed message being delivered.
pub struct InFlight {
    pub claimed: Claimed,
    outcomes: Mutex<Vec<Option<Outcome>>>,
    pending_jobs: AtomicUsize,
    _permit: OwnedSemaphorePermit,
}

impl InFlight {
    pub fn new(claimed: Claimed, permit: OwnedSemaphorePermit) -> Arc<Self> {
        let n = claimed.envelope.recipients.len();
        Arc::new(Self {
            claimed,
            outcomes: Mutex::new(vec![None; n]),
            pending_jobs: AtomicUsize::new(0),
            _permit: permit,
        })
    }

    /// Records outcomes decided without a job (routing failures).
    pub fn set(&self, recipients: &[usize], outcome: &Outcome) {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        for &i in recipients {
            outcomes[i] = Some(outcome.clone());
        }
    }

    /// Creates the jobs; the message is finished when all of them have reported.
    pub fn jobs(self: &Arc<Self>, groups: Vec<Vec<usize>>) -> Vec<Job> {
        self.pending_jobs.store(groups.len(), Ordering::SeqCst);
        groups
            .into_iter()
            .map(|recipients| Job {
                message: self.clone(),
                recipients,
            })
            .collect()
    }
}

/// Some recipients of one message, for one transaction at one site.
pub struct Job {
    pub message: Arc<InFlight>,
    pub recipients: Vec<usize>,
}

impl Job {
    /// Reports this job's outcomes; the last job of a message resolves it.
    pub fn complete(self, outcomes: Vec<Outcome>, ctx: &Arc<Context>) {
        self.message.set_each(&self.recipients, outcomes);
        if self.message.pending_jobs.fetch_sub(1, Ordering::SeqCst) == 1 {
            tokio::spawn(finish(self.message, ctx.clone()));
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

/// Delivers one job over an open session.
pub async fn deliver(conn: &mut Connection, job: Job, ctx: &Arc<Context>) -> Attempt {
    let claimed = &job.message.claimed;
    let envelope = &claimed.envelope;
    let recipients: Vec<_> = job
        .recipients
        .iter()
        .map(|&i| &envelope.recipients[i])
        .collect();
    let host = conn.peer().to_string();
    match conn.send(envelope, &recipients, &claimed.body).await {
        Ok(result) => {
            let data = result.data.map(RemoteReply::from);
            let outcomes = result
                .recipients
                .into_iter()
                .map(|rcpt| {
                    let rcpt = RemoteReply::from(rcpt);
                    match (rcpt.code, &data) {
                        (200..=299, Some(data)) => Outcome::from_reply(data.clone(), &host),
                        (200..=299, None) => Outcome::temporary(
                            crate::site::local_reply(
                                "4.4.2",
                                "no reply to the message data".into(),
                            ),
                            Some(host.clone()),
                        ),
                        _ => Outcome::from_reply(rcpt, &host),
                    }
                })
                .collect();
            job.complete(outcomes, ctx);
            Attempt::Reusable
        }
        Err(e) if e.is_stale_connection() => Attempt::Stale(job),
        Err(e) => {
            tracing::info!(%host, id = %envelope.id, "delivery attempt failed: {e}");
            let reply = client_error_reply(&e);
            let outcome = if e.is_permanent() {
                Outcome::permanent(reply, Some(host))
            } else {
                Outcome::temporary(reply, Some(host))
            };
            job.fail_all(outcome, ctx);
            Attempt::Dead
        }
    }
}

/// A client-side failure as a reply for history (code 0 when the server said nothing).
pub fn client_error_reply(e: &ClientError) -> RemoteReply {
    match e.reply() {
        Some(reply) => RemoteReply::from(reply.clone()),
        None => RemoteReply {
            code: 0,
            enhanced: Some(e.enhanced_code().to_string()),
            text: e.to_string(),
        },
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
    for (recipient, outcome) in envelope.recipients.iter().zip(outcomes) {
        let attempt = recipient.attempts + 1;
        let (kind, reply, host) = match outcome {
            Some(Outcome::Delivered { reply, host }) => (EventKind::Delivered, reply, host),
            Some(Outcome::Permanent { reply, host }) => {
                reasons.push(format!("<{}>: {reply}", recipient.address));
                dead.push(recipient.clone());
                (EventKind::Bounced, reply, host)
            }
            Some(Outcome::Temporary { reply, host }) if expired => {
                reasons.push(format!(
                    "<{}>: expired after {attempt} attempts; last: {reply}",
                    recipient.address
                ));
                dead.push(recipient.clone());
                (EventKind::Expired, reply, host)
            }
            Some(Outcome::Temporary { reply, host }) => {
                let mut again = recipient.clone();
                again.attempts = attempt;
                retry.push(again);
                (EventKind::Deferred, reply, host)
            }
            None => {
                // Every recipient is in some job or routing result; this is a bug guard.
                tracing::error!(id = %envelope.id, rcpt = %recipient.address, "recipient without an outcome; retrying it");
                retry.push(recipient.clone());
                continue;
            }
        };
        events.push(DeliveryEvent {
            event_id: uuid::Uuid::now_v7(),
            kind,
            message_id: envelope.id,
            sender: envelope.sender.clone(),
            recipient: recipient.address.clone(),
            domain: recipient.domain(),
            at_ms: unix_ms(now),
            attempt,
            remote_host: host,
            reply: Some(reply),
            tenant: envelope.tenant.clone(),
            campaign: envelope.campaign.clone(),
        });
    }
    let until = retry
        .iter()
        .map(|r| r.attempts)
        .min()
        .map(|attempts| now + ctx.retry.delay(attempts));
    let resolution = Resolution {
        retry: until.map(|until| {
            let mut again = envelope.clone();
            again.recipients = retry;
            (again, until)
        }),
        dead: (!dead.is_empty()).then(|| (dead, reasons.join("\n"))),
    };
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
    if let Err(e) = ctx.queue.resolve(envelope.id, resolution).await {
        // The message stays claimed until restart, when it is delivered again.
        tracing::error!(id = %envelope.id, "cannot record the delivery outcome: {e}");
        return;
    }
    if let Some(tx) = &ctx.events {
        for event in events {
            if tx.send(event).await.is_err() {
                break;
            }
        }
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
    fn reply_classes() {
        let r = |code| RemoteReply {
            code,
            enhanced: None,
            text: String::new(),
        };
        assert!(matches!(
            Outcome::from_reply(r(250), "h"),
            Outcome::Delivered { .. }
        ));
        assert!(matches!(
            Outcome::from_reply(r(451), "h"),
            Outcome::Temporary { .. }
        ));
        assert!(matches!(
            Outcome::from_reply(r(550), "h"),
            Outcome::Permanent { .. }
        ));
        assert!(matches!(
            Outcome::from_reply(r(0), "h"),
            Outcome::Temporary { .. }
        ));
    }
}
