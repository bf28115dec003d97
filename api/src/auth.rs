//! Bearer API keys, checked against an in-process copy of the active keys' hashes (no
//! database round trip per request). The copy is reloaded every few seconds, so a key
//! revoked by `postroad api-key revoke` stops working within [`RELOAD_EVERY`], and on a
//! miss, so a key just created works on its first request: misses share one reload
//! (those that arrive while it runs wait for it), and reloads for misses start at most
//! every [`MISS_RELOAD_GAP`] (a miss waits for the gap to pass: unknown keys cannot
//! hammer the database).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::store::AppStore;
use crate::store::keys::{ApiKey, hash};

/// How often the active keys are read again.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// Shortest time between two reloads caused by unknown keys.
const MISS_RELOAD_GAP: Duration = Duration::from_millis(250);

/// The caller a request was authenticated as.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub tenant: Option<String>,
}

impl Caller {
    /// The tenant as the stores key it ("" for none).
    pub fn tenant_key(&self) -> &str {
        self.tenant.as_deref().unwrap_or_default()
    }
}

#[derive(Clone)]
pub struct KeyRing {
    store: AppStore,
    keys: Arc<RwLock<HashMap<[u8; 32], Caller>>>,
    /// When the last reload for a miss started.
    miss_reload: Arc<tokio::sync::Mutex<Option<Instant>>>,
}

impl KeyRing {
    pub async fn load(store: AppStore) -> crate::store::Result<Self> {
        let ring = Self {
            store,
            keys: Arc::default(),
            miss_reload: Arc::default(),
        };
        ring.reload().await?;
        Ok(ring)
    }

    /// Reads the active keys again.
    pub async fn reload(&self) -> crate::store::Result<()> {
        let keys: HashMap<[u8; 32], Caller> = self
            .store
            .active_keys()
            .await?
            .into_iter()
            .map(|(hash, key): ([u8; 32], ApiKey)| {
                let caller = Caller {
                    key_id: key.id,
                    tenant: key.tenant,
                };
                (hash, caller)
            })
            .collect();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        Ok(())
    }

    fn find(&self, presented: &[u8; 32]) -> Option<Caller> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let (stored, caller) = keys.get_key_value(presented)?;
        // The map found it by hash; compare in constant time all the same.
        bool::from(stored.ct_eq(presented)).then(|| caller.clone())
    }

    /// The caller of a request with these headers, `None` for a missing, unknown or
    /// revoked key.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Option<Caller> {
        let key = bearer(headers)?;
        let presented = hash(key);
        if let Some(caller) = self.find(&presented) {
            return Some(caller);
        }
        let arrived = Instant::now();
        let mut last = self.miss_reload.lock().await;
        // A reload that started after this request arrived has seen its key already.
        if last.is_none_or(|started| started < arrived) {
            if let Some(started) = *last {
                tokio::time::sleep(MISS_RELOAD_GAP.saturating_sub(started.elapsed())).await;
            }
            *last = Some(Instant::now());
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "cannot reload the API keys");
            }
        }
        drop(last);
        self.find(&presented)
    }
}

/// The key of an `Authorization: Bearer <key>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim())
        .filter(|k| !k.is_empty())
}
