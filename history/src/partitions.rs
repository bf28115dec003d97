//! Monthly partitions of the MySQL history tables: which ones to add, as a pure plan.
//!
//! Both tables are `PARTITION BY RANGE (TO_DAYS(sent_at))`. They start with the
//! catch-all `p_future` (`VALUES LESS THAN MAXVALUE`); the first maintenance splits it
//! into `p_before` (everything before the current month), one `pYYYYMM` per month
//! from the current one to `ahead` months later, and `p_future` again. Later runs add
//! the months that came into range. `p_future` is always last, so a write never meets
//! a missing partition even if maintenance stopped for months; the split moves such
//! rows into their months.

use chrono::{Datelike, Months, NaiveDate};

/// The partition names of one table in order, as `information_schema.PARTITIONS`
/// lists them.
pub(crate) fn plan(existing: &[String], today: NaiveDate, ahead: u32) -> Option<Split> {
    let current = month_start(today);
    let last_wanted = current + Months::new(ahead);
    let newest = existing.iter().filter_map(|name| month_of(name)).max();
    let mut months = Vec::new();
    let mut month = match newest {
        Some(newest) => newest + Months::new(1),
        None => current,
    };
    while month <= last_wanted {
        months.push(month);
        month = month + Months::new(1);
    }
    if months.is_empty() {
        return None;
    }
    let before = (!existing.iter().any(|n| n == BEFORE)).then_some(current);
    Some(Split { before, months })
}

pub(crate) const BEFORE: &str = "p_before";
pub(crate) const FUTURE: &str = "p_future";

/// `p_future` split into `p_before` (when missing, bound at the month given), the
/// months given and `p_future`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Split {
    pub before: Option<NaiveDate>,
    pub months: Vec<NaiveDate>,
}

impl Split {
    /// `ALTER TABLE {table} REORGANIZE PARTITION p_future INTO (...)`.
    pub fn sql(&self, table: &str) -> String {
        let mut parts = Vec::new();
        if let Some(bound) = self.before {
            parts.push(format!(
                "PARTITION {BEFORE} VALUES LESS THAN (TO_DAYS('{bound}'))"
            ));
        }
        for month in &self.months {
            let end = *month + Months::new(1);
            parts.push(format!(
                "PARTITION {} VALUES LESS THAN (TO_DAYS('{end}'))",
                name_of(*month)
            ));
        }
        parts.push(format!("PARTITION {FUTURE} VALUES LESS THAN MAXVALUE"));
        format!(
            "ALTER TABLE {table} REORGANIZE PARTITION {FUTURE} INTO ({})",
            parts.join(", ")
        )
    }

    /// Names of the partitions added.
    pub fn added(&self) -> Vec<String> {
        let before = self.before.map(|_| BEFORE.to_string());
        before
            .into_iter()
            .chain(self.months.iter().map(|m| name_of(*m)))
            .collect()
    }
}

/// Whole months from `from`'s month to `to`'s (0 for the same month or an earlier `to`).
pub(crate) fn months_between(from: NaiveDate, to: NaiveDate) -> u32 {
    let index = |d: NaiveDate| d.year() * 12 + d.month0() as i32;
    u32::try_from(index(to) - index(from)).unwrap_or(0)
}

/// `p202612` for December 2026.
pub(crate) fn name_of(month: NaiveDate) -> String {
    format!("p{:04}{:02}", month.year(), month.month())
}

/// The first day of the month a `pYYYYMM` partition holds.
pub(crate) fn month_of(name: &str) -> Option<NaiveDate> {
    let digits = name.strip_prefix('p')?;
    if digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year = digits[..4].parse().ok()?;
    let month = digits[4..].parse().ok()?;
    NaiveDate::from_ymd_opt(year, month, 1)
}

fn month_start(day: NaiveDate) -> NaiveDate {
    day.with_day(1).expect("every month has a first day")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn the_first_run_splits_the_catch_all_into_the_past_and_the_coming_months() {
        let split = plan(&[FUTURE.into()], date("2026-12-31"), 3).unwrap();
        assert_eq!(
            split.added(),
            ["p_before", "p202612", "p202701", "p202702", "p202703"]
        );
        assert_eq!(
            split.sql("email_history"),
            "ALTER TABLE email_history REORGANIZE PARTITION p_future INTO (\
             PARTITION p_before VALUES LESS THAN (TO_DAYS('2026-12-01')), \
             PARTITION p202612 VALUES LESS THAN (TO_DAYS('2027-01-01')), \
             PARTITION p202701 VALUES LESS THAN (TO_DAYS('2027-02-01')), \
             PARTITION p202702 VALUES LESS THAN (TO_DAYS('2027-03-01')), \
             PARTITION p202703 VALUES LESS THAN (TO_DAYS('2027-04-01')), \
             PARTITION p_future VALUES LESS THAN MAXVALUE)"
        );
    }

    #[test]
    fn later_runs_add_only_the_months_that_came_into_range() {
        let existing: Vec<String> = ["p_before", "p202612", "p202701", "p202702", "p202703"]
            .into_iter()
            .chain([FUTURE])
            .map(String::from)
            .collect();
        assert_eq!(plan(&existing, date("2026-12-31"), 3), None);
        let split = plan(&existing, date("2027-01-01"), 3).unwrap();
        assert_eq!(split.added(), ["p202704"]);
        // Maintenance stopped for a while: every missing month at once.
        let split = plan(&existing, date("2027-06-15"), 3).unwrap();
        assert_eq!(
            split.added(),
            [
                "p202704", "p202705", "p202706", "p202707", "p202708", "p202709"
            ]
        );
    }

    #[test]
    fn only_postroad_month_names_count() {
        assert_eq!(month_of("p202612"), Some(date("2026-12-01")));
        for other in [
            "p_future", "p_before", "p202613", "p2026121", "x202612", "p20261a",
        ] {
            assert_eq!(month_of(other), None, "{other}");
        }
    }

    #[test]
    fn months_between_counts_calendar_months() {
        assert_eq!(months_between(date("2025-12-15"), date("2026-12-01")), 12);
        assert_eq!(months_between(date("2026-12-31"), date("2027-01-01")), 1);
        assert_eq!(months_between(date("2026-12-02"), date("2026-12-31")), 0);
        assert_eq!(months_between(date("2027-01-01"), date("2026-12-31")), 0);
    }
}
