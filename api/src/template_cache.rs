//! The templates' shared cache in Redis: the newest version of each template under
//! `email:template:{type}` for [`TEMPLATE_TTL_SECS`], shared by every node, and a
//! channel on which a change is announced so that every node drops its compiled copy
//! at once.
//!
//! A change writes the new state through (the template, or a tombstone once deleted),
//! while a node that missed fills the cache only where nothing is (`SET NX`), so a slow
//! reader can never put back a version older than a change that passed it. A change
//! Redis could not take is retried by the upkeep until it can.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::redis_link::{
    RETRY_GAP, RedisError, RedisLink, TEMPLATE_CHANNEL, TEMPLATE_TTL_SECS, template_key,
};
use crate::store::templates::Template;

/// What the cache holds for a deleted (or never made) template.
const TOMBSTONE: &str = "-";

/// What the shared cache said.
pub enum Lookup {
    /// The newest version, or `None`: the template does not exist.
    Hit(Option<Template>),
    Miss,
    /// Redis did not answer: ask the database.
    Failed,
}

#[derive(Clone)]
pub struct SharedTemplates {
    link: RedisLink,
    /// (tenant, email type) whose change Redis has not taken yet.
    pending: Arc<Mutex<HashSet<(String, String)>>>,
}

impl SharedTemplates {
    pub fn new(link: RedisLink) -> Self {
        Self {
            link,
            pending: Arc::default(),
        }
    }

    pub async fn get(&self, tenant: &str, email_type: &str) -> Lookup {
        let key = template_key(tenant, email_type);
        match self
            .link
            .query::<(Option<String>,)>(redis::pipe().get(&key))
            .await
        {
            Ok((None,)) => Lookup::Miss,
            Ok((Some(text),)) if text == TOMBSTONE => Lookup::Hit(None),
            Ok((Some(text),)) => match serde_json::from_str(&text) {
                Ok(template) => Lookup::Hit(Some(template)),
                Err(e) => {
                    tracing::warn!(%key, error = %e, "unreadable template in the redis cache; using the database");
                    Lookup::Failed
                }
            },
            Err(e) => {
                log_failure(&e, "cannot read the template cache; using the database");
                Lookup::Failed
            }
        }
    }

    /// Caches what the database said after a miss, unless a change got there first.
    pub async fn fill(&self, tenant: &str, email_type: &str, template: Option<&Template>) {
        let value = encode(template);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(template_key(tenant, email_type))
            .arg(value)
            .arg("EX")
            .arg(TEMPLATE_TTL_SECS)
            .arg("NX")
            .ignore();
        if let Err(e) = self.link.query::<()>(&pipe).await {
            log_failure(&e, "cannot fill the template cache");
        }
    }

    /// Writes a template's new state through and tells every node; if Redis cannot
    /// take it now, the change is kept for [`SharedTemplates::retry`].
    pub async fn changed(&self, tenant: &str, email_type: &str, now: Option<&Template>) {
        if let Err(e) = self.announce(tenant, email_type, now).await {
            tracing::warn!(error = %e, %email_type, "cannot announce a template change to redis; will retry");
            self.changed_later(tenant, email_type);
        }
    }

    async fn announce(
        &self,
        tenant: &str,
        email_type: &str,
        now: Option<&Template>,
    ) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(template_key(tenant, email_type))
            .arg(encode(now))
            .arg("EX")
            .arg(TEMPLATE_TTL_SECS)
            .ignore()
            .publish(TEMPLATE_CHANNEL, format!("{tenant}\n{email_type}"))
            .ignore();
        self.link.query::<()>(&pipe).await
    }

    /// Keeps a change to announce later.
    pub fn changed_later(&self, tenant: &str, email_type: &str) {
        lock(&self.pending).insert((tenant.to_string(), email_type.to_string()));
    }

    /// The changes still to announce.
    pub fn pending(&self) -> Vec<(String, String)> {
        lock(&self.pending).iter().cloned().collect()
    }

    /// Announces a pending change with the template's state now (`now`).
    pub async fn retry(&self, tenant: &str, email_type: &str, now: Option<&Template>) {
        if self.announce(tenant, email_type, now).await.is_ok() {
            lock(&self.pending).remove(&(tenant.to_string(), email_type.to_string()));
            tracing::info!(%email_type, "template change announced to redis");
        }
    }

    /// Until `stop`: calls `dropped(tenant, email_type)` for every change announced by
    /// any node, and `dropped_all()` whenever the subscription (re)starts, since changes
    /// may have been missed while it was down.
    pub async fn watch(
        &self,
        dropped: impl Fn(&str, &str),
        dropped_all: impl Fn(),
        stop: CancellationToken,
    ) {
        loop {
            match self.subscribe().await {
                Ok(mut pubsub) => {
                    dropped_all();
                    tracing::debug!("watching template changes on redis");
                    let mut messages = pubsub.on_message();
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            message = messages.next() => {
                                let Some(message) = message else { break };
                                let payload: String = message.get_payload().unwrap_or_default();
                                if let Some((tenant, email_type)) = payload.split_once('\n') {
                                    dropped(tenant, email_type);
                                }
                            }
                        }
                    }
                    tracing::warn!(
                        "lost the redis subscription to template changes; resubscribing"
                    );
                }
                Err(e) => log_failure(&e, "cannot subscribe to template changes"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RETRY_GAP) => {}
            }
        }
    }

    async fn subscribe(&self) -> Result<redis::aio::PubSub, RedisError> {
        let connect = self.link.client().get_async_pubsub();
        let mut pubsub = tokio::time::timeout(crate::redis_link::TIMEOUT, connect)
            .await
            .map_err(|_| RedisError::Timeout)??;
        pubsub.subscribe(TEMPLATE_CHANNEL).await?;
        Ok(pubsub)
    }
}

fn encode(template: Option<&Template>) -> String {
    template
        .and_then(|t| serde_json::to_string(t).ok())
        .unwrap_or_else(|| TOMBSTONE.to_string())
}

fn log_failure(e: &RedisError, what: &str) {
    match e {
        RedisError::Resting => tracing::debug!(error = %e, "{what}"),
        _ => tracing::warn!(error = %e, "{what}"),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
