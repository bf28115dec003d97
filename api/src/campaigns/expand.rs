//! Expanding campaigns into queued messages, in every process that runs the API.
//!
//! A process takes a due campaign by a lease in the store (renewed with every batch,
//! so a crashed process's campaign is taken over once its lease runs out) and walks
//! the list in order of `seq`, [`BATCH`] rows at a time: suppressed addresses are
//! skipped and counted, each other row becomes the template-form message of
//! `POST /v1/messages`, and the batch is one durable queue write that also sets the
//! campaign's checkpoint in the queue. The next batch is built while the last is
//! written. After a crash the expansion resumes after the larger of the store's
//! `done_seq` and the queue's checkpoint: on the spool, where both are one
//! transaction, no recipient is queued twice or skipped; on Kafka, which keeps no
//! checkpoint, the batch being written when the process died may be queued again.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use postroad_queue::{Checkpoint, Envelope};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::spec::Spec;
use crate::auth::Caller;
use crate::prefs;
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::campaigns::{CampaignRecord, Progress};
use crate::store::lists::ListRow;
use crate::submit::{self, Refusal};

/// List rows per queue write.
pub const BATCH: usize = 1000;
/// How long a lease lasts without a batch renewing it.
const LEASE: Duration = Duration::from_secs(30);
/// How often due campaigns are looked for (a new or resumed one wakes it at once).
const POLL: Duration = Duration::from_secs(2);
/// Wait before trying again after the queue or the store failed.
const RETRY: Duration = Duration::from_secs(1);

/// Why an expansion stopped before the end (it is taken up again at the next look for
/// due campaigns).
#[derive(Debug, thiserror::Error)]
enum Stopped {
    #[error("the store: {0}")]
    Store(#[from] StoreError),
    #[error("the campaign's spec is unreadable: {0}")]
    Spec(serde_json::Error),
    #[error("cannot make the messages: {0}")]
    Messages(String),
    #[error("the process is stopping")]
    Stopping,
}

/// How an expansion ended in this process.
enum Outcome {
    /// Every row is done: so many messages queued.
    Finished(u64),
    Left(Left),
}

/// Why an expansion stopped here before the end of the list.
#[derive(Debug)]
enum Left {
    /// Paused, cancelled (the state it is in).
    State(String),
    /// Another process holds the lease, or the campaign is gone.
    TakenOver,
    /// An A/B test's sample is queued; the rest waits so many seconds.
    Testing(u64),
    Stopping,
}

impl Left {
    /// After a batch is recorded: stop unless the campaign is still `sending`.
    fn unless_sending(state: Option<String>) -> Option<Left> {
        match state {
            Some(s) if s == crate::store::campaigns::state::SENDING => None,
            Some(s) => Some(Left::State(s)),
            None => Some(Left::TakenOver),
        }
    }
}

impl std::fmt::Display for Left {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Left::State(state) => f.write_str(state),
            Left::TakenOver => f.write_str("taken over"),
            Left::Testing(secs) => write!(f, "testing for {secs} s"),
            Left::Stopping => f.write_str("stopping"),
        }
    }
}

/// The name of a campaign's checkpoint in the queue, for its `phase` (an A/B test's
/// rest walks the list a second time).
pub fn checkpoint_name(campaign: &str, phase: u8) -> String {
    match phase {
        0 => format!("campaign:{campaign}"),
        _ => format!("campaign:{campaign}:rest"),
    }
}

/// Which rows of the list this walk takes, and with what variant.
struct Pass {
    /// The A/B test's share: the sample (first phase) or everyone else (second).
    sample: Option<(f64, bool)>,
    /// The test's winner, for everyone in the second phase.
    winner: Option<String>,
}

impl Pass {
    fn takes(&self, campaign: &str, address: &str) -> bool {
        self.sample.is_none_or(|(share, inside)| {
            super::variants::in_sample(campaign, address, share) == inside
        })
    }
}

/// Runs the campaigns due until `stop`, then lets go of their leases.
pub(crate) async fn run(state: AppState, stop: CancellationToken) {
    let owner = state.deps.campaign_owner.clone();
    let mut running: JoinSet<String> = JoinSet::new();
    let mut ids: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(POLL) => {}
            _ = state.campaign_wake.notified() => {}
        }
        while let Some(done) = running.try_join_next() {
            if let Ok(id) = done {
                ids.retain(|i| *i != id);
            }
        }
        let due = match state.deps.store.due_campaigns(&owner).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for due campaigns");
                continue;
            }
        };
        let fresh: Vec<String> = due.into_iter().filter(|id| !ids.contains(id)).collect();
        for id in fresh {
            match state
                .deps
                .store
                .take_campaign(&id, &owner, LEASE.as_millis() as u64)
                .await
            {
                Ok(true) => {
                    ids.push(id.clone());
                    let job = Job {
                        state: state.clone(),
                        id: id.clone(),
                        owner: owner.clone(),
                        stop: stop.clone(),
                    };
                    running.spawn(async move {
                        job.run().await;
                        id
                    });
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(campaign = %id, error = %e, "cannot take the campaign"),
            }
        }
    }
    while running.join_next().await.is_some() {}
}

/// One campaign's expansion in this process.
struct Job {
    state: AppState,
    id: String,
    owner: String,
    stop: CancellationToken,
}

/// A batch ready for the queue.
struct Built {
    last_seq: u64,
    messages: Vec<(Envelope, Bytes)>,
    progress: Progress,
}

impl Job {
    async fn run(self) {
        tracing::info!(campaign = %self.id, "expanding campaign");
        match self.expand().await {
            Ok(Outcome::Finished(queued)) => {
                tracing::info!(campaign = %self.id, queued, "campaign expanded: every recipient is queued")
            }
            Ok(Outcome::Left(why)) => {
                tracing::info!(campaign = %self.id, why = %why, "expansion left off");
            }
            Err(Stopped::Stopping) => {}
            Err(e) => {
                tracing::error!(campaign = %self.id, error = %e, "campaign expansion stopped")
            }
        }
        if let Err(e) = self
            .state
            .deps
            .store
            .release_campaign(&self.id, &self.owner)
            .await
        {
            tracing::warn!(campaign = %self.id, error = %e, "cannot release the campaign's lease");
        }
    }

    /// Expands until the list ends (`Some(queued)`) or the campaign is paused,
    /// cancelled, taken over or the process stops (`None`).
    async fn expand(&self) -> Result<Outcome, Stopped> {
        let store = &self.state.deps.store;
        let Some(campaign) = store.campaign(None, &self.id).await? else {
            return Ok(Outcome::Left(Left::TakenOver));
        };
        let spec: Spec = serde_json::from_str(&campaign.spec).map_err(Stopped::Spec)?;
        let pass = Pass {
            sample: spec.test.as_ref().map(|t| (t.share, campaign.phase == 0)),
            winner: match (&spec.test, campaign.phase) {
                (Some(test), 1) => Some(self.winner(&campaign, &spec, &test.metric).await?),
                _ => None,
            },
        };
        let name = checkpoint_name(&self.id, campaign.phase);
        let mut checkpoint = self.queue_checkpoint(&name).await?;
        let mut done = campaign.done_seq;
        if let Some(at) = checkpoint.filter(|&at| at > done) {
            // The queue has batches the store had not heard of: the process that wrote
            // them stopped in between. Count them as queued.
            let rows = store.count_list_rows(&campaign.list_id, done, at).await?;
            tracing::warn!(campaign = %self.id, from = done, to = at, rows, "resuming after the queue's checkpoint");
            let progress = Progress {
                done_seq: at,
                expanded: rows,
                ..Progress::default()
            };
            let now = store
                .advance_campaign(&self.id, &self.owner, &progress, LEASE.as_millis() as u64)
                .await?;
            if let Some(left) = Left::unless_sending(now) {
                return Ok(Outcome::Left(left));
            }
            done = at;
        }
        let batch = spec
            .max_per_second
            .map_or(BATCH, |m| (m as usize).clamp(1, BATCH));
        let mut pace = Pace::new(spec.max_per_second);
        let mut next = self.build(&campaign, &spec, &pass, done, batch).await?;
        loop {
            let Some(built) = next else {
                return match &spec.test {
                    Some(test) if campaign.phase == 0 => {
                        self.start_test(&name, test.wait_secs).await
                    }
                    _ => self.finish(&name).await,
                };
            };
            if self.stop.is_cancelled() {
                return Ok(Outcome::Left(Left::Stopping));
            }
            pace.wait(built.messages.len()).await;
            let last = built.last_seq;
            let (written, upcoming) = tokio::join!(
                self.write(&name, built, checkpoint),
                self.build(&campaign, &spec, &pass, last, batch),
            );
            if let Some(left) = written? {
                return Ok(Outcome::Left(left));
            }
            checkpoint = Some(last);
            next = upcoming?;
        }
    }

    /// The A/B test's winner: the one recorded, else the best rate in the history
    /// now (recorded, so every process goes on with the same).
    async fn winner(
        &self,
        campaign: &CampaignRecord,
        spec: &Spec,
        metric: &str,
    ) -> Result<String, Stopped> {
        if let Some(winner) = &campaign.winner {
            return Ok(winner.clone());
        }
        let counts = match &self.state.deps.history {
            Some(history) => history
                .campaign_statuses(&self.id)
                .await
                .map_err(|e| Stopped::Messages(format!("cannot read the test's results: {e}")))?,
            None => Vec::new(),
        };
        let best = super::variants::winner(&spec.variants, &counts, metric)
            .map(|v| v.name.clone())
            .ok_or_else(|| Stopped::Messages("the test has no variants".into()))?;
        let winner = self
            .state
            .deps
            .store
            .set_winner(&self.id, &best)
            .await?
            .unwrap_or(best);
        tracing::info!(campaign = %self.id, %winner, %metric, "A/B test decided");
        Ok(winner)
    }

    /// The sample is queued: the campaign waits `wait_secs` for its results.
    async fn start_test(&self, name: &str, wait_secs: u64) -> Result<Outcome, Stopped> {
        let ends = postroad_queue::unix_ms(std::time::SystemTime::now()) + wait_secs * 1000;
        if !self
            .state
            .deps
            .store
            .start_test(&self.id, &self.owner, ends)
            .await?
        {
            let state = self
                .state
                .deps
                .store
                .campaign(None, &self.id)
                .await?
                .map(|c| c.state);
            return Ok(Outcome::Left(
                Left::unless_sending(state).unwrap_or(Left::TakenOver),
            ));
        }
        if let Err(e) = self.state.deps.queue.clear_checkpoint(name).await {
            tracing::warn!(campaign = %self.id, error = %e, "cannot clear the campaign's checkpoint");
        }
        Ok(Outcome::Left(Left::Testing(wait_secs)))
    }

    async fn queue_checkpoint(&self, name: &str) -> Result<Option<u64>, Stopped> {
        loop {
            match self.state.deps.queue.checkpoint(name).await {
                Ok(at) => return Ok(at),
                Err(e) => {
                    tracing::warn!(campaign = %self.id, error = %e, "cannot read the campaign's checkpoint; retrying");
                    if self.pause_or_stop().await {
                        return Err(Stopped::Stopping);
                    }
                }
            }
        }
    }

    /// Waits [`RETRY`]; `true` when the process stops meanwhile.
    async fn pause_or_stop(&self) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => true,
            _ = tokio::time::sleep(RETRY) => false,
        }
    }

    /// The messages of the rows after `after` (up to `batch` of them); `None` at the
    /// end of the list.
    async fn build(
        &self,
        campaign: &CampaignRecord,
        spec: &Spec,
        pass: &Pass,
        after: u64,
        batch: usize,
    ) -> Result<Option<Built>, Stopped> {
        let state = &self.state;
        let mut rows = state
            .deps
            .store
            .list_rows(&campaign.list_id, after, batch)
            .await?;
        let Some(last_seq) = rows.last().map(|r| r.seq) else {
            return Ok(None);
        };
        rows.retain(|r| pass.takes(&self.id, &r.address));
        let tenant = (!campaign.tenant.is_empty()).then_some(campaign.tenant.as_str());
        let suppressed = self.suppressed(tenant, &rows).await;
        let values: Vec<_> = rows
            .iter()
            .zip(&suppressed)
            .filter(|(_, s)| !**s)
            .map(|(row, _)| spec.message(&self.id, row, pass.winner.as_deref()))
            .collect();
        let caller = Caller {
            key_id: format!("campaign:{}", self.id),
            tenant: tenant.map(String::from),
        };
        let ctx = state.context(&caller, IpAddr::V4(Ipv4Addr::LOCALHOST));
        let prefs = prefs::Loaded::load(&state.prefs, caller.tenant_key(), &values).await;
        let mut progress = Progress {
            done_seq: last_seq,
            expanded: rows.len() as u64,
            suppressed: suppressed.iter().filter(|s| **s).count() as u64,
            ..Progress::default()
        };
        let mut messages = Vec::with_capacity(values.len());
        for value in &values {
            match submit::prepare(value, "", &ctx, &state.templates, &prefs).await {
                Ok(mut prepared) => {
                    // A campaign's failures go to its results and the suppression
                    // list, never as delivery status notices to its sender.
                    for r in &mut prepared.envelope.recipients {
                        r.notify.never = true;
                    }
                    messages.push((prepared.envelope, prepared.body));
                }
                Err(Refusal::Fields(errors)) => {
                    progress.failed += 1;
                    progress.last_error = errors
                        .first()
                        .map(|e| format!("{}: {}", e.pointer, e.detail));
                }
                Err(Refusal::Problem(problem)) => {
                    let detail = problem.detail.unwrap_or(problem.title);
                    return Err(Stopped::Messages(detail));
                }
            }
        }
        Ok(Some(Built {
            last_seq,
            messages,
            progress,
        }))
    }

    /// Which rows are on the suppression list.
    async fn suppressed(&self, tenant: Option<&str>, rows: &[ListRow]) -> Vec<bool> {
        let Some(list) = &self.state.deps.suppressions else {
            return vec![false; rows.len()];
        };
        let addresses: Vec<&str> = rows.iter().map(|r| r.address.as_str()).collect();
        list.check(tenant, &addresses)
            .await
            .into_iter()
            .map(|r| r.is_some())
            .collect()
    }

    /// Queues a batch with its checkpoint and records it; `Some`: stop (paused,
    /// cancelled, the lease lost, or the process stopping before it was written).
    async fn write(
        &self,
        name: &str,
        built: Built,
        previous: Option<u64>,
    ) -> Result<Option<Left>, Stopped> {
        let deps = &self.state.deps;
        let checkpoint = Checkpoint {
            name: name.to_string(),
            value: built.last_seq,
            previous,
        };
        loop {
            match deps
                .queue
                .enqueue_checkpointed(built.messages.clone(), checkpoint.clone())
                .await
            {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(campaign = %self.id, error = %e, "cannot queue the campaign's batch; retrying");
                    if self.pause_or_stop().await {
                        return Ok(Some(Left::Stopping));
                    }
                }
            }
        }
        if let Some(waker) = &deps.relay_waker {
            waker.notify_one();
        }
        loop {
            match deps
                .store
                .advance_campaign(
                    &self.id,
                    &self.owner,
                    &built.progress,
                    LEASE.as_millis() as u64,
                )
                .await
            {
                Ok(state) => return Ok(Left::unless_sending(state)),
                Err(e) => {
                    // The queue has the batch and its checkpoint: a restart resumes
                    // after it even if the store never hears of it.
                    tracing::warn!(campaign = %self.id, error = %e, "cannot record the campaign's progress; retrying");
                    if self.pause_or_stop().await {
                        return Ok(Some(Left::Stopping));
                    }
                }
            }
        }
    }

    async fn finish(&self, name: &str) -> Result<Outcome, Stopped> {
        let store = &self.state.deps.store;
        if !store.finish_campaign(&self.id, &self.owner).await? {
            let state = store.campaign(None, &self.id).await?.map(|c| c.state);
            return Ok(Outcome::Left(
                Left::unless_sending(state).unwrap_or(Left::TakenOver),
            ));
        }
        if let Err(e) = self.state.deps.queue.clear_checkpoint(name).await {
            tracing::warn!(campaign = %self.id, error = %e, "cannot clear the campaign's checkpoint");
        }
        let queued = store
            .campaign(None, &self.id)
            .await?
            .map_or(0, |c| c.queued());
        Ok(Outcome::Finished(queued))
    }
}

/// Keeps to `max_per_second` messages.
struct Pace {
    max_per_second: Option<u32>,
    next: Instant,
}

impl Pace {
    fn new(max_per_second: Option<u32>) -> Self {
        Pace {
            max_per_second,
            next: Instant::now(),
        }
    }

    async fn wait(&mut self, messages: usize) {
        let Some(rate) = self.max_per_second else {
            return;
        };
        tokio::time::sleep_until(self.next.into()).await;
        let spent = Duration::from_secs_f64(messages as f64 / f64::from(rate));
        self.next = Instant::now().max(self.next) + spent;
    }
}
