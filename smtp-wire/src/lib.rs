//! Postroad's SMTP wire layer, shared by the server (`mta`), the delivery client
//! (`relay`) and the load-test harness:
//!
//! - [`Reply`] with a typed [`EnhancedCode`], and [`Response`] for what decided a
//!   delivery attempt (a server's reply, or a local reason, never a fake code 0);
//! - one reply parser ([`ReplyParser`], [`ReplyBuffer`]), bounded and sans-IO;
//! - [`Capabilities`] from an EHLO reply;
//! - [`Stage`]: where a client session failed;
//! - [`address`]: RFC 5321/6531 mailbox checks for addresses that arrive outside SMTP;
//! - with the `net` feature, [`Stream`] (plain or TLS, either side), the async reply
//!   reader and the one certificate-ignoring TLS client configuration.

pub mod address;
mod code;
mod ehlo;
mod parse;
mod reply;
mod stage;
#[cfg(feature = "net")]
mod stream;
#[cfg(feature = "net")]
pub mod tls;

pub use address::{AddressError, Mailbox, parse_mailbox};
pub use code::{BadEnhancedCode, EnhancedCode};
pub use ehlo::Capabilities;
pub use parse::{Line, MAX_LINE, MAX_LINES, ReplyBuffer, ReplyError, ReplyParser, parse_line};
pub use reply::{LocalReason, Reply, Response};
pub use stage::Stage;
#[cfg(feature = "net")]
pub use stream::{ReadError, Stream, is_disconnect};
