//! API keys: `pr_` and 43 characters of base64url (256 random bits). Only the key's
//! SHA-256 is stored; the key is printed once, by `postroad api-key create`.

use super::{AppStore, Result, StoreError, now_ms, on_pool, text};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

const KEY_PREFIX: &str = "pr_";
/// Characters of the key kept in the clear, to recognise it in `api-key list`.
const SHOWN: usize = 10;

/// A key as stored: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    /// Messages submitted with this key are sent for this tenant.
    pub tenant: Option<String>,
    /// The key's first characters.
    pub prefix: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// The SHA-256 of a presented key.
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A new random key.
fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A row of `api_keys`.
#[derive(sqlx::FromRow)]
struct KeyRow {
    id: Vec<u8>,
    name: String,
    tenant: Option<Vec<u8>>,
    prefix: Vec<u8>,
    hash: Vec<u8>,
    created_at: i64,
    revoked_at: Option<i64>,
}

impl KeyRow {
    fn hash(&self) -> Result<[u8; 32]> {
        <[u8; 32]>::try_from(self.hash.as_slice())
            .map_err(|_| StoreError::Corrupt("api key hash is not 32 bytes".into()))
    }

    fn key(self) -> Result<ApiKey> {
        Ok(ApiKey {
            id: text(self.id)?,
            name: self.name,
            tenant: self.tenant.map(text).transpose()?,
            prefix: text(self.prefix)?,
            created_at_ms: self.created_at,
            revoked_at_ms: self.revoked_at,
        })
    }
}

const SELECT: &str = "SELECT id, name, tenant, prefix, hash, created_at, revoked_at FROM api_keys";

impl AppStore {
    /// Creates a key; returns it (the only time it is seen) and its record.
    pub async fn create_key(&self, name: &str, tenant: Option<&str>) -> Result<(String, ApiKey)> {
        let key = generate();
        let record = ApiKey {
            id: uuid::Uuid::now_v7().simple().to_string(),
            name: name.to_string(),
            tenant: tenant.map(str::to_string),
            prefix: key[..SHOWN].to_string(),
            created_at_ms: now_ms(),
            revoked_at_ms: None,
        };
        let hash = hash(&key);
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO api_keys (id, name, tenant, prefix, hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&record.id)
            .bind(&record.name)
            .bind(&record.tenant)
            .bind(&record.prefix)
            .bind(&hash[..])
            .bind(record.created_at_ms)
            .execute(pool)
            .await?;
        });
        Ok((key, record))
    }

    /// Every key, revoked ones too, oldest first.
    pub async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        let sql = format!("{SELECT} ORDER BY created_at, id");
        let rows: Vec<KeyRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).fetch_all(pool).await?
        });
        rows.into_iter().map(KeyRow::key).collect()
    }

    /// The keys not revoked, with their hashes.
    pub async fn active_keys(&self) -> Result<Vec<([u8; 32], ApiKey)>> {
        let sql = format!("{SELECT} WHERE revoked_at IS NULL");
        let rows: Vec<KeyRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|row| Ok((row.hash()?, row.key()?)))
            .collect()
    }

    /// Revokes the key with this id, or the only key with this name or prefix; returns
    /// the key revoked, `None` when nothing (or more than one key) matches.
    pub async fn revoke_key(&self, which: &str) -> Result<Option<ApiKey>> {
        let candidates: Vec<ApiKey> = self
            .list_keys()
            .await?
            .into_iter()
            .filter(|k| k.revoked_at_ms.is_none())
            .filter(|k| k.id == which || k.name == which || k.prefix == which)
            .collect();
        let [key] = candidates.as_slice() else {
            return Ok(None);
        };
        let now = now_ms();
        on_pool!(self, pool => {
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(now)
                .bind(&key.id)
                .execute(pool)
                .await?;
        });
        Ok(Some(ApiKey {
            revoked_at_ms: Some(now),
            ..key.clone()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_stored_as_hashes_listed_and_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = AppStore::open_in(dir.path()).await.unwrap();
        let (key, record) = store.create_key("app", Some("acme")).await.unwrap();
        assert!(key.starts_with("pr_") && key.len() == 46, "{key}");
        assert_eq!(record.prefix, &key[..SHOWN]);
        for file in ["app.sqlite", "app.sqlite-wal"] {
            let raw = std::fs::read(dir.path().join(file)).unwrap_or_default();
            assert!(
                !raw.windows(key.len()).any(|w| w == key.as_bytes()),
                "the key itself is never stored ({file})"
            );
        }
        let active = store.active_keys().await.unwrap();
        assert_eq!(active, vec![(hash(&key), record.clone())]);

        let (other, _) = store.create_key("other", None).await.unwrap();
        assert_ne!(other, key);
        let revoked = store.revoke_key("app").await.unwrap().unwrap();
        assert_eq!(revoked.id, record.id);
        assert!(store.revoke_key("app").await.unwrap().is_none());
        let active = store.active_keys().await.unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].1.name, "other");
        assert_eq!(store.list_keys().await.unwrap().len(), 2);
    }
}
