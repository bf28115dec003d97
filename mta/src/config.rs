//! The configuration: one TOML file, every key optional, environment overrides.
//!
//! Every key is documented in `postroad.example.toml` at the repository root; a test
//! loads that file and checks that it names every key this module knows.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use ipnet::IpNet;
use postroad_history::HistoryConfig;
use postroad_queue::SpoolConfig;
use postroad_queue::kafka::KafkaConfig;
use postroad_relay::RelayConfig;
use serde::{Deserialize, Serialize};

/// A `Duration` written as whole seconds in the config file (`*_secs` keys).
type Secs = serde_with::As<serde_with::DurationSeconds<u64>>;

/// Prefix of environment variables that override config keys; `__` separates path
/// segments: `POSTROAD__SMTP__MAX_RECIPIENTS=50`, `POSTROAD__AUTH__USERS='[{...}]'`.
pub const ENV_PREFIX: &str = "POSTROAD__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Semantic(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub queue: QueueConfig,
    pub spool: SpoolConfig,
    pub kafka: KafkaConfig,
    pub smtp: SmtpConfig,
    pub relay: RelayConfig,
    pub history: HistoryConfig,
    pub influx: crate::analytics::influx::InfluxConfig,
    pub alerts: crate::analytics::alerts::AlertsConfig,
    pub admin: crate::admin::AdminConfig,
    /// `[http]`: the HTTP submission API.
    pub http: postroad_api::ApiConfig,
    pub redis: RedisConfig,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// `[[dkim]]`: keys that sign outgoing mail, per sender domain.
    pub dkim: Vec<postroad_dkim::KeyConfig>,
    /// `[bounces]`: return-path domains (VERP out, reports in).
    pub bounces: crate::bounces::BouncesConfig,
    /// `[webhooks]`: provider event webhooks (SES by way of SNS, SendGrid).
    pub webhooks: postroad_webhooks::WebhooksConfig,
    /// `[suppression]`: addresses mail is not sent to.
    pub suppression: postroad_webhooks::suppression::SuppressionConfig,
    /// `[log]`: how `serve` logs.
    pub log: LogConfig,
}

/// `[log]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// One line per event: for people (`text`), or one JSON object each (`json`), with the
/// event's fields (the message `id` where there is one) at the top level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[redis]`: optional. With a URL, templates are cached in Redis for every node (and
/// changes announced on its pub/sub), user preferences are its hashes, and each site's
/// `max_message_rate` holds for every relay process together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port/db`; empty: no Redis.
    pub url: String,
}

impl RedisConfig {
    /// The link, when a URL is set (it connects on first use).
    pub fn link(&self) -> Result<Option<postroad_api::RedisLink>, String> {
        if self.url.is_empty() {
            return Ok(None);
        }
        postroad_api::RedisLink::new(&self.url)
            .map(Some)
            .map_err(|e| format!("redis.url: {e}"))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Name used in the greeting, EHLO reply and `Received:` headers.
    pub hostname: String,
    /// Where the spool and generated TLS material live.
    pub data_dir: PathBuf,
    /// How long each part may take to finish after SIGTERM (`shutdown_grace_secs`).
    #[serde(rename = "shutdown_grace_secs", with = "Secs")]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            hostname: gethostname::gethostname().to_string_lossy().into_owned(),
            data_dir: PathBuf::from("./postroad-data"),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// `[queue]`: which backend holds the mail between ingress and relay.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// `spool` (default): the embedded on-disk spool (`[spool]`), one process does
    /// everything. `kafka`: Kafka topics (`[kafka]`), shared by any number of ingress
    /// and relay processes.
    pub backend: Backend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Spool,
    Kafka,
}

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

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            queue: QueueConfig::default(),
            spool: SpoolConfig::default(),
            kafka: KafkaConfig::default(),
            smtp: SmtpConfig::default(),
            relay: RelayConfig::default(),
            history: HistoryConfig::default(),
            influx: Default::default(),
            alerts: Default::default(),
            admin: crate::admin::AdminConfig::default(),
            http: postroad_api::ApiConfig::default(),
            redis: RedisConfig::default(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            listeners: default_listeners(),
            dkim: Vec::new(),
            bounces: Default::default(),
            webhooks: Default::default(),
            suppression: Default::default(),
            log: Default::default(),
        }
    }
}

fn default_listeners() -> Vec<ListenerConfig> {
    let listener = |name: &str, port: u16, role, tls| ListenerConfig {
        name: name.to_string(),
        address: SocketAddr::from(([127, 0, 0, 1], port)),
        role,
        tls,
        dsn: true,
    };
    vec![
        listener("relay", 2525, Role::Relay, TlsMode::Starttls),
        listener("submission", 5870, Role::Submission, TlsMode::Starttls),
        listener("submissions", 4650, Role::Submission, TlsMode::Implicit),
    ]
}

impl Config {
    /// Loads the defaults, then `path` (if given), then `POSTROAD__*` environment
    /// overrides, and checks the result.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::Missing(path.to_path_buf()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
        let mut config: Config = figment.extract().map_err(Box::new)?;
        config.finish()?;
        Ok(config)
    }

    /// Parses a TOML document (no environment overrides); used by tests and `check`.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let mut config: Config = Figment::new()
            .merge(Toml::string(text))
            .extract()
            .map_err(Box::new)?;
        config.finish()?;
        Ok(config)
    }

    /// Fills derived values and rejects contradictions.
    fn finish(&mut self) -> Result<(), ConfigError> {
        if self.spool.dir.as_os_str().is_empty() {
            self.spool.dir = self.server.data_dir.join("spool");
        }
        if self.server.hostname.trim().is_empty() {
            return Err(ConfigError::Semantic("server.hostname is empty".into()));
        }
        if self.listeners.is_empty() {
            return Err(ConfigError::Semantic("no [[listener]] configured".into()));
        }
        let mut names = std::collections::HashSet::new();
        for l in &self.listeners {
            if !names.insert(&l.name) {
                return Err(ConfigError::Semantic(format!(
                    "listener name {:?} is used twice",
                    l.name
                )));
            }
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(ConfigError::Semantic(
                "tls.cert_file and tls.key_file must be given together".into(),
            ));
        }
        self.relay.validate().map_err(ConfigError::Semantic)?;
        if self.queue.backend == Backend::Kafka {
            self.kafka.validate().map_err(ConfigError::Semantic)?;
            if self.kafka.instance_id.is_empty() {
                self.kafka.instance_id = self.server.hostname.clone();
            }
        }
        self.admin.validate().map_err(ConfigError::Semantic)?;
        self.http.validate().map_err(ConfigError::Semantic)?;
        self.redis.link().map_err(ConfigError::Semantic)?;
        self.influx.validate().map_err(ConfigError::Semantic)?;
        self.alerts.validate().map_err(ConfigError::Semantic)?;
        self.bounces.validate().map_err(ConfigError::Semantic)?;
        self.webhooks.validate().map_err(ConfigError::Semantic)?;
        self.suppression.validate().map_err(ConfigError::Semantic)?;
        self.history
            .validate()
            .map_err(|e| ConfigError::Semantic(e.to_string()))?;
        self.auth
            .throttle
            .validate()
            .map_err(ConfigError::Semantic)?;
        self.smtp.validate()?;
        Ok(())
    }

    /// Overrides the data directory (the `--data-dir` flag), keeping derived paths right.
    pub fn set_data_dir(&mut self, dir: PathBuf) {
        if self.spool.dir == self.server.data_dir.join("spool") {
            self.spool.dir = dir.join("spool");
        }
        self.server.data_dir = dir;
    }
}

impl SmtpConfig {
    fn validate(&self) -> Result<(), ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_listen_on_loopback_with_three_roles() {
        let c = Config::load(None).unwrap();
        let ports: Vec<u16> = c.listeners.iter().map(|l| l.address.port()).collect();
        assert_eq!(ports, [2525, 5870, 4650]);
        assert!(c.listeners.iter().all(|l| l.address.ip().is_loopback()));
        assert_eq!(c.spool.dir, PathBuf::from("./postroad-data/spool"));
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = Config::from_toml("[smtp]\nmax_recipient = 5\n").unwrap_err();
        assert!(err.to_string().contains("max_recipient"), "{err}");
    }

    #[test]
    fn timeouts_are_read_as_whole_seconds() {
        let c = Config::from_toml(
            "[server]\nshutdown_grace_secs = 5\n[smtp]\nidle_timeout_secs = 7\n\
             [relay]\ncommand_timeout_secs = 9\n",
        )
        .unwrap();
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(5));
        assert_eq!(c.smtp.idle_timeout, Duration::from_secs(7));
        assert_eq!(c.relay.command_timeout, Duration::from_secs(9));
        for bad in [
            "[smtp]\nidle_timeout_secs = -1\n",
            "[smtp]\nidle_timeout_secs = 1.5\n",
            "[smtp]\nidle_timeout_secs = \"5m\"\n",
            "[smtp]\nidle_timeout_secs = 0\n",
        ] {
            let err = Config::from_toml(bad).unwrap_err();
            assert!(
                err.to_string().contains("idle_timeout_secs"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn cert_without_key_is_rejected() {
        let err = Config::from_toml("[tls]\ncert_file = \"/x.pem\"\n").unwrap_err();
        assert!(err.to_string().contains("together"), "{err}");
    }

    /// Every key Postroad knows must be in the example file, which must load.
    #[test]
    fn example_file_loads_and_names_every_key() {
        let text = include_str!("../../postroad.example.toml");
        let config = Config::from_toml(text).unwrap();
        crate::auth::Credentials::new(&config.auth.users)
            .expect("example password_hash must be valid");
        let example: toml::Value = toml::from_str(text).unwrap();
        // The defaults leave optional keys and lists empty; fill them so they are checked.
        let mut full = Config::default();
        full.tls.cert_file = Some("/c".into());
        full.tls.key_file = Some("/k".into());
        full.relay.smarthost = Some("smtp.example.net:587".into());
        full.admin.token = "t".repeat(32);
        full.http.default_from = "noreply@example.com".into();
        full.http.ses_keys.push(postroad_api::SesKey {
            access_key_id: "AKIA".into(),
            secret_access_key: String::new(),
            secret_access_key_file: Some("/s".into()),
            region: Some("us-east-1".into()),
            tenant: Some("t".into()),
        });
        full.kafka.instance_id = "relay-1".into();
        full.kafka
            .client
            .insert("socket.keepalive.enable".into(), "true".into());
        full.relay.tls_ca_file = Some("/ca.pem".into());
        full.relay.shaping_file = Some("/shaping.toml".into());
        full.relay.routes.insert(
            "example.org".into(),
            postroad_relay::RouteConfig {
                host: "mx.example.org:25".into(),
                tls: Some(postroad_relay::TlsPolicy::Required),
            },
        );
        full.relay
            .nameservers
            .push("127.0.0.1:5353".parse().unwrap());
        let mut ses = postroad_relay::ProviderConfig::new(postroad_relay::ProviderKind::Ses);
        for key in [
            &mut ses.endpoint,
            &mut ses.region,
            &mut ses.access_key_id,
            &mut ses.secret_access_key,
            &mut ses.session_token,
            &mut ses.configuration_set,
        ] {
            *key = Some("x".into());
        }
        ses.max_message_rate = Some(postroad_relay::shaping::Rate::parse("14/s").unwrap());
        let mut sendgrid =
            postroad_relay::ProviderConfig::new(postroad_relay::ProviderKind::Sendgrid);
        sendgrid.endpoint = Some("x".into());
        sendgrid.api_key = Some("x".into());
        sendgrid.max_message_rate = ses.max_message_rate;
        full.relay.providers.insert("ses".into(), ses);
        full.relay.providers.insert("sendgrid".into(), sendgrid);
        full.relay
            .routing
            .push(postroad_relay::provider::routing::RoutingRule {
                domains: vec!["x".into()],
                tenants: vec!["x".into()],
                email_types: vec!["x".into()],
                via: vec!["ses".into()],
                weights: vec![1],
            });
        full.auth.users.push(UserConfig {
            username: "u".into(),
            password_hash: "h".into(),
        });
        full.dkim.push(postroad_dkim::KeyConfig {
            domain: "example.com".into(),
            selector: "s1".into(),
            key_file: "/k.pem".into(),
            headers: None,
            expire_secs: 0,
        });
        let full = toml::Value::try_from(full).unwrap();
        let mut missing = Vec::new();
        missing_keys(&full, &example, "", &mut missing);
        assert!(
            missing.is_empty(),
            "keys missing from postroad.example.toml: {missing:?}"
        );
    }

    fn missing_keys(
        known: &toml::Value,
        example: &toml::Value,
        path: &str,
        missing: &mut Vec<String>,
    ) {
        match (known, example) {
            (toml::Value::Table(known), toml::Value::Table(example)) => {
                for (key, value) in known {
                    let path = format!("{path}.{key}");
                    match example.get(key) {
                        Some(found) => missing_keys(value, found, &path, missing),
                        None => missing.push(path),
                    }
                }
            }
            // Arrays of tables ([[listener]], [[auth.users]]) must show every key of
            // their entries; a list of plain values only needs to be there.
            (toml::Value::Array(known), toml::Value::Array(example)) => {
                if let Some(k @ toml::Value::Table(_)) = known.first() {
                    match example.first() {
                        Some(e) => missing_keys(k, e, path, missing),
                        None => missing.push(format!("{path}[]")),
                    }
                }
            }
            _ => {}
        }
    }

    #[test]
    fn kafka_backend_is_checked_and_gets_an_instance_id() {
        let c =
            Config::from_toml("[server]\nhostname = \"relay-7\"\n[queue]\nbackend = \"kafka\"\n")
                .unwrap();
        assert_eq!(c.queue.backend, Backend::Kafka);
        assert_eq!(c.kafka.instance_id, "relay-7");
        let err = Config::from_toml("[queue]\nbackend = \"kafka\"\n[kafka]\nbrokers = \"\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("kafka.brokers"), "{err}");
        let err = Config::from_toml("[queue]\nbackend = \"rabbit\"\n").unwrap_err();
        assert!(err.to_string().contains("rabbit"), "{err}");
    }

    #[test]
    fn data_dir_override_moves_the_spool() {
        let mut c = Config::from_toml("").unwrap();
        c.set_data_dir(PathBuf::from("/var/lib/postroad"));
        assert_eq!(c.spool.dir, PathBuf::from("/var/lib/postroad/spool"));
    }
}
