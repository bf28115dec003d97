//! Whether a database holds the schema this build knows: every migration it embeds
//! applied, unchanged, and nothing newer. `serve` refuses anything else, with a
//! message saying what to do.

use sqlx::migrate::Migrator;

use crate::{HistoryError, Result};

/// A row of sqlx's `_sqlx_migrations` table.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct Applied {
    pub version: i64,
    pub success: bool,
    pub checksum: Vec<u8>,
}

/// Migrations of `migrator` not yet applied, or an error when the applied ones are
/// not what this build knows. `applied` is `None` when there is no migrations table.
pub(crate) fn pending(
    applied: Option<&[Applied]>,
    migrator: &Migrator,
    location: &str,
) -> Result<Vec<i64>> {
    let schema = |reason: String| HistoryError::Schema {
        location: location.to_string(),
        reason,
    };
    let applied = applied.unwrap_or_default();
    let latest = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    for row in applied {
        let Some(known) = migrator
            .iter()
            .find(|m| m.version == row.version && m.migration_type.is_up_migration())
        else {
            return Err(schema(format!(
                "it has migration {} applied, which this postroad does not know (it knows up to \
                 {latest}); the database was upgraded by a newer postroad: run that version",
                row.version
            )));
        };
        if !row.success {
            return Err(schema(format!(
                "migration {} failed part way; repair the database by hand, delete its row from \
                 _sqlx_migrations and run `postroad migrate` again",
                row.version
            )));
        }
        if *known.checksum != *row.checksum {
            return Err(schema(format!(
                "migration {} ({}) was applied from a different text than this postroad has",
                row.version, known.description
            )));
        }
    }
    Ok(migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .filter(|v| !applied.iter().any(|row| row.version == *v))
        .collect())
}

/// Errors unless `pending` is empty: the schema is older than this build.
pub(crate) fn require_current(pending: &[i64], location: &str) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let list = pending
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    Err(HistoryError::Schema {
        location: location.to_string(),
        reason: format!(
            "its schema is older than this postroad (migrations {list} are not applied); \
             run `postroad migrate` first"
        ),
    })
}
