//! Templates per (tenant, email type), versioned: every `PUT` adds a version, the newest
//! is used unless a request names one, `DELETE` removes every version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

use super::{AppStore, Result, StoreError, now_ms};

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

fn from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Template> {
    let definition: String = row.try_get("definition")?;
    let version: i64 = row.try_get("version")?;
    Ok(Template {
        email_type: row.try_get("email_type")?,
        version: u32::try_from(version)
            .map_err(|_| StoreError::Corrupt(format!("template version {version}")))?,
        definition: serde_json::from_str(&definition)
            .map_err(|e| StoreError::Corrupt(format!("template definition: {e}")))?,
        created_at_ms: row.try_get("created_at")?,
    })
}

impl AppStore {
    /// Stores `definition` as the next version of (tenant, email type).
    pub async fn put_template(
        &self,
        tenant: &str,
        email_type: &str,
        definition: &Definition,
    ) -> Result<Template> {
        let json = serde_json::to_string(definition)
            .map_err(|e| StoreError::Corrupt(format!("template definition: {e}")))?;
        let now = now_ms();
        let mut txn = self.pool().begin().await?;
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
        Ok(Template {
            email_type: email_type.to_string(),
            version: version as u32,
            definition: definition.clone(),
            created_at_ms: now,
        })
    }

    /// The given version, or the newest.
    pub async fn template(
        &self,
        tenant: &str,
        email_type: &str,
        version: Option<u32>,
    ) -> Result<Option<Template>> {
        let row = match version {
            Some(v) => sqlx::query(
                "SELECT * FROM templates WHERE tenant = ? AND email_type = ? AND version = ?",
            )
            .bind(tenant)
            .bind(email_type)
            .bind(i64::from(v))
            .fetch_optional(self.pool())
            .await?,
            None => sqlx::query(
                "SELECT * FROM templates WHERE tenant = ? AND email_type = ? ORDER BY version DESC LIMIT 1",
            )
            .bind(tenant)
            .bind(email_type)
            .fetch_optional(self.pool())
            .await?,
        };
        row.as_ref().map(from_row).transpose()
    }

    /// The newest version of every template of `tenant`, by email type.
    pub async fn list_templates(&self, tenant: &str) -> Result<Vec<Template>> {
        let rows = sqlx::query(
            "SELECT t.* FROM templates t \
             JOIN (SELECT email_type, MAX(version) AS version FROM templates WHERE tenant = ? GROUP BY email_type) newest \
             ON t.email_type = newest.email_type AND t.version = newest.version \
             WHERE t.tenant = ? ORDER BY t.email_type",
        )
        .bind(tenant)
        .bind(tenant)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Deletes every version; returns how many there were.
    pub async fn delete_template(&self, tenant: &str, email_type: &str) -> Result<u64> {
        let done = sqlx::query("DELETE FROM templates WHERE tenant = ? AND email_type = ?")
            .bind(tenant)
            .bind(email_type)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}

/// Template changes still to announce to Redis.
impl AppStore {
    pub async fn add_announcement(&self, tenant: &str, email_type: &str) -> Result<()> {
        sqlx::query(
            "INSERT OR IGNORE INTO template_announcements (tenant, email_type) VALUES (?, ?)",
        )
        .bind(tenant)
        .bind(email_type)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn announcements(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT tenant, email_type FROM template_announcements")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("tenant")?, row.try_get("email_type")?)))
            .collect()
    }

    pub async fn remove_announcement(&self, tenant: &str, email_type: &str) -> Result<()> {
        sqlx::query("DELETE FROM template_announcements WHERE tenant = ? AND email_type = ?")
            .bind(tenant)
            .bind(email_type)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(subject: &str) -> Definition {
        Definition {
            subject: subject.into(),
            text: Some("Hi {{ name }}".into()),
            ..Definition::default()
        }
    }

    #[tokio::test]
    async fn versions_grow_per_type_and_tenant_and_delete_removes_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = AppStore::open_in(dir.path()).await.unwrap();
        assert_eq!(
            store
                .put_template("", "welcome", &definition("v1"))
                .await
                .unwrap()
                .version,
            1
        );
        assert_eq!(
            store
                .put_template("", "welcome", &definition("v2"))
                .await
                .unwrap()
                .version,
            2
        );
        assert_eq!(
            store
                .put_template("acme", "welcome", &definition("a"))
                .await
                .unwrap()
                .version,
            1
        );
        store
            .put_template("", "reset", &definition("r"))
            .await
            .unwrap();

        let newest = store.template("", "welcome", None).await.unwrap().unwrap();
        assert_eq!(
            (newest.version, newest.definition.subject.as_str()),
            (2, "v2")
        );
        let first = store
            .template("", "welcome", Some(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.definition, definition("v1"));
        assert!(
            store
                .template("", "welcome", Some(3))
                .await
                .unwrap()
                .is_none()
        );

        let listed: Vec<_> = store
            .list_templates("")
            .await
            .unwrap()
            .into_iter()
            .map(|t| (t.email_type, t.version))
            .collect();
        assert_eq!(
            listed,
            [("reset".to_string(), 1), ("welcome".to_string(), 2)]
        );

        assert_eq!(store.delete_template("", "welcome").await.unwrap(), 2);
        assert!(store.template("", "welcome", None).await.unwrap().is_none());
        assert!(
            store
                .template("acme", "welcome", None)
                .await
                .unwrap()
                .is_some()
        );
    }
}
