//! Phrase tables: what remote MTAs say, per reason.
//!
//! Every pattern is lowercase and is matched against the lowercased, whitespace-collapsed
//! diagnostic. A `*` in a pattern means "anything in between" (the parts must appear in
//! this order). Keep patterns generic (the wording of an MTA family or a provider),
//! never a string unique to one message.

use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, MatchKind};

use crate::util::aligned;

mod policy;
mod recipient;
mod transport;

pub(crate) use policy::*;
pub(crate) use recipient::*;
pub(crate) use transport::*;

/// Every table, so that one automaton can look for all their phrases at once.
fn registered() -> [&'static [&'static str]; 31] {
    [
        NO_RELAYING,
        AUTH_FAILURE,
        BAD_REPUTATION,
        REQUIRE_PTR,
        NOT_COMPLIANT,
        CONTENT_ERROR,
        REJECTED_NOT,
        REJECTED,
        SPAM_DETECTED,
        VIRUS,
        POLICY,
        BLOCKED,
        RATE_LIMITED,
        SECURITY,
        FAILED_STARTTLS,
        RECIPIENT_FILTER,
        USER_UNKNOWN,
        MAILBOX_FULL,
        SYSTEM_FULL,
        TOO_LARGE,
        SUSPEND,
        HAS_MOVED,
        HOST_UNKNOWN,
        NOT_ACCEPT,
        FILTERED,
        VACATION,
        EXPIRED,
        NETWORK_ERROR,
        SYSTEM_ERROR,
        MAILER_ERROR,
        SYNTAX_ERROR,
    ]
}

/// The literal parts of every registered pattern, in one automaton.
struct Index {
    set: LiteralSet,
    /// Per table: its address and, per pattern, the ids of its literal parts.
    tables: Vec<(usize, Vec<Vec<u32>>)>,
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut literals: Vec<&'static str> = Vec::new();
        let mut tables = Vec::new();
        for table in registered() {
            let patterns = table
                .iter()
                .map(|p| {
                    p.split('*')
                        .filter(|s| !s.is_empty())
                        .map(|part| match literals.iter().position(|l| *l == part) {
                            Some(i) => i as u32,
                            None => {
                                literals.push(part);
                                (literals.len() - 1) as u32
                            }
                        })
                        .collect()
                })
                .collect();
            tables.push((table.as_ptr() as usize, patterns));
        }
        Index {
            set: LiteralSet::new(&literals),
            tables,
        }
    })
}

/// A text scanned once for every registered phrase.
pub(crate) struct Scanned<'a> {
    pub text: &'a str,
    hits: Hits,
}

impl<'a> Scanned<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Scanned {
            text,
            hits: index().set.scan(text),
        }
    }

    /// Whether the text contains any pattern of `table` (same as [`any`]).
    pub(crate) fn has(&self, table: &'static [&'static str]) -> bool {
        let idx = index();
        let Some((_, patterns)) = idx
            .tables
            .iter()
            .find(|(ptr, _)| *ptr == table.as_ptr() as usize)
        else {
            return any(self.text, table);
        };
        patterns.iter().zip(table.iter()).any(|(ids, p)| {
            if ids.is_empty() || !ids.iter().all(|&i| self.hits.has(i)) {
                return false;
            }
            ids.len() == 1 || any(self.text, &[p])
        })
    }
}

/// Literal strings searched for together.
pub(crate) struct LiteralSet {
    ac: Option<AhoCorasick>,
    len: usize,
}

/// Which literals of a set a text contains, and where each last starts.
pub(crate) struct Hits {
    bits: Vec<u64>,
    last: Vec<u32>,
}

impl Hits {
    pub(crate) fn has(&self, id: u32) -> bool {
        self.bits
            .get(id as usize / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// Where the last occurrence of literal `id` starts.
    pub(crate) fn last_start(&self, id: u32) -> Option<usize> {
        self.has(id)
            .then(|| self.last.get(id as usize).copied().unwrap_or(0) as usize)
    }
}

impl LiteralSet {
    pub(crate) fn new(literals: &[&str]) -> Self {
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(literals)
            .ok();
        LiteralSet {
            ac,
            len: literals.len(),
        }
    }

    pub(crate) fn scan(&self, text: &str) -> Hits {
        let mut hits = Hits {
            bits: vec![0; self.len.div_ceil(64)],
            last: vec![0; self.len],
        };
        if let Some(ac) = &self.ac {
            for m in ac.find_overlapping_iter(text) {
                let id = m.pattern().as_usize();
                if let Some(w) = hits.bits.get_mut(id / 64) {
                    *w |= 1 << (id % 64);
                }
                if let Some(l) = hits.last.get_mut(id) {
                    *l = u32::try_from(m.start()).unwrap_or(u32::MAX);
                }
            }
        }
        hits
    }
}

/// Whether `text` contains any of `patterns`.
pub(crate) fn any(text: &str, patterns: &[&str]) -> bool {
    patterns.iter().any(|p| {
        if p.contains('*') {
            let parts: [&str; 4] = split4(p);
            let n = parts.iter().filter(|s| !s.is_empty()).count();
            aligned(text, &parts[..n.max(1)])
        } else {
            text.contains(p)
        }
    })
}

fn split4(p: &str) -> [&str; 4] {
    let mut out = [""; 4];
    for (i, part) in p.split('*').filter(|s| !s.is_empty()).take(4).enumerate() {
        out[i] = part;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanned_agrees_with_direct_search() {
        let texts = [
            "550 5.1.1 <a@b.example>: recipient address rejected: user unknown in local recipient table",
            "user kiji does not exist here",
            "452 4.2.2 mailbox full, try again later",
            "",
        ];
        for t in texts {
            let s = Scanned::new(t);
            for table in registered() {
                assert_eq!(s.has(table), any(t, table), "{t}");
            }
        }
    }

    #[test]
    fn wildcard_patterns() {
        assert!(any(
            "user kiji does not exist here",
            &["user * does not exist"]
        ));
        assert!(!any("does not exist user", &["user * does not exist"]));
        assert!(any("abc", &["b"]));
        assert!(!any("", &["b"]));
    }

    #[test]
    fn tables_are_lowercase() {
        for table in [
            USER_UNKNOWN,
            MAILBOX_FULL,
            BLOCKED,
            SPAM_DETECTED,
            REJECTED,
            RATE_LIMITED,
            EXPIRED,
            HOST_UNKNOWN,
        ] {
            for p in table {
                assert_eq!(*p, p.to_lowercase(), "{p}");
            }
        }
    }
}
