//! User preferences (name, language, timezone...): with Redis, the hashes
//! `user:prefs:{userId}` the design names; without, the embedded store. A template-form
//! message with a `userId` renders with its user's preferences under `templateData`
//! (`templateData` wins), and the `language` preference picks the locale variant.
//! The preferences of every message of a request are read in one round trip; in the
//! embedded store, only for users known to have some (their ids are kept in memory,
//! since only this process writes them), so a message to a user without preferences
//! costs no database read at all.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::problem::{FieldError, pointer};
use crate::redis_link::{RedisError, RedisLink, prefs_key};
use crate::store::{AppStore, StoreError};

pub type Prefs = BTreeMap<String, String>;

/// Most preferences per user.
pub const MAX_FIELDS: usize = 50;
/// Longest preference name.
pub const MAX_NAME: usize = 64;
/// Longest preference value, in bytes.
pub const MAX_VALUE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PrefsError {
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where preferences live.
#[derive(Clone)]
pub enum PrefStore {
    Redis(RedisLink),
    Embedded(Embedded),
}

/// The embedded store, and the users in it that have preferences, by tenant.
#[derive(Clone)]
pub struct Embedded {
    store: AppStore,
    known: Arc<RwLock<HashMap<String, HashSet<u64>>>>,
    /// Held across a write and the update of `known`, so that a PUT and a DELETE of one
    /// user racing cannot leave `known` saying the opposite of the store.
    writing: Arc<tokio::sync::Mutex<()>>,
}

impl Embedded {
    pub async fn load(store: AppStore) -> Result<Self, StoreError> {
        let mut known: HashMap<String, HashSet<u64>> = HashMap::new();
        for (tenant, user_id) in store.users_with_prefs().await? {
            known.entry(tenant).or_default().insert(user_id);
        }
        Ok(Self {
            store,
            known: Arc::new(RwLock::new(known)),
            writing: Arc::default(),
        })
    }

    fn known(&self, tenant: &str, user_ids: &[u64]) -> Vec<u64> {
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        match known.get(tenant) {
            Some(users) => user_ids
                .iter()
                .copied()
                .filter(|id| users.contains(id))
                .collect(),
            None => Vec::new(),
        }
    }

    fn set_known(&self, tenant: &str, user_id: u64, has: bool) {
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        if has {
            known.entry(tenant.to_string()).or_default().insert(user_id);
        } else if let Some(users) = known.get_mut(tenant) {
            users.remove(&user_id);
        }
    }
}

impl PrefStore {
    pub fn name(&self) -> &'static str {
        match self {
            PrefStore::Redis(_) => "redis",
            PrefStore::Embedded(_) => "embedded",
        }
    }

    /// The preferences of those of `user_ids` that have some, in one round trip.
    pub async fn get_many(
        &self,
        tenant: &str,
        user_ids: &[u64],
    ) -> Result<HashMap<u64, Prefs>, PrefsError> {
        if user_ids.is_empty() {
            return Ok(HashMap::new());
        }
        match self {
            PrefStore::Embedded(embedded) => {
                let known = embedded.known(tenant, user_ids);
                if known.is_empty() {
                    return Ok(HashMap::new());
                }
                Ok(embedded.store.prefs_of(tenant, &known).await?)
            }
            PrefStore::Redis(link) => {
                let mut pipe = redis::pipe();
                for id in user_ids {
                    pipe.hgetall(prefs_key(tenant, *id));
                }
                let found: Vec<Prefs> = link.query(&pipe).await?;
                Ok(user_ids
                    .iter()
                    .copied()
                    .zip(found)
                    .filter(|(_, prefs)| !prefs.is_empty())
                    .collect())
            }
        }
    }

    /// Replaces a user's preferences (atomically).
    pub async fn put(&self, tenant: &str, user_id: u64, prefs: &Prefs) -> Result<(), PrefsError> {
        match self {
            PrefStore::Embedded(embedded) => {
                let _writing = embedded.writing.lock().await;
                embedded.store.put_prefs(tenant, user_id, prefs).await?;
                embedded.set_known(tenant, user_id, true);
                Ok(())
            }
            PrefStore::Redis(link) => {
                let key = prefs_key(tenant, user_id);
                let mut pipe = redis::pipe();
                pipe.atomic().del(&key).ignore();
                if !prefs.is_empty() {
                    let pairs: Vec<(&String, &String)> = prefs.iter().collect();
                    pipe.hset_multiple(&key, &pairs).ignore();
                }
                link.query::<()>(&pipe).await?;
                Ok(())
            }
        }
    }

    /// Whether the user had preferences.
    pub async fn delete(&self, tenant: &str, user_id: u64) -> Result<bool, PrefsError> {
        match self {
            PrefStore::Embedded(embedded) => {
                let _writing = embedded.writing.lock().await;
                let deleted = embedded.store.delete_prefs(tenant, user_id).await?;
                embedded.set_known(tenant, user_id, false);
                Ok(deleted)
            }
            PrefStore::Redis(link) => {
                let (deleted,): (u64,) = link
                    .query(redis::pipe().del(prefs_key(tenant, user_id)))
                    .await?;
                Ok(deleted > 0)
            }
        }
    }
}

/// Reads a request's preferences: an object of strings within the limits.
pub fn read(value: &Value) -> Result<Prefs, Vec<FieldError>> {
    let Some(object) = value.as_object() else {
        return Err(vec![FieldError::new(
            "",
            "invalid-type",
            "preferences are a JSON object of strings",
        )]);
    };
    let mut errors = Vec::new();
    if object.len() > MAX_FIELDS {
        errors.push(FieldError::new(
            "",
            "too-many",
            format!("at most {MAX_FIELDS} preferences"),
        ));
    }
    let mut prefs = Prefs::new();
    for (name, value) in object {
        let at = pointer("", name);
        let name_ok = !name.is_empty()
            && name.len() <= MAX_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            errors.push(FieldError::new(
                &at,
                "invalid-value",
                format!("a preference name is 1 to {MAX_NAME} letters, digits, '_' or '-'"),
            ));
            continue;
        }
        match value {
            Value::String(text) if text.len() > MAX_VALUE => errors.push(FieldError::new(
                &at,
                "too-large",
                format!("a preference value is at most {MAX_VALUE} bytes"),
            )),
            Value::String(text) => {
                prefs.insert(name.clone(), text.clone());
            }
            _ => errors.push(FieldError::new(
                &at,
                "invalid-type",
                "a preference value is a string",
            )),
        }
    }
    if errors.is_empty() {
        Ok(prefs)
    } else {
        Err(errors)
    }
}

/// The preferences of the users of one request's messages.
#[derive(Debug, Default)]
pub struct Loaded {
    by_user: HashMap<u64, Prefs>,
    /// The store could not be read: a message whose template lacks a value may lack it
    /// only because of that.
    pub unavailable: bool,
}

impl Loaded {
    pub fn of(&self, user_id: Option<u64>) -> Option<&Prefs> {
        user_id.and_then(|id| self.by_user.get(&id))
    }

    /// Loads the preferences of the template-form messages among `messages` that have a
    /// `userId`; a store failure is logged and remembered, never an error.
    pub async fn load<'a>(
        store: &PrefStore,
        tenant: &str,
        messages: impl IntoIterator<Item = &'a Value>,
    ) -> Self {
        let mut ids: Vec<u64> = messages
            .into_iter()
            .filter_map(Value::as_object)
            .filter(|m| m.contains_key("recipient") || m.contains_key("templateData"))
            .filter_map(|m| m.get("userId")?.as_u64())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        match store.get_many(tenant, &ids).await {
            Ok(by_user) => Self {
                by_user,
                unavailable: false,
            },
            Err(e) => {
                if !matches!(e, PrefsError::Redis(RedisError::Resting)) {
                    tracing::warn!(error = %e, store = store.name(), "cannot read user preferences; rendering without them");
                }
                Self {
                    by_user: HashMap::new(),
                    unavailable: true,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn preferences_are_strings_with_sane_names() {
        let ok = read(&json!({"name": "Ann", "language": "fr", "time_zone": "Europe/Paris"}));
        assert_eq!(ok.unwrap()["language"], "fr");
        let errors =
            read(&json!({"name": 5, "bad name": "x", "long": "x".repeat(2000)})).unwrap_err();
        let codes: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.pointer.as_str(), e.code.as_str()))
            .collect();
        assert_eq!(
            codes,
            [
                ("/bad name", "invalid-value"),
                ("/long", "too-large"),
                ("/name", "invalid-type")
            ]
        );
        assert!(read(&json!([1])).is_err());
    }
}
