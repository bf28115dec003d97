//! Postroad's load-test harness as a library: the `loadtest` binary's modes, and the
//! test doubles other crates use in-process from their tests:
//!
//! - [`sink`]: a fast SMTP/LMTP receiver that counts, verifies, dedupes and injects
//!   faults (rate limits, 4xx/5xx shares, special local parts, slow replies, dropped
//!   connections, chosen EHLO extensions).
//! - [`dns`]: an authoritative DNS stub (UDP + TCP) with MX, null MX, A and AAAA
//!   records, SERVFAIL and NXDOMAIN names, changeable at run time.
//! - [`generator`]: the test messages and their integrity contract.
//! - [`smtp_client`] and [`smtp_cmd`]: the `loadtest smtp` generator, closed loop or
//!   open loop ([`pacer`]), over a weighted domain [`mix`].
//! - [`http_client`] and [`http_cmd`]: the `loadtest http` generator for Postroad's
//!   HTTP API, with the same [`schedule`] of messages as `loadtest smtp`.
//! - [`e2e_cmd`]: `loadtest e2e`, generator → MTA → sink with per-message tracking
//!   ([`tracker`]).
//! - [`timeline`] and [`html`]: per-second buckets and the HTML report.

pub mod campaign_cmd;
pub mod dns;
pub mod dns_cmd;
pub mod e2e_cmd;
pub mod generator;
pub mod history_cmd;
pub mod html;
pub mod http_client;
pub mod http_cmd;
pub mod load_page;
pub mod mix;
pub mod pacer;
pub mod postroad_proc;
pub mod rates_file;
pub mod run;
pub mod schedule;
pub mod sink;
pub mod sink_cmd;
pub mod smtp_client;
pub mod smtp_cmd;
pub mod stats;
pub mod timeline;
pub mod track_cmd;
pub mod tracker;
pub mod verify_cmd;
