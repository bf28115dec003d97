//! Postroad's HTTP API: apps that do not speak SMTP submit mail here.
//!
//! - `POST /v1/messages`: one message in the template form (the design's
//!   `{"userId", "emailType", "recipient", "templateData", "priority"}`), the explicit
//!   form (from, to/cc/bcc, subject, text, html, attachments) or the raw form (base64
//!   MIME, or a `message/rfc822` body). `202` only once the queue has made it durable.
//! - `POST /v1/messages/batch`: up to `http.max_batch` messages, one durable write.
//! - `Idempotency-Key` on both: retries get the first answer, nothing is queued twice.
//! - `/v1/templates`: versioned templates per email type, rendered with `minijinja`.
//! - `GET /v1/history`, `GET /v1/messages/{id}`: delivery history, through the
//!   [`history::HistoryReader`] the running process provides.
//! - `/v1/suppressions`: the tenant's suppression list (list, look up, add, remove);
//!   submissions say which recipients it holds back.
//! - `/v1/webhooks`: the tenant's endpoints for its events, their dead letters.
//! - `GET /v1/alerts`: the alert rules' states, through the [`alerts::AlertSource`]
//!   the running process provides.
//! - `/v1/openapi.json`: the OpenAPI 3.1 document.
//!
//! Bearer API keys (`postroad api-key create`), RFC 9457 problem documents for every
//! error, and limits on body size, body time and requests in progress.

pub mod alerts;
mod auth;
mod body;
pub mod campaigns;
pub mod compat;
mod config;
pub mod history;
mod idempotency;
pub mod openapi;
pub mod prefs;
pub mod problem;
mod redis_link;
pub mod render;
mod routes;
mod server;
mod state;
pub mod store;
pub mod submit;
mod template_cache;
mod tls_listener;
pub mod tracking;

pub use config::{ApiConfig, SesKey};
pub use redis_link::{RedisError, RedisLink};
pub use server::Api;
pub use state::{Deps, MessageLimits};
pub use store::{AppStore, StoreError};
pub use tracking::{Tracking, TrackingConfig};

/// The JSON message reader and builder, for the fuzz targets in `fuzz/` only: not an
/// API.
#[doc(hidden)]
pub mod fuzzing {
    use crate::auth::Caller;
    use crate::problem::FieldError;
    use crate::submit::{Context, Prepared, Refusal, forms, untemplated};

    /// Reads `json` as one message and, unless it is of the template form, prepares it
    /// as `POST /v1/messages` would (limits: 64 KiB messages, 5 recipients).
    /// `None`: not JSON, or the template form.
    pub fn message(json: &[u8]) -> Option<Result<Prepared, Vec<FieldError>>> {
        let value: serde_json::Value = serde_json::from_slice(json).ok()?;
        let caller = Caller {
            key_id: "fuzz".into(),
            tenant: None,
        };
        let ctx = Context {
            hostname: "fuzz.test",
            default_from: "",
            max_message_size: 64 * 1024,
            max_recipients: 5,
            client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
            caller: &caller,
            tracking: None,
        };
        let mut errors = Vec::new();
        let Some(parsed) = forms::parse(&value, "", &mut errors) else {
            return Some(Err(errors));
        };
        if matches!(parsed.form, forms::Form::Template(_)) {
            return None;
        }
        let meta = crate::submit::check::meta(&parsed.meta, None, "", &mut errors);
        Some(
            untemplated(parsed.form, meta, "", &ctx, errors).map_err(|refusal| match refusal {
                Refusal::Fields(errors) => errors,
                Refusal::Problem(problem) => panic!("a store problem without a store: {problem:?}"),
            }),
        )
    }

    /// Checks the SigV4 signature of a `POST /v2/email/outbound-emails` whose
    /// `Authorization`, `X-Amz-Date` and body are the three parts of `input` (split at
    /// the first two LFs), for the access key `AKIDFUZZ` with a fixed secret, at a fixed
    /// time (2015-08-30 12:36:00 UTC). `None`: the parts are not header values.
    pub fn sigv4(input: &[u8]) -> Option<Result<String, crate::compat::sigv4::SigError>> {
        use axum::http::{HeaderMap, HeaderValue, Method, Uri};
        let mut parts = input.splitn(3, |&b| b == b'\n');
        let (authorization, date) = (parts.next()?, parts.next()?);
        let body = parts.next().unwrap_or_default();
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_bytes(authorization).ok()?,
        );
        headers.insert("x-amz-date", HeaderValue::from_bytes(date).ok()?);
        headers.insert("host", HeaderValue::from_static("127.0.0.1:8080"));
        let uri = Uri::from_static("/v2/email/outbound-emails");
        let request = crate::compat::sigv4::Request {
            method: &Method::POST,
            uri: &uri,
            headers: &headers,
            body,
        };
        let secret = |id: &str| (id == "AKIDFUZZ").then_some("fuzz-secret");
        Some(
            crate::compat::sigv4::verify(&request, "ses", secret, 1_440_938_160)
                .map(|s| s.access_key_id),
        )
    }
}

/// Why the API cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid [http] configuration: {0}")]
    Config(String),
    #[error("cannot listen on {address} for the HTTP API (http.listen): {source}")]
    Bind {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("the API store: {0}")]
    Store(#[from] StoreError),
}
