//! The first answer to each request sent with an `Idempotency-Key`, per API key, kept
//! for `http.idempotency_ttl_secs`. A request first claims its key (a row with status
//! 0), so a concurrent retry on any node that shares the store sees it in progress;
//! the answer then replaces the claim.

use super::{AppStore, Result, is_duplicate, now_ms, on_pool};

/// A remembered answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// SHA-256 of the request (method, path, body) the key was first used with.
    pub request_hash: [u8; 32],
    pub status: u16,
    /// The JSON body answered.
    pub response: String,
}

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is this request's now: handle it, then record the answer.
    Fresh,
    /// The key was answered before (within the TTL).
    Answered(Recorded),
    /// Another request holds the key and has not answered yet.
    InProgress,
}

/// The status of a claimed key that has no answer yet.
const CLAIMED: i64 = 0;

/// A row of `idempotency`.
#[derive(sqlx::FromRow)]
struct Row {
    request_hash: Vec<u8>,
    status: i64,
    response: String,
    created_at: i64,
}

impl AppStore {
    /// Claims (API key, idempotency key) for a request with `request_hash`. An answer
    /// older than `ttl_ms`, or a claim older than `stale_ms` (its process died before
    /// answering), is taken over.
    pub async fn claim(
        &self,
        key_id: &str,
        idempotency_key: &str,
        request_hash: &[u8; 32],
        ttl_ms: i64,
        stale_ms: i64,
    ) -> Result<Claim> {
        // Twice: a row that disappears between the insert and the read (expired and
        // deleted meanwhile) leaves the key free for a second insert.
        for _ in 0..2 {
            let now = now_ms();
            let inserted = on_pool!(self, pool => {
                sqlx::query(
                    "INSERT INTO idempotency \
                     (key_id, idempotency_key, request_hash, status, response, created_at) \
                     VALUES (?, ?, ?, ?, '', ?)",
                )
                .bind(key_id)
                .bind(idempotency_key)
                .bind(&request_hash[..])
                .bind(CLAIMED)
                .bind(now)
                .execute(pool)
                .await
                .map(|_| ())
            });
            match inserted {
                Ok(_) => return Ok(Claim::Fresh),
                Err(e) if is_duplicate(&e) => {}
                Err(e) => return Err(e.into()),
            }
            let row: Option<Row> = on_pool!(self, pool => {
                sqlx::query_as(
                    "SELECT request_hash, status, response, created_at FROM idempotency \
                     WHERE key_id = ? AND idempotency_key = ?",
                )
                .bind(key_id)
                .bind(idempotency_key)
                .fetch_optional(pool)
                .await?
            });
            let Some(row) = row else { continue };
            let answered = row.status != CLAIMED;
            if answered && row.created_at > now - ttl_ms {
                return Ok(Claim::Answered(Recorded {
                    request_hash: <[u8; 32]>::try_from(row.request_hash.as_slice())
                        .unwrap_or([0; 32]),
                    status: u16::try_from(row.status).unwrap_or(500),
                    response: row.response,
                }));
            }
            if !answered && row.created_at > now - stale_ms {
                return Ok(Claim::InProgress);
            }
            // Expired or abandoned: take it over, unless another request just did.
            let taken = on_pool!(self, pool => {
                sqlx::query(
                    "UPDATE idempotency SET request_hash = ?, status = ?, response = '', created_at = ? \
                     WHERE key_id = ? AND idempotency_key = ? AND status = ? AND created_at = ?",
                )
                .bind(&request_hash[..])
                .bind(CLAIMED)
                .bind(now)
                .bind(key_id)
                .bind(idempotency_key)
                .bind(row.status)
                .bind(row.created_at)
                .execute(pool)
                .await?
                .rows_affected()
            });
            return Ok(if taken == 1 {
                Claim::Fresh
            } else {
                Claim::InProgress
            });
        }
        Ok(Claim::InProgress)
    }

    /// Records the answer to a claimed key.
    pub async fn record_answer(
        &self,
        key_id: &str,
        idempotency_key: &str,
        answer: &Recorded,
    ) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE idempotency SET request_hash = ?, status = ?, response = ? \
                 WHERE key_id = ? AND idempotency_key = ?",
            )
            .bind(&answer.request_hash[..])
            .bind(i64::from(answer.status))
            .bind(&answer.response)
            .bind(key_id)
            .bind(idempotency_key)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Gives a claimed key back unanswered (the request failed in a way a retry may
    /// not: overload, queue down), so a retry is handled anew.
    pub async fn release(&self, key_id: &str, idempotency_key: &str) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "DELETE FROM idempotency WHERE key_id = ? AND idempotency_key = ? AND status = ?",
            )
            .bind(key_id)
            .bind(idempotency_key)
            .bind(CLAIMED)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Forgets answers and claims older than `ttl_ms`; returns how many.
    pub async fn expire_answers(&self, ttl_ms: i64) -> Result<u64> {
        let deleted = on_pool!(self, pool => {
            sqlx::query("DELETE FROM idempotency WHERE created_at <= ?")
                .bind(now_ms() - ttl_ms)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(deleted)
    }
}
