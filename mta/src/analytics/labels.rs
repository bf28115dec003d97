//! Tag values of unbounded sets (email types, campaigns) kept to a bounded number of
//! series: a value gets its own tag while fewer than `max` values are in use; beyond
//! that it counts as `other`. A value unused for `idle` frees its place, so a new
//! campaign gets its name once an old one has gone quiet.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The tag value of events without one.
pub const NONE: &str = "none";
/// The tag value of events whose value found no place.
pub const OTHER: &str = "other";

#[derive(Debug)]
pub struct ActiveLabels {
    max: usize,
    idle: Duration,
    last_used: HashMap<String, Instant>,
}

impl ActiveLabels {
    pub fn new(max: usize, idle: Duration) -> Self {
        Self {
            max,
            idle,
            last_used: HashMap::new(),
        }
    }

    /// The tag for `value` at `now`.
    pub fn label(&mut self, value: Option<&str>, now: Instant) -> String {
        let Some(value) = value else {
            return NONE.into();
        };
        if let Some(used) = self.last_used.get_mut(value) {
            *used = now;
            return value.to_string();
        }
        if self.last_used.len() >= self.max {
            let idle = self.idle;
            self.last_used
                .retain(|_, used| now.saturating_duration_since(*used) < idle);
        }
        if self.last_used.len() < self.max {
            self.last_used.insert(value.to_string(), now);
            value.to_string()
        } else {
            OTHER.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_beyond_the_bound_are_other_until_a_place_goes_idle() {
        let start = Instant::now();
        let mut labels = ActiveLabels::new(2, Duration::from_secs(60));
        assert_eq!(labels.label(None, start), NONE);
        assert_eq!(labels.label(Some("spring"), start), "spring");
        assert_eq!(labels.label(Some("summer"), start), "summer");
        assert_eq!(labels.label(Some("autumn"), start), OTHER);
        // Summer stays in use; spring goes quiet and gives up its place.
        let later = start + Duration::from_secs(61);
        assert_eq!(labels.label(Some("summer"), later), "summer");
        assert_eq!(labels.label(Some("autumn"), later), "autumn");
        assert_eq!(labels.label(Some("spring"), later), OTHER);
    }
}
