//! SMTP AUTH credentials: argon2 password hashes from the config.

use std::collections::HashMap;
use std::sync::Arc;

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
#[derive(Clone, Default)]
pub struct Credentials {
    users: Arc<HashMap<String, String>>,
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
        Ok(Self {
            users: Arc::new(map),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Checks a password. Argon2 is deliberately slow, so this runs on the blocking pool.
    pub async fn verify(&self, username: &str, password: &str) -> bool {
        let Some(hash) = self.users.get(username).cloned() else {
            return false;
        };
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    }
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
