//! A destination site: its ready queue, its pool of connections (each a task that takes
//! jobs and keeps its SMTP session open between them), its rate limit, and a back-off
//! while none of its hosts answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postroad_queue::{EnhancedCode, Response};
use tokio::sync::mpsc;

use crate::client::{ClientError, Connection, TlsPolicy};
use crate::deliver::{Attempt, Context, Job, Outcome, deliver};
use crate::route::Destination;

pub struct Site {
    pub key: String,
    destination: Mutex<Destination>,
    tx: mpsc::UnboundedSender<Job>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>,
    queued: AtomicUsize,
    workers: AtomicUsize,
    idle: AtomicUsize,
    /// Set while no host of the site can be reached: until when, and the last error.
    down: Mutex<Option<(Instant, Response)>>,
    limiter: Option<RateLimiter>,
}

impl Site {
    pub fn new(destination: Destination, rate_per_sec: f64) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Self {
            key: destination.site.clone(),
            destination: Mutex::new(destination),
            tx,
            rx: tokio::sync::Mutex::new(rx),
            queued: AtomicUsize::new(0),
            workers: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            down: Mutex::new(None),
            limiter: (rate_per_sec > 0.0).then(|| RateLimiter::new(rate_per_sec)),
        })
    }

    /// Keeps the latest routing answer (MX changes apply to new connections).
    pub fn update(&self, destination: Destination) {
        *lock(&self.destination) = destination;
    }

    /// Queues a job and makes sure a connection will take it.
    pub fn submit(self: &Arc<Self>, job: Job, ctx: &Arc<Context>) {
        self.queued.fetch_add(1, Ordering::SeqCst);
        if let Err(mpsc::error::SendError(job)) = self.tx.send(job) {
            // Cannot happen while the site exists (it holds the receiver); be safe anyway.
            self.queued.fetch_sub(1, Ordering::SeqCst);
            job.fail_all(
                Outcome::deferred(local_reply("4.3.0", "site queue closed".into()), None),
                ctx,
            );
            return;
        }
        self.ensure_worker(ctx);
    }

    /// Starts a connection task when jobs wait and no idle one can take them.
    fn ensure_worker(self: &Arc<Self>, ctx: &Arc<Context>) {
        let limit = ctx.config.connections_per_site;
        loop {
            let workers = self.workers.load(Ordering::SeqCst);
            let waiting = self.queued.load(Ordering::SeqCst);
            if waiting <= self.idle.load(Ordering::SeqCst) || workers >= limit {
                return;
            }
            if self
                .workers
                .compare_exchange(workers, workers + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                tokio::spawn(connection_task(self.clone(), ctx.clone()));
                return;
            }
        }
    }

    fn down_reply(&self) -> Option<Response> {
        let mut down = lock(&self.down);
        match &*down {
            Some((until, reply)) if Instant::now() < *until => Some(reply.clone()),
            Some(_) => {
                *down = None;
                None
            }
            None => None,
        }
    }

    /// How many jobs wait for a connection.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }
}

/// One pooled connection: takes jobs until idle for `idle_timeout`, reconnecting when
/// the session breaks or has carried `messages_per_connection` messages.
async fn connection_task(site: Arc<Site>, ctx: Arc<Context>) {
    let mut conn: Option<Connection> = None;
    let mut carried = 0usize;
    loop {
        site.idle.fetch_add(1, Ordering::SeqCst);
        let next = {
            let mut rx = site.rx.lock().await;
            tokio::time::timeout(ctx.config.idle_timeout, rx.recv()).await
        };
        site.idle.fetch_sub(1, Ordering::SeqCst);
        let Ok(Some(job)) = next else {
            break;
        };
        site.queued.fetch_sub(1, Ordering::SeqCst);
        // More work than idle connections: grow the pool (up to its limit).
        site.ensure_worker(&ctx);

        if let Some(reply) = site.down_reply() {
            job.fail_all(Outcome::deferred(reply, None), &ctx);
            continue;
        }
        let mut job = job;
        let mut fresh = false;
        loop {
            if conn.is_none() {
                match connect(&site, &ctx).await {
                    Ok(c) => {
                        conn = Some(c);
                        carried = 0;
                        fresh = true;
                    }
                    Err(reply) => {
                        tracing::warn!(site = %site.key, reason = %reply, "site unreachable; deferring its mail");
                        let until =
                            Instant::now() + Duration::from_secs(ctx.config.site_backoff_secs);
                        *lock(&site.down) = Some((until, reply.clone()));
                        job.fail_all(Outcome::deferred(reply, None), &ctx);
                        break;
                    }
                }
            }
            if let Some(limiter) = &site.limiter {
                limiter.acquire().await;
            }
            let Some(session) = conn.as_mut() else {
                break;
            };
            match deliver(session, job, &ctx).await {
                Attempt::Reusable => {
                    carried += 1;
                    if carried >= ctx.config.messages_per_connection
                        && let Some(c) = conn.take()
                    {
                        c.quit().await;
                    }
                    break;
                }
                Attempt::Dead => {
                    conn = None;
                    break;
                }
                // The server had closed the idle session: nothing was sent; once more
                // on a new connection (a fresh one that fails this way is just dead).
                Attempt::Stale(again) if !fresh => {
                    conn = None;
                    job = again;
                    fresh = true;
                }
                Attempt::Stale(again) => {
                    conn = None;
                    let reply =
                        local_reply("4.4.2", "connection closed before MAIL was answered".into());
                    again.fail_all(Outcome::deferred(reply, None), &ctx);
                    break;
                }
            }
        }
    }
    if let Some(c) = conn.take() {
        c.quit().await;
    }
    site.workers.fetch_sub(1, Ordering::SeqCst);
    // A job may have arrived while this task was deciding to stop.
    if site.queued() > 0 {
        site.ensure_worker(&ctx);
    }
}

/// Tries the site's hosts in order, each address in order. Opportunistic TLS that fails
/// its handshake is retried in plain text on the same address, as Postfix does.
async fn connect(site: &Site, ctx: &Context) -> Result<Connection, Response> {
    let destination = lock(&site.destination).clone();
    let mut last = local_reply("4.4.1", "no host to connect to".into());
    for host in &destination.hosts {
        for &addr in &host.addrs {
            let config = ctx.client_config(destination.tls);
            match Connection::connect(addr, &host.name, &config).await {
                Ok(c) => return Ok(c),
                Err(ClientError::Tls(e)) if destination.tls == TlsPolicy::Opportunistic => {
                    tracing::info!(host = %host.name, %addr, "TLS handshake failed ({e}); retrying without TLS");
                    match Connection::connect(addr, &host.name, &ctx.client_config(TlsPolicy::None))
                        .await
                    {
                        Ok(c) => return Ok(c),
                        Err(e) => last = error_reply(&host.name, addr, &e),
                    }
                }
                Err(e) => {
                    tracing::debug!(host = %host.name, %addr, "cannot connect: {e}");
                    last = error_reply(&host.name, addr, &e);
                }
            }
        }
    }
    Err(last)
}

/// Why connecting to `host` failed, the host named in the text.
fn error_reply(host: &str, addr: std::net::SocketAddr, e: &ClientError) -> Response {
    let mut response = e.response();
    match &mut response {
        Response::Remote(r) => r.text = format!("{host} [{addr}]: {}", r.text).into(),
        Response::Local(l) => l.text = format!("{host} [{addr}]: {}", l.text),
    }
    response
}

/// A reason of the relay's own (routing, a closed site queue, no host to try), where no
/// server replied; `enhanced` is a fixed RFC 3463 code.
pub fn local_reply(enhanced: &'static str, text: String) -> Response {
    Response::local(EnhancedCode::from_static(enhanced), text)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Spaces sends `1/rate` seconds apart (a leaky bucket without burst).
struct RateLimiter {
    interval: Duration,
    next: Mutex<Instant>,
}

impl RateLimiter {
    fn new(rate_per_sec: f64) -> Self {
        Self {
            interval: Duration::from_secs_f64(1.0 / rate_per_sec),
            next: Mutex::new(Instant::now()),
        }
    }

    async fn acquire(&self) {
        let at = {
            let mut next = lock(&self.next);
            let now = Instant::now();
            let at = (*next).max(now);
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at.into()).await;
    }
}
