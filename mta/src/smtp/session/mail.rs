//! MAIL FROM: opening a transaction, with its ESMTP parameters (SIZE, BODY, SMTPUTF8,
//! DSN's RET and ENVID) and the submission listener's AUTH requirement.

use postroad_queue::DsnRet;
use smtp_proto::MailFrom;

use super::{Session, Transaction};
use crate::config::Role;
use crate::smtp::reply::{self, Reply};

/// MAIL parameters Postroad does not advertise; a client that sends them gets `555`.
const UNADVERTISED_MAIL_FLAGS: u64 = smtp_proto::MAIL_BODY_BINARYMIME
    | smtp_proto::MAIL_REQUIRETLS
    | smtp_proto::MAIL_CONPERM
    | smtp_proto::MAIL_BY_NOTIFY
    | smtp_proto::MAIL_BY_RETURN
    | smtp_proto::MAIL_BY_TRACE;

impl Session {
    pub(super) fn mail(
        &mut self,
        from: MailFrom<std::borrow::Cow<'_, str>>,
    ) -> Result<Reply, Reply> {
        if self.helo.is_none() {
            return Err(reply::NEED_HELO);
        }
        if self.tx.is_some() {
            return Err(reply::NESTED_MAIL);
        }
        if self.listener.role == Role::Submission && self.auth_identity.is_none() {
            return Err(reply::AUTH_REQUIRED);
        }
        if from.flags & UNADVERTISED_MAIL_FLAGS != 0
            || from.hold_for != 0
            || from.hold_until != 0
            || from.mtrk.is_some()
            || from.trans_id.is_some()
            || from.solicit.is_some()
            || from.mt_priority != 0
            || from.by != 0
        {
            return Err(Reply::new(
                555,
                "5.5.4",
                "Error: unsupported MAIL parameter",
            ));
        }
        let smtputf8 = from.flags & smtp_proto::MAIL_SMTPUTF8 != 0;
        if !smtputf8 && !from.address.is_ascii() {
            return Err(reply::NEEDS_SMTPUTF8);
        }
        if from.size > self.shared.smtp.max_message_size {
            return Err(reply::TOO_BIG);
        }
        let dsn_ret = if from.flags & smtp_proto::MAIL_RET_FULL != 0 {
            Some(DsnRet::Full)
        } else if from.flags & smtp_proto::MAIL_RET_HDRS != 0 {
            Some(DsnRet::Headers)
        } else {
            None
        };
        self.tx = Some(Transaction {
            sender: from.address.into_owned(),
            body_8bit: from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0,
            smtputf8,
            dsn_ret,
            dsn_envid: from.env_id.map(|e| e.into_owned()),
            declared_size: from.size,
            recipients: Vec::new(),
            report: false,
            chunks: None,
        });
        self.commands_without_mail = 0;
        Ok(reply::SENDER_OK)
    }
}
