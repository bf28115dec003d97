//! A test API: the real listener on a free port in front of a real spool, and a client
//! that shows what a user of the API sees.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use postroad_api::{Api, ApiConfig, AppStore, Deps, MessageLimits, RedisLink};
use postroad_queue::{MessageId, Queue, Spool, SpoolConfig};
use postroad_webhooks::customer::{CustomerHooks, DeliveryConfig};
use postroad_webhooks::suppression::Suppressions;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub struct TestApi {
    pub addr: SocketAddr,
    pub key: String,
    pub store: AppStore,
    pub spool: Spool,
    pub suppressions: Arc<Suppressions>,
    pub runtime: tokio::runtime::Runtime,
    stop: CancellationToken,
    _dir: Arc<tempfile::TempDir>,
}

/// What a test API runs with beside its config.
#[derive(Default)]
pub struct Setup {
    /// `[redis] url`.
    pub redis: Option<String>,
    /// Another test API whose data directory (API keys, templates) this one shares,
    /// as two nodes share a database.
    pub beside: Option<(Arc<tempfile::TempDir>, String)>,
    pub tenant: Option<String>,
    /// `[tracking]` (with a base URL), as the server's would be.
    pub tracking: Option<Arc<postroad_api::Tracking>>,
}

impl TestApi {
    pub fn start(tune: impl FnOnce(&mut ApiConfig)) -> Self {
        Self::start_with(Setup::default(), tune)
    }

    pub fn start_with(setup: Setup, tune: impl FnOnce(&mut ApiConfig)) -> Self {
        let tracking = setup.tracking.clone();
        let (dir, shared_key) = match setup.beside {
            Some((dir, key)) => (dir, Some(key)),
            None => (Arc::new(tempfile::tempdir().unwrap()), None),
        };
        let spool_dir = tempfile::tempdir_in(dir.path()).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut config = ApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ApiConfig::default()
        };
        tune(&mut config);
        let spool = Spool::open(SpoolConfig::new(spool_dir.keep())).unwrap();
        let redis = setup.redis.map(|url| RedisLink::new(&url).unwrap());
        let (api, store, key, suppressions) = runtime.block_on(async {
            let store = AppStore::open_in(dir.path()).await.unwrap();
            let key = match shared_key {
                Some(key) => key,
                None => {
                    let tenant = setup.tenant.as_deref();
                    store.create_key("test", tenant).await.unwrap().0
                }
            };
            let suppressions =
                Suppressions::load(Arc::new(store.clone()), redis.clone(), Default::default())
                    .await
                    .unwrap();
            let deps = Deps {
                hostname: "mx.postroad.test".into(),
                campaign_owner: "api-tests".into(),
                limits: MessageLimits {
                    max_message_size: 64 * 1024,
                    max_recipients: 5,
                },
                queue: Arc::new(spool.clone()),
                store: store.clone(),
                relay_waker: None,
                redis,
                history: None,
                alerts: None,
                provider_hooks: None,
                reports: None,
                suppressions: Some(suppressions.clone()),
                webhooks: Some(
                    CustomerHooks::load(Arc::new(store.clone()), DeliveryConfig::default())
                        .await
                        .unwrap(),
                ),
                tracking,
                tls: None,
            };
            (
                Api::bind(config, deps).await.unwrap(),
                store,
                key,
                suppressions,
            )
        });
        let addr = api.local_addr().unwrap();
        let stop = CancellationToken::new();
        runtime.spawn(api.run(stop.clone()));
        Self {
            addr,
            key,
            store,
            spool,
            suppressions,
            runtime,
            stop,
            _dir: dir,
        }
    }

    /// The data directory and key, for [`Setup::beside`].
    pub fn share(&self) -> (Arc<tempfile::TempDir>, String) {
        (self._dir.clone(), self.key.clone())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A request with the test key; `(status, content type, body)`.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.call_as(Some(&self.key), method, path, body, headers)
    }

    pub fn call_as(
        &self,
        key: Option<&str>,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .build()
            .into();
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(self.url(path));
        if let Some(key) = key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let (content_type, bytes) = body.unwrap_or(("application/json", Vec::new()));
        let request = request
            .header("Content-Type", content_type)
            .body(bytes)
            .unwrap();
        let mut response = agent.run(request).unwrap();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let content_type = header("content-type").unwrap_or_default();
        let retry_after = header("retry-after");
        let replayed = header("idempotent-replayed").is_some();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            content_type,
            retry_after,
            replayed,
            json,
        }
    }

    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.call(
            "POST",
            path,
            Some(("application/json", body.to_string().into_bytes())),
            &[],
        )
    }

    pub fn queued(&self, id: &str) -> (postroad_queue::Envelope, Vec<u8>) {
        let id: MessageId = id.parse().unwrap();
        let (envelope, body) = self
            .runtime
            .block_on(self.spool.get(id))
            .unwrap()
            .expect("queued");
        (envelope, body.to_vec())
    }

    pub fn queue_len(&self) -> u64 {
        self.runtime.block_on(self.spool.stats()).unwrap().queued
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub retry_after: Option<String>,
    pub replayed: bool,
    pub json: Value,
}

impl Reply {
    /// `(pointer, code)` of every field error.
    pub fn errors(&self) -> Vec<(String, String)> {
        self.json["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| {
                        (
                            e["pointer"].as_str().unwrap().to_string(),
                            e["code"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn is_problem(&self, status: u16, kind: &str) -> bool {
        self.status == status
            && self.content_type == "application/problem+json"
            && self.json["type"] == format!("urn:postroad:problem:{kind}")
            && self.json["status"] == status
    }
}
