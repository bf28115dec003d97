//! User preferences in the embedded store (when no Redis is configured): one JSON
//! object of strings per (tenant, user).

use std::collections::{BTreeMap, HashMap};

use sqlx::Row;

use super::{AppStore, Result, StoreError, now_ms};

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
        sqlx::query(
            "INSERT INTO user_prefs (tenant, user_id, prefs, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (tenant, user_id) DO UPDATE SET prefs = excluded.prefs, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(user_id as i64)
        .bind(json)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Every (tenant, user) with preferences.
    pub async fn users_with_prefs(&self) -> Result<Vec<(String, u64)>> {
        let rows = sqlx::query("SELECT tenant, user_id FROM user_prefs")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| {
                let id: i64 = row.try_get("user_id")?;
                Ok((row.try_get("tenant")?, id as u64))
            })
            .collect()
    }

    /// Whether there were preferences to delete.
    pub async fn delete_prefs(&self, tenant: &str, user_id: u64) -> Result<bool> {
        let done = sqlx::query("DELETE FROM user_prefs WHERE tenant = ? AND user_id = ?")
            .bind(tenant)
            .bind(user_id as i64)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
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
            let mut query = sqlx::query(&sql).bind(tenant);
            for id in chunk {
                query = query.bind(*id as i64);
            }
            for row in query.fetch_all(self.pool()).await? {
                let id: i64 = row.try_get("user_id")?;
                let json: String = row.try_get("prefs")?;
                let prefs = serde_json::from_str(&json)
                    .map_err(|e| StoreError::Corrupt(format!("preferences of user {id}: {e}")))?;
                out.insert(id as u64, prefs);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn preferences_are_replaced_read_in_bulk_and_deleted_per_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let store = AppStore::open_in(dir.path()).await.unwrap();
        let prefs = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        store
            .put_prefs("", 1, &prefs(&[("name", "Ann"), ("language", "fr")]))
            .await
            .unwrap();
        store
            .put_prefs("", 1, &prefs(&[("name", "Anne")]))
            .await
            .unwrap();
        store
            .put_prefs("acme", 1, &prefs(&[("name", "Other")]))
            .await
            .unwrap();
        let ids: Vec<u64> = (0..1200).collect();
        let found = store.prefs_of("", &ids).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[&1], prefs(&[("name", "Anne")]));
        assert_eq!(
            store.prefs_of("acme", &[1]).await.unwrap()[&1]["name"],
            "Other"
        );
        let mut users = store.users_with_prefs().await.unwrap();
        users.sort();
        assert_eq!(users, [("".to_string(), 1), ("acme".to_string(), 1)]);
        assert!(store.delete_prefs("", 1).await.unwrap());
        assert!(!store.delete_prefs("", 1).await.unwrap());
        assert!(store.prefs_of("", &[1]).await.unwrap().is_empty());
    }
}
