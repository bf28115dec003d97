//! Campaigns whose mail must wait or must not go out any more: before a claimed batch
//! is routed, each message of a campaign is looked up. A paused campaign's message is
//! put back in the queue for [`HOLD`] without an attempt or an event; a cancelled
//! campaign's recipients are resolved `suppressed` (reason `campaign-cancelled`)
//! without a connection. The same on every backend, since it happens at the claim.

use std::time::{Duration, SystemTime};

use postroad_queue::{Claimed, Queue, Resolution};

/// The reason a cancelled campaign's recipients are resolved `suppressed` with.
pub const CANCELLED: &str = "campaign-cancelled";

/// How long a paused campaign's message waits before it is looked at again.
pub const HOLD: Duration = Duration::from_secs(15);

/// What to do with a campaign's mail now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Send,
    /// Paused: keep it queued.
    Hold,
    /// Cancelled: do not send it.
    Drop,
}

/// The campaigns' states as the relay sees them (kept in memory by the caller: asked
/// once per claimed message of a campaign).
pub trait CampaignGate: Send + Sync {
    fn gate(&self, campaign: &str) -> Gate;
}

/// A claimed batch sorted by its campaigns' gates.
pub struct Sorted {
    /// To deliver, each with whether its campaign is cancelled.
    pub go_on: Vec<(Claimed, bool)>,
    /// Of paused campaigns: to put back.
    pub held: Vec<Claimed>,
}

/// Sorts `claimed` by what `gate` says of each message's campaign (mail of no
/// campaign goes on).
pub fn sort(gate: Option<&dyn CampaignGate>, claimed: Vec<Claimed>) -> Sorted {
    let mut sorted = Sorted {
        go_on: Vec::with_capacity(claimed.len()),
        held: Vec::new(),
    };
    for message in claimed {
        let verdict = match (gate, message.envelope.meta.campaign.as_deref()) {
            (Some(gate), Some(campaign)) => gate.gate(campaign),
            _ => Gate::Send,
        };
        match verdict {
            Gate::Send => sorted.go_on.push((message, false)),
            Gate::Drop => sorted.go_on.push((message, true)),
            Gate::Hold => sorted.held.push(message),
        }
    }
    sorted
}

/// Puts paused campaigns' messages back in the queue for [`HOLD`]: no attempt is
/// counted and no event recorded.
pub async fn hold(queue: &dyn Queue, held: Vec<Claimed>) {
    if held.is_empty() {
        return;
    }
    let until = SystemTime::now() + HOLD;
    let n = held.len();
    for message in held {
        let id = message.envelope.id;
        let resolution = Resolution {
            retry: Some((message.envelope, until)),
            dead: None,
            events: Vec::new(),
        };
        if let Err(e) = queue.resolve(id, resolution).await {
            tracing::warn!(%id, error = %e, "cannot put a paused campaign's message back");
        }
    }
    tracing::info!(messages = n, "held mail of paused campaigns");
}

#[cfg(test)]
mod tests {
    use super::*;
    use postroad_queue::{Envelope, Recipient};

    struct States;

    impl CampaignGate for States {
        fn gate(&self, campaign: &str) -> Gate {
            match campaign {
                "paused" => Gate::Hold,
                "cancelled" => Gate::Drop,
                _ => Gate::Send,
            }
        }
    }

    fn claimed(campaign: Option<&str>) -> Claimed {
        let mut envelope = Envelope::new(
            "s@x.test",
            vec![Recipient::new("r@y.test")],
            "127.0.0.1".parse().unwrap(),
        );
        envelope.meta.campaign = campaign.map(String::from);
        Claimed {
            envelope,
            body: bytes::Bytes::new(),
        }
    }

    #[test]
    fn paused_campaigns_are_held_cancelled_ones_marked_the_rest_go_on() {
        let batch = vec![
            claimed(None),
            claimed(Some("paused")),
            claimed(Some("cancelled")),
            claimed(Some("running")),
        ];
        let sorted = sort(Some(&States), batch.clone());
        let flags: Vec<(Option<&str>, bool)> = sorted
            .go_on
            .iter()
            .map(|(c, cancelled)| (c.envelope.meta.campaign.as_deref(), *cancelled))
            .collect();
        assert_eq!(
            flags,
            [
                (None, false),
                (Some("cancelled"), true),
                (Some("running"), false)
            ]
        );
        assert_eq!(sorted.held.len(), 1);
        let without = sort(None, batch);
        assert_eq!((without.go_on.len(), without.held.len()), (4, 0));
    }
}
