//! The server's replies: the shared [`Reply`] type and every fixed reply the SMTP
//! server sends.

pub use smtp_wire::{EnhancedCode, Reply};

pub const OK: Reply = Reply::new(250, "2.0.0", "Ok");
pub const SENDER_OK: Reply = Reply::new(250, "2.1.0", "Ok");
pub const RECIPIENT_OK: Reply = Reply::new(250, "2.1.5", "Ok");
pub const START_DATA: Reply = Reply::new(354, "", "End data with <CR><LF>.<CR><LF>");
pub const BYE: Reply = Reply::new(221, "2.0.0", "Bye");
pub const READY_TLS: Reply = Reply::new(220, "2.0.0", "Ready to start TLS");
pub const AUTH_OK: Reply = Reply::new(235, "2.7.0", "Authentication successful");

pub const LINE_TOO_LONG: Reply = Reply::new(500, "5.5.2", "Error: line too long");
pub const UNRECOGNIZED: Reply = Reply::new(500, "5.5.1", "Error: command not recognized");
pub const NOT_IMPLEMENTED: Reply = Reply::new(502, "5.5.1", "Error: command not implemented");
pub const VRFY_DISABLED: Reply = Reply::new(502, "5.5.1", "VRFY command is disabled");
pub const NEED_HELO: Reply = Reply::new(503, "5.5.1", "Error: send HELO/EHLO first");
pub const NESTED_MAIL: Reply = Reply::new(503, "5.5.1", "Error: nested MAIL command");
pub const NEED_MAIL: Reply = Reply::new(503, "5.5.1", "Error: need MAIL command");
pub const NEED_RCPT: Reply = Reply::new(554, "5.5.1", "Error: no valid recipients");
pub const DATA_AFTER_BDAT: Reply = Reply::new(503, "5.5.1", "Error: DATA not allowed after BDAT");
pub const TLS_ACTIVE: Reply = Reply::new(503, "5.5.1", "Error: TLS already active");
pub const TLS_UNAVAILABLE: Reply = Reply::new(502, "5.5.1", "Error: STARTTLS not offered here");
pub const AUTH_NEEDS_TLS: Reply = Reply::new(
    538,
    "5.7.11",
    "Encryption required for requested authentication mechanism",
);
pub const AUTH_UNAVAILABLE: Reply = Reply::new(502, "5.5.1", "Error: authentication not enabled");
pub const AUTH_ALREADY: Reply = Reply::new(503, "5.5.1", "Error: already authenticated");
pub const AUTH_IN_TRANSACTION: Reply = Reply::new(
    503,
    "5.5.1",
    "Error: AUTH not permitted during a mail transaction",
);
pub const AUTH_MECHANISM: Reply = Reply::new(504, "5.5.4", "Unrecognized authentication type");
pub const AUTH_FAILED: Reply = Reply::new(535, "5.7.8", "Authentication credentials invalid");
pub const AUTH_CANCELLED: Reply = Reply::new(501, "5.0.0", "Authentication cancelled");
pub const AUTH_BAD_BASE64: Reply = Reply::new(501, "5.5.2", "Error: invalid base64 data");
pub const AUTH_REQUIRED: Reply = Reply::new(530, "5.7.0", "Authentication required");
pub const RELAY_DENIED: Reply = Reply::new(554, "5.7.1", "Relay access denied");
pub const TOO_MANY_RECIPIENTS: Reply = Reply::new(452, "4.5.3", "Error: too many recipients");
/// A report address and another kind of recipient in one transaction.
pub const REPORT_ALONE: Reply = Reply::new(
    452,
    "4.5.3",
    "Error: bounce reports go in a transaction of their own, try this recipient again",
);
/// A report that cannot be recorded now (the history or the queue is away).
/// Mail to the unsubscribe address whose subject (or text) has no token of ours.
pub const NO_UNSUBSCRIBE_TOKEN: Reply = Reply::new(
    550,
    "5.7.1",
    "Error: no unsubscribe token of this server in the subject; use the message's unsubscribe link",
);

pub const REPORT_NOT_RECORDED: Reply = Reply::new(
    451,
    "4.3.0",
    "Error: cannot record the report now, try again later",
);
pub const TOO_BIG: Reply = Reply::new(
    552,
    "5.3.4",
    "Error: message size exceeds fixed maximum message size",
);
pub const NEEDS_SMTPUTF8: Reply = Reply::new(553, "5.6.7", "Error: address requires SMTPUTF8");
pub const EMPTY_RECIPIENT: Reply = Reply::new(501, "5.1.3", "Error: empty recipient address");
pub const QUEUE_ERROR: Reply = Reply::new(
    451,
    "4.3.0",
    "Error: queue file write error, try again later",
);

pub const TOO_MANY_ERRORS: Reply =
    Reply::new(421, "4.7.0", "Error: too many errors, closing connection");
pub const TOO_MANY_COMMANDS: Reply = Reply::new(
    421,
    "4.7.0",
    "Error: too many commands without MAIL, closing connection",
);
pub const TIMEOUT: Reply = Reply::new(421, "4.4.2", "Error: timeout exceeded, closing connection");
pub const SHUTTING_DOWN: Reply =
    Reply::new(421, "4.3.2", "Service shutting down, closing connection");
pub const TOO_MANY_CONNECTIONS: Reply =
    Reply::new(421, "4.7.0", "Error: too many connections, try again later");
pub const AUTH_BANNED: Reply = Reply::new(
    421,
    "4.7.0",
    "Error: too many failed authentications from your address, try again later",
);
pub const AUTH_BUSY: Reply = Reply::new(
    454,
    "4.7.0",
    "Error: too many authentication attempts in progress, try again later",
);
pub const NO_MEMORY: Reply = Reply::new(
    452,
    "4.3.1",
    "Error: insufficient system resources for the message, try again later",
);
pub const TOO_MANY_FROM_IP: Reply = Reply::new(
    421,
    "4.7.0",
    "Error: too many connections from your address, try again later",
);
