//! Where in a client session something went wrong.

use std::fmt;

/// A step of an SMTP client session. Errors carry it, and what the stage was decides
/// what can be retried (a reused connection closed before MAIL was answered lost
/// nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Connect,
    Greeting,
    /// EHLO, or HELO after it.
    Ehlo,
    /// The STARTTLS command and the TLS handshake.
    StartTls,
    Auth,
    Mail,
    Rcpt,
    /// The DATA (or BDAT) command and its 354.
    Data,
    /// The message content, its terminating `.` and the reply to it.
    Dot,
    Rset,
    Quit,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Greeting => "greeting",
            Stage::Ehlo => "EHLO",
            Stage::StartTls => "STARTTLS",
            Stage::Auth => "AUTH",
            Stage::Mail => "MAIL",
            Stage::Rcpt => "RCPT",
            Stage::Data => "DATA",
            Stage::Dot => "end of data",
            Stage::Rset => "RSET",
            Stage::Quit => "QUIT",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
