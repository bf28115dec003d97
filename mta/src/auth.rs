//! SMTP AUTH credentials: argon2 password hashes from the config, and the throttling of
//! failed attempts ([`throttle`]).

pub mod throttle;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use tokio::sync::Semaphore;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::config::UserConfig;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "user {user:?} has an invalid password_hash (expected an argon2 PHC string from `postroad passwd`): {reason}"
    )]
    BadHash { user: String, reason: String },
    #[error("user {0:?} is configured twice")]
    Duplicate(String),
}

/// The accounts that may authenticate, with their parsed hashes.
#[derive(Clone)]
pub struct Credentials {
    users: Arc<HashMap<String, String>>,
    /// Argon2 checks running at once (each takes ~19 MiB and a core for a while), so a
    /// flood of AUTH attempts queues instead of taking the memory and every thread of
    /// the blocking pool.
    checks: Arc<Semaphore>,
}

impl Default for Credentials {
    fn default() -> Self {
        Self::from_map(HashMap::new())
    }
}

impl Credentials {
    pub fn new(users: &[UserConfig]) -> Result<Self, AuthError> {
        let mut map = HashMap::new();
        for u in users {
            PasswordHash::new(&u.password_hash).map_err(|e| AuthError::BadHash {
                user: u.username.clone(),
                reason: e.to_string(),
            })?;
            if map
                .insert(u.username.clone(), u.password_hash.clone())
                .is_some()
            {
                return Err(AuthError::Duplicate(u.username.clone()));
            }
        }
        Ok(Self::from_map(map))
    }

    fn from_map(users: HashMap<String, String>) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            users: Arc::new(users),
            checks: Arc::new(Semaphore::new(cores)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Checks a password. Argon2 is deliberately slow, so this runs on the blocking pool,
    /// a few at a time. An unknown username is checked against a stand-in hash, so the
    /// answer takes as long as for a known one (no user enumeration by timing).
    pub async fn verify(&self, username: &str, password: &str) -> bool {
        let (hash, known) = match self.users.get(username) {
            Some(hash) => (hash.clone(), true),
            None => (stand_in_hash().to_string(), false),
        };
        let Ok(_permit) = self.checks.acquire().await else {
            return false;
        };
        let password = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        known && matches
    }
}

/// A hash no password matches in practice (of 32 random bytes), made once.
fn stand_in_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let secret: [u8; 32] = rand::random();
        hash_password(&base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            secret,
        ))
    })
}

/// Hashes a password for the config file (argon2id, random salt, PHC string).
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters cannot fail")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_only_the_right_password() {
        let creds = Credentials::new(&[UserConfig {
            username: "app".into(),
            password_hash: hash_password("s3cret"),
        }])
        .unwrap();
        assert!(creds.verify("app", "s3cret").await);
        assert!(!creds.verify("app", "wrong").await);
        assert!(!creds.verify("nobody", "s3cret").await);
    }

    #[test]
    fn plain_text_password_in_config_is_rejected() {
        let err = Credentials::new(&[UserConfig {
            username: "app".into(),
            password_hash: "hunter2".into(),
        }])
        .err()
        .unwrap();
        assert!(err.to_string().contains("postroad passwd"), "{err}");
    }
}
