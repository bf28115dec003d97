//! Multi-row statements in few shapes: a batch is split into statements of
//! [`MAX_ROWS_PER_STATEMENT`] rows and then of decreasing powers of two, so each
//! statement kind exists in nine texts only and all stay in the prepared-statement
//! cache of every connection.

/// Most rows in one statement. With 20 columns that is 5120 bound values: within
/// SQLite's 32766 and MySQL's 65535.
pub(crate) const MAX_ROWS_PER_STATEMENT: usize = 256;
const _: () = assert!(MAX_ROWS_PER_STATEMENT.is_power_of_two());
const SHAPES: usize = MAX_ROWS_PER_STATEMENT.ilog2() as usize + 1;

/// Rows for the next statement: all of them up to [`MAX_ROWS_PER_STATEMENT`], else the
/// largest power of two that fits.
pub(crate) fn statement_rows(remaining: usize) -> usize {
    if remaining >= MAX_ROWS_PER_STATEMENT {
        MAX_ROWS_PER_STATEMENT
    } else {
        1 << remaining.ilog2()
    }
}

/// `rows` split into chunks of the sizes [`statement_rows`] picks.
pub(crate) fn chunks<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let (chunk, rest) = rows.split_at(statement_rows(rows.len()));
        rows = rest;
        Some(chunk)
    })
}

/// The texts of one multi-row `INSERT`: `INSERT INTO table (columns) VALUES (?, ...),
/// (?, ...) ... {tail}`, one per statement size [`statement_rows`] can pick.
pub(crate) struct Insert {
    texts: Vec<String>,
}

impl Insert {
    pub fn new(table: &str, columns: &[&str], tail: &str) -> Self {
        let row = format!("({})", vec!["?"; columns.len()].join(", "));
        let head = format!("INSERT INTO {table} ({})", columns.join(", "));
        let texts = (0..SHAPES)
            .map(|shift| {
                let values = vec![row.as_str(); 1 << shift].join(", ");
                format!("{head} VALUES {values} {tail}")
            })
            .collect();
        Self { texts }
    }

    /// The statement for `rows` rows (a size [`statement_rows`] picked).
    pub fn sql(&self, rows: usize) -> &str {
        debug_assert!(rows.is_power_of_two() && rows <= MAX_ROWS_PER_STATEMENT);
        &self.texts[rows.ilog2() as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_come_in_few_shapes() {
        let mut shapes = std::collections::BTreeSet::new();
        for total in 1..=3000 {
            let items = vec![(); total];
            let mut statements = 0;
            let mut covered = 0;
            for chunk in chunks(&items) {
                assert!(chunk.len().is_power_of_two());
                shapes.insert(chunk.len());
                covered += chunk.len();
                statements += 1;
            }
            assert_eq!(covered, total);
            // Full statements, then at most one per bit of the remainder.
            assert!(statements <= total / MAX_ROWS_PER_STATEMENT + 8, "{total}");
        }
        assert_eq!(shapes.len(), SHAPES);
    }

    #[test]
    fn one_placeholder_per_value() {
        let insert = Insert::new("t", &["a", "b"], "ON CONFLICT DO NOTHING");
        for n in [1, 2, 64, MAX_ROWS_PER_STATEMENT] {
            let sql = insert.sql(n);
            assert_eq!(sql.matches('?').count(), n * 2);
            assert!(sql.starts_with("INSERT INTO t (a, b) VALUES (?, ?)"));
            assert!(sql.ends_with(" ON CONFLICT DO NOTHING"));
        }
    }
}
