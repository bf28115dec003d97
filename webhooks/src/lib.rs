//! What Postroad learns after the `250`: inbound bounce and complaint reports mapped
//! back to their message and recipient by VERP ([`inbound`]); SES and SendGrid
//! event webhooks, their signatures checked ([`sns`], [`sendgrid`]) and their events
//! mapped to the messages Postroad sent through them ([`provider_events`],
//! [`providers`]); the suppression list those events grow ([`suppression`]).

pub mod customer;
pub mod inbound;
pub mod provider_events;
pub mod providers;
pub mod sendgrid;
pub mod sns;
pub mod suppression;

pub use inbound::{IntakeError, KnownRecipient, LookupError, MessageLookup, Received, Reports};
pub use providers::{Answer, ProviderHooks, WebhooksConfig};
