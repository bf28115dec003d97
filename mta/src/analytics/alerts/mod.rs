//! Alerts (`[alerts]`): the design's rules evaluated every 10 s over a sliding window
//! of this process's events and its queue.
//!
//! | alert | severity | fires when (defaults) |
//! |---|---|---|
//! | `DeliveryRateLow` | critical | delivered / attempts < 95% |
//! | `QueueDepthHigh` | critical | more than 100,000 messages queued |
//! | `BounceRateHigh` | critical | bounced / resolved > 10% |
//! | `SendLatencyHigh` | warning | p95 of acceptance to delivery > 10 s |
//! | `ComplaintRateHigh` | warning | complaints / delivered > 0.5% |
//!
//! Rates and the latency are judged only with `min_events` behind them (else the
//! rule shows `no-data`). Each change of state is logged (`warn` when an alert fires,
//! `info` when it clears), shown by `GET /v1/alerts` and in the gauge
//! `postroad_alert_firing{alert,severity}`. With several processes (Kafka), each
//! judges its own events; `deploy/prometheus/postroad-alerts.yml` computes the same
//! rules over all of them from `/metrics`.

mod rules;
mod window;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use postroad_api::alerts::{AlertReport, AlertSource, AlertState, AlertView};
use postroad_api::history::rfc3339;
use postroad_queue::{Batching, DeliveryEvent, EventSink, Queue, SinkError, unix_ms};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use rules::{Rule, Signal};
use window::{SLOT_MS, Window};

type Secs = serde_with::As<serde_with::DurationSeconds<u64>>;

/// Longest window: each 10 s slot keeps a latency histogram (about 20 KiB).
const MAX_WINDOW_SECS: u64 = 3600;

/// `[alerts]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    pub enabled: bool,
    /// The sliding window rates and latency are computed over.
    #[serde(rename = "window_secs", with = "Secs")]
    pub window: Duration,
    /// Fewest events a rate or the latency is judged on (attempts for the delivery
    /// rate, resolved recipients for the bounce rate, deliveries for the complaint
    /// rate and the latency).
    pub min_events: u64,
    pub delivery_rate_below: f64,
    pub queue_depth_above: u64,
    pub bounce_rate_above: f64,
    pub send_latency_p95_above_secs: f64,
    pub complaint_rate_above: f64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(300),
            min_events: 100,
            delivery_rate_below: 0.95,
            queue_depth_above: 100_000,
            bounce_rate_above: 0.10,
            send_latency_p95_above_secs: 10.0,
            complaint_rate_above: 0.005,
        }
    }
}

impl AlertsConfig {
    pub fn validate(&self) -> Result<(), String> {
        let secs = self.window.as_secs();
        if !(SLOT_MS / 1000..=MAX_WINDOW_SECS).contains(&secs) {
            return Err(format!(
                "alerts.window_secs must be {} to {MAX_WINDOW_SECS}, not {secs}",
                SLOT_MS / 1000
            ));
        }
        for (key, rate) in [
            ("alerts.delivery_rate_below", self.delivery_rate_below),
            ("alerts.bounce_rate_above", self.bounce_rate_above),
            ("alerts.complaint_rate_above", self.complaint_rate_above),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{key} is a rate from 0 to 1, not {rate}"));
            }
        }
        let latency = self.send_latency_p95_above_secs;
        if !latency.is_finite() || latency < 0.0 {
            return Err(format!(
                "alerts.send_latency_p95_above_secs must be 0 or more seconds, not {latency}"
            ));
        }
        Ok(())
    }
}

/// One rule's state.
#[derive(Debug, Clone)]
struct Standing {
    rule: Rule,
    state: AlertState,
    since_ms: u64,
    value: Option<f64>,
}

struct Board {
    window: Window,
    standings: Vec<Standing>,
    evaluated_at_ms: Option<u64>,
}

/// The rules, their window of events and their states: a sink of the event fan-out,
/// evaluated by [`Alerts::run`], read by `GET /v1/alerts`.
pub struct Alerts {
    config: AlertsConfig,
    board: Mutex<Board>,
}

impl Alerts {
    pub fn new(config: &AlertsConfig) -> Self {
        let now = unix_ms(SystemTime::now());
        let standings = Rule::all(config)
            .into_iter()
            .map(|rule| Standing {
                rule,
                state: AlertState::NoData,
                since_ms: now,
                value: None,
            })
            .collect();
        Self {
            config: config.clone(),
            board: Mutex::new(Board {
                window: Window::new(config.window.as_millis() as u64),
                standings,
                evaluated_at_ms: None,
            }),
        }
    }

    fn board(&self) -> MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Evaluates the rules every slot until `stop`.
    pub async fn run(self: Arc<Self>, queue: Arc<dyn Queue>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(SLOT_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let depth = match queue.stats().await {
                Ok(stats) => Some(stats.queued),
                Err(e) => {
                    tracing::debug!(error = %e, "alerts: queue depth unknown this time");
                    None
                }
            };
            self.evaluate(unix_ms(SystemTime::now()), depth);
        }
    }

    /// Counts `events` into the window as it is at `now_ms`.
    fn record(&self, events: &[DeliveryEvent], now_ms: u64) {
        let mut board = self.board();
        for e in events {
            board.window.record(e, now_ms);
        }
    }

    /// Measures every rule over the window ending at `now_ms`; logs what changed.
    pub fn evaluate(&self, now_ms: u64, queue_depth: Option<u64>) {
        let mut board = self.board();
        let totals = board.window.totals(now_ms);
        board.evaluated_at_ms = Some(now_ms);
        for s in &mut board.standings {
            let value = s.rule.measure(&totals, queue_depth, self.config.min_events);
            s.value = value;
            let state = match value {
                None => AlertState::NoData,
                Some(v) if s.rule.fires(v) => AlertState::Firing,
                Some(_) => AlertState::Ok,
            };
            metrics::gauge!(
                "postroad_alert_firing",
                "alert" => s.rule.name,
                "severity" => s.rule.severity.as_str(),
            )
            .set(if state == AlertState::Firing {
                1.0
            } else {
                0.0
            });
            if state == s.state {
                continue;
            }
            let (name, severity) = (s.rule.name, s.rule.severity.as_str());
            match (s.state, state) {
                (_, AlertState::Firing) => tracing::warn!(
                    alert = name,
                    severity,
                    value,
                    threshold = s.rule.threshold,
                    "alert firing: {}",
                    s.rule.summary()
                ),
                (AlertState::Firing, AlertState::Ok) => tracing::info!(
                    alert = name,
                    severity,
                    value,
                    "alert resolved: {}",
                    s.rule.summary()
                ),
                (AlertState::Firing, _) => tracing::info!(
                    alert = name,
                    severity,
                    "alert no longer judged (too few events, or no queue count): {}",
                    s.rule.summary()
                ),
                _ => {}
            }
            s.state = state;
            s.since_ms = now_ms;
        }
    }
}

impl AlertSource for Alerts {
    fn report(&self) -> AlertReport {
        let board = self.board();
        let alerts: Vec<AlertView> = board
            .standings
            .iter()
            .map(|s| AlertView {
                name: s.rule.name.to_string(),
                severity: s.rule.severity,
                state: s.state,
                since: rfc3339(s.since_ms),
                value: s.value,
                threshold: s.rule.threshold,
                condition: s.rule.condition,
                summary: s.rule.summary(),
            })
            .collect();
        AlertReport {
            evaluated_at: board.evaluated_at_ms.map(rfc3339),
            window_seconds: self.config.window.as_secs(),
            firing: alerts
                .iter()
                .filter(|a| a.state == AlertState::Firing)
                .map(|a| a.name.clone())
                .collect(),
            alerts,
        }
    }
}

#[async_trait]
impl EventSink for Alerts {
    fn name(&self) -> &'static str {
        "alerts"
    }

    fn batching(&self) -> Batching {
        Batching {
            max_batch: 10_000,
            linger: Duration::from_secs(1),
        }
    }

    async fn write(&self, events: &[DeliveryEvent]) -> Result<(), SinkError> {
        self.record(events, unix_ms(SystemTime::now()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postroad_queue::{Envelope, EventKind, Recipient};

    fn events(kind: EventKind, n: usize, at_ms: u64) -> Vec<DeliveryEvent> {
        let envelope = Envelope::new(
            "s@example.com",
            vec![Recipient::new("u@example.net")],
            "192.0.2.1".parse().unwrap(),
        );
        (0..n)
            .map(|_| DeliveryEvent::new(kind, &envelope, &envelope.recipients[0], at_ms))
            .collect()
    }

    fn standing<'a>(report: &'a AlertReport, name: &str) -> &'a AlertView {
        report.alerts.iter().find(|a| a.name == name).unwrap()
    }

    #[test]
    fn an_alert_fires_while_its_window_says_so_and_clears_after() {
        let alerts = Alerts::new(&AlertsConfig {
            window: Duration::from_secs(60),
            ..AlertsConfig::default()
        });
        let now = unix_ms(SystemTime::now());
        alerts.evaluate(now, Some(10));
        let report = alerts.report();
        assert_eq!(
            standing(&report, "DeliveryRateLow").state,
            AlertState::NoData
        );
        assert_eq!(standing(&report, "QueueDepthHigh").state, AlertState::Ok);
        assert!(report.firing.is_empty());

        alerts.record(&events(EventKind::Delivered, 80, now), now);
        alerts.record(&events(EventKind::Bounced, 20, now), now);
        let later = now + SLOT_MS;
        alerts.evaluate(later, Some(200_000));
        let report = alerts.report();
        assert_eq!(
            report.firing,
            ["DeliveryRateLow", "QueueDepthHigh", "BounceRateHigh"]
        );
        let bounce = standing(&report, "BounceRateHigh");
        assert_eq!(bounce.value, Some(0.2));
        assert_eq!(bounce.since, rfc3339(later));
        assert_eq!(report.evaluated_at, Some(rfc3339(later)));

        // Still firing ten seconds on: since does not move.
        alerts.evaluate(later + SLOT_MS, Some(200_000));
        assert_eq!(
            standing(&alerts.report(), "BounceRateHigh").since,
            rfc3339(later)
        );
        // The bad minute leaves the window; the queue drains. What is delivered now
        // was accepted 70 s ago: slow.
        let after = now + 70_000;
        alerts.record(&events(EventKind::Delivered, 100, after), after);
        alerts.evaluate(after, Some(5));
        let report = alerts.report();
        assert_eq!(report.firing, ["SendLatencyHigh"], "{report:?}");
        assert_eq!(standing(&report, "DeliveryRateLow").value, Some(1.0));
        let latency = standing(&report, "SendLatencyHigh").value.unwrap();
        assert!((69.0..71.0).contains(&latency), "{latency}");
    }
}
