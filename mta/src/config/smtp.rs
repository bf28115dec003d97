//! The SMTP side's sections: `[smtp]` (limits and policy of the server), `[tls]`,
//! `[auth]` and the `[[listener]]`s.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{ConfigError, Secs};

/// Limits and policy of the SMTP server, shared by all listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Largest message accepted, in bytes (advertised as `SIZE`).
    pub max_message_size: usize,
    /// Recipients per message; more get `452 4.5.3`.
    pub max_recipients: usize,
    /// Longest command line in bytes, CRLF included; longer gets `500 5.5.2`.
    pub max_line_length: usize,
    /// Client errors per session before `421 4.7.0` and disconnect.
    pub max_errors: u32,
    /// Commands without a MAIL before `421 4.7.0` and disconnect.
    pub max_commands_without_mail: u32,
    /// How long a client has to send its next complete command line
    /// (`idle_timeout_secs`; RFC 5321 4.5.3.2.7: 5 minutes). A deadline for the whole
    /// line: trickling it in does not extend it.
    #[serde(rename = "idle_timeout_secs", with = "Secs")]
    pub idle_timeout: Duration,
    /// The wait for each block of message data (`data_timeout_secs`; RFC 5321
    /// 4.5.3.2.6: 3 minutes).
    #[serde(rename = "data_timeout_secs", with = "Secs")]
    pub data_timeout: Duration,
    /// How long a client has for one whole message transfer (`data_deadline_secs`:
    /// DATA up to the final dot, or every BDAT chunk of a message), however the data
    /// trickles in.
    #[serde(rename = "data_deadline_secs", with = "Secs")]
    pub data_deadline: Duration,
    /// How long a client has to take our replies (`write_timeout_secs`); one that
    /// pipelines and never reads is disconnected.
    #[serde(rename = "write_timeout_secs", with = "Secs")]
    pub write_timeout: Duration,
    /// Time allowed for a TLS handshake (`tls_handshake_timeout_secs`).
    #[serde(rename = "tls_handshake_timeout_secs", with = "Secs")]
    pub tls_handshake_timeout: Duration,
    /// Share of `max_connections`, in percent, at which the server is under stress:
    /// then every command, data, write and TLS wait is cut to `stress_timeout_secs`
    /// (Postfix's stress mode), so idle and slow clients make room. 0 turns it off.
    pub stress_threshold_percent: u8,
    /// The longest wait while under stress (`stress_timeout_secs`).
    #[serde(rename = "stress_timeout_secs", with = "Secs")]
    pub stress_timeout: Duration,
    /// Bytes of message data held in memory by all sessions together (DATA/BDAT being
    /// received and messages waiting to be queued). Past it, a new transfer waits for
    /// room before its `354`, a growing one waits with its socket unread, and one that
    /// waits longer than `data_timeout_secs` gets `452 4.3.1`. 0 (the default) means a
    /// quarter of the memory available (the cgroup limit, if any), and at least twice
    /// `max_message_size`.
    pub max_inflight_bytes: u64,
    /// Open SMTP connections, over all listeners.
    pub max_connections: usize,
    /// Open SMTP connections from one client IP address.
    pub max_connections_per_ip: usize,
    /// Client networks allowed to relay without authentication on `relay` listeners.
    pub relay_networks: Vec<IpNet>,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 1000,
            max_line_length: 2048,
            max_errors: 10,
            max_commands_without_mail: 50,
            idle_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            data_deadline: Duration::from_secs(600),
            write_timeout: Duration::from_secs(120),
            tls_handshake_timeout: Duration::from_secs(30),
            stress_threshold_percent: 80,
            stress_timeout: Duration::from_secs(10),
            max_inflight_bytes: 0,
            max_connections: 2000,
            max_connections_per_ip: 100,
            relay_networks: vec![
                "127.0.0.0/8".parse().expect("valid CIDR"),
                "::1/128".parse().expect("valid CIDR"),
            ],
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain. Without cert and key, a self-signed pair is generated
    /// under `<data_dir>/tls/` at first start.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// SMTP AUTH accounts. Passwords are argon2 hashes (`postroad passwd`).
    pub users: Vec<UserConfig>,
    /// Delays and bans for failed AUTH (`[auth.throttle]`).
    pub throttle: crate::auth::throttle::ThrottleConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub username: String,
    pub password_hash: String,
}

/// What a listener is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Port 25 style: relays for `relay_networks` or authenticated clients.
    Relay,
    /// Port 587/465 style: AUTH is required before MAIL.
    Submission,
}

/// How a listener uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain text; STARTTLS offered.
    Starttls,
    /// TLS from the first byte (port 465, RFC 8314).
    Implicit,
    /// Plain text only; no STARTTLS, so no AUTH either.
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    pub role: Role,
    pub tls: TlsMode,
    /// Send delivery status notifications (RFC 3464) to the sender of mail taken here
    /// when it bounces or expires (and when `NOTIFY=SUCCESS` asks, when it is
    /// delivered). Off: never, whatever the client asked.
    #[serde(default = "yes")]
    pub dsn: bool,
}

fn yes() -> bool {
    true
}

impl SmtpConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_line_length < 512 {
            return Err(ConfigError::Semantic(
                "smtp.max_line_length must be at least 512 (RFC 5321 4.5.3.1.4)".into(),
            ));
        }
        for (key, value) in [
            ("smtp.max_message_size", self.max_message_size),
            ("smtp.max_recipients", self.max_recipients),
            ("smtp.max_connections", self.max_connections),
            ("smtp.max_connections_per_ip", self.max_connections_per_ip),
        ] {
            if value == 0 {
                return Err(ConfigError::Semantic(format!("{key} must be above 0")));
            }
        }
        for (key, value) in [
            ("smtp.idle_timeout_secs", self.idle_timeout),
            ("smtp.data_timeout_secs", self.data_timeout),
            ("smtp.data_deadline_secs", self.data_deadline),
            ("smtp.write_timeout_secs", self.write_timeout),
            ("smtp.stress_timeout_secs", self.stress_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Semantic(format!("{key} must be above 0")));
            }
        }
        if self.stress_threshold_percent > 100 {
            return Err(ConfigError::Semantic(
                "smtp.stress_threshold_percent must be 0 to 100".into(),
            ));
        }
        let least = crate::smtp::budget::least_budget(self.max_message_size);
        if self.max_inflight_bytes != 0 && self.max_inflight_bytes < least {
            return Err(ConfigError::Semantic(format!(
                "smtp.max_inflight_bytes ({}) must hold at least one largest message: \
                 smtp.max_message_size + 64 KiB = {least}",
                self.max_inflight_bytes
            )));
        }
        Ok(())
    }

    /// `max_inflight_bytes`, with 0 meaning the default from the memory available.
    pub fn inflight_budget(&self) -> u64 {
        match self.max_inflight_bytes {
            0 => crate::smtp::budget::default_budget(self.max_message_size),
            set => set,
        }
    }
}
