//! Analytics points to InfluxDB 1.x (`[influx]`): events are counted as they pass
//! ([`InfluxSink`], a sink of the event fan-out) and every `interval_secs` the
//! [`writer`] turns the counts into points and posts them in line protocol to
//! `/write`, in batches, retried while InfluxDB is away.
//!
//! | measurement | tags | fields |
//! |---|---|---|
//! | `postroad_delivery` | `host`, `email_type`, `destination`, `campaign` | `queued`, `delivered`, `deferred`, `bounced`, `expired`, `opened`, `clicked`, `complained`, `suppressed`, `unsubscribed` (integers: events in the interval), `delivery_rate`, `bounce_rate`, `open_rate`, `click_rate`, `complaint_rate` (floats, when their denominator is not zero; see [`super::counts`]) |
//! | `postroad_latency` | `host` | `count`, `p50`, `p95`, `p99`, `max`: seconds from acceptance to delivery of the interval's deliveries |
//! | `postroad_queue` | `host` | `queued`, `ready`, `deferred`, `claimed`, `dead_letter`: what the queue holds at the end of the interval |
//!
//! `host` is `server.hostname`, so processes writing to one database never overwrite
//! each other's points. Metrics are not acknowledged mail: while InfluxDB cannot be
//! reached, at most `max_buffered_points` wait in memory and older points are dropped
//! (counted in `postroad_influx_points_total{outcome="dropped"}`); a restart loses what
//! is buffered. After a restart the fan-out offers again what the slowest sink had
//! not taken, so events near a restart may be counted twice.

mod line;
pub mod writer;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use postroad_queue::{Batching, DeliveryEvent, EventKind, EventSink, QueueStats, SinkError};
use serde::{Deserialize, Serialize};

use super::counts::{Counts, Latency};
use super::labels::ActiveLabels;
use crate::metrics::destination_group;
pub use line::{Field, Point};

type Secs = serde_with::As<serde_with::DurationSeconds<u64>>;

/// Distinct email types and campaigns with their own tag (see [`ActiveLabels`]).
const MAX_EMAIL_TYPES: usize = 100;
const MAX_CAMPAIGNS: usize = 1000;
/// How long a campaign may be quiet before another takes its tag.
const CAMPAIGN_IDLE: Duration = Duration::from_secs(3600);

/// `[influx]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InfluxConfig {
    /// Base URL of InfluxDB 1.x (`http://influx:8086`); empty: no InfluxDB writes.
    pub url: String,
    pub database: String,
    /// Credentials, when InfluxDB has authentication on (sent as HTTP basic auth).
    pub username: String,
    pub password: String,
    /// The retention policy to write into; empty: the database's default.
    pub retention_policy: String,
    /// `CREATE DATABASE` at start and whenever InfluxDB says the database is missing
    /// (needs admin rights when authentication is on).
    pub create_database: bool,
    /// How often points are taken and written.
    #[serde(rename = "interval_secs", with = "Secs")]
    pub interval: Duration,
    /// Most points in one `/write` request.
    pub batch_size: usize,
    /// Most points kept while InfluxDB cannot be reached; beyond, the oldest drop.
    pub max_buffered_points: usize,
    /// How long one request may take.
    #[serde(rename = "timeout_secs", with = "Secs")]
    pub timeout: Duration,
}

impl Default for InfluxConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            database: "postroad".into(),
            username: String::new(),
            password: String::new(),
            retention_policy: String::new(),
            create_database: true,
            interval: Duration::from_secs(10),
            batch_size: 5000,
            max_buffered_points: 100_000,
            timeout: Duration::from_secs(10),
        }
    }
}

impl InfluxConfig {
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }

    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| format!("influx.url {:?} is not a URL: {e}", self.url))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "influx.url {:?} must be http:// or https:// with a host",
                self.url
            ));
        }
        if self.database.trim().is_empty() {
            return Err("influx.database is empty".into());
        }
        if self.interval.is_zero() || self.timeout.is_zero() {
            return Err("influx.interval_secs and influx.timeout_secs must be above 0".into());
        }
        if self.batch_size == 0 || self.batch_size > self.max_buffered_points {
            return Err(format!(
                "influx.batch_size ({}) must be 1 to influx.max_buffered_points ({})",
                self.batch_size, self.max_buffered_points
            ));
        }
        Ok(())
    }
}

/// What `postroad_delivery` points are grouped by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Group {
    email_type: String,
    destination: &'static str,
    campaign: String,
}

/// The events of one interval.
#[derive(Debug, Default)]
pub struct Tally {
    groups: HashMap<Group, Counts>,
    latency: Latency,
}

impl Tally {
    /// The interval's points, stamped `at_ms`, with the queue's counts when known.
    pub fn points(&self, host: &str, at_ms: u64, queue: Option<&QueueStats>) -> Vec<Point> {
        let host = || ("host", host.to_string());
        let mut points: Vec<Point> = self
            .groups
            .iter()
            .map(|(group, counts)| Point {
                measurement: "postroad_delivery",
                tags: vec![
                    ("campaign", group.campaign.clone()),
                    ("destination", group.destination.to_string()),
                    ("email_type", group.email_type.clone()),
                    host(),
                ],
                fields: delivery_fields(counts),
                at_ms,
            })
            .collect();
        if self.latency.count() > 0 {
            let q = |q| Field::Float(self.latency.quantile_secs(q).unwrap_or_default());
            points.push(Point {
                measurement: "postroad_latency",
                tags: vec![host()],
                fields: vec![
                    ("count", Field::Int(self.latency.count())),
                    ("p50", q(0.5)),
                    ("p95", q(0.95)),
                    ("p99", q(0.99)),
                    (
                        "max",
                        Field::Float(self.latency.max_secs().unwrap_or_default()),
                    ),
                ],
                at_ms,
            });
        }
        if let Some(s) = queue {
            points.push(Point {
                measurement: "postroad_queue",
                tags: vec![host()],
                fields: vec![
                    ("queued", Field::Int(s.queued)),
                    ("ready", Field::Int(s.ready)),
                    ("deferred", Field::Int(s.deferred)),
                    ("claimed", Field::Int(s.claimed)),
                    ("dead_letter", Field::Int(s.dead_letters)),
                ],
                at_ms,
            });
        }
        points
    }
}

fn delivery_fields(c: &Counts) -> Vec<(&'static str, Field)> {
    let mut fields: Vec<(&'static str, Field)> = EventKind::ALL
        .into_iter()
        .map(|k| (k.as_str(), Field::Int(c.get(k))))
        .collect();
    for (name, rate) in [
        ("delivery_rate", c.delivery_rate()),
        ("bounce_rate", c.bounce_rate()),
        ("open_rate", c.open_rate()),
        ("click_rate", c.click_rate()),
        ("complaint_rate", c.complaint_rate()),
    ] {
        if let Some(rate) = rate {
            fields.push((name, Field::Float(rate)));
        }
    }
    fields
}

struct Counting {
    tally: Tally,
    email_types: ActiveLabels,
    campaigns: ActiveLabels,
}

/// Counts events into the current interval's [`Tally`]; holds nothing durably, so
/// it never holds events back in the outbox.
pub struct InfluxSink {
    counting: Mutex<Counting>,
}

impl Default for InfluxSink {
    fn default() -> Self {
        Self {
            counting: Mutex::new(Counting {
                tally: Tally::default(),
                email_types: ActiveLabels::new(MAX_EMAIL_TYPES, Duration::MAX),
                campaigns: ActiveLabels::new(MAX_CAMPAIGNS, CAMPAIGN_IDLE),
            }),
        }
    }
}

impl InfluxSink {
    /// The interval's tally so far; counting starts over.
    pub fn take(&self) -> Tally {
        std::mem::take(&mut self.lock().tally)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counting> {
        self.counting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl EventSink for InfluxSink {
    fn name(&self) -> &'static str {
        "influx"
    }

    fn batching(&self) -> Batching {
        Batching {
            max_batch: 10_000,
            linger: Duration::from_secs(1),
        }
    }

    async fn write(&self, events: &[DeliveryEvent]) -> Result<(), SinkError> {
        let now = Instant::now();
        let mut counting = self.lock();
        let Counting {
            tally,
            email_types,
            campaigns,
        } = &mut *counting;
        for e in events {
            let group = Group {
                email_type: email_types.label(e.meta.email_type.as_deref(), now),
                destination: destination_group(&e.domain),
                campaign: campaigns.label(e.meta.campaign.as_deref(), now),
            };
            tally.groups.entry(group).or_default().add(e.kind, 1);
            tally.latency.record(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postroad_queue::{Envelope, Recipient};

    #[tokio::test]
    async fn an_interval_becomes_a_point_per_group_and_one_of_latency_and_queue() {
        let sink = InfluxSink::default();
        let mut envelope = Envelope::new(
            "s@example.com",
            vec![
                Recipient::new("a@gmail.com"),
                Recipient::new("b@example.net"),
            ],
            "192.0.2.1".parse().unwrap(),
        );
        envelope.meta.email_type = Some("welcome".into());
        let at = postroad_history::status::sent_at_ms(envelope.id) + 200;
        let event =
            |kind, i: usize| DeliveryEvent::new(kind, &envelope, &envelope.recipients[i], at);
        sink.write(&[
            event(EventKind::Queued, 0),
            event(EventKind::Queued, 1),
            event(EventKind::Delivered, 0),
            event(EventKind::Bounced, 1),
        ])
        .await
        .unwrap();
        let tally = sink.take();
        let stats = QueueStats {
            queued: 3,
            ready: 2,
            deferred: 1,
            ..Default::default()
        };
        let mut lines = String::new();
        for p in tally.points("mx1", 1_000, Some(&stats)) {
            p.write_line(&mut lines);
        }
        let mut lines: Vec<&str> = lines.lines().collect();
        lines.sort();
        assert_eq!(
            lines,
            [
                "postroad_delivery,campaign=none,destination=gmail,email_type=welcome,host=mx1 \
                 queued=1i,delivered=1i,deferred=0i,bounced=0i,expired=0i,opened=0i,clicked=0i,\
                 complained=0i,suppressed=0i,unsubscribed=0i,delivery_rate=1,bounce_rate=0,open_rate=0,click_rate=0,\
                 complaint_rate=0 1000",
                "postroad_delivery,campaign=none,destination=other,email_type=welcome,host=mx1 \
                 queued=1i,delivered=0i,deferred=0i,bounced=1i,expired=0i,opened=0i,clicked=0i,\
                 complained=0i,suppressed=0i,unsubscribed=0i,delivery_rate=0,bounce_rate=1 1000",
                "postroad_latency,host=mx1 count=1i,p50=0.2,p95=0.2,p99=0.2,max=0.2 1000",
                "postroad_queue,host=mx1 queued=3i,ready=2i,deferred=1i,claimed=0i,dead_letter=0i 1000",
            ]
        );
        assert!(sink.take().points("mx1", 2_000, None).is_empty());
    }
}
