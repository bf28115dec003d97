//! Delivery history as the API shows it, and [`HistoryReader`], through which the
//! process running the API reads it: the API does not know where history is stored.

use std::collections::BTreeMap;

use async_trait::async_trait;
use postroad_queue::{DeliveryEvent, EventKind, MessageId, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, Type};

/// Reads the delivery history for `GET /v1/history` and `GET /v1/messages/{id}`.
#[async_trait]
pub trait HistoryReader: Send + Sync {
    /// One page of recipients' statuses matching `filter`, newest message first.
    async fn list(&self, filter: &HistoryFilter) -> Result<HistoryPage, ReadError>;

    /// Message `id`: each recipient's status and the latest `limit` events, oldest
    /// first. `None` when there is no such message or, with `tenant`, none of that
    /// tenant.
    async fn message(
        &self,
        id: MessageId,
        tenant: Option<&str>,
        limit: u32,
    ) -> Result<Option<MessageHistory>, ReadError>;

    /// Recipients of `campaign` per variant and current status.
    async fn campaign_statuses(
        &self,
        campaign: &str,
    ) -> Result<Vec<CampaignStatusCount>, ReadError>;
}

/// How many recipients of a campaign's variant are in one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignStatusCount {
    pub variant: Option<String>,
    pub status: EventKind,
    /// An open or click by a machine (a mail privacy proxy, a link scanner).
    pub machine: bool,
    pub recipients: u64,
}

/// What `GET /v1/history` lists. The filters combine with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    pub user_id: Option<u64>,
    pub email_type: Option<String>,
    pub status: Option<EventKind>,
    pub recipient: Option<String>,
    /// The caller's tenant, when its API key has one: it sees nothing else.
    pub tenant: Option<String>,
    /// Sent at or after (Unix ms).
    pub from_ms: Option<u64>,
    /// Sent before (Unix ms).
    pub to_ms: Option<u64>,
    pub limit: u32,
    /// Where the previous page ended, as its `next` said.
    pub cursor: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The cursor is not one a page gave.
    #[error("{0}")]
    BadCursor(String),
    /// The history database cannot answer now.
    #[error("{0}")]
    Unavailable(String),
}

/// One page of `GET /v1/history`, newest message first.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HistoryPage {
    pub rows: Vec<RecipientView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `GET /v1/messages/{id}`: the message's status per recipient and its events.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct MessageHistory {
    #[schema(example = "0193a4f2c7b87e31a0f6b2d9c4e5a6b7")]
    pub id: String,
    pub recipients: Vec<RecipientView>,
    /// Oldest first.
    pub events: Vec<EventView>,
}

/// One recipient of one message, in its current status.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecipientView {
    pub message_id: String,
    pub recipient: String,
    #[schema(schema_with = status_schema)]
    pub status: EventKind,
    /// When the message was accepted (RFC 3339).
    #[schema(format = DateTime)]
    pub sent_at: String,
    /// When the current status was reached (RFC 3339).
    #[schema(format = DateTime)]
    pub status_at: String,
    pub attempts: u32,
    pub sender: String,
    pub domain: String,
    /// The server behind the current status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyView>,
    /// The id the provider (SES, SendGrid) that accepted the message gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    /// Why the status, in the bounce classifier's words (`userunknown`,
    /// `mailboxfull`, `expired`, ...; for a complaint its feedback type).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// `high`, `normal` or `low`.
    pub priority: String,
    pub tags: BTreeMap<String, String>,
}

/// One event of a message's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub event_id: String,
    #[schema(schema_with = status_schema)]
    pub kind: EventKind,
    pub recipient: String,
    #[schema(format = DateTime)]
    pub at: String,
    /// Delivery attempts made so far (0 for `queued`).
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyView>,
    /// The id the provider that accepted the message gave it (on `delivered`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    /// Why, in the bounce classifier's words (on `bounced`, `deferred`, `expired`; the
    /// feedback type on `complained`; the list's reason on `suppressed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<&DeliveryEvent> for EventView {
    fn from(e: &DeliveryEvent) -> Self {
        Self {
            event_id: e.event_id.simple().to_string(),
            kind: e.kind,
            recipient: e.recipient.clone(),
            at: rfc3339(e.at_ms),
            attempt: e.attempt,
            remote_host: e.remote_host.clone(),
            reply: e.reply.as_ref().map(ReplyView::from),
            provider_message_id: e.provider_message_id.clone(),
            reason: e.reason.clone(),
        }
    }
}

/// The remote server's reply, or the local reason (no `code`) behind a status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ReplyView {
    /// The SMTP reply code; absent for a local reason (no server answered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// The enhanced status code (RFC 3463), e.g. `5.1.1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enhanced: Option<String>,
    pub text: String,
}

impl From<&Response> for ReplyView {
    fn from(r: &Response) -> Self {
        Self {
            code: r.code(),
            enhanced: r.enhanced().map(|e| e.to_string()),
            text: r.text().to_string(),
        }
    }
}

pub use postroad_queue::rfc3339;

fn status_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(EventKind::ALL.iter().map(|k| k.as_str())))
}
