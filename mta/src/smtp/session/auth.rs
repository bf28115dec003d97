//! AUTH PLAIN and LOGIN (RFC 4954), with failed attempts throttled per address and
//! username.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{End, Flow, Session};
use crate::auth::throttle::Refusal;
use crate::smtp::command::printable;
use crate::smtp::conn::Line;
use crate::smtp::reply::{self, Reply};

impl Session {
    pub(super) fn auth_offered(&self) -> bool {
        self.conn.is_tls() && !self.shared.credentials.is_empty() && self.auth_identity.is_none()
    }

    pub(super) async fn auth(&mut self, mechanism: u64, initial: &str) -> Flow {
        let refusal = if self.auth_identity.is_some() {
            Some(reply::AUTH_ALREADY)
        } else if self.helo.is_none() {
            Some(reply::NEED_HELO)
        } else if self.tx.is_some() {
            Some(reply::AUTH_IN_TRANSACTION)
        } else if !self.conn.is_tls() {
            Some(reply::AUTH_NEEDS_TLS)
        } else if self.shared.credentials.is_empty() {
            Some(reply::AUTH_UNAVAILABLE)
        } else {
            None
        };
        if let Some(reply) = refusal {
            return self.refuse(reply);
        }
        if self.shared.auth_throttle.banned(self.peer.ip()).is_some() {
            return self.banned();
        }
        let (username, password) = match mechanism {
            smtp_proto::AUTH_PLAIN => {
                let response = if initial.is_empty() {
                    self.challenge("").await?
                } else {
                    decode(initial)
                };
                match response.and_then(|r| parse_plain(&r)) {
                    Ok(pair) => pair,
                    Err(reply) => return self.refuse(reply),
                }
            }
            smtp_proto::AUTH_LOGIN => {
                let user = if initial.is_empty() {
                    self.challenge("VXNlcm5hbWU6").await?
                } else {
                    decode(initial)
                };
                let user = match user {
                    Ok(user) => user,
                    Err(reply) => return self.refuse(reply),
                };
                match self.challenge("UGFzc3dvcmQ6").await? {
                    Ok(password) => (
                        String::from_utf8_lossy(&user).into_owned(),
                        String::from_utf8_lossy(&password).into_owned(),
                    ),
                    Err(reply) => return self.refuse(reply),
                }
            }
            _ => return self.refuse(reply::AUTH_MECHANISM),
        };
        let attempt = match self.shared.auth_throttle.begin(self.peer.ip(), &username) {
            Ok(attempt) => attempt,
            Err(Refusal::Banned(_)) => return self.banned(),
            Err(Refusal::Busy) => return self.refuse(reply::AUTH_BUSY),
        };
        let verified = self.shared.credentials.verify(&username, &password).await;
        let delay = self.shared.auth_throttle.finish(attempt, verified);
        if verified {
            tracing::info!(peer = %self.peer, user = %printable(&username), "authenticated");
            self.auth_identity = Some(username);
            self.send(&reply::AUTH_OK);
            return Ok(());
        }
        tracing::warn!(peer = %self.peer, user = %printable(&username), delay = ?delay, "authentication failed");
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.shared.auth_throttle.banned(self.peer.ip()).is_some() {
            return self.banned();
        }
        self.refuse(reply::AUTH_FAILED)
    }

    /// The address is banned: say so and end the session.
    fn banned(&mut self) -> Flow {
        tracing::info!(peer = %self.peer, "AUTH from a banned address; closing");
        self.send(&reply::AUTH_BANNED);
        Err(End::Limit)
    }

    /// Sends a `334` challenge and decodes the client's base64 answer.
    async fn challenge(&mut self, prompt: &str) -> Result<Result<Vec<u8>, Reply>, End> {
        self.send(&Reply::owned(334, None, prompt.to_string()));
        let deadline = self.command_deadline();
        match self
            .conn
            .read_line(self.shared.smtp.max_line_length, deadline, false)
            .await
        {
            Ok(Line::Complete(line)) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\r', '\n']);
                if text == "*" {
                    Ok(Err(reply::AUTH_CANCELLED))
                } else {
                    Ok(decode(text))
                }
            }
            Ok(Line::TooLong) => Ok(Err(reply::LINE_TOO_LONG)),
            Err(interrupt) => Err(self.interrupted(interrupt)),
        }
    }
}

fn decode(text: &str) -> Result<Vec<u8>, Reply> {
    if text == "=" {
        return Ok(Vec::new());
    }
    BASE64
        .decode(text.trim())
        .map_err(|_| reply::AUTH_BAD_BASE64)
}

/// RFC 4616: `authzid NUL authcid NUL passwd`; an authzid other than the user is refused.
fn parse_plain(response: &[u8]) -> Result<(String, String), Reply> {
    let mut parts = response.split(|&b| b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reply::new(
            501,
            "5.5.2",
            "Error: malformed AUTH PLAIN response",
        ));
    };
    if !authzid.is_empty() && authzid != user {
        return Err(reply::AUTH_FAILED);
    }
    Ok((
        String::from_utf8_lossy(user).into_owned(),
        String::from_utf8_lossy(password).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_response_forms() {
        assert_eq!(
            parse_plain(b"\0app\0pw").unwrap(),
            ("app".into(), "pw".into())
        );
        assert_eq!(
            parse_plain(b"app\0app\0pw").unwrap(),
            ("app".into(), "pw".into())
        );
        assert_eq!(
            parse_plain(b"other\0app\0pw").unwrap_err(),
            reply::AUTH_FAILED
        );
        assert_eq!(parse_plain(b"app\0pw").unwrap_err().code, 501);
        assert_eq!(decode("=").unwrap(), Vec::<u8>::new());
        assert_eq!(decode("!!").unwrap_err(), reply::AUTH_BAD_BASE64);
    }
}
