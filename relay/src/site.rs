//! A destination site: its ready queue, its pool of connections (each a task that takes
//! jobs and keeps its SMTP session open between them), the limits its shape sets
//! (connections, messages per connection, message and connection rates, idle time,
//! TLS) as adaptive control and the reply rules adjust them, the rate it shares with
//! other relay processes, and a back-off while none of its hosts answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use postroad_queue::{EnhancedCode, Response};
use serde::Serialize;

use crate::adaptive::Controller;
use crate::automation::{Automation, Fired};
use crate::client::{ClientError, Connection, TlsPolicy};
use crate::deliver::{Attempt, Context, Job, Outcome, Report, deliver};
use crate::lanes::Lanes;
use crate::mx_provider::{MxProvider, MxProviders};
use crate::pace::Pacer;
use crate::route::Destination;
use crate::shaping::{Shape, Shaping};
use crate::shared_rate::SharedRate;

pub struct Site {
    pub key: String,
    /// The domain whose own site this is (it has a `[domain]` shaping entry).
    domain: Option<String>,
    destination: Mutex<Destination>,
    /// The shaping file in force, and the shape it (and any rule's `set`) gives.
    shaping: Mutex<Arc<Shaping>>,
    shape: Mutex<Arc<Shape>>,
    /// The reply rules of the site, and what they put in force.
    automation: Mutex<Automation>,
    /// Jobs waiting for a connection, by priority.
    waiting: Lanes<Job>,
    queued: AtomicUsize,
    workers: AtomicUsize,
    idle: AtomicUsize,
    /// Set while no host of the site can be reached: until when, and the last error.
    down: Mutex<Option<(Instant, Response)>>,
    /// Spaces the messages (`max_message_rate`).
    messages: Pacer,
    /// Spaces new connections (`max_connection_rate`).
    connections: Pacer,
    /// With Redis, `max_message_rate` held by every relay process together.
    shared: Option<SharedRate>,
    /// The rate and connection count in force, below the shape's, learned from replies.
    control: Mutex<Controller>,
    /// What the sites of each shaping provider share, and this site's provider's.
    mx_providers: Arc<MxProviders>,
    mx_provider: Mutex<Option<Arc<MxProvider>>>,
}

/// What `postroad queue sites` shows of a site.
#[derive(Debug, Clone, Serialize)]
pub struct SiteView {
    pub site: String,
    /// MX hosts, in the order they are tried.
    pub hosts: Vec<String>,
    /// The limits it runs under (and which provider and domain entries set them).
    pub shape: Shape,
    /// `normal`; `suspended` by a reply rule; `backoff` while none of its hosts answer
    /// or adaptive control holds its limits below the shape's.
    pub state: &'static str,
    /// Until when (Unix milliseconds) the state holds, and why.
    pub until_ms: Option<u64>,
    pub reason: Option<String>,
    /// Messages per second allowed now (`None`: no limit), and connections.
    pub message_rate: Option<f64>,
    pub connection_cap: usize,
    /// Connections open, and of those idle.
    pub connections: usize,
    pub idle_connections: usize,
    /// Jobs waiting for a connection.
    pub queued: usize,
}

impl Site {
    /// A site for `destination`, shaped by `shaping` (as `domain`'s own site when given).
    pub fn new(
        destination: Destination,
        domain: Option<String>,
        shaping: &Arc<Shaping>,
        redis: Option<&postroad_redis_link::RedisLink>,
        mx_providers: &Arc<MxProviders>,
    ) -> Arc<Self> {
        let key = site_key(domain.as_deref(), &destination);
        let shape = shaping.shape(domain.as_deref(), host_names(&destination));
        let rules = shaping.rules_for(shape.provider.as_deref(), domain.as_deref());
        let control = Controller::new(
            shape.adaptive,
            shape.max_message_rate.map(|r| r.per_sec()),
            shape.connection_limit,
            tokio::time::Instant::now(),
        );
        let mx_provider = shape
            .provider
            .as_deref()
            .map(|p| mx_providers.get(p, shaping));
        Arc::new(Self {
            shared: redis.map(|link| SharedRate::new(link.clone(), &key)),
            key,
            domain,
            destination: Mutex::new(destination),
            shaping: Mutex::new(shaping.clone()),
            automation: Mutex::new(Automation::new(rules)),
            messages: Pacer::new(shape.max_message_rate.map(|r| r.per_sec())),
            connections: Pacer::new(shape.max_connection_rate.map(|r| r.per_sec())),
            shape: Mutex::new(Arc::new(shape)),
            waiting: Lanes::default(),
            queued: AtomicUsize::new(0),
            workers: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            down: Mutex::new(None),
            control: Mutex::new(control),
            mx_providers: mx_providers.clone(),
            mx_provider: Mutex::new(mx_provider),
        })
    }

    /// Keeps the latest routing answer (MX changes apply to new connections, and a
    /// change of MX hosts may change the provider).
    pub fn update(&self, destination: Destination) {
        let mut current = lock(&self.destination);
        let moved = !current
            .hosts
            .iter()
            .map(|h| &h.name)
            .eq(destination.hosts.iter().map(|h| &h.name));
        *current = destination;
        drop(current);
        if moved {
            self.refresh();
        }
    }

    /// Applies a (reloaded) shaping file.
    pub fn reshape(&self, shaping: &Arc<Shaping>) {
        *lock(&self.shaping) = shaping.clone();
        self.refresh();
    }

    /// Works the shape out again: the shaping file's for these hosts, under what a
    /// rule's `set` puts in force; the rules that apply follow the provider.
    fn refresh(&self) {
        let shaping = lock(&self.shaping).clone();
        let base = {
            let destination = lock(&self.destination);
            shaping.shape(self.domain.as_deref(), host_names(&destination))
        };
        let rules = shaping.rules_for(base.provider.as_deref(), self.domain.as_deref());
        *lock(&self.mx_provider) = base
            .provider
            .as_deref()
            .map(|p| self.mx_providers.get(p, &shaping));
        let shape = {
            let mut automation = lock(&self.automation);
            automation.set_rules(rules);
            match automation.overriding(Instant::now()) {
                Some((_, limits, _)) => base.with(&limits),
                None => base,
            }
        };
        self.set_shape(shape);
    }

    fn set_shape(&self, shape: Shape) {
        let limits = lock(&self.control).reshape(
            shape.adaptive,
            shape.max_message_rate.map(|r| r.per_sec()),
            shape.connection_limit,
        );
        self.messages.set_rate(limits.rate);
        self.connections
            .set_rate(shape.max_connection_rate.map(|r| r.per_sec()));
        *lock(&self.shape) = Arc::new(shape);
    }

    /// Tells the reply rules and adaptive control how an attempt went, and applies what
    /// they decide.
    fn learn(self: &Arc<Self>, report: &Report) {
        for reply in &report.replies {
            self.observe(reply);
        }
        let now = tokio::time::Instant::now();
        let mut control = lock(&self.control);
        let mut changed = None;
        if let Some(reply) = &report.throttle {
            let text = reply.to_string();
            let connections = text.to_ascii_lowercase().contains("connection");
            changed = control.throttled(text, connections, now);
            if let Some(limits) = changed {
                tracing::info!(site = %self.key, rate = ?limits.rate, connections = limits.connections, %reply, "throttled; limits cut");
            }
        }
        if report.delivered > 0 {
            changed = control.delivered(now).or(changed);
        }
        drop(control);
        if let Some(limits) = changed {
            self.messages.set_rate(limits.rate);
        }
    }

    /// Runs the reply rules on one reply of the site's servers.
    fn observe(self: &Arc<Self>, reply: &str) {
        let fired = lock(&self.automation).observe(reply, Instant::now());
        for fired in fired {
            match fired {
                Fired::Suspend {
                    until,
                    why,
                    provider_wide: true,
                } => {
                    if let Some(provider) = self.mx_provider() {
                        provider.suspend(until, why);
                    }
                }
                Fired::Suspend { until, why, .. } => {
                    let secs = until.saturating_duration_since(Instant::now()).as_secs();
                    tracing::warn!(site = %self.key, %why, for_secs = secs, "site suspended");
                }
                Fired::Set { until, why, .. } => {
                    tracing::warn!(site = %self.key, %why, "limits set by an automation rule");
                    self.refresh();
                    // Back to the file's limits when the rule's time is up.
                    let site = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep_until(until.into()).await;
                        site.refresh();
                    });
                }
            }
        }
    }

    /// The reply rule that bounces `reply`, by name.
    fn bounces(&self, reply: &Response) -> Option<String> {
        let text = reply.to_string();
        lock(&self.automation).bounces(&text).map(str::to_string)
    }

    /// A connection refused with a throttle reply: fewer connections.
    fn throttled_at_connect(&self, reply: &Response) {
        let now = tokio::time::Instant::now();
        if let Some(limits) = lock(&self.control).throttled(reply.to_string(), true, now) {
            tracing::info!(site = %self.key, connections = limits.connections, %reply, "throttled at connect; fewer connections");
        }
    }

    fn shape(&self) -> Arc<Shape> {
        lock(&self.shape).clone()
    }

    fn mx_provider(&self) -> Option<Arc<MxProvider>> {
        lock(&self.mx_provider).clone()
    }

    /// A suspension of the site by a reply rule, or of its whole provider: until when,
    /// and why.
    fn suspension(&self) -> Option<(Instant, String)> {
        let now = Instant::now();
        let own = lock(&self.automation).suspended(now);
        let provider = self.mx_provider().and_then(|p| {
            p.suspended(now)
                .map(|(until, why)| (until, format!("provider {} suspended by {why}", p.name())))
        });
        match (own, provider) {
            (Some(a), Some(b)) => Some(if a.0 >= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// The site as `postroad queue sites` shows it.
    pub fn view(&self) -> SiteView {
        let down = lock(&self.down)
            .clone()
            .filter(|(until, _)| Instant::now() < *until);
        let (limits, backoff) = {
            let control = lock(&self.control);
            (control.limits(), control.backoff())
        };
        let suspended = self.suspension();
        let until = suspended
            .as_ref()
            .map(|(until, _)| *until)
            .or(down.as_ref().map(|(until, _)| *until));
        let until_ms = until.map(|until| {
            let left = until.saturating_duration_since(Instant::now());
            postroad_queue::unix_ms(SystemTime::now() + left)
        });
        SiteView {
            site: self.key.clone(),
            hosts: host_names(&lock(&self.destination))
                .map(str::to_string)
                .collect(),
            shape: (*self.shape()).clone(),
            state: if suspended.is_some() {
                "suspended"
            } else if down.is_some() || backoff.is_some() {
                "backoff"
            } else {
                "normal"
            },
            until_ms,
            reason: suspended
                .map(|(_, why)| why)
                .or(down.map(|(_, reply)| format!("unreachable: {reply}")))
                .or(backoff),
            message_rate: limits.rate,
            connection_cap: limits.connections,
            connections: self.workers.load(Ordering::SeqCst),
            idle_connections: self.idle.load(Ordering::SeqCst),
            queued: self.queued(),
        }
    }

    /// Queues a job and makes sure a connection will take it.
    pub fn submit(self: &Arc<Self>, job: Job, ctx: &Arc<Context>) {
        self.queued.fetch_add(1, Ordering::SeqCst);
        let priority = job.message.claimed.envelope.meta.priority;
        self.waiting.push(priority, job);
        self.ensure_worker(ctx);
    }

    /// Starts a connection task when jobs wait and no idle one can take them.
    fn ensure_worker(self: &Arc<Self>, ctx: &Arc<Context>) {
        let limit = lock(&self.control).limits().connections;
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

    /// Takes one connection out of the count when there are more than allowed now.
    fn retire_one(&self) -> bool {
        let cap = lock(&self.control).limits().connections;
        let mut workers = self.workers.load(Ordering::SeqCst);
        while workers > cap {
            match self.workers.compare_exchange(
                workers,
                workers - 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(now) => workers = now,
            }
        }
        false
    }

    /// Why the site's mail waits now: a reply rule's suspension, or its hosts down.
    fn hold_reply(&self) -> Option<Response> {
        if let Some((until, why)) = self.suspension() {
            let left = until.saturating_duration_since(Instant::now()).as_secs();
            return Some(local_reply(
                "4.7.0",
                format!("site suspended for {left} s more by {why}"),
            ));
        }
        self.down_reply()
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

impl crate::transport::Transport for Site {
    fn name(&self) -> &str {
        &self.key
    }

    fn max_recipients(&self, ctx: &Context) -> usize {
        ctx.recipients_per_transaction()
    }

    fn submit(self: Arc<Self>, job: Job, ctx: &Arc<Context>) {
        Site::submit(&self, job, ctx);
    }
}

/// One pooled connection: takes jobs until idle for the shape's `idle_timeout`,
/// reconnecting when the session breaks or has carried `max_deliveries_per_connection`
/// messages.
async fn connection_task(site: Arc<Site>, ctx: Arc<Context>) {
    let mut conn: Option<Connection> = None;
    let mut carried = 0usize;
    let mut retired = false;
    loop {
        // Adaptive control cut the connection count: the surplus connections close.
        if site.retire_one() {
            retired = true;
            break;
        }
        site.idle.fetch_add(1, Ordering::SeqCst);
        let idle_timeout = site.shape().idle_timeout;
        let next = site.waiting.pop(idle_timeout).await;
        site.idle.fetch_sub(1, Ordering::SeqCst);
        let Some(job) = next else {
            break;
        };
        site.queued.fetch_sub(1, Ordering::SeqCst);
        // More work than idle connections: grow the pool (up to its limit).
        site.ensure_worker(&ctx);

        if let Some(reply) = site.hold_reply() {
            job.fail_all(Outcome::deferred(reply, None), &ctx);
            continue;
        }
        let mut job = job;
        let mut fresh = false;
        loop {
            if conn.is_none() {
                site.connections.acquire().await;
                match connect(&site, &ctx).await {
                    Ok(c) => {
                        conn = Some(c);
                        carried = 0;
                        fresh = true;
                    }
                    // Hosts that answer but ask us to slow down: fewer connections
                    // (this one defers its job), not a site that is down.
                    Err(reply) if reply.is_throttle() => {
                        site.observe(&reply.to_string());
                        site.throttled_at_connect(&reply);
                        job.fail_all(Outcome::deferred(reply, None), &ctx);
                        break;
                    }
                    Err(reply) => {
                        if matches!(reply, Response::Remote(_)) {
                            site.observe(&reply.to_string());
                        }
                        tracing::warn!(site = %site.key, reason = %reply, "site unreachable; deferring its mail");
                        let until =
                            Instant::now() + Duration::from_secs(ctx.config.site_backoff_secs);
                        *lock(&site.down) = Some((until, reply.clone()));
                        job.fail_all(Outcome::deferred(reply, None), &ctx);
                        break;
                    }
                }
            }
            site.messages.acquire().await;
            if let (Some(shared), Some(rate)) = (&site.shared, site.shape().max_message_rate) {
                shared.acquire(rate.per_sec()).await;
            }
            if let Some(provider) = site.mx_provider() {
                provider.acquire().await;
            }
            let Some(session) = conn.as_mut() else {
                break;
            };
            lock(&site.control).sending(tokio::time::Instant::now());
            let (attempt, report) = deliver(session, job, &ctx, &|r| site.bounces(r)).await;
            site.learn(&report);
            match attempt {
                Attempt::Reusable => {
                    carried += 1;
                    if carried >= site.shape().max_deliveries_per_connection
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
    if !retired {
        site.workers.fetch_sub(1, Ordering::SeqCst);
    }
    // A job may have arrived while this task was deciding to stop.
    if site.queued() > 0 {
        site.ensure_worker(&ctx);
    }
}

/// Tries the site's hosts in order, each address in order. Opportunistic TLS that fails
/// its handshake is retried in plain text on the same address, as Postfix does.
async fn connect(site: &Site, ctx: &Context) -> Result<Connection, Response> {
    let mut destination = lock(&site.destination).clone();
    if let Some(tls) = site.shape().tls {
        destination.tls = tls;
    }
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

/// The site key: the MX set's, or for a domain with its own shaping entry, the domain's.
pub fn site_key(domain: Option<&str>, destination: &Destination) -> String {
    match domain {
        Some(domain) => format!("{domain}@{}", destination.site),
        None => destination.site.clone(),
    }
}

fn host_names(destination: &Destination) -> impl Iterator<Item = &str> + Clone {
    destination.hosts.iter().map(|h| h.name.as_str())
}
