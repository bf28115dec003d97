//! Alerts as `GET /v1/alerts` shows them, and [`AlertSource`], through which the
//! process running the API reports them: the API does not evaluate rules itself.

use serde::Serialize;
use utoipa::ToSchema;

/// Reports the alert rules' current states.
pub trait AlertSource: Send + Sync {
    fn report(&self) -> AlertReport;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertSeverity {
    Critical,
    Warning,
}

impl AlertSeverity {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertSeverity::Critical => "critical",
            AlertSeverity::Warning => "warning",
        }
    }
}

/// Whether a rule fires when its value is above or below the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertCondition {
    Above,
    Below,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AlertState {
    /// The value is on the right side of the threshold.
    Ok,
    Firing,
    /// Too few events in the window to judge (fewer than `alerts.min_events`).
    NoData,
}

/// `GET /v1/alerts`: every rule, firing or not.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertReport {
    /// When the rules were last evaluated (RFC 3339); null before the first time.
    pub evaluated_at: Option<String>,
    /// The sliding window the rates and the latency are computed over (in 10 s
    /// slots: each evaluation sums between this and 10 s more).
    pub window_seconds: u64,
    /// The names of the alerts firing now.
    pub firing: Vec<String>,
    pub alerts: Vec<AlertView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertView {
    /// `DeliveryRateLow`, `QueueDepthHigh`, `BounceRateHigh`, `SendLatencyHigh`,
    /// `ComplaintRateHigh`: the names the shipped Prometheus rules use too.
    pub name: String,
    pub severity: AlertSeverity,
    pub state: AlertState,
    /// Since when the rule is in its state (RFC 3339).
    pub since: String,
    /// The measured value (a rate from 0 to 1, seconds, or messages); null without data.
    pub value: Option<f64>,
    pub threshold: f64,
    pub condition: AlertCondition,
    /// What the rule means, for people.
    pub summary: String,
}
