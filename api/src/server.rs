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
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::auth::{KeyRing, RELOAD_EVERY};
use crate::problem::{Kind, Problem};
use crate::render::Templates;
use crate::routes::{messages, templates};
use crate::state::{AppState, Deps, Inner};
use crate::{ApiConfig, ApiError};

/// How often expired idempotency records are deleted.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// A bound, ready API listener.
pub struct Api {
    listener: TcpListener,
    state: AppState,
}

impl Api {
    /// Binds `config.listen` and loads the API keys.
    pub async fn bind(config: ApiConfig, deps: Deps) -> Result<Self, ApiError> {
        config.validate().map_err(ApiError::Config)?;
        let keys = KeyRing::load(deps.store.clone()).await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ApiError::Bind {
                address: config.listen,
                source,
            })?;
        let state = AppState(Arc::new(Inner {
            requests: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            templates: Templates::new(deps.store.clone()),
            keys,
            deps,
            config,
            idempotent_in_flight: Default::default(),
        }));
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` is cancelled, then lets the requests in progress finish.
    pub async fn run(self, stop: CancellationToken) {
        let state = self.state;
        let upkeep = tokio::spawn(upkeep(state.clone(), stop.clone()));
        let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(self.listener, app)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "http api listener failed");
        }
        stop.cancel();
        let _ = upkeep.await;
    }
}

pub(crate) fn router(state: AppState) -> Router {
    let authenticated = Router::new()
        .route("/v1/messages", post(messages::send))
        .route("/v1/messages/batch", post(messages::batch))
        .route("/v1/templates", get(templates::list))
        .route(
            "/v1/templates/{email_type}",
            get(templates::get)
                .put(templates::put)
                .delete(templates::delete),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/v1/openapi.json", get(openapi))
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
        Err(_) => Problem::new(Kind::Overloaded)
            .detail(format!(
                "{} requests are in progress (http.max_concurrent_requests)",
                state.config.max_concurrent_requests
            ))
            .retry_after(1)
            .into_response(),
    }
}

/// Reloads the keys and expires idempotency records until `stop`.
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
            }
            _ = expire.tick() => match state.deps.store.expire_answers(ttl_ms).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(expired = n, "idempotency records expired"),
                Err(e) => tracing::warn!(error = %e, "cannot expire idempotency records"),
            },
        }
    }
}
