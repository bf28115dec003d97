//! The first answer to each request sent with an `Idempotency-Key`, per API key, kept
//! for `http.idempotency_ttl_secs`.

use sqlx::Row;

use super::{AppStore, Result, now_ms};

/// A remembered answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// SHA-256 of the request (method, path, body) the key was first used with.
    pub request_hash: [u8; 32],
    pub status: u16,
    /// The JSON body answered.
    pub response: String,
}

impl AppStore {
    /// The answer recorded for (API key, idempotency key) within `ttl_ms`.
    pub async fn idempotent_answer(
        &self,
        key_id: &str,
        idempotency_key: &str,
        ttl_ms: i64,
    ) -> Result<Option<Recorded>> {
        let row = sqlx::query(
            "SELECT request_hash, status, response FROM idempotency \
             WHERE key_id = ? AND idempotency_key = ? AND created_at > ?",
        )
        .bind(key_id)
        .bind(idempotency_key)
        .bind(now_ms() - ttl_ms)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let hash: Vec<u8> = row.try_get("request_hash")?;
        let status: i64 = row.try_get("status")?;
        Ok(Some(Recorded {
            request_hash: <[u8; 32]>::try_from(hash.as_slice()).unwrap_or([0; 32]),
            status: u16::try_from(status).unwrap_or(500),
            response: row.try_get("response")?,
        }))
    }

    /// Records the answer (replacing an expired one under the same key).
    pub async fn record_answer(
        &self,
        key_id: &str,
        idempotency_key: &str,
        answer: &Recorded,
    ) -> Result<()> {
        sqlx::query(
            "INSERT OR REPLACE INTO idempotency \
             (key_id, idempotency_key, request_hash, status, response, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(key_id)
        .bind(idempotency_key)
        .bind(&answer.request_hash[..])
        .bind(i64::from(answer.status))
        .bind(&answer.response)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Forgets answers older than `ttl_ms`; returns how many.
    pub async fn expire_answers(&self, ttl_ms: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM idempotency WHERE created_at <= ?")
            .bind(now_ms() - ttl_ms)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_are_kept_per_key_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = AppStore::open_in(dir.path()).await.unwrap();
        let answer = Recorded {
            request_hash: [7; 32],
            status: 202,
            response: r#"{"id":"x"}"#.into(),
        };
        store.record_answer("k1", "order-1", &answer).await.unwrap();
        let day = 86_400_000;
        assert_eq!(
            store.idempotent_answer("k1", "order-1", day).await.unwrap(),
            Some(answer)
        );
        assert_eq!(
            store.idempotent_answer("k2", "order-1", day).await.unwrap(),
            None
        );
        assert_eq!(store.expire_answers(day).await.unwrap(), 0);
        // A TTL of -1 ms makes everything recorded so far expired.
        assert_eq!(
            store.idempotent_answer("k1", "order-1", -1).await.unwrap(),
            None
        );
        assert_eq!(store.expire_answers(-1).await.unwrap(), 1);
    }
}
