//! The listener: routes, the key check, the concurrency limit, graceful shutdown, and
//! the background reloads (API keys) and expiry (idempotency records).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::auth::{KeyRing, RELOAD_EVERY};
use crate::compat::ses::SesKeys;
use crate::compat::{self, sendgrid, ses};
use crate::prefs::{Embedded, PrefStore};
use crate::problem::{Kind, Problem};
use crate::render::Templates;
use crate::routes::{
    alerts, campaigns, history, intake, messages, suppressions, templates, tracking, users,
    webhooks,
};
use crate::state::{AppState, Deps, Inner};
use crate::template_cache::SharedTemplates;
use crate::tls_listener::TlsListener;
use crate::{ApiConfig, ApiError};

/// How often expired idempotency records are deleted.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// A bound, ready API listener.
pub struct Api {
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: AppState,
}

impl Api {
    /// Binds `config.listen` and loads the API keys.
    pub async fn bind(config: ApiConfig, deps: Deps) -> Result<Self, ApiError> {
        config.validate().map_err(ApiError::Config)?;
        let tls = match (config.tls, &deps.tls) {
            (true, None) => {
                return Err(ApiError::Config(
                    "http.tls is on but no certificate was given".into(),
                ));
            }
            (true, Some(tls)) => Some(tls.clone()),
            (false, _) => None,
        };
        let keys = KeyRing::load(deps.store.clone()).await?;
        let ses_keys = SesKeys::load(&config)?;
        let shared = deps.redis.clone().map(SharedTemplates::new);
        let prefs = match &deps.redis {
            Some(link) => PrefStore::Redis(link.clone()),
            None => PrefStore::Embedded(Embedded::load(deps.store.clone()).await?),
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ApiError::Bind {
                address: config.listen,
                source,
            })?;
        let state = AppState(Arc::new(Inner {
            requests: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            campaign_wake: Arc::default(),
            templates: Templates::new(deps.store.clone(), shared),
            prefs,
            keys,
            ses_keys,
            deps,
            config,
        }));
        Ok(Self {
            listener,
            tls,
            state,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` is cancelled, then lets the requests in progress finish.
    pub async fn run(self, stop: CancellationToken) {
        let state = self.state;
        let upkeep = tokio::spawn(upkeep(state.clone(), stop.clone()));
        let watch = {
            let (state, stop) = (state.clone(), stop.clone());
            tokio::spawn(async move { state.templates.watch(stop).await })
        };
        let campaigns = tokio::spawn(crate::campaigns::expand::run(state.clone(), stop.clone()));
        let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
        let stopped = stop.clone().cancelled_owned();
        let served = match self.tls {
            None => {
                axum::serve(self.listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
            }
            Some(tls) => match TlsListener::new(self.listener, &tls) {
                // tap_io: axum gives ConnectInfo to any listener wrapped so.
                Ok(listener) => {
                    axum::serve(listener.tap_io(|_| {}), app)
                        .with_graceful_shutdown(stopped)
                        .await
                }
                Err(e) => Err(e),
            },
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "http api listener failed");
        }
        stop.cancel();
        let _ = upkeep.await;
        let _ = watch.await;
        let _ = campaigns.await;
    }
}

pub(crate) fn router(state: AppState) -> Router {
    let authenticated = Router::new()
        .route("/v1/messages", post(messages::send))
        .route("/v1/messages/batch", post(messages::batch))
        .route("/v1/messages/{id}", get(history::message))
        .route("/v1/history", get(history::list))
        .route("/v1/alerts", get(alerts::list))
        .route("/v1/inbound", post(intake::inbound))
        .route(
            "/v1/suppressions",
            get(suppressions::list).post(suppressions::add),
        )
        .route(
            "/v1/suppressions/{address}",
            get(suppressions::get).delete(suppressions::delete),
        )
        .route("/v1/webhooks", get(webhooks::list).post(webhooks::register))
        .route(
            "/v1/webhooks/{id}",
            get(webhooks::get).delete(webhooks::delete),
        )
        .route(
            "/v1/webhooks/{id}/dead-letters",
            get(webhooks::dead_letters),
        )
        .route(
            "/v1/webhooks/{id}/dead-letters/redrive",
            post(webhooks::redrive),
        )
        .route("/v1/lists", post(campaigns::upload_list))
        .route("/v1/lists/{id}", get(campaigns::get_list))
        .route(
            "/v1/campaigns",
            get(campaigns::list).post(campaigns::create),
        )
        .route("/v1/campaigns/{id}", get(campaigns::get))
        .route("/v1/campaigns/{id}/variants", get(campaigns::variants))
        .route("/v1/campaigns/{id}/{action}", post(campaigns::act))
        .route("/v1/templates", get(templates::list))
        .route(
            "/v1/templates/{email_type}",
            get(templates::get)
                .put(templates::put)
                .delete(templates::delete),
        )
        .route(
            "/v1/users/{user_id}/preferences",
            get(users::get).put(users::put).delete(users::delete),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    // The compatible routes check their callers themselves, answering in their dialect.
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v2/email/outbound-emails", post(ses::send_email))
        .route("/v3/mail/send", post(sendgrid::mail_send))
        // Provider webhooks prove themselves by their signatures.
        .route("/webhooks/ses", post(intake::ses))
        .route("/webhooks/sendgrid", post(intake::sendgrid))
        // Links in the mail: the token is the credential.
        .route("/t/o/{token}", get(tracking::open))
        .route("/t/c/{token}", get(tracking::click))
        .route(
            "/u/{token}",
            get(tracking::unsubscribe_page).post(tracking::unsubscribe),
        )
        .merge(authenticated)
        .fallback(messages::not_found)
        .method_not_allowed_fallback(messages::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limit_concurrency,
        ))
        .with_state(state)
}

async fn openapi() -> Response {
    let body = crate::openapi::document().to_json().unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `Authorization: Bearer <key>`: the caller goes into the request's extensions.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    match state.keys.authenticate(request.headers()).await {
        Some(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        None => {
            let mut response = Problem::new(Kind::Unauthorized).into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
    }
}

/// At most `http.max_concurrent_requests` at once; the next gets `503` at once.
async fn limit_concurrency(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match state.requests.clone().try_acquire_owned() {
        Ok(permit) => {
            let response = next.run(request).await;
            drop(permit);
            response
        }
        Err(_) => {
            let problem = Problem::new(Kind::Overloaded)
                .detail(format!(
                    "{} requests are in progress (http.max_concurrent_requests)",
                    state.config.max_concurrent_requests
                ))
                .retry_after(1);
            compat::refused(request.uri().path(), problem)
        }
    }
}

/// Reloads the keys, retries template change announcements and expires idempotency
/// records until `stop`.
async fn upkeep(state: AppState, stop: CancellationToken) {
    let mut reload = tokio::time::interval(RELOAD_EVERY);
    let mut expire = tokio::time::interval(EXPIRE_EVERY);
    let ttl_ms = state.config.idempotency_ttl.as_millis() as i64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = reload.tick() => {
                if let Err(e) = state.keys.reload().await {
                    tracing::warn!(error = %e, "cannot reload the API keys");
                }
                state.templates.retry_announcements().await;
            }
            _ = expire.tick() => match state.deps.store.expire_answers(ttl_ms).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(expired = n, "idempotency records expired"),
                Err(e) => tracing::warn!(error = %e, "cannot expire idempotency records"),
            },
        }
    }
}
