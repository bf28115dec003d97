//! The routes, by resource.

pub mod history;
pub mod messages;
pub mod templates;
pub mod users;
