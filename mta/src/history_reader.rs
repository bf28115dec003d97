//! The API's [`HistoryReader`] over the history store: the API's filters become
//! history queries, the store's rows the API's views. The report intake's
//! [`MessageLookup`] too: which recipients a message had.

use async_trait::async_trait;
use postroad_api::history::{
    CampaignStatusCount, EventView, HistoryFilter, HistoryPage, HistoryReader, MessageHistory,
    ReadError, RecipientView, ReplyView, rfc3339,
};
use postroad_history::{Cursor, HistoryError, HistoryQuery, HistoryStore, RecipientStatus};
use postroad_queue::MessageId;
use postroad_webhooks::{KnownRecipient, LookupError, MessageLookup};

pub struct StoreReader(pub HistoryStore);

fn unavailable(e: HistoryError) -> ReadError {
    ReadError::Unavailable(e.to_string())
}

#[async_trait]
impl HistoryReader for StoreReader {
    async fn list(&self, filter: &HistoryFilter) -> Result<HistoryPage, ReadError> {
        let cursor = filter
            .cursor
            .as_deref()
            .map(str::parse::<Cursor>)
            .transpose()
            .map_err(ReadError::BadCursor)?;
        let query = HistoryQuery {
            user_id: filter.user_id,
            email_type: filter.email_type.clone(),
            status: filter.status,
            recipient: filter.recipient.clone(),
            tenant: filter.tenant.clone(),
            from_ms: filter.from_ms,
            to_ms: filter.to_ms,
            limit: filter.limit,
            cursor,
        };
        let page = self.0.query(&query).await.map_err(unavailable)?;
        Ok(HistoryPage {
            rows: page.rows.into_iter().map(view).collect(),
            next: page.next.map(|c| c.to_string()),
        })
    }

    async fn campaign_statuses(
        &self,
        campaign: &str,
    ) -> Result<Vec<CampaignStatusCount>, ReadError> {
        let rows = self
            .0
            .campaign_statuses(campaign)
            .await
            .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|s| CampaignStatusCount {
                variant: s.variant,
                status: s.status,
                machine: s.machine,
                recipients: s.recipients,
            })
            .collect())
    }

    async fn message(
        &self,
        id: MessageId,
        tenant: Option<&str>,
        limit: u32,
    ) -> Result<Option<MessageHistory>, ReadError> {
        let visible = |t: &Option<String>| tenant.is_none() || t.as_deref() == tenant;
        let recipients: Vec<RecipientView> = self
            .0
            .status_by_message_id(id)
            .await
            .map_err(unavailable)?
            .into_iter()
            .filter(|s| visible(&s.meta.tenant))
            .map(view)
            .collect();
        if recipients.is_empty() {
            return Ok(None);
        }
        let events = self
            .0
            .by_message_id(id, limit)
            .await
            .map_err(unavailable)?
            .iter()
            .filter(|e| visible(&e.meta.tenant))
            .map(EventView::from)
            .collect();
        Ok(Some(MessageHistory {
            id: id.to_string(),
            recipients,
            events,
        }))
    }
}

fn view(s: RecipientStatus) -> RecipientView {
    RecipientView {
        message_id: s.message_id.to_string(),
        recipient: s.recipient,
        status: s.status,
        sent_at: rfc3339(s.sent_at_ms),
        status_at: rfc3339(s.status_at_ms),
        attempts: s.attempts,
        sender: s.sender,
        domain: s.domain,
        remote_host: s.remote_host,
        reply: s.reply.as_ref().map(ReplyView::from),
        provider_message_id: s.provider_message_id,
        reason: s.reason,
        user_id: s.meta.user_id,
        email_type: s.meta.email_type,
        tenant: s.meta.tenant,
        campaign: s.meta.campaign,
        variant: s.meta.variant,
        priority: s.meta.priority.as_str().to_string(),
        tags: s.meta.tags.into_iter().collect(),
    }
}

/// The report intake's view of the history: a message's recipients with their sender
/// and metadata.
#[async_trait]
impl MessageLookup for StoreReader {
    async fn recipients(&self, id: MessageId) -> Result<Vec<KnownRecipient>, LookupError> {
        let statuses = self
            .0
            .status_by_message_id(id)
            .await
            .map_err(|e| LookupError(e.to_string()))?;
        Ok(statuses
            .into_iter()
            .map(|s| KnownRecipient {
                recipient: s.recipient,
                sender: s.sender,
                meta: s.meta,
            })
            .collect())
    }
}
