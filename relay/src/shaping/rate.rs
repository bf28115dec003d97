//! Rates as the shaping file writes them: `"100/s"`, `"10,000/h"`, `"2/hr"`, `"30/min"`,
//! `"1/d"`, or a plain number of messages per second.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `count` events per `per`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    count: f64,
    per: Duration,
    /// How it was written (for messages and `check-shaping`).
    unit: &'static str,
}

impl Rate {
    /// Events per second.
    pub fn per_sec(&self) -> f64 {
        self.count / self.per.as_secs_f64()
    }

    /// The events allowed in `period`.
    pub fn count(&self) -> f64 {
        self.count
    }

    /// The period the count is over.
    pub fn period(&self) -> Duration {
        self.per
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("{text:?} is not a rate ({why}; write e.g. \"100/s\", \"10,000/h\", \"2/hr\")")
        };
        let (count, unit) = match text.split_once('/') {
            Some((count, unit)) => (count.trim(), unit.trim()),
            None => (text.trim(), "s"),
        };
        let count: f64 = count
            .replace(['_', ','], "")
            .parse()
            .map_err(|_| bad("the count is not a number"))?;
        if !(count.is_finite() && count > 0.0) {
            return Err(bad("the count must be above 0"));
        }
        let (per, unit) = match unit.to_ascii_lowercase().as_str() {
            "s" | "sec" | "second" => (1, "s"),
            "m" | "min" | "minute" => (60, "min"),
            "h" | "hr" | "hour" => (3600, "h"),
            "d" | "day" => (86_400, "d"),
            _ => return Err(bad("the unit is s, min, h or d")),
        };
        Ok(Self {
            count,
            per: Duration::from_secs(per),
            unit,
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.unit)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            Number(f64),
        }
        match Written::deserialize(deserializer)? {
            Written::Text(text) => Rate::parse(&text).map_err(serde::de::Error::custom),
            Written::Number(n) => Rate::parse(&n.to_string()).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_read_in_the_units_operators_write() {
        for (text, per_sec) in [
            ("100/s", 100.0),
            ("10,000/h", 10_000.0 / 3600.0),
            ("2/hr", 2.0 / 3600.0),
            ("30/min", 0.5),
            ("1/d", 1.0 / 86_400.0),
            ("250", 250.0),
            (" 5 / Sec ", 5.0),
        ] {
            let rate = Rate::parse(text).unwrap();
            assert!(
                (rate.per_sec() - per_sec).abs() < 1e-9,
                "{text}: {}",
                rate.per_sec()
            );
        }
        for bad in ["", "/s", "0/s", "-1/s", "x/s", "5/week", "inf/s", "NaN"] {
            assert!(Rate::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Rate::parse("10,000/hour").unwrap().to_string(), "10000/h");
    }
}
