//! STARTTLS (RFC 3207): offered on `starttls` listeners with a certificate, once.

use super::{End, Flow, Session};
use crate::config::TlsMode;
use crate::smtp::conn::Interrupt;
use crate::smtp::reply;

impl Session {
    pub(super) fn starttls_offered(&self) -> bool {
        self.listener.tls == TlsMode::Starttls && self.shared.tls.is_some() && !self.conn.is_tls()
    }

    pub(super) async fn starttls(&mut self) -> Flow {
        if self.conn.is_tls() {
            return self.refuse(reply::TLS_ACTIVE);
        }
        let Some(acceptor) = self.shared.tls.clone().filter(|_| self.starttls_offered()) else {
            return self.refuse(reply::TLS_UNAVAILABLE);
        };
        self.send(&reply::READY_TLS);
        if let Err(e) = self
            .conn
            .start_tls(&acceptor, self.limits_tls_timeout())
            .await
        {
            tracing::debug!(peer = %self.peer, "STARTTLS handshake failed: {e}");
            return Err(End::Interrupted(Interrupt::Closed));
        }
        // RFC 3207 4.2: forget everything learned before TLS.
        self.helo = None;
        self.esmtp = false;
        self.tx = None;
        Ok(())
    }
}
