//! The templates' shared cache in Redis: the newest version of each template under
//! `email:template:{type}` for [`TEMPLATE_TTL_SECS`], shared by every node, and a
//! channel on which a change is announced so that every node drops its compiled copy
//! at once.
//!
//! Each value is `<stamp>|<template JSON>` or `<stamp>|-` (a tombstone): the stamp is
//! the version's creation time, or the deletion's. A change writes the new state
//! through only over an older stamp (a Lua script: two changes racing can never leave
//! the older one), while a node that missed fills the cache only where nothing is
//! (`SET NX`), so a slow reader can never put back what a change replaced. A change
//! Redis could not take is kept in the database and retried by the upkeep.

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::redis_link::{
    RETRY_GAP, RedisError, RedisLink, TEMPLATE_CHANNEL, TEMPLATE_TTL_SECS, template_key,
};
use crate::store::templates::Template;

/// What the cache holds for a deleted (or never made) template.
const TOMBSTONE: &str = "-";

/// Sets KEYS[1] to ARGV[1] .. "|" .. ARGV[2] for ARGV[3] seconds unless it holds a
/// newer stamp, and announces the change (ARGV[5] on channel ARGV[4]) either way.
const WRITE_THROUGH: &str = r#"
local current = redis.call('GET', KEYS[1])
local newer = false
if current then
  local stamp = tonumber(string.match(current, '^(%d+)|'))
  newer = stamp ~= nil and stamp > tonumber(ARGV[1])
end
if not newer then
  redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'EX', ARGV[3])
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"#;

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
}

impl SharedTemplates {
    pub fn new(link: RedisLink) -> Self {
        Self { link }
    }

    pub async fn get(&self, tenant: &str, email_type: &str) -> Lookup {
        let key = template_key(tenant, email_type);
        match self
            .link
            .query::<(Option<String>,)>(redis::pipe().get(&key))
            .await
        {
            Ok((None,)) => Lookup::Miss,
            Ok((Some(text),)) => match decode(&text) {
                Some(None) => Lookup::Hit(None),
                Some(Some(template)) if template.email_type == email_type => {
                    Lookup::Hit(Some(template))
                }
                _ => {
                    tracing::warn!(%key, "unreadable template in the redis cache; using the database");
                    Lookup::Failed
                }
            },
            Err(e) => {
                log_failure(&e, "cannot read the template cache; using the database");
                Lookup::Failed
            }
        }
    }

    /// Caches what the database said after a miss, unless a change got there first
    /// (a template that does not exist is cached with stamp 0: any change wins).
    pub async fn fill(&self, tenant: &str, email_type: &str, template: Option<&Template>) {
        let stamp = template.map_or(0, |t| t.created_at_ms);
        let value = encode(stamp, template);
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

    /// Writes a template's new state through (`now`: the newest version, `None` once
    /// deleted) unless Redis holds a newer one, and tells every node.
    pub async fn announce(
        &self,
        tenant: &str,
        email_type: &str,
        now: Option<&Template>,
    ) -> Result<(), RedisError> {
        let stamp = now.map_or_else(
            || chrono::Utc::now().timestamp_millis(),
            |t| t.created_at_ms,
        );
        let body = match now {
            Some(template) => serde_json::to_string(template).unwrap_or_default(),
            None => TOMBSTONE.to_string(),
        };
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(WRITE_THROUGH)
            .arg(1)
            .arg(template_key(tenant, email_type))
            .arg(stamp)
            .arg(body)
            .arg(TEMPLATE_TTL_SECS)
            .arg(TEMPLATE_CHANNEL)
            .arg(format!("{tenant}\n{email_type}"))
            .ignore();
        self.link.query::<()>(&pipe).await
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

fn encode(stamp: i64, template: Option<&Template>) -> String {
    let body = template
        .and_then(|t| serde_json::to_string(t).ok())
        .unwrap_or_else(|| TOMBSTONE.to_string());
    format!("{stamp}|{body}")
}

/// `Some(None)`: a tombstone; `None`: not a value of ours.
fn decode(text: &str) -> Option<Option<Template>> {
    let (stamp, body) = text.split_once('|')?;
    stamp.parse::<i64>().ok()?;
    if body == TOMBSTONE {
        return Some(None);
    }
    serde_json::from_str(body).ok().map(Some)
}

fn log_failure(e: &RedisError, what: &str) {
    match e {
        RedisError::Resting => tracing::debug!(error = %e, "{what}"),
        _ => tracing::warn!(error = %e, "{what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::templates::Definition;

    fn version(n: u32, created_at_ms: i64) -> Template {
        Template {
            email_type: "race".into(),
            version: n,
            definition: Definition {
                subject: format!("v{n}"),
                text: Some("t".into()),
                ..Definition::default()
            },
            created_at_ms,
        }
    }

    /// Against the real Redis at 127.0.0.1:6379, under a tenant no other run uses.
    #[tokio::test]
    async fn a_late_write_through_never_replaces_a_newer_change() {
        let link = RedisLink::new("redis://127.0.0.1:6379/").unwrap();
        let shared = SharedTemplates::new(link);
        let tenant = format!(
            "race-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        );
        let subject = |lookup: Lookup| match lookup {
            Lookup::Hit(Some(t)) => t.definition.subject,
            Lookup::Hit(None) => "tombstone".into(),
            Lookup::Miss => "miss".into(),
            Lookup::Failed => "failed".into(),
        };
        shared.fill(&tenant, "race", None).await;
        assert_eq!(subject(shared.get(&tenant, "race").await), "tombstone");
        shared
            .announce(&tenant, "race", Some(&version(3, 3_000)))
            .await
            .unwrap();
        // The change that read v2 before v3 was made arrives last: v3 stays.
        shared
            .announce(&tenant, "race", Some(&version(2, 2_000)))
            .await
            .unwrap();
        shared.fill(&tenant, "race", Some(&version(1, 1_000))).await;
        assert_eq!(subject(shared.get(&tenant, "race").await), "v3");
        // A deletion now is newer than every version.
        shared.announce(&tenant, "race", None).await.unwrap();
        assert_eq!(subject(shared.get(&tenant, "race").await), "tombstone");
        // Another tenant's type with a colon is another key.
        assert_eq!(
            subject(shared.get("", &format!("{tenant}:race")).await),
            "miss"
        );
        let mut pipe = redis::pipe();
        pipe.del(template_key(&tenant, "race")).ignore();
        shared.link.query::<()>(&pipe).await.unwrap();
    }
}
