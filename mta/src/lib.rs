//! Postroad's `postroad` binary as a library: configuration, TLS, AUTH credentials and
//! the SMTP server. `main.rs` is the command-line edge.

pub mod admin;
pub mod analytics;
pub mod api_key_cmd;
pub mod app_store;
pub mod archive_cmd;
pub mod auth;
pub mod bounce_cmd;
pub mod bounces;
pub mod campaign_cmd;
pub mod campaign_gate;
mod chain_sink;
pub mod config;
pub mod data_dir;
pub mod history_cmd;
mod history_reader;
pub mod metrics;
pub mod migrate_cmd;
pub mod plan;
pub mod roles;
mod secret_file;
pub mod serve;
pub mod shaping;
pub mod smtp;
pub mod suppression;
pub mod suppression_cmd;
mod text_table;
pub mod tls;
pub mod tracking;
pub mod webhook_cmd;
