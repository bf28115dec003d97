//! History queries: filters over `email_history`, newest first, paginated by keyset
//! (`sent_at`, `id`), never by OFFSET, so page 1,000 costs what page 1 does.

use std::fmt;
use std::str::FromStr;

use postroad_queue::EventKind;

use crate::RecipientStatus;

/// Most rows one query returns.
pub const MAX_LIMIT: u32 = 1000;

/// What to list. Every filter is optional; they combine with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    pub user_id: Option<u64>,
    pub email_type: Option<String>,
    pub status: Option<EventKind>,
    pub recipient: Option<String>,
    /// Only this tenant's messages (an API key of a tenant sees no other).
    pub tenant: Option<String>,
    /// Messages sent at or after this time (Unix ms).
    pub from_ms: Option<u64>,
    /// Messages sent before this time (Unix ms).
    pub to_ms: Option<u64>,
    /// Rows per page, 1 to [`MAX_LIMIT`].
    pub limit: u32,
    /// Where the previous page ended.
    pub cursor: Option<Cursor>,
}

/// One page of a [`HistoryQuery`], newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub rows: Vec<RecipientStatus>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

impl Page {
    pub(crate) fn new(rows: Vec<RecipientStatus>, limit: u32) -> Self {
        let next = (rows.len() == limit as usize)
            .then(|| rows.last().map(Cursor::after))
            .flatten();
        Self { rows, next }
    }
}

/// The position after a row: its `(sent_at, id)`. Printed as `<sent_at_ms>.<id>`,
/// opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub sent_at_ms: u64,
    pub id: i64,
}

impl Cursor {
    pub fn after(row: &RecipientStatus) -> Self {
        Self {
            sent_at_ms: row.sent_at_ms,
            id: row.id,
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.sent_at_ms, self.id)
    }
}

impl FromStr for Cursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a history cursor");
        let (sent_at, id) = s.split_once('.').ok_or_else(bad)?;
        Ok(Self {
            sent_at_ms: sent_at.parse().map_err(|_| bad())?,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

/// A value bound to a placeholder of [`Filter::sql`]; each backend binds times its own
/// way (SQLite: integer ms, MySQL: DATETIME(3)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    Int(i64),
    Text(&'a str),
    Time(u64),
}

/// The WHERE clause of a query and its values in placeholder order.
pub(crate) struct Filter<'a> {
    pub sql: String,
    pub values: Vec<Value<'a>>,
}

impl<'a> Filter<'a> {
    pub fn new(query: &'a HistoryQuery) -> Result<Self, String> {
        let mut sql = String::from("1 = 1");
        let mut values = Vec::new();
        if let Some(user_id) = query.user_id {
            let user_id =
                i64::try_from(user_id).map_err(|_| format!("user id {user_id} is out of range"))?;
            sql.push_str(" AND user_id = ?");
            values.push(Value::Int(user_id));
        }
        for (column, value) in [
            ("email_type", &query.email_type),
            ("recipient", &query.recipient),
            ("tenant", &query.tenant),
        ] {
            if let Some(value) = value {
                sql.push_str(&format!(" AND {column} = ?"));
                values.push(Value::Text(value));
            }
        }
        if let Some(status) = query.status {
            sql.push_str(" AND status = ?");
            values.push(Value::Text(status.as_str()));
        }
        if let Some(from) = query.from_ms {
            sql.push_str(" AND sent_at >= ?");
            values.push(Value::Time(from));
        }
        if let Some(to) = query.to_ms {
            sql.push_str(" AND sent_at < ?");
            values.push(Value::Time(to));
        }
        if let Some(cursor) = query.cursor {
            sql.push_str(" AND (sent_at < ? OR (sent_at = ? AND id < ?))");
            values.extend([
                Value::Time(cursor.sent_at_ms),
                Value::Time(cursor.sent_at_ms),
                Value::Int(cursor.id),
            ]);
        }
        Ok(Self { sql, values })
    }
}

/// A limit within 1..=MAX_LIMIT.
pub(crate) fn clamp_limit(limit: u32) -> u32 {
    limit.clamp(1, MAX_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c = Cursor {
            sent_at_ms: 1_764_000_000_123,
            id: 42,
        };
        assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
        for bad in ["", "12", "a.b", "1.", ".1", "-1.2", "1.2.3"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn filters_bind_one_value_per_placeholder() {
        let query = HistoryQuery {
            user_id: Some(7),
            email_type: Some("welcome".into()),
            status: Some(EventKind::Bounced),
            recipient: Some("bob@example.net".into()),
            tenant: Some("acme".into()),
            from_ms: Some(1),
            to_ms: Some(2),
            limit: 10,
            cursor: Some(Cursor {
                sent_at_ms: 5,
                id: 6,
            }),
        };
        let filter = Filter::new(&query).unwrap();
        assert_eq!(filter.sql.matches('?').count(), filter.values.len());
        assert_eq!(filter.values.len(), 10);
        assert!(
            Filter::new(&HistoryQuery {
                user_id: Some(u64::MAX),
                ..Default::default()
            })
            .is_err()
        );
    }
}
