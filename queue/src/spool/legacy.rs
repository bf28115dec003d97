//! Record formats written by earlier versions, kept so their records are still read:
//! a spool file or Kafka topic from before an upgrade is delivered as it is.
//!
//! Each struct here is frozen: postcard is not self-describing, so its fields must stay
//! exactly as they were written.

use std::net::IpAddr;

use serde::Deserialize;

use crate::{DeadLetter, DsnRet, Envelope, MessageId, Metadata, Priority, Recipient};

/// Envelope format 1: before message metadata (priority was a number; tenant and
/// campaign were the only tags).
#[derive(Deserialize)]
pub(crate) struct EnvelopeV1 {
    id: MessageId,
    sender: String,
    recipients: Vec<Recipient>,
    auth_identity: Option<String>,
    client_ip: IpAddr,
    helo: String,
    received_at_ms: u64,
    requeued_at_ms: Option<u64>,
    size: u64,
    priority: i8,
    body_8bit: bool,
    smtputf8: bool,
    dsn_ret: Option<DsnRet>,
    dsn_envid: Option<String>,
    tenant: Option<String>,
    campaign: Option<String>,
}

impl From<EnvelopeV1> for Envelope {
    fn from(v1: EnvelopeV1) -> Self {
        let priority = match v1.priority {
            0 => Priority::Normal,
            p if p > 0 => Priority::High,
            _ => Priority::Bulk,
        };
        Envelope {
            id: v1.id,
            sender: v1.sender,
            recipients: v1.recipients,
            auth_identity: v1.auth_identity,
            client_ip: v1.client_ip,
            helo: v1.helo,
            received_at_ms: v1.received_at_ms,
            requeued_at_ms: v1.requeued_at_ms,
            size: v1.size,
            body_8bit: v1.body_8bit,
            smtputf8: v1.smtputf8,
            dsn_ret: v1.dsn_ret,
            dsn_envid: v1.dsn_envid,
            meta: Metadata {
                tenant: v1.tenant,
                campaign: v1.campaign,
                priority,
                ..Metadata::default()
            },
        }
    }
}

/// Dead-letter format 1: a format-1 envelope.
#[derive(Deserialize)]
pub(crate) struct DeadLetterV1 {
    envelope: EnvelopeV1,
    at_ms: u64,
    reason: String,
}

impl From<DeadLetterV1> for DeadLetter {
    fn from(v1: DeadLetterV1) -> Self {
        DeadLetter {
            envelope: v1.envelope.into(),
            at_ms: v1.at_ms,
            reason: v1.reason,
        }
    }
}
