//! Small, allocation-light helpers: line endings, addresses, status and reply codes.
//!
//! Everything here works on arbitrary input without panicking: all indexing is bounded
//! and every scanner walks bytes, never assuming well-formed text.

/// Longest diagnostic text kept for a recipient (bytes, cut at a char boundary).
pub(crate) const MAX_DIAGNOSTIC: usize = 1000;

/// Converts CRLF and lone CR line endings to LF.
pub(crate) fn normalise_newlines(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if memchr::memchr(b'\r', raw).is_none() {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'\r' {
            out.push(b'\n');
            if raw.get(i + 1) == Some(&b'\n') {
                i += 1;
            }
        } else {
            out.push(b);
        }
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

fn is_local_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._%+-=/'!#$&*?^`{|}~".contains(&b)
}

fn is_domain_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_'
}

/// Every e-mail address in `text`, in order, lowercased, without duplicates.
pub(crate) fn find_addresses(text: &str, limit: usize) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut out: Vec<String> = Vec::new();
    let mut from = 0;
    while let Some(rel) = memchr::memchr(b'@', bytes.get(from..).unwrap_or_default()) {
        let at = from + rel;
        from = at + 1;
        if let Some(addr) = address_at(bytes, at)
            && !out.contains(&addr)
        {
            out.push(addr);
            if out.len() >= limit {
                break;
            }
        }
    }
    out
}

/// The first address in `text`, if any.
pub(crate) fn first_address(text: &str) -> Option<String> {
    find_addresses(text, 1).into_iter().next()
}

/// The address around the `@` at byte `at`, validated loosely.
fn address_at(bytes: &[u8], at: usize) -> Option<String> {
    let mut start = at;
    while start > 0 && is_local_char(bytes[start - 1]) {
        start -= 1;
    }
    let mut end = at + 1;
    while end < bytes.len() && is_domain_char(bytes[end]) {
        end += 1;
    }
    // Trim punctuation that ends sentences or wraps addresses.
    while start < at && matches!(bytes[start], b'.' | b'\'' | b'=' | b'/' | b'`' | b'|') {
        start += 1;
    }
    while end > at + 1 && matches!(bytes[end - 1], b'.' | b'-' | b'_') {
        end -= 1;
    }
    if start == at || end <= at + 1 || end - start > 254 {
        return None;
    }
    let domain = &bytes[at + 1..end];
    if !domain.contains(&b'.') && !domain.eq_ignore_ascii_case(b"localhost") {
        return None;
    }
    if domain.starts_with(b".") || domain.starts_with(b"-") {
        return None;
    }
    let s = std::str::from_utf8(&bytes[start..end]).ok()?;
    Some(s.to_ascii_lowercase())
}

/// Finds an RFC 3463 enhanced status code (`5.1.1`, `4.7.650`) in `text`.
///
/// The code must stand alone: no digit or dot-digit around it, so IP addresses and
/// version numbers are skipped. A code right after a reply code (`550 5.1.1`,
/// `550-'5.7.1`) is preferred to one standing elsewhere.
pub(crate) fn find_status(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut best: Option<(usize, usize, usize)> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if matches!(c, b'2' | b'4' | b'5')
            && (i == 0 || !(b[i - 1].is_ascii_digit() || b[i - 1] == b'.'))
            && b.get(i + 1) == Some(&b'.')
            && let Some(end) = status_tail(b, i + 2)
        {
            // The code must not continue as a longer dotted number (IP address).
            let next_is_dotted_digit =
                b.get(end) == Some(&b'.') && b.get(end + 1).is_some_and(u8::is_ascii_digit);
            if !next_is_dotted_digit && !b.get(end).is_some_and(u8::is_ascii_alphanumeric) {
                // Success codes (a transcript's "250 2.1.5 Ok") only when nothing failed.
                let rank = usize::from(c != b'2') * 2 + usize::from(after_reply(b, i));
                if best.is_none_or(|(r, _, _)| rank > r) {
                    best = Some((rank, i, end));
                }
                if rank == 3 {
                    break;
                }
            }
            i = end;
            continue;
        }
        i += 1;
    }
    best.and_then(|(_, s, e)| std::str::from_utf8(&b[s..e]).ok().map(str::to_owned))
}

/// Whether the code starting at `at` follows a reply code (`550 `, `550-'`).
fn after_reply(b: &[u8], at: usize) -> bool {
    let mut j = at;
    let mut gap = 0;
    while j > 0 && gap < 3 && matches!(b[j - 1], b' ' | b'-' | b'\'' | b'"' | b'(' | b'#') {
        j -= 1;
        gap += 1;
    }
    gap > 0
        && j >= 3
        && b[j - 3..j].iter().all(u8::is_ascii_digit)
        && matches!(b[j - 3], b'2' | b'4' | b'5')
        && (j == 3 || !b[j - 4].is_ascii_alphanumeric())
}

/// Chooses between the DSN's `Status:` and the code found in the diagnostic text.
pub(crate) fn prefer_status(field: &str, in_text: &str, reply: &str) -> String {
    if field.is_empty() {
        return in_text.to_owned();
    }
    if in_text.is_empty() || field == in_text {
        return field.to_owned();
    }
    let (f0, t0, r0) = (
        field.as_bytes()[0],
        in_text.as_bytes()[0],
        reply.bytes().next(),
    );
    if let Some(r0) = r0
        && f0 != t0
    {
        if r0 == f0 {
            return field.to_owned();
        }
        if r0 == t0 {
            return in_text.to_owned();
        }
    }
    let generic = |s: &str| s.ends_with(".0.0");
    if generic(field) {
        return if generic(in_text) { field } else { in_text }.to_owned();
    }
    if field.contains(".0") && !in_text.contains(".0") {
        return in_text.to_owned();
    }
    if generic(in_text) {
        return field.to_owned();
    }
    let ambiguous = matches!(field, "4.4.7" | "4.7.0")
        || field.starts_with("5.3.")
        || field.get(1..4) == Some(".5.");
    if ambiguous || (field == "5.1.3" && in_text.starts_with("5.7.")) {
        return in_text.to_owned();
    }
    field.to_owned()
}

/// Parses `d{1,3}.d{1,3}` from `at`, returning the end offset.
fn status_tail(b: &[u8], at: usize) -> Option<usize> {
    let mut i = at;
    let n1 = digits(b, &mut i);
    if !(1..=3).contains(&n1) || b.get(i) != Some(&b'.') {
        return None;
    }
    i += 1;
    let n2 = digits(b, &mut i);
    (1..=3).contains(&n2).then_some(i)
}

fn digits(b: &[u8], i: &mut usize) -> usize {
    let start = *i;
    while *i < b.len() && b[*i].is_ascii_digit() {
        *i += 1;
    }
    *i - start
}

/// Finds an SMTP reply code (`550`, `421`) in `text`: three digits starting with 2, 4 or
/// 5, not part of a longer number, an address or a dotted code.
pub(crate) fn find_reply(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut success: Option<usize> = None;
    let mut i = 0;
    while i + 3 <= b.len() {
        if matches!(b[i], b'2' | b'4' | b'5')
            && b[i + 1].is_ascii_digit()
            && b[i + 1] <= b'5'
            && b[i + 2].is_ascii_digit()
            && (i == 0 || is_code_boundary_before(b[i - 1]))
            && b.get(i + 3).is_none_or(|&c| {
                matches!(
                    c,
                    b' ' | b'-' | b'\t' | b'\n' | b')' | b']' | b',' | b';' | b':' | b'"'
                )
            })
        {
            if b[i] != b'2' {
                return std::str::from_utf8(&b[i..i + 3]).ok().map(str::to_owned);
            }
            success.get_or_insert(i);
        }
        i += 1;
    }
    success.and_then(|s| std::str::from_utf8(&b[s..s + 3]).ok().map(str::to_owned))
}

fn is_code_boundary_before(c: u8) -> bool {
    matches!(
        c,
        b' ' | b'\t' | b'\n' | b':' | b'(' | b'[' | b'"' | b'=' | b'<' | b'>' | b';' | b'#'
    )
}

/// Removes the continuation prefixes of a multi-line SMTP reply joined on one line
/// (`550-5.2.1 first part 550-5.2.1 second part` -> `550-5.2.1 first part second part`).
pub(crate) fn strip_continuations(text: &str) -> String {
    let Some(reply) = find_reply(text) else {
        return text.to_owned();
    };
    let status = find_status(text).unwrap_or_default();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut first = true;
    while let Some(pos) = rest.find(reply.as_str()) {
        let boundary = pos == 0 || rest.as_bytes()[pos - 1] == b' ';
        let after = &rest[pos + 3..];
        let sep = after.starts_with('-') || after.starts_with(' ');
        // "550 550 5.7.1 ...": a repeated code right after the first is not a
        // continuation line.
        let adjacent = format!("{}{}", out, &rest[..pos])
            .trim_end()
            .ends_with(reply.as_str());
        if !boundary || !sep || first || adjacent {
            first &= !(boundary && sep);
            out.push_str(&rest[..pos + 3]);
            rest = after;
            continue;
        }
        out.push_str(&rest[..pos]);
        let mut tail = &after[1..];
        if !status.is_empty()
            && let Some(t) = tail.strip_prefix(status.as_str())
        {
            tail = t.trim_start();
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Collapses whitespace to single spaces and bounds the length.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    let mut space = false;
    for ch in text.chars() {
        if ch.is_whitespace() || ch.is_control() {
            space = !out.is_empty();
            continue;
        }
        if space {
            if out.len() + 1 > max {
                break;
            }
            out.push(' ');
            space = false;
        }
        if out.len() + ch.len_utf8() > max {
            break;
        }
        out.push(ch);
    }
    out
}

/// Whether `hay` contains all `parts` in this order.
pub(crate) fn aligned(hay: &str, parts: &[&str]) -> bool {
    let mut from = 0;
    for p in parts {
        match hay.get(from..).and_then(|h| h.find(p)) {
            Some(pos) => from += pos + p.len(),
            None => return false,
        }
    }
    true
}

/// Case-insensitive ASCII prefix test.
pub(crate) fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// Strips an RFC 3464 type prefix (`rfc822;`, `smtp;`, `dns;`) and returns
/// `(type, value)`; the type is lowercased.
pub(crate) fn split_typed(value: &str) -> (String, &str) {
    match value.split_once(';') {
        Some((t, v)) if !t.trim().is_empty() && t.trim().len() < 20 && !t.contains(' ') => {
            (t.trim().to_ascii_lowercase(), v.trim())
        }
        _ => (String::new(), value.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines() {
        assert_eq!(&*normalise_newlines(b"a\r\nb\rc\n"), b"a\nb\nc\n");
        assert_eq!(&*normalise_newlines(b"\r"), b"\n");
    }

    #[test]
    fn addresses() {
        let a = find_addresses("<Kiji@Example.JP>: host said ... kiji@example.jp, x@y", 10);
        assert_eq!(a, vec!["kiji@example.jp".to_owned()]);
        assert_eq!(
            first_address("to: 'nyan'@ex.org."),
            Some("nyan'@ex.org".into())
        );
        assert!(first_address("@@@.").is_none());
    }

    #[test]
    fn codes() {
        assert_eq!(
            find_status("550 5.1.1 <a@b.c> unknown").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(
            find_status("host 192.0.2.1 said 4.7.650"),
            Some("4.7.650".into())
        );
        assert_eq!(find_status("(#5.5.0)"), Some("5.5.0".into()));
        assert_eq!(find_status("ip 5.1.1.1 blocked"), None);
        assert_eq!(
            find_reply("host [192.0.2.1]: 550-5.1.1 x").as_deref(),
            Some("550")
        );
        assert_eq!(find_reply("port 2525 x"), None);
        assert_eq!(one_line("  a\n\t b  ", 10), "a b");
        assert_eq!(
            strip_continuations(
                "550-5.2.1 a rate that 550-5.2.1 prevents more 550 5.2.1 https://x"
            ),
            "550-5.2.1 a rate that prevents more https://x"
        );
        assert_eq!(strip_continuations("no code here"), "no code here");
        assert_eq!(
            strip_continuations("550 550 5.7.1 denied"),
            "550 550 5.7.1 denied"
        );
        assert_eq!(one_line("abcdef", 3), "abc");
        assert!(aligned(
            "user x does not exist",
            &["user ", " does not exist"]
        ));
        assert_eq!(split_typed("smtp; 550 x"), ("smtp".into(), "550 x"));
    }
}
