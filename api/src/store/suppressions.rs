//! The suppression list's durable copy (table `suppressions`): entries per (tenant,
//! address), removals kept as marked rows so that readers of the changes see them.

use async_trait::async_trait;
use postroad_webhooks::suppression::{Change, Entry, Reason, StoreFailure, SuppressionStore};

use super::{AppStore, Result, StoreError, now_ms, on_pool, text};

/// Rows per multi-row insert.
const CHUNK: usize = 200;
/// How far back a change feed looks past its last mark: a writer whose clock lags, or
/// whose transaction committed late, is not missed (re-reading a change is harmless).
const OVERLAP_MS: u64 = 60_000;

type Row = (
    Vec<u8>,
    Vec<u8>,
    String,
    String,
    String,
    i64,
    Option<i64>,
    i64,
    i64,
);

const COLUMNS: &str =
    "tenant, address, reason, source, detail, created_at, expires_at, updated_at, removed";

fn entry(row: Row) -> Result<(Entry, bool, u64)> {
    let (tenant, address, reason, source, detail, created, expires, updated, removed) = row;
    let reason = Reason::parse(&reason)
        .ok_or_else(|| StoreError::Corrupt(format!("suppression reason {reason:?}")))?;
    Ok((
        Entry {
            tenant: text(tenant)?,
            address: text(address)?,
            reason,
            source,
            detail,
            created_at_ms: created.max(0) as u64,
            expires_at_ms: expires.map(|e| e.max(0) as u64),
        },
        removed != 0,
        updated.max(0) as u64,
    ))
}

impl AppStore {
    pub async fn upsert_suppressions(&self, entries: &[Entry]) -> Result<()> {
        let now = now_ms();
        for chunk in entries.chunks(CHUNK) {
            let rows = vec!["(?, ?, ?, ?, ?, ?, ?, ?, 0)"; chunk.len()].join(", ");
            let sql = format!("REPLACE INTO suppressions ({COLUMNS}) VALUES {rows}");
            on_pool!(self, pool => {
                let mut query = sqlx::query(&sql);
                for e in chunk {
                    query = query
                        .bind(&e.tenant)
                        .bind(&e.address)
                        .bind(e.reason.as_str())
                        .bind(&e.source)
                        .bind(&e.detail)
                        .bind(e.created_at_ms as i64)
                        .bind(e.expires_at_ms.map(|t| t as i64))
                        .bind(now);
                }
                query.execute(pool).await?;
            });
        }
        Ok(())
    }

    pub async fn remove_suppression(&self, tenant: &str, address: &str) -> Result<bool> {
        let changed = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE suppressions SET removed = 1, updated_at = ? \
                 WHERE tenant = ? AND address = ? AND removed = 0",
            )
            .bind(now_ms())
            .bind(tenant)
            .bind(address)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(changed > 0)
    }

    pub async fn suppression(&self, tenant: &str, address: &str) -> Result<Option<Entry>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM suppressions WHERE tenant = ? AND address = ? AND removed = 0"
        );
        let row: Option<Row> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(tenant).bind(address).fetch_optional(pool).await?
        });
        row.map(|r| entry(r).map(|(e, _, _)| e)).transpose()
    }

    pub async fn suppression_page(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM suppressions WHERE tenant = ? AND address > ? AND removed = 0 \
             ORDER BY address LIMIT ?"
        );
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(tenant)
                .bind(after.unwrap_or(""))
                .bind(limit as i64)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|r| entry(r).map(|(e, _, _)| e))
            .collect()
    }

    /// Every change at or after `since_ms - OVERLAP_MS` (all of them from 0: the whole
    /// list), and the mark to ask from next: when this read began.
    pub async fn suppression_changes(&self, since_ms: u64) -> Result<(Vec<Change>, u64)> {
        let began = now_ms().max(0) as u64;
        let from = since_ms.saturating_sub(OVERLAP_MS) as i64;
        let sql = format!("SELECT {COLUMNS} FROM suppressions WHERE updated_at >= ?");
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(from).fetch_all(pool).await?
        });
        let mut changes = Vec::with_capacity(rows.len());
        for row in rows {
            let (e, removed, _) = entry(row)?;
            changes.push(if removed {
                Change::Removed {
                    tenant: e.tenant,
                    address: e.address,
                }
            } else {
                Change::Set(e)
            });
        }
        Ok((changes, began.max(since_ms)))
    }

    /// Deletes rows that expired or were removed before `before_ms`.
    pub async fn purge_suppressions(&self, before_ms: u64) -> Result<u64> {
        let before = before_ms.min(i64::MAX as u64) as i64;
        Ok(on_pool!(self, pool => {
            sqlx::query(
                "DELETE FROM suppressions WHERE (removed = 1 AND updated_at < ?) \
                 OR (expires_at IS NOT NULL AND expires_at < ?)",
            )
            .bind(before)
            .bind(before)
            .execute(pool)
            .await?
            .rows_affected()
        }))
    }
}

fn failure(e: StoreError) -> StoreFailure {
    StoreFailure(e.to_string())
}

#[async_trait]
impl SuppressionStore for AppStore {
    async fn upsert(&self, entries: &[Entry]) -> Result<(), StoreFailure> {
        self.upsert_suppressions(entries).await.map_err(failure)
    }

    async fn remove(&self, tenant: &str, address: &str) -> Result<bool, StoreFailure> {
        self.remove_suppression(tenant, address)
            .await
            .map_err(failure)
    }

    async fn get(&self, tenant: &str, address: &str) -> Result<Option<Entry>, StoreFailure> {
        self.suppression(tenant, address).await.map_err(failure)
    }

    async fn page(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreFailure> {
        self.suppression_page(tenant, after, limit)
            .await
            .map_err(failure)
    }

    async fn changes(&self, since_ms: u64) -> Result<(Vec<Change>, u64), StoreFailure> {
        self.suppression_changes(since_ms).await.map_err(failure)
    }

    async fn purge(&self, before_ms: u64) -> Result<u64, StoreFailure> {
        self.purge_suppressions(before_ms).await.map_err(failure)
    }
}
