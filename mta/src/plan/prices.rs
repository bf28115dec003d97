//! The prices file (`--prices FILE`, TOML): what each unit the plan counts costs per
//! month. Without `--prices`, `deploy/plan/prices.example.toml` (built into the
//! binary): illustrative list prices, dated, not a quote.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const DEFAULT: &str = include_str!("../../../deploy/plan/prices.example.toml");
pub const DEFAULT_NAME: &str = "deploy/plan/prices.example.toml (built in)";

#[derive(Debug, Error)]
pub enum PricesError {
    #[error("cannot read the prices file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the prices file {name} is not valid: {source}")]
    Parse {
        name: String,
        source: toml::de::Error,
    },
    #[error("the prices file {name}: {field} must be a number, 0 or more, not {value}")]
    Negative {
        name: String,
        field: &'static str,
        value: f64,
    },
}

/// Prices per month (storage per GiB-month, egress per GiB), in `currency`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    pub currency: String,
    /// When the prices were taken.
    pub date: String,
    /// Where they come from.
    pub source: String,
    /// One vCPU of a compute instance (memory included) for ingress, relay and
    /// history pods.
    pub vcpu_month: f64,
    pub kafka_broker_month: f64,
    pub kafka_storage_gib_month: f64,
    pub mysql_server_month: f64,
    pub mysql_storage_gib_month: f64,
    pub object_storage_gib_month: f64,
    pub redis_gib_month: f64,
    pub influxdb_node_month: f64,
    pub egress_gib: f64,
}

impl Prices {
    fn fields(&self) -> [(&'static str, f64); 9] {
        [
            ("vcpu_month", self.vcpu_month),
            ("kafka_broker_month", self.kafka_broker_month),
            ("kafka_storage_gib_month", self.kafka_storage_gib_month),
            ("mysql_server_month", self.mysql_server_month),
            ("mysql_storage_gib_month", self.mysql_storage_gib_month),
            ("object_storage_gib_month", self.object_storage_gib_month),
            ("redis_gib_month", self.redis_gib_month),
            ("influxdb_node_month", self.influxdb_node_month),
            ("egress_gib", self.egress_gib),
        ]
    }
}

/// The prices and the file they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub source: String,
    pub prices: Prices,
}

pub fn load(path: Option<&Path>) -> Result<Loaded, PricesError> {
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| PricesError::Read {
                path: p.to_path_buf(),
                source,
            })?;
            parse(&p.display().to_string(), &text)
        }
        None => parse(DEFAULT_NAME, DEFAULT),
    }
}

pub fn parse(name: &str, text: &str) -> Result<Loaded, PricesError> {
    let prices: Prices = toml::from_str(text).map_err(|source| PricesError::Parse {
        name: name.to_string(),
        source,
    })?;
    for (field, value) in prices.fields() {
        if !(value.is_finite() && value >= 0.0) {
            return Err(PricesError::Negative {
                name: name.to_string(),
                field,
                value,
            });
        }
    }
    Ok(Loaded {
        source: name.to_string(),
        prices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_loads() {
        let l = load(None).unwrap();
        assert!(l.prices.vcpu_month > 0.0);
        assert!(!l.prices.date.is_empty());
    }

    #[test]
    fn bad_prices_are_refused() {
        let bad = DEFAULT.replace("vcpu_month = ", "vcpu_month = -");
        let e = parse("t", &bad).unwrap_err().to_string();
        assert!(e.contains("vcpu_month must be a number, 0 or more"), "{e}");
        let unknown = format!("{DEFAULT}\nbogus = 1\n");
        assert!(matches!(
            parse("t", &unknown),
            Err(PricesError::Parse { .. })
        ));
    }
}
