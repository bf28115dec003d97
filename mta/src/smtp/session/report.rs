//! Mail for the bounce domains: bounce and complaint reports, read into events of the
//! messages they are about, and mail to `List-Unsubscribe`'s `mailto:` address, which
//! unsubscribes the recipient its subject's token names. Either is acknowledged only
//! once what it says is recorded durably; otherwise the sender is told to try again.

use postroad_api::tracking::unsubscribe::MailOutcome;
use postroad_queue::MessageId;

use super::{Flow, Session, Transaction};
use crate::smtp::command::printable;
use crate::smtp::reply::{self, EnhancedCode, Reply};

impl Session {
    /// Reads a report, or an unsubscribe request, and answers 250 once it is recorded.
    pub(super) async fn take_report(
        &mut self,
        tx: Transaction,
        id: MessageId,
        message: Vec<u8>,
    ) -> Flow {
        let from = printable(&tx.sender).to_string();
        let (unsubscribe, reports): (Vec<String>, Vec<String>) = tx
            .recipients
            .into_iter()
            .map(|r| r.address)
            .partition(|to| {
                self.shared
                    .unsubscribe
                    .as_ref()
                    .is_some_and(|u| u.accepts(to))
            });
        let mut said = Vec::new();
        if !unsubscribe.is_empty()
            && let Some(unsubscribes) = self.shared.unsubscribe.clone()
        {
            match unsubscribes.receive(&message).await {
                Ok(MailOutcome::Unsubscribed(who)) => {
                    tracing::info!(%id, %from, client = %self.peer.ip(), recipient = %who, "unsubscribed by mail");
                    said.push(format!("{} is unsubscribed", printable(&who)));
                }
                Ok(MailOutcome::NoToken) => {
                    tracing::info!(%id, %from, client = %self.peer.ip(), "unsubscribe mail without a token of ours");
                    if reports.is_empty() {
                        self.send(&reply::NO_UNSUBSCRIBE_TOKEN);
                        return Ok(());
                    }
                }
                Err(e) => {
                    tracing::warn!(%id, client = %self.peer.ip(), "unsubscribe not recorded: {e}");
                    self.send(&reply::REPORT_NOT_RECORDED);
                    return Ok(());
                }
            }
        }
        if !reports.is_empty() {
            let Some(intake) = self.shared.reports.clone() else {
                self.send(&reply::REPORT_NOT_RECORDED);
                return Ok(());
            };
            match intake.receive(&reports, &message).await {
                Ok(got) => {
                    tracing::info!(%id, %from, client = %self.peer.ip(), recorded = got.recorded, unverified = got.unverified, ignored = got.ignored, "report received");
                    said.push(format!(
                        "report {id} read, {} events recorded",
                        got.recorded
                    ));
                }
                Err(e) => {
                    tracing::warn!(%id, client = %self.peer.ip(), "report not taken: {e}");
                    self.send(&reply::REPORT_NOT_RECORDED);
                    return Ok(());
                }
            }
        }
        self.send(&Reply::owned(
            250,
            Some(EnhancedCode::new(2, 0, 0)),
            format!("Ok: {}", said.join("; ")),
        ));
        Ok(())
    }
}
