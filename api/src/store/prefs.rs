//! User preferences in the embedded store (when no Redis is configured): one JSON
//! object of strings per (tenant, user).

use std::collections::{BTreeMap, HashMap};

use super::{AppStore, Result, StoreError, now_ms, on_pool, text};

/// Most user ids in one `IN (...)` query.
const CHUNK: usize = 500;

impl AppStore {
    /// Replaces the preferences of (tenant, user).
    pub async fn put_prefs(
        &self,
        tenant: &str,
        user_id: u64,
        prefs: &BTreeMap<String, String>,
    ) -> Result<()> {
        let json = serde_json::to_string(prefs)
            .map_err(|e| StoreError::Corrupt(format!("preferences: {e}")))?;
        on_pool!(self, pool => {
            sqlx::query(
                "REPLACE INTO user_prefs (tenant, user_id, prefs, updated_at) VALUES (?, ?, ?, ?)",
            )
            .bind(tenant)
            .bind(user_id as i64)
            .bind(&json)
            .bind(now_ms())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Every (tenant, user) with preferences.
    pub async fn users_with_prefs(&self) -> Result<Vec<(String, u64)>> {
        let rows: Vec<(Vec<u8>, i64)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT tenant, user_id FROM user_prefs")
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|(tenant, id)| Ok((text(tenant)?, id as u64)))
            .collect()
    }

    /// Whether there were preferences to delete.
    pub async fn delete_prefs(&self, tenant: &str, user_id: u64) -> Result<bool> {
        let deleted = on_pool!(self, pool => {
            sqlx::query("DELETE FROM user_prefs WHERE tenant = ? AND user_id = ?")
                .bind(tenant)
                .bind(user_id as i64)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(deleted > 0)
    }

    /// The preferences of those of `user_ids` that have some.
    pub async fn prefs_of(
        &self,
        tenant: &str,
        user_ids: &[u64],
    ) -> Result<HashMap<u64, BTreeMap<String, String>>> {
        let mut out = HashMap::new();
        for chunk in user_ids.chunks(CHUNK) {
            let marks = vec!["?"; chunk.len()].join(",");
            let sql = format!(
                "SELECT user_id, prefs FROM user_prefs WHERE tenant = ? AND user_id IN ({marks})"
            );
            let rows: Vec<(i64, String)> = on_pool!(self, pool => {
                let mut query = sqlx::query_as(&sql).bind(tenant);
                for id in chunk {
                    query = query.bind(*id as i64);
                }
                query.fetch_all(pool).await?
            });
            for (id, json) in rows {
                let prefs = serde_json::from_str(&json)
                    .map_err(|e| StoreError::Corrupt(format!("preferences of user {id}: {e}")))?;
                out.insert(id as u64, prefs);
            }
        }
        Ok(out)
    }
}
