//! Campaigns: a template sent to every recipient of a list. Lists are uploaded as a
//! stream ([`rows`], [`upload`]), campaigns expanded into queued messages in batches
//! ([`expand`]), and their progress and results shown from the store's counts and the
//! history ([`CampaignView`]).

pub mod expand;
pub mod rows;
pub mod spec;
pub mod upload;
pub mod variants;

use postroad_queue::EventKind;
use serde::Serialize;
use utoipa::ToSchema;

use crate::history::CampaignStatusCount;
use crate::store::campaigns::CampaignRecord;
use crate::store::lists::RecipientList;

/// A campaign as `GET /v1/campaigns/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CampaignView {
    pub id: String,
    pub name: String,
    /// `scheduled`, `sending`, `paused`, `cancelled` or `sent` (every recipient
    /// queued; delivery goes on).
    pub state: String,
    pub list: ListSummary,
    pub email_type: String,
    /// RFC 3339.
    pub send_at: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub expansion: Expansion,
    /// The A/B test, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<TestView>,
    /// From the delivery history; absent where this process cannot read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<Results>,
}

/// A campaign's A/B test: a sample first, then the winner to the rest.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestView {
    pub share: f64,
    pub wait_secs: u64,
    pub metric: String,
    /// `sample` (being queued), `waiting` (until `endsAt`), `rest` (the winner to
    /// everyone else).
    pub phase: String,
    /// RFC 3339, once the sample is queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub winner: Option<String>,
}

/// The list a campaign is sent to, as its upload counted it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListSummary {
    pub id: String,
    /// Rows read.
    pub rows: u64,
    /// Rows refused (see `GET /v1/lists/{id}` for the first ones and their lines).
    pub rejected: u64,
    pub duplicates: u64,
    /// Distinct recipients.
    pub recipients: u64,
}

/// How far the list has been turned into queued messages.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Expansion {
    /// Recipients done with (queued, suppressed or failed).
    pub expanded: u64,
    pub queued: u64,
    /// On the suppression list: not queued.
    pub suppressed: u64,
    /// Their message could not be made (a template error with their data).
    pub failed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Of the list's recipients, 0 to 100.
    pub percent: f64,
}

/// What became of the queued messages, per recipient (each counted once, in the
/// furthest status it reached), with rates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Results {
    /// In the history (it lags the queue by a moment).
    pub recipients: u64,
    /// Not yet tried.
    pub pending: u64,
    /// Tried, to be tried again.
    pub deferred: u64,
    /// Accepted by the receiver (including those opened, clicked, complained about or
    /// unsubscribed from later).
    pub delivered: u64,
    pub bounced: u64,
    pub expired: u64,
    /// Suppressed when the relay came to them (listed after they were queued).
    pub suppressed: u64,
    pub complained: u64,
    pub unsubscribed: u64,
    /// Opened by a person (a click counts as an open).
    pub opened: u64,
    /// Opens only machines made (mail privacy proxies, scanners): not in `opened`.
    pub machine_opened: u64,
    pub clicked: u64,
    /// Clicks only machines made (link scanners): not in `clicked`.
    pub machine_clicked: u64,
    pub rates: Rates,
}

/// Shares, 0 to 1: delivered and bounced of what was tried, the rest of what was
/// delivered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rates {
    pub delivered: f64,
    pub bounced: f64,
    pub opened: f64,
    pub clicked: f64,
    pub complained: f64,
    pub unsubscribed: f64,
}

impl Results {
    /// Folds the history's counts (of one variant, or of every one).
    pub fn of<'a>(counts: impl IntoIterator<Item = &'a CampaignStatusCount>) -> Results {
        let mut r = Results::default();
        for c in counts {
            let n = c.recipients;
            r.recipients += n;
            match c.status {
                EventKind::Queued => r.pending += n,
                EventKind::Deferred => r.deferred += n,
                EventKind::Bounced => r.bounced += n,
                EventKind::Expired => r.expired += n,
                EventKind::Suppressed => r.suppressed += n,
                EventKind::Delivered => r.delivered += n,
                EventKind::Opened | EventKind::Clicked => {
                    r.delivered += n;
                    let clicked = c.status == EventKind::Clicked;
                    match (clicked, c.machine) {
                        (true, false) => {
                            r.clicked += n;
                            r.opened += n;
                        }
                        (true, true) => r.machine_clicked += n,
                        (false, false) => r.opened += n,
                        (false, true) => r.machine_opened += n,
                    }
                }
                EventKind::Complained => {
                    r.delivered += n;
                    r.complained += n;
                }
                EventKind::Unsubscribed => {
                    r.delivered += n;
                    r.unsubscribed += n;
                }
            }
        }
        let share = |part: u64, of: u64| {
            if of == 0 {
                0.0
            } else {
                part as f64 / of as f64
            }
        };
        let tried = r.delivered + r.bounced + r.expired;
        r.rates = Rates {
            delivered: share(r.delivered, tried),
            bounced: share(r.bounced, tried),
            opened: share(r.opened, r.delivered),
            clicked: share(r.clicked, r.delivered),
            complained: share(r.complained, r.delivered),
            unsubscribed: share(r.unsubscribed, r.delivered),
        };
        r
    }
}

impl CampaignView {
    /// The view of a stored campaign, with its list as `store` has it now.
    pub async fn load(
        store: &crate::store::AppStore,
        c: &CampaignRecord,
        results: Option<Results>,
    ) -> crate::store::Result<Self> {
        let list = store.list(&c.tenant, &c.list_id).await?;
        Ok(Self::new(c, list.as_ref(), results))
    }

    pub fn new(c: &CampaignRecord, list: Option<&RecipientList>, results: Option<Results>) -> Self {
        let recipients = list.map_or(0, |l| l.recipients);
        let spec = serde_json::from_str::<spec::Spec>(&c.spec).ok();
        let test = spec
            .as_ref()
            .and_then(|s| s.test.as_ref())
            .map(|t| TestView {
                share: t.share,
                wait_secs: t.wait_secs,
                metric: t.metric.clone(),
                phase: match (c.phase, &c.winner) {
                    (0, _) => "sample",
                    (_, None) => "waiting",
                    (_, Some(_)) => "rest",
                }
                .into(),
                ends_at: c.test_ends_at_ms.map(postroad_queue::rfc3339),
                winner: c.winner.clone(),
            });
        let email_type = spec.map(|s| s.email_type).unwrap_or_default();
        CampaignView {
            id: c.id.clone(),
            name: c.name.clone(),
            state: c.state.clone(),
            list: ListSummary {
                id: c.list_id.clone(),
                rows: list.map_or(0, |l| l.rows),
                rejected: list.map_or(0, |l| l.rejected),
                duplicates: list.map_or(0, |l| l.duplicates),
                recipients,
            },
            email_type,
            send_at: postroad_queue::rfc3339(c.send_at_ms),
            created_at: postroad_queue::rfc3339(c.created_at_ms),
            finished_at: c.finished_at_ms.map(postroad_queue::rfc3339),
            expansion: Expansion {
                expanded: c.expanded,
                queued: c.queued(),
                suppressed: c.suppressed,
                failed: c.failed,
                last_error: c.last_error.clone(),
                percent: if recipients == 0 {
                    100.0
                } else {
                    (c.expanded as f64 * 100.0 / recipients as f64).min(100.0)
                },
            },
            test,
            results,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(status: EventKind, machine: bool, n: u64) -> CampaignStatusCount {
        CampaignStatusCount {
            variant: None,
            status,
            machine,
            recipients: n,
        }
    }

    #[test]
    fn each_recipient_counts_once_in_its_furthest_status_and_machines_apart() {
        let counts = [
            count(EventKind::Queued, false, 5),
            count(EventKind::Delivered, false, 50),
            count(EventKind::Bounced, false, 10),
            count(EventKind::Opened, false, 20),
            count(EventKind::Opened, true, 8),
            count(EventKind::Clicked, false, 10),
            count(EventKind::Clicked, true, 2),
            count(EventKind::Unsubscribed, false, 1),
        ];
        let r = Results::of(&counts);
        assert_eq!(r.recipients, 106);
        assert_eq!(r.pending, 5);
        assert_eq!(r.delivered, 50 + 20 + 8 + 10 + 2 + 1);
        assert_eq!((r.opened, r.machine_opened), (30, 8));
        assert_eq!((r.clicked, r.machine_clicked), (10, 2));
        assert_eq!(r.rates.bounced, 10.0 / 101.0);
        assert_eq!(r.rates.opened, 30.0 / 91.0);
        assert_eq!(Results::of(&[]).rates.delivered, 0.0);
    }
}
