//! What operators watch, computed from the events as they pass: analytics points to
//! InfluxDB ([`influx`]) and alert rules over a sliding window ([`alerts`]), both on
//! the counts and rates of [`counts`].

pub mod alerts;
pub mod counts;
pub mod influx;
mod labels;
