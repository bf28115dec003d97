//! The configuration: one TOML file, every key optional, environment overrides.
//!
//! Every key is documented in `postroad.example.toml` at the repository root; a test
//! loads that file and checks that it names every key this module knows.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use postroad_history::HistoryConfig;
use postroad_queue::SpoolConfig;
use postroad_queue::kafka::KafkaConfig;
use postroad_relay::RelayConfig;
use serde::{Deserialize, Serialize};

/// A `Duration` written as whole seconds in the config file (`*_secs` keys).
type Secs = serde_with::As<serde_with::DurationSeconds<u64>>;

mod smtp;

pub use smtp::{AuthConfig, ListenerConfig, Role, SmtpConfig, TlsConfig, TlsMode, UserConfig};

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
    /// `[tracking]`: open and click tracking, one-click unsubscribe.
    pub tracking: postroad_api::TrackingConfig,
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
            tracking: Default::default(),
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
        self.tracking.validate().map_err(ConfigError::Semantic)?;
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
        let text = include_str!("../../../postroad.example.toml");
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
