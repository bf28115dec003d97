//! Rows as both backends return them (ids as 16-byte blobs, times as Unix ms, the
//! reply in three columns) and their decoding into [`RecipientStatus`] and
//! [`DeliveryEvent`]; and the values written for an event.

use std::str::FromStr;

use postroad_queue::{
    DeliveryEvent, EnhancedCode, EventKind, MessageId, Metadata, Priority, Reply, Response,
};
use uuid::Uuid;

use crate::{HistoryError, RecipientStatus, Result};

/// Columns of `email_history` selected into a [`StatusRow`]; `{t}` stands for the
/// expression turning a time column into Unix ms, which differs per backend.
pub(crate) const STATUS_SELECT: &str = "id, {t:sent_at} AS sent_at, message_id, recipient, status, \
     {t:status_at} AS status_at, attempts, sender, domain, remote_host, reply_code, reply_enhanced, \
     reply_text, tenant, campaign, user_id, email_type, variant, priority, tags, provider_message_id, \
     reason";

/// Columns of `email_events e` joined with `email_history h` selected into an
/// [`EventRow`].
pub(crate) const EVENT_SELECT: &str = "h.id AS id, e.event_id, e.message_id, e.recipient, \
     {t:e.created_at} AS created_at, e.kind, e.attempt, e.remote_host, e.reply_code, \
     e.reply_enhanced, e.reply_text, h.sender, h.domain, h.tenant, h.campaign, h.user_id, \
     h.email_type, h.variant, h.priority, h.tags, e.provider_message_id, e.reason";

/// `template` with every `{t:column}` replaced by `to_ms(column)`.
pub(crate) fn with_times(template: &str, to_ms: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(start) = rest.find("{t:") {
        out.push_str(&rest[..start]);
        let end = start + rest[start..].find('}').expect("closed {t:...}");
        out.push_str(&to_ms(&rest[start + 3..end]));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct StatusRow {
    id: i64,
    sent_at: i64,
    message_id: Vec<u8>,
    recipient: String,
    status: String,
    status_at: i64,
    attempts: i64,
    sender: String,
    domain: String,
    provider_message_id: Option<String>,
    reason: Option<String>,
    #[sqlx(flatten)]
    reply: ReplyColumns,
    #[sqlx(flatten)]
    meta: MetaColumns,
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EventRow {
    id: i64,
    event_id: Vec<u8>,
    message_id: Vec<u8>,
    recipient: String,
    created_at: i64,
    kind: String,
    attempt: i64,
    sender: String,
    domain: String,
    provider_message_id: Option<String>,
    reason: Option<String>,
    #[sqlx(flatten)]
    reply: ReplyColumns,
    #[sqlx(flatten)]
    meta: MetaColumns,
}

#[derive(Debug, sqlx::FromRow)]
struct ReplyColumns {
    remote_host: Option<String>,
    reply_code: Option<i64>,
    reply_enhanced: Option<String>,
    reply_text: Option<String>,
}

#[derive(Debug, sqlx::FromRow)]
struct MetaColumns {
    tenant: Option<String>,
    campaign: Option<String>,
    user_id: Option<i64>,
    email_type: Option<String>,
    variant: Option<String>,
    priority: Option<String>,
    tags: Option<String>,
}

impl StatusRow {
    pub fn decode(self) -> Result<RecipientStatus> {
        let id = self.id;
        let corrupt = |reason: String| HistoryError::Corrupt { id, reason };
        let (remote_host, reply) = self.reply.decode(&corrupt)?;
        Ok(RecipientStatus {
            id,
            message_id: message_id(&self.message_id, &corrupt)?,
            recipient: self.recipient,
            sent_at_ms: unsigned("sent_at", self.sent_at, &corrupt)?,
            status: EventKind::from_str(&self.status).map_err(&corrupt)?,
            status_at_ms: unsigned("status_at", self.status_at, &corrupt)?,
            attempts: u32::try_from(self.attempts)
                .map_err(|_| corrupt(format!("attempts {}", self.attempts)))?,
            sender: self.sender,
            domain: self.domain,
            remote_host,
            reply,
            meta: self.meta.decode(&corrupt)?,
            provider_message_id: self.provider_message_id,
            reason: self.reason,
        })
    }
}

impl EventRow {
    pub fn decode(self) -> Result<DeliveryEvent> {
        let id = self.id;
        let corrupt = |reason: String| HistoryError::Corrupt { id, reason };
        let (remote_host, reply) = self.reply.decode(&corrupt)?;
        Ok(DeliveryEvent {
            event_id: Uuid::from_bytes(uuid_bytes("event_id", &self.event_id, &corrupt)?),
            kind: EventKind::from_str(&self.kind).map_err(&corrupt)?,
            message_id: message_id(&self.message_id, &corrupt)?,
            sender: self.sender,
            recipient: self.recipient,
            domain: self.domain,
            at_ms: unsigned("created_at", self.created_at, &corrupt)?,
            attempt: u32::try_from(self.attempt)
                .map_err(|_| corrupt(format!("attempt {}", self.attempt)))?,
            remote_host,
            reply,
            meta: self.meta.decode(&corrupt)?,
            provider_message_id: self.provider_message_id,
            reason: self.reason,
        })
    }
}

type Corrupt<'a> = &'a dyn Fn(String) -> HistoryError;

fn uuid_bytes(column: &str, bytes: &[u8], corrupt: Corrupt<'_>) -> Result<[u8; 16]> {
    <[u8; 16]>::try_from(bytes)
        .map_err(|_| corrupt(format!("{column} has {} bytes, not 16", bytes.len())))
}

fn message_id(bytes: &[u8], corrupt: Corrupt<'_>) -> Result<MessageId> {
    uuid_bytes("message_id", bytes, corrupt).map(|b| MessageId::from_u128(u128::from_be_bytes(b)))
}

fn unsigned(column: &str, value: i64, corrupt: Corrupt<'_>) -> Result<u64> {
    u64::try_from(value).map_err(|_| corrupt(format!("{column} {value}")))
}

impl ReplyColumns {
    fn decode(self, corrupt: Corrupt<'_>) -> Result<(Option<String>, Option<Response>)> {
        let enhanced = self
            .reply_enhanced
            .map(|e| EnhancedCode::from_str(&e).map_err(|e| corrupt(e.to_string())))
            .transpose()?;
        // A local reason has no reply code (rows written before there was a local
        // variant have 0).
        let reply = match (self.reply_code, enhanced, self.reply_text) {
            (None, None, None) => None,
            (None | Some(0), Some(enhanced), text) => {
                Some(Response::local(enhanced, text.unwrap_or_default()))
            }
            (Some(code), enhanced, text) => {
                let code = u16::try_from(code)
                    .ok()
                    .filter(|c| (200..600).contains(c))
                    .ok_or_else(|| corrupt(format!("reply_code {code}")))?;
                Some(Response::Remote(Reply::owned(
                    code,
                    enhanced,
                    text.unwrap_or_default(),
                )))
            }
            (None, None, Some(_)) => return Err(corrupt("reply text without a code".into())),
        };
        Ok((self.remote_host, reply))
    }
}

impl MetaColumns {
    fn decode(self, corrupt: Corrupt<'_>) -> Result<Metadata> {
        let tags = self
            .tags
            .iter()
            .flat_map(|t| t.split('\n'))
            .map(|line| {
                line.split_once('=')
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .ok_or_else(|| corrupt(format!("tag line {line:?}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Metadata {
            user_id: self
                .user_id
                .map(|id| u64::try_from(id).map_err(|_| corrupt(format!("user_id {id}"))))
                .transpose()?,
            email_type: self.email_type,
            tenant: self.tenant,
            campaign: self.campaign,
            variant: self.variant,
            priority: self
                .priority
                .map(|p| p.parse::<Priority>().map_err(|e| corrupt(e.to_string())))
                .transpose()?
                .unwrap_or_default(),
            tags,
        })
    }
}

/// The values written for an event, shared by both backends' insert statements.
pub(crate) struct Written<'a> {
    pub event_id: [u8; 16],
    pub message_id: [u8; 16],
    pub sent_at_ms: u64,
    pub reply_code: Option<i64>,
    pub reply_enhanced: Option<String>,
    pub reply_text: Option<&'a str>,
    pub user_id: Option<i64>,
    pub priority: Option<&'static str>,
    pub tags: Option<String>,
}

impl<'a> Written<'a> {
    pub fn of(e: &'a DeliveryEvent) -> Self {
        let reply = e.reply.as_ref();
        Self {
            event_id: *e.event_id.as_bytes(),
            message_id: e.message_id.as_u128().to_be_bytes(),
            sent_at_ms: crate::status::sent_at_ms(e.message_id),
            reply_code: reply.and_then(Response::code).map(i64::from),
            reply_enhanced: reply.and_then(Response::enhanced).map(|e| e.to_string()),
            reply_text: reply.map(Response::text),
            user_id: e.meta.user_id.and_then(|id| i64::try_from(id).ok()),
            priority: (e.meta.priority != Priority::Normal).then(|| e.meta.priority.as_str()),
            tags: tags_text(&e.meta.tags),
        }
    }
}

/// Tags as stored: `name=value` lines, or NULL for none.
fn tags_text(tags: &[(String, String)]) -> Option<String> {
    (!tags.is_empty()).then(|| {
        tags.iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_columns_are_rewritten_per_backend() {
        let sql = with_times("a, {t:sent_at} AS s, {t:e.created_at} AS c", |c| {
            format!("ms({c})")
        });
        assert_eq!(sql, "a, ms(sent_at) AS s, ms(e.created_at) AS c");
        assert!(!with_times(STATUS_SELECT, str::to_string).contains('{'));
        assert!(!with_times(EVENT_SELECT, str::to_string).contains('{'));
    }
}
