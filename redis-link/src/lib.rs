//! The link to Redis, when `[redis] url` is set, shared by the parts of Postroad that
//! use it: the HTTP API (templates' shared cache, user preferences, the channel on
//! which template changes are announced) and the relay (message rates shared by every
//! relay process).
//!
//! Redis is never in the way: the first connection is made on first use (a server
//! starts while Redis is down), every command has a short timeout, and after a failure
//! no new connection is tried for [`RETRY_GAP`], so a Redis outage costs requests
//! nothing but a log line (callers fall back to the database).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Longest wait for a connection or a reply.
pub const TIMEOUT: Duration = Duration::from_millis(500);
/// After a failed connection, how long Redis is left alone.
pub const RETRY_GAP: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis: not tried again yet after a failure less than {RETRY_GAP:?} ago")]
    Resting,
    #[error("redis: no reply within {TIMEOUT:?}")]
    Timeout,
}

/// A lazily connected, reconnecting Redis. Cheap to clone.
#[derive(Clone)]
pub struct RedisLink(Arc<Link>);

struct Link {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
    failed_at: Mutex<Option<Instant>>,
}

impl RedisLink {
    /// Checks `url` (`redis://host:port/db`); connects later, on first use.
    pub fn new(url: &str) -> Result<Self, RedisError> {
        Ok(Self(Arc::new(Link {
            client: redis::Client::open(url)?,
            conn: tokio::sync::Mutex::new(None),
            failed_at: Mutex::new(None),
        })))
    }

    pub fn client(&self) -> &redis::Client {
        &self.0.client
    }

    /// The connection (made now if there is none).
    async fn connection(&self) -> Result<ConnectionManager, RedisError> {
        // Resting applies to a made connection too: a Redis that stopped answering
        // (packets dropped, no reset) would otherwise cost every request the timeout.
        if self.resting() {
            return Err(RedisError::Resting);
        }
        let mut conn = self.0.conn.lock().await;
        if let Some(conn) = conn.as_ref() {
            return Ok(conn.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        match ConnectionManager::new_with_config(self.0.client.clone(), config).await {
            Ok(made) => {
                *conn = Some(made.clone());
                Ok(made)
            }
            Err(e) => {
                self.failed();
                Err(e.into())
            }
        }
    }

    fn resting(&self) -> bool {
        let failed_at = self.0.failed_at.lock().unwrap_or_else(|e| e.into_inner());
        failed_at.is_some_and(|at| at.elapsed() < RETRY_GAP)
    }

    fn failed(&self) {
        *self.0.failed_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Runs `pipeline` (atomically when it says so) and reads its replies as `T`.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        pipeline: &redis::Pipeline,
    ) -> Result<T, RedisError> {
        let mut conn = self.connection().await?;
        self.bounded(pipeline.query_async(&mut conn)).await
    }

    /// Runs a Lua script (by its SHA, loading it first when Redis lacks it).
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        let mut conn = self.connection().await?;
        self.bounded(invocation.invoke_async(&mut conn)).await
    }

    /// Waits at most [`TIMEOUT`] for `reply`; a timeout or a lost connection rests the
    /// link.
    async fn bounded<T>(
        &self,
        reply: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisError> {
        match tokio::time::timeout(TIMEOUT, reply).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    self.failed();
                }
                Err(e.into())
            }
            Err(_) => {
                self.failed();
                Err(RedisError::Timeout)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_redis_that_is_down_fails_fast_and_is_left_alone() {
        // Nothing listens on port 1.
        let link = RedisLink::new("redis://127.0.0.1:1/").unwrap();
        let first = link.query::<Option<String>>(redis::pipe().get("k")).await;
        assert!(matches!(first, Err(RedisError::Redis(_))), "{first:?}");
        let second = link.query::<Option<String>>(redis::pipe().get("k")).await;
        assert!(matches!(second, Err(RedisError::Resting)), "{second:?}");
    }
}
