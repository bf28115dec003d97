//! The SMTP listeners: accept connections, enforce connection limits, run sessions, and
//! drain them on shutdown.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postroad_queue::Queue;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::budget::MemoryBudget;
use super::conn::{Conn, IoLimits};
use super::reply::{self, Reply};
use super::session::Session;
use crate::auth::Credentials;
use crate::auth::throttle::AuthThrottle;
use crate::config::{ListenerConfig, SmtpConfig, TlsMode};

/// What every session needs, shared.
pub struct Shared {
    pub hostname: String,
    pub smtp: SmtpConfig,
    pub queue: Arc<dyn Queue>,
    pub tls: Option<TlsAcceptor>,
    pub credentials: Credentials,
    /// Failed AUTH per address and username: delays and bans.
    pub auth_throttle: AuthThrottle,
    /// Memory for messages being received, shared by all sessions.
    pub budget: MemoryBudget,
    /// Woken after each enqueue so the relay picks new mail up at once.
    pub relay_waker: Option<Arc<tokio::sync::Notify>>,
    /// With `[bounces]` domains: mail for them is a report, read into events.
    pub reports: Option<Arc<postroad_webhooks::Reports>>,
    /// With tracking and a bounce domain: mail to `List-Unsubscribe`'s `mailto:`
    /// address unsubscribes.
    pub unsubscribe: Option<Arc<postroad_api::tracking::unsubscribe::MailUnsubscribe>>,
    /// With `suppression.reject_at_rcpt`: listed recipients are refused at RCPT.
    pub refuse_listed: Option<Arc<postroad_webhooks::suppression::Suppressions>>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} (listener {name:?}): {source}")]
pub struct BindError {
    name: String,
    address: SocketAddr,
    source: std::io::Error,
}

/// Bound listeners, ready to serve.
pub struct SmtpServer {
    shared: Arc<Shared>,
    listeners: Vec<(Arc<ListenerConfig>, TcpListener)>,
    connections: Arc<Semaphore>,
    per_ip: Arc<PerIpLimit>,
    stress: Arc<Stress>,
}

impl SmtpServer {
    /// Binds every listener (all or nothing, so a port conflict is reported at start).
    pub async fn bind(shared: Shared, listeners: &[ListenerConfig]) -> Result<Self, BindError> {
        let mut bound = Vec::new();
        for config in listeners {
            let listener = TcpListener::bind(config.address)
                .await
                .map_err(|source| BindError {
                    name: config.name.clone(),
                    address: config.address,
                    source,
                })?;
            bound.push((Arc::new(config.clone()), listener));
        }
        let smtp = &shared.smtp;
        let threshold =
            (smtp.max_connections * usize::from(smtp.stress_threshold_percent)).div_ceil(100);
        Ok(Self {
            stress: Arc::new(Stress::new(threshold)),
            connections: Arc::new(Semaphore::new(shared.smtp.max_connections)),
            per_ip: Arc::new(PerIpLimit::new(shared.smtp.max_connections_per_ip)),
            shared: Arc::new(shared),
            listeners: bound,
        })
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets sessions finish
    /// the transaction they are in (idle ones are told `421` at once) for up to `grace`,
    /// and returns.
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) {
        let mut accept_loops = JoinSet::new();
        for (config, listener) in self.listeners {
            tracing::info!(listener = %config.name, address = %config.address, role = ?config.role, tls = ?config.tls, "listening");
            accept_loops.spawn(accept_loop(
                listener,
                config,
                self.shared.clone(),
                self.connections.clone(),
                self.per_ip.clone(),
                self.stress.clone(),
                shutdown.clone(),
            ));
        }
        let mut sessions = Vec::new();
        while let Some(result) = accept_loops.join_next().await {
            if let Ok(set) = result {
                sessions.push(set);
            }
        }
        let open = self.shared.smtp.max_connections - self.connections.available_permits();
        tracing::info!(
            open,
            "listeners closed; waiting up to {grace:?} for sessions to finish"
        );
        let drain = async {
            for set in &mut sessions {
                while set.join_next().await.is_some() {}
            }
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            // Dropping the sets aborts what is left; nothing unacknowledged is lost.
            tracing::warn!("sessions still open after the grace period; closing them");
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<ListenerConfig>,
    shared: Arc<Shared>,
    connections: Arc<Semaphore>,
    per_ip: Arc<PerIpLimit>,
    stress: Arc<Stress>,
    shutdown: CancellationToken,
) -> JoinSet<()> {
    let limits = |stress: &Stress| IoLimits {
        write_timeout: shared.smtp.write_timeout,
        stress_timeout: shared.smtp.stress_timeout,
        stress: stress.signal.subscribe(),
    };
    let implicit_tls = shared
        .tls
        .clone()
        .filter(|_| config.tls == TlsMode::Implicit);
    let mut sessions = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        // Reap finished sessions so the set does not grow with the connection count.
        while sessions.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(listener = %config.name, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if let Some(left) = shared.auth_throttle.banned(peer.ip()) {
            tracing::info!(%peer, banned_for = ?left, "connection from a banned address");
            metrics::counter!("postroad_smtp_turned_away_total", "reason" => "banned").increment(1);
            sessions.spawn(turn_away(stream, reply::AUTH_BANNED, implicit_tls.clone()));
            continue;
        }
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached");
            metrics::counter!("postroad_smtp_turned_away_total", "reason" => "connections")
                .increment(1);
            sessions.spawn(turn_away(
                stream,
                reply::TOO_MANY_CONNECTIONS,
                implicit_tls.clone(),
            ));
            continue;
        };
        let Some(slot) = per_ip.acquire(peer.ip()) else {
            tracing::warn!(%peer, "per-IP connection limit reached");
            metrics::counter!("postroad_smtp_turned_away_total", "reason" => "per_ip").increment(1);
            sessions.spawn(turn_away(
                stream,
                reply::TOO_MANY_FROM_IP,
                implicit_tls.clone(),
            ));
            continue;
        };
        let admission = Admission {
            _permit: permit,
            _slot: slot,
            _stress: stress.enter(),
            _counted: Counted::new(),
        };
        let session = Session::new(
            shared.clone(),
            config.clone(),
            Conn::new(stream, shutdown.clone(), limits(&stress)),
            peer,
        );
        sessions.spawn(session.run(admission));
    }
    sessions
}

/// Tells a client it cannot be served now and closes; on an implicit-TLS listener
/// after the handshake, or the client could not read it.
async fn turn_away(stream: TcpStream, reply: Reply, tls: Option<TlsAcceptor>) {
    let mut out = Vec::new();
    reply.write_to(&mut out);
    async fn say_and_close(mut stream: impl AsyncWrite + Unpin, out: &[u8]) {
        let _ = stream.write_all(out).await;
        let _ = stream.shutdown().await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        match tls {
            Some(acceptor) => {
                if let Ok(stream) = acceptor.accept(stream).await {
                    say_and_close(stream, &out).await;
                }
            }
            None => say_and_close(stream, &out).await,
        }
    })
    .await;
}

/// A session's places in the connection limits, held until it ends.
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    _slot: IpSlot,
    _stress: StressSlot,
    _counted: Counted,
}

/// One open session in the `postroad_smtp_connections` gauge, for as long as it lives.
struct Counted;

impl Counted {
    fn new() -> Self {
        metrics::gauge!("postroad_smtp_connections").increment(1.0);
        Counted
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        metrics::gauge!("postroad_smtp_connections").decrement(1.0);
    }
}

/// Connection pressure: when `threshold` sessions are open, the server is under stress
/// and every session's waits are cut short (see `Conn`) until it is below again.
struct Stress {
    open: AtomicUsize,
    /// 0: never.
    threshold: usize,
    /// `Some(since)` while under stress.
    signal: watch::Sender<Option<Instant>>,
}

/// One session's count in [`Stress`], released on drop.
struct StressSlot(Arc<Stress>);

impl Stress {
    fn new(threshold: usize) -> Self {
        Self {
            open: AtomicUsize::new(0),
            threshold,
            signal: watch::Sender::new(None),
        }
    }

    fn enter(self: &Arc<Self>) -> StressSlot {
        let open = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.update(open);
        StressSlot(self.clone())
    }

    fn update(&self, open: usize) {
        let stressed = self.threshold > 0 && open >= self.threshold;
        self.signal
            .send_if_modified(|state| match (state.is_some(), stressed) {
                (false, true) => {
                    tracing::warn!(
                        open,
                        threshold = self.threshold,
                        "under connection stress: timeouts shortened"
                    );
                    *state = Some(Instant::now());
                    true
                }
                (true, false) => {
                    tracing::info!(open, "connection stress over: normal timeouts");
                    *state = None;
                    true
                }
                _ => false,
            });
    }
}

impl Drop for StressSlot {
    fn drop(&mut self) {
        let open = self.0.open.fetch_sub(1, Ordering::SeqCst) - 1;
        self.0.update(open);
    }
}

/// Open connections per client address.
struct PerIpLimit {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`PerIpLimit`], released on drop.
struct IpSlot {
    limit: Arc<PerIpLimit>,
    ip: IpAddr,
}

impl PerIpLimit {
    fn new(max: usize) -> Self {
        Self {
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            limit: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.limit.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_slots_are_released_on_drop() {
        let limit = Arc::new(PerIpLimit::new(2));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let a = limit.acquire(ip).unwrap();
        let _b = limit.acquire(ip).unwrap();
        assert!(limit.acquire(ip).is_none());
        assert!(limit.acquire("192.0.2.8".parse().unwrap()).is_some());
        drop(a);
        assert!(limit.acquire(ip).is_some());
    }
}
