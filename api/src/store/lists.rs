//! Recipient lists (tables `recipient_lists`, `list_recipients`): a list's rows are
//! written in chunks as its upload is read; an address already on the list is skipped
//! by the unique key on its lowercased form, so duplicates cost no memory.

use serde::Serialize;
use utoipa::ToSchema;

use super::{AppStore, Backend, Result, now_ms, on_pool, text};

/// At most this many bad rows are kept with a list (every one is counted).
pub const KEPT_ERRORS: usize = 100;

/// A list as `GET /v1/lists/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecipientList {
    pub id: String,
    pub name: String,
    /// `receiving` while its upload is read, `ready`, or `failed` (the upload broke
    /// off; see `errors`).
    pub state: String,
    /// Rows read (header and blank lines not counted).
    pub rows: u64,
    /// Rows refused (bad address, bad field); the first ones are in `errors`.
    pub rejected: u64,
    /// Rows whose address was already on the list.
    pub duplicates: u64,
    /// Distinct recipients stored.
    pub recipients: u64,
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<RowError>,
    /// RFC 3339.
    pub created_at: String,
    #[serde(skip)]
    pub tenant: String,
}

/// A refused row: its line in the upload and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct RowError {
    pub line: u64,
    pub error: String,
}

/// One accepted row.
#[derive(Debug, Clone, PartialEq)]
pub struct ListRow {
    pub seq: u64,
    pub address: String,
    pub user_id: Option<u64>,
    /// A JSON object, as text.
    pub data: Option<String>,
}

/// What an upload counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListCounts {
    pub rows: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub recipients: u64,
}

type ListRecord = (
    Vec<u8>,
    Vec<u8>,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    String,
    i64,
);

const LIST_COLUMNS: &str =
    "id, tenant, name, state, rows_read, rejected, duplicates, recipients, errors, created_at";

fn list(record: ListRecord) -> Result<RecipientList> {
    let (id, tenant, name, state, rows, rejected, duplicates, recipients, errors, created) = record;
    Ok(RecipientList {
        id: text(id)?,
        tenant: text(tenant)?,
        name,
        state,
        rows: rows.max(0) as u64,
        rejected: rejected.max(0) as u64,
        duplicates: duplicates.max(0) as u64,
        recipients: recipients.max(0) as u64,
        errors: serde_json::from_str(&errors).unwrap_or_default(),
        created_at: postroad_queue::rfc3339(created.max(0) as u64),
    })
}

impl AppStore {
    /// A new, empty list in state `receiving`.
    pub async fn create_list(&self, id: &str, tenant: &str, name: &str) -> Result<()> {
        let now = now_ms();
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO recipient_lists (id, tenant, name, state, errors, created_at, updated_at) \
                 VALUES (?, ?, ?, 'receiving', '[]', ?, ?)",
            )
            .bind(id)
            .bind(tenant)
            .bind(name)
            .bind(now)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Adds `rows` to list `id` in one statement; how many were new (the others'
    /// addresses were on the list already).
    pub async fn add_list_rows(&self, id: &str, rows: &[ListRow]) -> Result<u64> {
        if rows.is_empty() {
            return Ok(0);
        }
        let values = vec!["(?, ?, ?, ?, ?, ?)"; rows.len()].join(", ");
        let columns = "(list_id, seq, address_key, address, user_id, data)";
        let sql = match self.pool() {
            Backend::Sqlite(_) => {
                format!("INSERT OR IGNORE INTO list_recipients {columns} VALUES {values}")
            }
            Backend::Mysql(_) => {
                format!("INSERT IGNORE INTO list_recipients {columns} VALUES {values}")
            }
        };
        let added = on_pool!(self, pool => {
            let mut query = sqlx::query(&sql);
            for row in rows {
                query = query
                    .bind(id)
                    .bind(row.seq as i64)
                    .bind(row.address.to_lowercase())
                    .bind(&row.address)
                    .bind(row.user_id.map(|u| u as i64))
                    .bind(row.data.as_deref());
            }
            query.execute(pool).await?.rows_affected()
        });
        Ok(added)
    }

    /// Records what the upload counted so far, and its state.
    pub async fn update_list(
        &self,
        id: &str,
        state: &str,
        counts: &ListCounts,
        errors: &[RowError],
    ) -> Result<()> {
        let errors = serde_json::to_string(errors).unwrap_or_else(|_| "[]".into());
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE recipient_lists SET state = ?, rows_read = ?, rejected = ?, duplicates = ?, \
                 recipients = ?, errors = ?, updated_at = ? WHERE id = ?",
            )
            .bind(state)
            .bind(counts.rows as i64)
            .bind(counts.rejected as i64)
            .bind(counts.duplicates as i64)
            .bind(counts.recipients as i64)
            .bind(errors)
            .bind(now_ms())
            .bind(id)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// List `id`, if it is `tenant`'s.
    pub async fn list(&self, tenant: &str, id: &str) -> Result<Option<RecipientList>> {
        let sql = format!("SELECT {LIST_COLUMNS} FROM recipient_lists WHERE id = ? AND tenant = ?");
        let record: Option<ListRecord> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(id).bind(tenant).fetch_optional(pool).await?
        });
        record.map(list).transpose()
    }

    /// Up to `limit` rows of list `id` after `after_seq`, in order.
    pub async fn list_rows(&self, id: &str, after_seq: u64, limit: usize) -> Result<Vec<ListRow>> {
        type Record = (i64, String, Option<i64>, Option<String>);
        let records: Vec<Record> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT seq, address, user_id, data FROM list_recipients \
                 WHERE list_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            )
            .bind(id)
            .bind(after_seq as i64)
            .bind(limit as i64)
            .fetch_all(pool)
            .await?
        });
        Ok(records
            .into_iter()
            .map(|(seq, address, user_id, data)| ListRow {
                seq: seq.max(0) as u64,
                address,
                user_id: user_id.map(|u| u.max(0) as u64),
                data,
            })
            .collect())
    }

    /// The rows up to and including `upto_seq` after `after_seq`.
    pub async fn count_list_rows(&self, id: &str, after_seq: u64, upto_seq: u64) -> Result<u64> {
        let n: i64 = on_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM list_recipients WHERE list_id = ? AND seq > ? AND seq <= ?",
            )
            .bind(id)
            .bind(after_seq as i64)
            .bind(upto_seq as i64)
            .fetch_one(pool)
            .await?
        });
        Ok(n.max(0) as u64)
    }
}
