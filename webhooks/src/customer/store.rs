//! Where endpoints and their undelivered events live (the application store beside
//! the history): an outbox per endpoint, in the order the events were recorded, and the
//! dead letters of batches that could not be delivered in time.

use async_trait::async_trait;

use super::Endpoint;
use crate::suppression::StoreFailure;

/// An event waiting for one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub endpoint_id: String,
    /// The event's id (32 hex digits): an event is queued once per endpoint.
    pub event_id: String,
    /// Its JSON ([`super::payload::to_json`]).
    pub payload: String,
    /// When it was queued (Unix ms): the age it is given up at counts from here.
    pub queued_at_ms: u64,
}

/// An event in an endpoint's outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Its place in the outbox: increasing in the order events were queued.
    pub seq: i64,
    pub event_id: String,
    pub payload: String,
    pub queued_at_ms: u64,
}

/// An event given up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub seq: i64,
    pub event_id: String,
    pub payload: String,
    pub queued_at_ms: u64,
    pub failed_at_ms: u64,
    /// The last attempt's failure.
    pub error: String,
}

#[async_trait]
pub trait WebhookStore: Send + Sync {
    async fn create_endpoint(&self, endpoint: &Endpoint) -> Result<(), StoreFailure>;
    /// A tenant's endpoints (`None`: everyone's), oldest first.
    async fn endpoints(&self, tenant: Option<&str>) -> Result<Vec<Endpoint>, StoreFailure>;
    /// Deletes an endpoint with its outbox and dead letters; whether there was one.
    async fn delete_endpoint(&self, tenant: &str, id: &str) -> Result<bool, StoreFailure>;
    /// Queues events (one already in an endpoint's outbox is not queued again).
    async fn enqueue(&self, events: &[Pending]) -> Result<(), StoreFailure>;
    /// The endpoints with events waiting.
    async fn waiting(&self) -> Result<Vec<String>, StoreFailure>;
    /// The first `limit` events of an endpoint's outbox.
    async fn next(&self, endpoint_id: &str, limit: usize) -> Result<Vec<Queued>, StoreFailure>;
    /// Drops an endpoint's events up to `seq` (delivered).
    async fn delivered(&self, endpoint_id: &str, seq: i64) -> Result<(), StoreFailure>;
    /// Moves an endpoint's events up to `seq` to its dead letters; how many.
    async fn give_up(
        &self,
        endpoint_id: &str,
        seq: i64,
        error: &str,
        now_ms: u64,
    ) -> Result<u64, StoreFailure>;
    /// An endpoint's dead letters after `after`, at most `limit`, oldest first.
    async fn dead_letters(
        &self,
        endpoint_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreFailure>;
    /// Queues an endpoint's dead letters again (as new, at `now_ms`); how many.
    async fn redrive(&self, endpoint_id: &str, now_ms: u64) -> Result<u64, StoreFailure>;
    /// Takes or renews the right to deliver an endpoint's events until `until_ms`,
    /// unless another `owner` holds it past `now_ms`; whether this one has it.
    async fn lease(
        &self,
        endpoint_id: &str,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<bool, StoreFailure>;
    /// Events waiting and dead letters per endpoint.
    async fn counts(&self) -> Result<Vec<(String, u64, u64)>, StoreFailure>;
}
