//! The customer webhooks' tables: endpoints, the outbox of events per endpoint, and
//! dead letters (`webhook_endpoints`, `webhook_outbox`, `webhook_dead`).

use async_trait::async_trait;
use postroad_webhooks::customer::endpoint::parse_events;
use postroad_webhooks::customer::{DeadLetter, Endpoint, Pending, Queued, WebhookStore};
use postroad_webhooks::suppression::StoreFailure;

use super::{AppStore, Backend, Result, StoreError, on_pool, text};

/// Rows per multi-row insert.
const CHUNK: usize = 200;
/// Longest failure kept with a dead letter.
const MAX_ERROR: usize = 1000;

type EndpointRow = (Vec<u8>, Vec<u8>, String, Vec<u8>, Vec<u8>, String, i64);
const ENDPOINT_COLUMNS: &str = "id, tenant, url, secret, events, description, created_at";

fn endpoint(row: EndpointRow) -> Result<Endpoint> {
    let (id, tenant, url, secret, events, description, created) = row;
    let events = text(events)?;
    Ok(Endpoint {
        id: text(id)?,
        tenant: text(tenant)?,
        url,
        secret: text(secret)?,
        events: parse_events(&events).map_err(StoreError::Corrupt)?,
        description,
        created_at_ms: created.max(0) as u64,
    })
}

impl AppStore {
    /// `INSERT` that skips rows whose unique key is taken, in each backend's words.
    fn insert_ignore(&self) -> &'static str {
        match self.pool() {
            Backend::Sqlite(_) => "INSERT OR IGNORE",
            Backend::Mysql(_) => "INSERT IGNORE",
        }
    }

    pub async fn create_webhook_endpoint(&self, e: &Endpoint) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(&format!(
                "INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
            ))
            .bind(&e.id)
            .bind(&e.tenant)
            .bind(&e.url)
            .bind(&e.secret)
            .bind(e.events_text())
            .bind(&e.description)
            .bind(e.created_at_ms as i64)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    pub async fn webhook_endpoints(&self, tenant: Option<&str>) -> Result<Vec<Endpoint>> {
        let rows: Vec<EndpointRow> = on_pool!(self, pool => match tenant {
            Some(tenant) => sqlx::query_as(&format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant = ? ORDER BY created_at, id"
            ))
            .bind(tenant)
            .fetch_all(pool)
            .await?,
            None => sqlx::query_as(&format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id"
            ))
            .fetch_all(pool)
            .await?,
        });
        rows.into_iter().map(endpoint).collect()
    }

    pub async fn delete_webhook_endpoint(&self, tenant: &str, id: &str) -> Result<bool> {
        let deleted = on_pool!(self, pool => {
            let mut txn = pool.begin_with(self.begin_write()).await?;
            let deleted = sqlx::query("DELETE FROM webhook_endpoints WHERE tenant = ? AND id = ?")
                .bind(tenant)
                .bind(id)
                .execute(&mut *txn)
                .await?
                .rows_affected();
            if deleted > 0 {
                for table in ["webhook_outbox", "webhook_dead"] {
                    sqlx::query(&format!("DELETE FROM {table} WHERE endpoint_id = ?"))
                        .bind(id)
                        .execute(&mut *txn)
                        .await?;
                }
            }
            txn.commit().await?;
            deleted
        });
        Ok(deleted > 0)
    }

    pub async fn enqueue_webhook_events(&self, events: &[Pending]) -> Result<()> {
        for chunk in events.chunks(CHUNK) {
            let rows = vec!["(?, ?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "{} INTO webhook_outbox (endpoint_id, event_id, payload, queued_at) VALUES {rows}",
                self.insert_ignore()
            );
            on_pool!(self, pool => {
                let mut query = sqlx::query(&sql);
                for e in chunk {
                    query = query
                        .bind(&e.endpoint_id)
                        .bind(&e.event_id)
                        .bind(&e.payload)
                        .bind(e.queued_at_ms as i64);
                }
                query.execute(pool).await?;
            });
        }
        Ok(())
    }

    pub async fn webhook_endpoints_waiting(&self) -> Result<Vec<String>> {
        let ids: Vec<Vec<u8>> = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT DISTINCT endpoint_id FROM webhook_outbox")
                .fetch_all(pool)
                .await?
        });
        ids.into_iter().map(text).collect()
    }

    pub async fn next_webhook_events(
        &self,
        endpoint_id: &str,
        limit: usize,
    ) -> Result<Vec<Queued>> {
        let rows: Vec<(i64, Vec<u8>, String, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT seq, event_id, payload, queued_at FROM webhook_outbox \
                 WHERE endpoint_id = ? ORDER BY seq LIMIT ?",
            )
            .bind(endpoint_id)
            .bind(limit as i64)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(seq, event_id, payload, queued)| {
                Ok(Queued {
                    seq,
                    event_id: text(event_id)?,
                    payload,
                    queued_at_ms: queued.max(0) as u64,
                })
            })
            .collect()
    }

    pub async fn webhook_events_delivered(&self, endpoint_id: &str, seq: i64) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM webhook_outbox WHERE endpoint_id = ? AND seq <= ?")
                .bind(endpoint_id)
                .bind(seq)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    pub async fn give_up_webhook_events(
        &self,
        endpoint_id: &str,
        seq: i64,
        error: &str,
        now_ms: u64,
    ) -> Result<u64> {
        let mut error = error.to_string();
        if let Some((at, _)) = error.char_indices().nth(MAX_ERROR) {
            error.truncate(at);
        }
        let moved = on_pool!(self, pool => {
            let mut txn = pool.begin_with(self.begin_write()).await?;
            let moved = sqlx::query(
                "INSERT INTO webhook_dead (seq, endpoint_id, event_id, payload, queued_at, failed_at, error) \
                 SELECT seq, endpoint_id, event_id, payload, queued_at, ?, ? FROM webhook_outbox \
                 WHERE endpoint_id = ? AND seq <= ?",
            )
            .bind(now_ms as i64)
            .bind(&error)
            .bind(endpoint_id)
            .bind(seq)
            .execute(&mut *txn)
            .await?
            .rows_affected();
            sqlx::query("DELETE FROM webhook_outbox WHERE endpoint_id = ? AND seq <= ?")
                .bind(endpoint_id)
                .bind(seq)
                .execute(&mut *txn)
                .await?;
            txn.commit().await?;
            moved
        });
        Ok(moved)
    }

    pub async fn webhook_dead_letters(
        &self,
        endpoint_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        type Row = (i64, Vec<u8>, String, i64, i64, String);
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT seq, event_id, payload, queued_at, failed_at, error FROM webhook_dead \
                 WHERE endpoint_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            )
            .bind(endpoint_id)
            .bind(after)
            .bind(limit as i64)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(seq, event_id, payload, queued, failed, error)| {
                Ok(DeadLetter {
                    seq,
                    event_id: text(event_id)?,
                    payload,
                    queued_at_ms: queued.max(0) as u64,
                    failed_at_ms: failed.max(0) as u64,
                    error,
                })
            })
            .collect()
    }

    pub async fn redrive_webhook_events(&self, endpoint_id: &str, now_ms: u64) -> Result<u64> {
        let sql = format!(
            "{} INTO webhook_outbox (endpoint_id, event_id, payload, queued_at) \
             SELECT endpoint_id, event_id, payload, ? FROM webhook_dead \
             WHERE endpoint_id = ? ORDER BY seq",
            self.insert_ignore()
        );
        let moved = on_pool!(self, pool => {
            let mut txn = pool.begin_with(self.begin_write()).await?;
            let moved = sqlx::query(&sql)
                .bind(now_ms as i64)
                .bind(endpoint_id)
                .execute(&mut *txn)
                .await?
                .rows_affected();
            sqlx::query("DELETE FROM webhook_dead WHERE endpoint_id = ?")
                .bind(endpoint_id)
                .execute(&mut *txn)
                .await?;
            txn.commit().await?;
            moved
        });
        Ok(moved)
    }

    pub async fn lease_webhook_endpoint(
        &self,
        endpoint_id: &str,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<bool> {
        let taken = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE webhook_endpoints SET lease_owner = ?, lease_until = ? \
                 WHERE id = ? AND (lease_owner = ? OR lease_until < ?)",
            )
            .bind(owner)
            .bind(until_ms as i64)
            .bind(endpoint_id)
            .bind(owner)
            .bind(now_ms as i64)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(taken > 0)
    }

    pub async fn webhook_counts(&self) -> Result<Vec<(String, u64, u64)>> {
        let rows: Vec<(Vec<u8>, i64, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT e.id, \
                 (SELECT COUNT(*) FROM webhook_outbox o WHERE o.endpoint_id = e.id), \
                 (SELECT COUNT(*) FROM webhook_dead d WHERE d.endpoint_id = e.id) \
                 FROM webhook_endpoints e ORDER BY e.created_at, e.id",
            )
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(id, waiting, dead)| Ok((text(id)?, waiting.max(0) as u64, dead.max(0) as u64)))
            .collect()
    }
}

fn failure(e: StoreError) -> StoreFailure {
    StoreFailure(e.to_string())
}

#[async_trait]
impl WebhookStore for AppStore {
    async fn create_endpoint(&self, endpoint: &Endpoint) -> Result<(), StoreFailure> {
        self.create_webhook_endpoint(endpoint)
            .await
            .map_err(failure)
    }

    async fn endpoints(&self, tenant: Option<&str>) -> Result<Vec<Endpoint>, StoreFailure> {
        self.webhook_endpoints(tenant).await.map_err(failure)
    }

    async fn delete_endpoint(&self, tenant: &str, id: &str) -> Result<bool, StoreFailure> {
        self.delete_webhook_endpoint(tenant, id)
            .await
            .map_err(failure)
    }

    async fn enqueue(&self, events: &[Pending]) -> Result<(), StoreFailure> {
        self.enqueue_webhook_events(events).await.map_err(failure)
    }

    async fn waiting(&self) -> Result<Vec<String>, StoreFailure> {
        self.webhook_endpoints_waiting().await.map_err(failure)
    }

    async fn next(&self, endpoint_id: &str, limit: usize) -> Result<Vec<Queued>, StoreFailure> {
        self.next_webhook_events(endpoint_id, limit)
            .await
            .map_err(failure)
    }

    async fn delivered(&self, endpoint_id: &str, seq: i64) -> Result<(), StoreFailure> {
        self.webhook_events_delivered(endpoint_id, seq)
            .await
            .map_err(failure)
    }

    async fn give_up(
        &self,
        endpoint_id: &str,
        seq: i64,
        error: &str,
        now_ms: u64,
    ) -> Result<u64, StoreFailure> {
        self.give_up_webhook_events(endpoint_id, seq, error, now_ms)
            .await
            .map_err(failure)
    }

    async fn dead_letters(
        &self,
        endpoint_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreFailure> {
        self.webhook_dead_letters(endpoint_id, after, limit)
            .await
            .map_err(failure)
    }

    async fn redrive(&self, endpoint_id: &str, now_ms: u64) -> Result<u64, StoreFailure> {
        self.redrive_webhook_events(endpoint_id, now_ms)
            .await
            .map_err(failure)
    }

    async fn lease(
        &self,
        endpoint_id: &str,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<bool, StoreFailure> {
        self.lease_webhook_endpoint(endpoint_id, owner, now_ms, until_ms)
            .await
            .map_err(failure)
    }

    async fn counts(&self) -> Result<Vec<(String, u64, u64)>, StoreFailure> {
        self.webhook_counts().await.map_err(failure)
    }
}
