//! What the routes that page through the application store share: the query string
//! read into its type, and the page size.

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;

use crate::problem::{FieldError, Problem};

/// Rows per page unless `limit` says otherwise, and the most it may say.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// The query string, or a problem saying what is wrong with it.
pub fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Problem> {
    query
        .map(|Query(q)| q)
        .map_err(|e| Problem::fields(vec![FieldError::new("?", "invalid-value", e.body_text())]))
}

/// The page size asked for: [`DEFAULT_LIMIT`] when none, 1 to [`MAX_LIMIT`].
pub fn limit(given: Option<usize>) -> Result<usize, Problem> {
    let limit = given.unwrap_or(DEFAULT_LIMIT);
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(Problem::fields(vec![FieldError::new(
            "limit",
            "invalid-value",
            format!("1 to {MAX_LIMIT}"),
        )]))
    }
}
