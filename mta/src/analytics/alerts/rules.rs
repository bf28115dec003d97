//! The alert rules: what each measures over the window, and when it fires.

pub use postroad_api::alerts::{AlertCondition as Condition, AlertSeverity as Severity};

use super::AlertsConfig;
use super::window::Totals;

/// What a rule measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    DeliveryRate,
    BounceRate,
    ComplaintRate,
    QueueDepth,
    /// The 95th percentile of acceptance to delivery, in seconds.
    SendLatency,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The alert's name, as `GET /v1/alerts`, the logs and the Prometheus rules say it.
    pub name: &'static str,
    pub severity: Severity,
    pub signal: Signal,
    pub condition: Condition,
    pub threshold: f64,
}

impl Rule {
    /// The design's five rules with the configured thresholds.
    pub fn all(config: &AlertsConfig) -> Vec<Rule> {
        use Condition::*;
        use Severity::*;
        use Signal::*;
        let rule = |name, severity, signal, condition, threshold| Rule {
            name,
            severity,
            signal,
            condition,
            threshold,
        };
        vec![
            rule(
                "DeliveryRateLow",
                Critical,
                DeliveryRate,
                Below,
                config.delivery_rate_below,
            ),
            rule(
                "QueueDepthHigh",
                Critical,
                QueueDepth,
                Above,
                config.queue_depth_above as f64,
            ),
            rule(
                "BounceRateHigh",
                Critical,
                BounceRate,
                Above,
                config.bounce_rate_above,
            ),
            rule(
                "SendLatencyHigh",
                Warning,
                SendLatency,
                Above,
                config.send_latency_p95_above_secs,
            ),
            rule(
                "ComplaintRateHigh",
                Warning,
                ComplaintRate,
                Above,
                config.complaint_rate_above,
            ),
        ]
    }

    /// The rule's value over the window; `None` when the window holds fewer than
    /// `min_events` of what the value is computed from.
    pub fn measure(
        &self,
        totals: &Totals,
        queue_depth: Option<u64>,
        min_events: u64,
    ) -> Option<f64> {
        let c = &totals.counts;
        let enough = |n: u64| n >= min_events;
        match self.signal {
            Signal::DeliveryRate => c.delivery_rate().filter(|_| enough(c.attempts())),
            Signal::BounceRate => c.bounce_rate().filter(|_| enough(c.resolved())),
            Signal::ComplaintRate => c
                .complaint_rate()
                .filter(|_| enough(c.get(postroad_queue::EventKind::Delivered))),
            Signal::SendLatency => totals
                .latency
                .quantile_secs(0.95)
                .filter(|_| enough(totals.latency.count())),
            Signal::QueueDepth => queue_depth.map(|d| d as f64),
        }
    }

    pub fn fires(&self, value: f64) -> bool {
        match self.condition {
            Condition::Above => value > self.threshold,
            Condition::Below => value < self.threshold,
        }
    }

    /// What the rule says, for people.
    pub fn summary(&self) -> String {
        let t = self.threshold;
        // A rate as a percentage, to two decimals at most (0.005 is 0.5%).
        let percent = (t * 10_000.0).round() / 100.0;
        match self.signal {
            Signal::DeliveryRate => format!("delivery rate below {percent}%"),
            Signal::BounceRate => format!("bounce rate above {percent}%"),
            Signal::ComplaintRate => format!("complaint rate above {percent}%"),
            Signal::QueueDepth => format!("more than {t} messages queued"),
            Signal::SendLatency => format!("95% of deliveries take longer than {t} s"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postroad_queue::EventKind;

    fn totals(pairs: &[(EventKind, u64)]) -> Totals {
        let mut t = Totals::default();
        for (k, n) in pairs {
            t.counts.add(*k, *n);
        }
        t
    }

    fn rule(name: &str) -> Rule {
        Rule::all(&AlertsConfig::default())
            .into_iter()
            .find(|r| r.name == name)
            .unwrap()
    }

    #[test]
    fn the_default_rules_fire_at_the_designs_thresholds() {
        use EventKind::*;
        let delivery = rule("DeliveryRateLow");
        let bounce = rule("BounceRateHigh");
        let complaint = rule("ComplaintRateHigh");
        let depth = rule("QueueDepthHigh");
        // 94 of 100 attempts delivered, 6 bounced: 94% < 95%; bounces 6% < 10%.
        let t = totals(&[(Delivered, 94), (Bounced, 6)]);
        assert!(delivery.fires(delivery.measure(&t, None, 100).unwrap()));
        assert!(!bounce.fires(bounce.measure(&t, None, 100).unwrap()));
        let t = totals(&[(Delivered, 89), (Bounced, 11)]);
        assert!(bounce.fires(bounce.measure(&t, None, 100).unwrap()));
        let t = totals(&[(Delivered, 1000), (Complained, 6)]);
        assert!(complaint.fires(complaint.measure(&t, None, 100).unwrap()));
        let t = totals(&[(Delivered, 1000), (Complained, 5)]);
        assert!(!complaint.fires(complaint.measure(&t, None, 100).unwrap()));
        // Too few attempts to judge a rate; the queue's depth needs no minimum.
        let t = totals(&[(Delivered, 10), (Bounced, 10)]);
        assert_eq!(delivery.measure(&t, None, 100), None);
        assert_eq!(depth.measure(&t, Some(100_001), 100), Some(100_001.0));
        assert!(depth.fires(100_001.0));
        assert!(!depth.fires(100_000.0));
        assert_eq!(depth.measure(&t, None, 100), None);
    }
}
