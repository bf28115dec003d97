//! Per-partition offset tracking with out-of-order completion.
//!
//! Records of one partition are resolved in any order (a slow domain must not hold up
//! a fast one), but a consumer group remembers only one offset per partition: the next
//! record to read after a restart. So the committable offset is the lowest record still
//! unresolved, or one past the last record read when all are resolved.

use std::collections::BTreeSet;

#[derive(Debug, Default)]
pub struct OffsetTracker {
    /// Offsets read and not yet resolved.
    pending: BTreeSet<i64>,
    /// One past the highest offset read.
    next: Option<i64>,
    /// The offset last handed to a commit.
    committed: Option<i64>,
}

impl OffsetTracker {
    /// A record was read from the partition; false when it is pending already (read
    /// again after a fetch error), so it must not be handed out twice.
    pub fn read(&mut self, offset: i64) -> bool {
        self.next = Some(self.next.map_or(offset + 1, |n| n.max(offset + 1)));
        self.pending.insert(offset)
    }

    /// A record was resolved; returns false when it was not pending (a duplicate
    /// resolution, or a record read before a rebalance).
    pub fn resolve(&mut self, offset: i64) -> bool {
        self.pending.remove(&offset)
    }

    /// Records read and not resolved.
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    /// The offset a commit may store now: every record below it is resolved.
    pub fn committable(&self) -> Option<i64> {
        self.pending.first().copied().or(self.next)
    }

    /// The committable offset if it moved since the last call (then remembered as
    /// committed).
    pub fn take_commit(&mut self) -> Option<i64> {
        let offset = self.committable()?;
        if self.committed == Some(offset) {
            return None;
        }
        self.committed = Some(offset);
        Some(offset)
    }

    /// The last commit failed: offer the committable offset again.
    pub fn forget_commit(&mut self) {
        self.committed = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_read_nothing_to_commit() {
        let mut t = OffsetTracker::default();
        assert_eq!(t.committable(), None);
        assert_eq!(t.take_commit(), None);
    }

    #[test]
    fn commits_stop_at_the_lowest_unresolved_record() {
        let mut t = OffsetTracker::default();
        for offset in 10..15 {
            t.read(offset);
        }
        assert_eq!(t.committable(), Some(10));
        assert!(t.resolve(12));
        assert!(t.resolve(14));
        assert_eq!(t.committable(), Some(10), "10 is still in flight");
        assert!(t.resolve(10));
        assert_eq!(t.committable(), Some(11));
        assert!(t.resolve(11));
        assert_eq!(t.committable(), Some(13));
        assert!(t.resolve(13));
        assert_eq!(
            t.committable(),
            Some(15),
            "all resolved: one past the last read"
        );
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn take_commit_reports_each_advance_once() {
        let mut t = OffsetTracker::default();
        t.read(0);
        t.read(1);
        assert_eq!(t.take_commit(), Some(0));
        assert_eq!(t.take_commit(), None);
        t.resolve(1);
        assert_eq!(t.take_commit(), None, "0 still holds the partition back");
        t.resolve(0);
        assert_eq!(t.take_commit(), Some(2));
        assert_eq!(t.take_commit(), None);
    }

    #[test]
    fn unknown_or_repeated_resolutions_change_nothing() {
        let mut t = OffsetTracker::default();
        t.read(5);
        assert!(!t.resolve(4));
        assert!(t.resolve(5));
        assert!(!t.resolve(5));
        assert_eq!(t.committable(), Some(6));
    }

    #[test]
    fn a_record_read_twice_is_pending_once() {
        let mut t = OffsetTracker::default();
        assert!(t.read(4));
        assert!(!t.read(4));
        assert_eq!(t.outstanding(), 1);
    }

    #[test]
    fn gaps_in_offsets_are_fine() {
        // Compacted topics and transaction markers leave gaps between offsets.
        let mut t = OffsetTracker::default();
        t.read(3);
        t.read(7);
        t.resolve(3);
        assert_eq!(t.committable(), Some(7));
        t.resolve(7);
        assert_eq!(t.committable(), Some(8));
    }
}
