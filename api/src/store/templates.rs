//! Templates per (tenant, email type), versioned: every `PUT` adds a version, the newest
//! is used unless a request names one, `DELETE` removes every version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AppStore, Result, StoreError, is_duplicate, now_ms, on_pool, text};

/// Whether a `PUT` failed because a concurrent one took its version number (MySQL may
/// also pick it as a deadlock victim).
fn lost_race(error: &sqlx::Error) -> bool {
    is_duplicate(error)
        || matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("40001"))
}

/// Tries of a `PUT` that lost the race for its version number to concurrent ones.
const PUT_TRIES: usize = 10;

/// The parts of a template in one language.
// Unknown fields are refused by `PUT` (every one named), not by serde: a
// `deny_unknown_fields` here would close the schema of `Template`, which extends it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Parts {
    /// Subject line template.
    pub subject: String,
    /// Plain-text body template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// HTML body template (values are HTML-escaped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

/// What `PUT /v1/templates/{emailType}` takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Definition {
    /// Subject line template.
    pub subject: String,
    /// Plain-text body template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// HTML body template (values are HTML-escaped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// Default sender (`Name <address>` or an address) when the request names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Variants by language tag (`fr`, `pt-BR`), picked by the request's `locale` or
    /// the user's `language` preference; the parts above are the fallback.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub locales: BTreeMap<String, Parts>,
}

/// The fields of a [`Definition`] and of its [`Parts`].
pub const DEFINITION_FIELDS: [&str; 5] = ["subject", "text", "html", "from", "locales"];
pub const PARTS_FIELDS: [&str; 3] = ["subject", "text", "html"];

impl Definition {
    /// The parts for `locale` (`pt-BR` falls back to `pt`, then to the default parts).
    pub fn parts(&self, locale: Option<&str>) -> (Option<&str>, Parts) {
        if let Some(locale) = locale {
            let lower = locale.to_ascii_lowercase();
            let language = lower.split(['-', '_']).next().unwrap_or_default();
            for candidate in [lower.as_str(), language] {
                if let Some((name, parts)) = self
                    .locales
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(candidate))
                {
                    return (Some(name.as_str()), parts.clone());
                }
            }
        }
        let parts = Parts {
            subject: self.subject.clone(),
            text: self.text.clone(),
            html: self.html.clone(),
        };
        (None, parts)
    }
}

/// A stored version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    pub email_type: String,
    pub version: u32,
    #[serde(flatten)]
    pub definition: Definition,
    pub created_at_ms: i64,
}

/// A row of `templates`.
#[derive(sqlx::FromRow)]
struct TemplateRow {
    email_type: Vec<u8>,
    version: i64,
    definition: String,
    created_at: i64,
}

impl TryFrom<TemplateRow> for Template {
    type Error = StoreError;

    fn try_from(row: TemplateRow) -> Result<Self> {
        let version = row.version;
        Ok(Template {
            email_type: text(row.email_type)?,
            version: u32::try_from(version)
                .map_err(|_| StoreError::Corrupt(format!("template version {version}")))?,
            definition: serde_json::from_str(&row.definition)
                .map_err(|e| StoreError::Corrupt(format!("template definition: {e}")))?,
            created_at_ms: row.created_at,
        })
    }
}

const SELECT: &str = "SELECT email_type, version, definition, created_at FROM templates";

impl AppStore {
    /// Stores `definition` as the next version of (tenant, email type). Two `PUT`s at
    /// once (on two nodes) both get a version: the one that loses the race for a number
    /// takes the next.
    pub async fn put_template(
        &self,
        tenant: &str,
        email_type: &str,
        definition: &Definition,
    ) -> Result<Template> {
        let json = serde_json::to_string(definition)
            .map_err(|e| StoreError::Corrupt(format!("template definition: {e}")))?;
        let mut tries = 0;
        loop {
            tries += 1;
            match self.insert_next_version(tenant, email_type, &json).await {
                Ok((version, created_at_ms)) => {
                    return Ok(Template {
                        email_type: email_type.to_string(),
                        version,
                        definition: definition.clone(),
                        created_at_ms,
                    });
                }
                Err(StoreError::Database(e)) if lost_race(&e) && tries < PUT_TRIES => continue,
                Err(e) => return Err(e),
            }
        }
    }

    async fn insert_next_version(
        &self,
        tenant: &str,
        email_type: &str,
        json: &str,
    ) -> Result<(u32, i64)> {
        let now = now_ms();
        let version = on_pool!(self, pool => {
            let mut txn = pool.begin_with(self.begin_write()).await?;
            let latest: Option<i64> = sqlx::query_scalar(
                "SELECT MAX(version) FROM templates WHERE tenant = ? AND email_type = ?",
            )
            .bind(tenant)
            .bind(email_type)
            .fetch_one(&mut *txn)
            .await?;
            let version = latest.unwrap_or(0) + 1;
            sqlx::query(
                "INSERT INTO templates (tenant, email_type, version, definition, created_at) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(tenant)
            .bind(email_type)
            .bind(version)
            .bind(json)
            .bind(now)
            .execute(&mut *txn)
            .await?;
            txn.commit().await?;
            version
        });
        let version = u32::try_from(version)
            .map_err(|_| StoreError::Corrupt(format!("template version {version}")))?;
        Ok((version, now))
    }

    /// The given version, or the newest.
    pub async fn template(
        &self,
        tenant: &str,
        email_type: &str,
        version: Option<u32>,
    ) -> Result<Option<Template>> {
        let row: Option<TemplateRow> = match version {
            Some(v) => {
                let sql = format!("{SELECT} WHERE tenant = ? AND email_type = ? AND version = ?");
                on_pool!(self, pool => {
                    sqlx::query_as(&sql)
                        .bind(tenant)
                        .bind(email_type)
                        .bind(i64::from(v))
                        .fetch_optional(pool)
                        .await?
                })
            }
            None => {
                let sql = format!(
                    "{SELECT} WHERE tenant = ? AND email_type = ? ORDER BY version DESC LIMIT 1"
                );
                on_pool!(self, pool => {
                    sqlx::query_as(&sql)
                        .bind(tenant)
                        .bind(email_type)
                        .fetch_optional(pool)
                        .await?
                })
            }
        };
        row.map(Template::try_from).transpose()
    }

    /// The newest version of every template of `tenant`, by email type.
    pub async fn list_templates(&self, tenant: &str) -> Result<Vec<Template>> {
        let sql = "SELECT t.email_type, t.version, t.definition, t.created_at FROM templates t \
             JOIN (SELECT email_type, MAX(version) AS version FROM templates WHERE tenant = ? GROUP BY email_type) newest \
             ON t.email_type = newest.email_type AND t.version = newest.version \
             WHERE t.tenant = ? ORDER BY t.email_type";
        let rows: Vec<TemplateRow> = on_pool!(self, pool => {
            sqlx::query_as(sql)
                .bind(tenant)
                .bind(tenant)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(Template::try_from).collect()
    }

    /// Deletes every version; returns how many there were.
    pub async fn delete_template(&self, tenant: &str, email_type: &str) -> Result<u64> {
        let deleted = on_pool!(self, pool => {
            sqlx::query("DELETE FROM templates WHERE tenant = ? AND email_type = ?")
                .bind(tenant)
                .bind(email_type)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(deleted)
    }
}

/// Template changes still to announce to Redis.
impl AppStore {
    pub async fn add_announcement(&self, tenant: &str, email_type: &str) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("REPLACE INTO template_announcements (tenant, email_type) VALUES (?, ?)")
                .bind(tenant)
                .bind(email_type)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    pub async fn announcements(&self) -> Result<Vec<(String, String)>> {
        let rows: Vec<(Vec<u8>, Vec<u8>)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT tenant, email_type FROM template_announcements")
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|(tenant, email_type)| Ok((text(tenant)?, text(email_type)?)))
            .collect()
    }

    pub async fn remove_announcement(&self, tenant: &str, email_type: &str) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM template_announcements WHERE tenant = ? AND email_type = ?")
                .bind(tenant)
                .bind(email_type)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
