//! Campaigns (table `campaigns`): what to send to which list, how far its expansion into
//! queued messages got, and which process expands it now (a lease, so that one process
//! of a cluster does it, and another takes over when that one dies).

use super::{AppStore, Result, now_ms, on_pool, text};

/// A campaign's states. `scheduled` (waiting for its time or an expander), `sending`
/// (being expanded), `paused` (nothing more queued, the queued mail held),
/// `cancelled` (the queued mail dropped), `sent` (every recipient queued).
pub mod state {
    pub const SCHEDULED: &str = "scheduled";
    pub const SENDING: &str = "sending";
    pub const PAUSED: &str = "paused";
    pub const CANCELLED: &str = "cancelled";
    pub const SENT: &str = "sent";
    /// An A/B test's sample is queued; the rest waits for the winner.
    pub const TESTING: &str = "testing";

    /// What `action` (`pause`, `resume`, `cancel`) may start from and leads to. A sent
    /// campaign may still be paused or cancelled: its queued mail is then held or
    /// dropped by the relay.
    pub fn transition(action: &str) -> Option<(&'static [&'static str], &'static str)> {
        match action {
            "pause" => Some((&[SCHEDULED, SENDING, TESTING, SENT], PAUSED)),
            "resume" => Some((&[PAUSED], SCHEDULED)),
            "cancel" => Some((&[SCHEDULED, SENDING, TESTING, PAUSED, SENT], CANCELLED)),
            _ => None,
        }
    }
}

/// A campaign's row.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignRecord {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub list_id: String,
    /// The request's fields that shape each message (JSON).
    pub spec: String,
    pub state: String,
    pub send_at_ms: u64,
    /// The last list row whose message is durable in the queue (or was skipped).
    pub done_seq: u64,
    /// List rows done with: queued, suppressed or failed.
    pub expanded: u64,
    pub suppressed: u64,
    /// Rows whose message could not be made (a template error for that recipient).
    pub failed: u64,
    pub last_error: Option<String>,
    /// 0: the A/B test's sample (or the whole list without a test); 1: the rest.
    pub phase: u8,
    /// When the A/B test ends (set once its sample is queued).
    pub test_ends_at_ms: Option<u64>,
    /// The variant the test picked for the rest.
    pub winner: Option<String>,
    pub created_at_ms: u64,
    pub finished_at_ms: Option<u64>,
}

impl CampaignRecord {
    /// Messages queued so far.
    pub fn queued(&self) -> u64 {
        self.expanded.saturating_sub(self.suppressed + self.failed)
    }
}

/// What one expanded batch adds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub done_seq: u64,
    pub expanded: u64,
    pub suppressed: u64,
    pub failed: u64,
    pub last_error: Option<String>,
}

/// A `campaigns` row as read (identifiers as bytes: see [`text`]).
#[derive(sqlx::FromRow)]
struct Record {
    id: Vec<u8>,
    tenant: Vec<u8>,
    name: String,
    list_id: Vec<u8>,
    spec: String,
    state: String,
    send_at: i64,
    done_seq: i64,
    expanded: i64,
    suppressed: i64,
    failed: i64,
    last_error: Option<String>,
    created_at: i64,
    finished_at: Option<i64>,
    phase: i64,
    test_ends_at: Option<i64>,
    winner: Option<String>,
}

const COLUMNS: &str = "id, tenant, name, list_id, spec, state, send_at, done_seq, expanded, \
                       suppressed, failed, last_error, created_at, finished_at, phase, \
                       test_ends_at, winner";

fn record(r: Record) -> Result<CampaignRecord> {
    let count = |n: i64| n.max(0) as u64;
    Ok(CampaignRecord {
        id: text(r.id)?,
        tenant: text(r.tenant)?,
        name: r.name,
        list_id: text(r.list_id)?,
        spec: r.spec,
        state: r.state,
        send_at_ms: count(r.send_at),
        done_seq: count(r.done_seq),
        expanded: count(r.expanded),
        suppressed: count(r.suppressed),
        failed: count(r.failed),
        last_error: r.last_error,
        phase: u8::try_from(r.phase).unwrap_or(0),
        test_ends_at_ms: r.test_ends_at.map(count),
        winner: r.winner,
        created_at_ms: count(r.created_at),
        finished_at_ms: r.finished_at.map(count),
    })
}

impl AppStore {
    pub async fn create_campaign(&self, c: &CampaignRecord) -> Result<()> {
        let now = now_ms();
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO campaigns (id, tenant, name, list_id, spec, state, send_at, \
                 created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&c.id)
            .bind(&c.tenant)
            .bind(&c.name)
            .bind(&c.list_id)
            .bind(&c.spec)
            .bind(&c.state)
            .bind(c.send_at_ms as i64)
            .bind(now)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Campaign `id`; with `tenant`, only if it is that tenant's.
    pub async fn campaign(&self, tenant: Option<&str>, id: &str) -> Result<Option<CampaignRecord>> {
        let sql =
            format!("SELECT {COLUMNS} FROM campaigns WHERE id = ? AND (? IS NULL OR tenant = ?)");
        let r: Option<Record> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(id).bind(tenant).bind(tenant).fetch_optional(pool).await?
        });
        r.map(record).transpose()
    }

    /// The newest `limit` campaigns (of `tenant`, when given), newest first.
    pub async fn campaigns(
        &self,
        tenant: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CampaignRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM campaigns WHERE (? IS NULL OR tenant = ?) \
             ORDER BY created_at DESC, id DESC LIMIT ?"
        );
        let rows: Vec<Record> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(tenant).bind(tenant).bind(limit as i64).fetch_all(pool).await?
        });
        rows.into_iter().map(record).collect()
    }

    /// Campaigns due for expansion (scheduled or sending, their time come) whose lease
    /// is free, expired, or `owner`'s.
    pub async fn due_campaigns(&self, owner: &str) -> Result<Vec<String>> {
        let now = now_ms();
        let ids: Vec<Vec<u8>> = on_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT id FROM campaigns WHERE state IN ('scheduled', 'sending', 'testing') \
                 AND send_at <= ? AND (test_ends_at IS NULL OR test_ends_at <= ?) \
                 AND (owner IS NULL OR lease_until < ? OR owner = ?) ORDER BY send_at LIMIT 64",
            )
            .bind(now)
            .bind(now)
            .bind(now)
            .bind(owner)
            .fetch_all(pool)
            .await?
        });
        ids.into_iter().map(text).collect()
    }

    /// Takes (or renews) the lease on campaign `id` for `lease_ms`, setting it
    /// `sending`; `false` when another process holds it or it is not to be sent.
    pub async fn take_campaign(&self, id: &str, owner: &str, lease_ms: u64) -> Result<bool> {
        let now = now_ms();
        let taken = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE campaigns SET owner = ?, lease_until = ?, state = 'sending', updated_at = ? \
                 WHERE id = ? AND state IN ('scheduled', 'sending', 'testing') \
                 AND (test_ends_at IS NULL OR test_ends_at <= ?) \
                 AND (owner IS NULL OR lease_until < ? OR owner = ?)",
            )
            .bind(owner)
            .bind(now + lease_ms as i64)
            .bind(now)
            .bind(id)
            .bind(now)
            .bind(now)
            .bind(owner)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(taken == 1)
    }

    /// Records a batch `owner` queued and renews its lease. The campaign's state then:
    /// anything but `sending` (paused, cancelled meanwhile) says stop; `None`: the
    /// lease is lost (another process took it over), nothing recorded.
    pub async fn advance_campaign(
        &self,
        id: &str,
        owner: &str,
        progress: &Progress,
        lease_ms: u64,
    ) -> Result<Option<String>> {
        let now = now_ms();
        let updated = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE campaigns SET done_seq = ?, expanded = expanded + ?, \
                 suppressed = suppressed + ?, failed = failed + ?, \
                 last_error = COALESCE(?, last_error), lease_until = ?, updated_at = ? \
                 WHERE id = ? AND owner = ?",
            )
            .bind(progress.done_seq as i64)
            .bind(progress.expanded as i64)
            .bind(progress.suppressed as i64)
            .bind(progress.failed as i64)
            .bind(progress.last_error.as_deref())
            .bind(now + lease_ms as i64)
            .bind(now)
            .bind(id)
            .bind(owner)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if updated != 1 {
            return Ok(None);
        }
        let state: Option<String> = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT state FROM campaigns WHERE id = ?")
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        Ok(state)
    }

    /// Every row is expanded: the campaign is `sent` and its lease released.
    pub async fn finish_campaign(&self, id: &str, owner: &str) -> Result<bool> {
        let now = now_ms();
        let updated = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE campaigns SET state = 'sent', owner = NULL, lease_until = NULL, \
                 finished_at = ?, updated_at = ? WHERE id = ? AND owner = ? AND state = 'sending'",
            )
            .bind(now)
            .bind(now)
            .bind(id)
            .bind(owner)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }

    /// Paused and cancelled campaigns changed within `within_ms`, with their state:
    /// what the relay holds back.
    pub async fn held_campaigns(&self, within_ms: u64) -> Result<Vec<(String, String)>> {
        let since = now_ms() - within_ms.min(i64::MAX as u64) as i64;
        let rows: Vec<(Vec<u8>, String)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, state FROM campaigns WHERE state IN ('paused', 'cancelled') \
                 AND updated_at >= ?",
            )
            .bind(since)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(id, state)| Ok((text(id)?, state)))
            .collect()
    }

    /// The A/B test's sample is queued: the campaign is `testing` until `ends_at_ms`,
    /// then its second phase expands the list again from the start (the rest).
    pub async fn start_test(&self, id: &str, owner: &str, ends_at_ms: u64) -> Result<bool> {
        let updated = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE campaigns SET state = 'testing', phase = 1, done_seq = 0, test_ends_at = ?, \
                 owner = NULL, lease_until = NULL, updated_at = ? \
                 WHERE id = ? AND owner = ? AND state = 'sending' AND phase = 0",
            )
            .bind(ends_at_ms.min(i64::MAX as u64) as i64)
            .bind(now_ms())
            .bind(id)
            .bind(owner)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }

    /// Records the variant the test picked (once: a winner already recorded stays);
    /// the winner in force.
    pub async fn set_winner(&self, id: &str, winner: &str) -> Result<Option<String>> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE campaigns SET winner = ? WHERE id = ? AND winner IS NULL")
                .bind(winner)
                .bind(id)
                .execute(pool)
                .await?;
        });
        Ok(self.campaign(None, id).await?.and_then(|c| c.winner))
    }

    /// Lets go of the lease (stopping, or the campaign was paused).
    pub async fn release_campaign(&self, id: &str, owner: &str) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE campaigns SET owner = NULL, lease_until = NULL WHERE id = ? AND owner = ?",
            )
            .bind(id)
            .bind(owner)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Moves campaign `id` (of `tenant`, when given) from one of `from` to `to`;
    /// `false` when it is in none of them.
    pub async fn set_campaign_state(
        &self,
        tenant: Option<&str>,
        id: &str,
        from: &[&str],
        to: &str,
    ) -> Result<bool> {
        let places = vec!["?"; from.len()].join(", ");
        let finished = if to == state::CANCELLED {
            "?"
        } else {
            "finished_at"
        };
        let sql = format!(
            "UPDATE campaigns SET state = ?, updated_at = ?, finished_at = {finished} \
             WHERE id = ? AND (? IS NULL OR tenant = ?) AND state IN ({places})"
        );
        let now = now_ms();
        let updated = on_pool!(self, pool => {
            let mut query = sqlx::query(&sql).bind(to).bind(now);
            if to == state::CANCELLED {
                query = query.bind(now);
            }
            query = query.bind(id).bind(tenant).bind(tenant);
            for state in from {
                query = query.bind(*state);
            }
            query.execute(pool).await?.rows_affected()
        });
        Ok(updated == 1)
    }
}
