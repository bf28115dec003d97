//! RCPT TO: the relay policy (authenticated, or a relay listener's `relay_networks`),
//! recipient limits and DSN's NOTIFY and ORCPT. Addresses at the bounce domains are
//! taken from anyone: they receive reports, which are never relayed. With
//! `suppression.reject_at_rcpt`, addresses on the suppression list are refused.

use postroad_queue::{Notify, Recipient};
use smtp_proto::RcptTo;

use super::Session;
use crate::config::Role;
use crate::smtp::command::printable;
use crate::smtp::reply::{self, EnhancedCode, Reply};

impl Session {
    pub(super) fn relay_allowed(&self) -> bool {
        if self.auth_identity.is_some() {
            return true;
        }
        let ip = self.peer.ip().to_canonical();
        self.listener.role == Role::Relay
            && self
                .shared
                .smtp
                .relay_networks
                .iter()
                .any(|net| net.contains(&ip))
    }

    pub(super) fn rcpt(&mut self, to: RcptTo<std::borrow::Cow<'_, str>>) -> Result<Reply, Reply> {
        let report = self
            .shared
            .reports
            .as_ref()
            .is_some_and(|r| r.accepts(&to.address));
        let relay_allowed = report || self.relay_allowed();
        let max = self.shared.smtp.max_recipients;
        let Some(tx) = self.tx.as_mut() else {
            return Err(reply::NEED_MAIL);
        };
        if tx.chunks.is_some() {
            return Err(Reply::new(
                503,
                "5.5.1",
                "Error: RCPT not allowed during BDAT",
            ));
        }
        if to.address.is_empty() {
            return Err(reply::EMPTY_RECIPIENT);
        }
        if !tx.smtputf8 && !to.address.is_ascii() {
            return Err(reply::NEEDS_SMTPUTF8);
        }
        if !relay_allowed {
            tracing::info!(peer = %self.peer, rcpt = %printable(&to.address), "relay access denied");
            return Err(Reply::owned(
                554,
                Some(EnhancedCode::new(5, 7, 1)),
                format!("<{}>: Relay access denied", printable(&to.address)),
            ));
        }
        if !tx.recipients.is_empty() && tx.report != report {
            return Ok(reply::REPORT_ALONE);
        }
        tx.report = report;
        if tx.recipients.len() >= max {
            // RFC 5321 4.5.3.1.10: a temporary reply the client is expected to handle;
            // it does not count as a client error.
            return Ok(reply::TOO_MANY_RECIPIENTS);
        }
        if !report
            && let Some(list) = &self.shared.refuse_listed
            && let Some(reason) = list.check_local(None, &to.address)
        {
            tracing::info!(peer = %self.peer, rcpt = %printable(&to.address), reason = reason.as_str(), "suppressed recipient refused");
            return Err(Reply::owned(
                550,
                Some(EnhancedCode::new(5, 7, 1)),
                format!(
                    "<{}>: recipient is on the suppression list ({})",
                    printable(&to.address),
                    reason.as_str()
                ),
            ));
        }
        let duplicate = tx
            .recipients
            .iter()
            .any(|r| r.address.eq_ignore_ascii_case(&to.address));
        if !duplicate {
            tx.recipients.push(Recipient {
                address: to.address.into_owned(),
                notify: Notify {
                    success: to.flags & smtp_proto::RCPT_NOTIFY_SUCCESS != 0,
                    failure: to.flags & smtp_proto::RCPT_NOTIFY_FAILURE != 0,
                    delay: to.flags & smtp_proto::RCPT_NOTIFY_DELAY != 0,
                    // The listener may send none at all.
                    never: to.flags & smtp_proto::RCPT_NOTIFY_NEVER != 0 || !self.listener.dsn,
                },
                orcpt: to.orcpt.map(|o| o.into_owned()),
                attempts: 0,
            });
        }
        Ok(reply::RECIPIENT_OK)
    }
}
