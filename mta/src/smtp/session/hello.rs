//! EHLO and HELO: the greeting exchange and the extensions announced.

use smtp_wire::Capabilities;

use super::Session;
use crate::smtp::command::printable;
use crate::smtp::reply::Reply;

impl Session {
    pub(super) fn hello(&mut self, host: &str, esmtp: bool) -> Result<Reply, Reply> {
        if host.is_empty() {
            return Err(Reply::new(501, "5.5.4", "Syntax: EHLO hostname"));
        }
        self.tx = None;
        self.helo = Some(printable(host));
        self.esmtp = esmtp;
        let hostname = &self.shared.hostname;
        if !esmtp {
            return Ok(Reply::owned(250, None, hostname.clone()));
        }
        let caps = Capabilities {
            pipelining: true,
            size: Some(self.shared.smtp.max_message_size as u64),
            eight_bit_mime: true,
            smtputf8: true,
            dsn: true,
            chunking: true,
            starttls: self.starttls_offered(),
            enhanced_status_codes: true,
            auth: if self.auth_offered() {
                vec!["PLAIN".into(), "LOGIN".into()]
            } else {
                Vec::new()
            },
        };
        let first = format!("{hostname} Hello {} [{}]", printable(host), self.peer.ip());
        Ok(Reply::owned(250, None, caps.ehlo_text(&first)))
    }
}
