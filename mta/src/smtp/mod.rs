//! The SMTP server: listeners and connection limits ([`server`]), per-connection I/O
//! ([`conn`]), the memory budget for messages in flight ([`budget`]), the session state machine ([`session`]), command parsing ([`command`]),
//! replies ([`reply`]) and the trace header ([`received`]).

pub mod body;
pub mod budget;
pub mod command;
pub mod conn;
pub mod metadata;
pub mod received;
pub mod reply;
pub mod server;
pub mod session;

pub use server::{Shared, SmtpServer};
