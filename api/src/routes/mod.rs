//! The routes, by resource.

pub mod alerts;
pub mod campaigns;
pub mod history;
pub mod intake;
pub mod messages;
mod page;
pub mod suppressions;
pub mod templates;
pub mod tracking;
pub mod users;
pub mod webhooks;
