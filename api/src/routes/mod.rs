//! The routes, by resource.

pub mod messages;
pub mod templates;
pub mod users;
