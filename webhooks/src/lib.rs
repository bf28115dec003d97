//! What Postroad learns after the `250`: inbound bounce and complaint reports mapped
//! back to their message and recipient by VERP ([`inbound`]).

pub mod inbound;

pub use inbound::{IntakeError, KnownRecipient, LookupError, MessageLookup, Received, Reports};
