//! The `Received:` trace header (RFC 5321 4.4) Postroad prepends to every message.

use std::net::IpAddr;

use postroad_queue::MessageId;

use super::command::printable;

pub struct Trace<'a> {
    pub helo: &'a str,
    pub client_ip: IpAddr,
    pub hostname: &'a str,
    pub esmtp: bool,
    pub tls: bool,
    pub authenticated: bool,
    pub smtputf8: bool,
    pub id: MessageId,
    /// Named in a `for` clause only when there is exactly one.
    pub single_recipient: Option<&'a str>,
}

impl Trace<'_> {
    /// The header, folded, ending in CRLF.
    pub fn header(&self) -> String {
        let protocol = format!(
            "{}{}{}",
            match (self.smtputf8, self.esmtp) {
                (true, _) => "UTF8SMTP",
                (false, true) => "ESMTP",
                (false, false) => "SMTP",
            },
            if self.tls { "S" } else { "" },
            if self.authenticated { "A" } else { "" },
        );
        let for_clause = self
            .single_recipient
            .map(|r| format!("\r\n\tfor <{}>", printable_address(r)))
            .unwrap_or_default();
        format!(
            "Received: from {} ([{}])\r\n\tby {} (Postroad) with {} id {}{};\r\n\t{}\r\n",
            printable(self.helo),
            self.client_ip,
            self.hostname,
            protocol,
            self.id,
            for_clause,
            chrono::Utc::now().to_rfc2822(),
        )
    }
}

/// Addresses may be UTF-8 (SMTPUTF8); keep them, minus control characters and `<>`.
fn printable_address(address: &str) -> String {
    address
        .chars()
        .filter(|c| !c.is_control() && *c != '<' && *c != '>')
        .take(256)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_protocol_and_id() {
        let id = MessageId::new();
        let h = Trace {
            helo: "client.test\u{7}",
            client_ip: "192.0.2.1".parse().unwrap(),
            hostname: "mx.test",
            esmtp: true,
            tls: true,
            authenticated: true,
            smtputf8: false,
            id,
            single_recipient: Some("r@x.test"),
        }
        .header();
        assert!(h.starts_with("Received: from client.test ([192.0.2.1])\r\n\tby mx.test (Postroad) with ESMTPSA id "), "{h}");
        assert!(
            h.contains(&id.to_string()) && h.contains("for <r@x.test>;") && h.ends_with("\r\n"),
            "{h}"
        );
    }
}
