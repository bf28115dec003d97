//! Test messages: a body template generated once per run, plus a small per-message
//! header block and trailer line, so building a message costs two short `write!`s and
//! hashing the trailer (the template's FNV-1a state is precomputed).
//!
//! Integrity contract (shared with receivers and spool checkers, see [`verify`]):
//! `X-Loadtest-Checksum` is the FNV-1a 64-bit hash, as 16 lowercase hex digits, of
//! every byte after the first empty line (`\r\n\r\n`) of the message as stored, i.e.
//! after dot-unstuffing and without the terminating `.\r\n`. The body is CRLF lines of
//! at most 76 printable ASCII characters and always ends with `\r\n`.

use std::io::Write as _;
use std::sync::Arc;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Incremental FNV-1a, 64 bit.
#[derive(Clone, Copy, Debug)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(FNV_OFFSET)
    }
}

impl Fnv1a {
    pub fn update(&mut self, data: &[u8]) {
        let mut h = self.0;
        for &b in data {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV_PRIME);
        }
        self.0 = h;
    }

    pub fn finish(self) -> u64 {
        self.0
    }
}

/// FNV-1a 64 of `data`.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h = Fnv1a::default();
    h.update(data);
    h.finish()
}

/// Longest body line, without its CRLF.
pub const MAX_LINE: usize = 76;

/// Length of the per-message trailer line (see [`MessageGen::prepare`]).
pub const TRAILER_LEN: usize = "loadtest-seq  run \r\n".len() + 20 + 16;

/// The part of the body that is the same for every message of a run.
pub struct BodyTemplate {
    raw: Vec<u8>,
    stuffed: Vec<u8>,
    state: Fnv1a,
}

impl BodyTemplate {
    /// A template such that template + trailer is `size` bytes (or `TRAILER_LEN` when
    /// `size` is smaller; one byte short when exactly one byte would be left over).
    pub fn new(size: usize, seed: u64) -> Self {
        let raw = gen_lines(size.saturating_sub(TRAILER_LEN), seed);
        let stuffed = dot_stuff(&raw);
        let mut state = Fnv1a::default();
        state.update(&raw);
        Self {
            raw,
            stuffed,
            state,
        }
    }
}

/// Small deterministic PRNG (xorshift64*), enough for filler text.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `fill` bytes of CRLF lines of printable ASCII; some lines start with "." or ".."
/// (and short ones can be exactly ".") so that dot-stuffing is exercised.
fn gen_lines(fill: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(fill);
    let mut rng = XorShift(seed | 1);
    let mut i = 0u64;
    while fill - out.len() >= 2 {
        let rem = fill - out.len();
        let len = if rem <= MAX_LINE + 2 {
            rem - 2
        } else {
            let l = 16 + rng.below((MAX_LINE - 15) as u64) as usize; // 16..=76
            // never leave exactly one byte, which cannot hold a CRLF line
            if rem - (l + 2) == 1 { l - 1 } else { l }
        };
        let start = out.len();
        for j in 0..len {
            let c = if j > 0 && j + 1 < len && rng.below(7) == 0 {
                b' '
            } else {
                0x21 + rng.below(94) as u8
            };
            out.push(c);
        }
        if len > 0 && i % 7 == 3 {
            out[start] = b'.';
        }
        if len > 1 && i % 13 == 6 {
            out[start] = b'.';
            out[start + 1] = b'.';
        }
        out.extend_from_slice(b"\r\n");
        i += 1;
    }
    out
}

/// SMTP dot-stuffing (RFC 5321 4.5.2) of CRLF lines.
pub fn dot_stuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 8);
    let mut at_line_start = true;
    for &b in data {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    out
}

/// Reverse of [`dot_stuff`]: drops the first "." of every line that starts with one.
pub fn dot_unstuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut at_line_start = true;
    for &b in data {
        if !(at_line_start && b == b'.') {
            out.push(b);
        }
        at_line_start = b == b'\n';
    }
    out
}

/// Per-connection message builder; reuses its buffers for every message.
pub struct MessageGen {
    template: Arc<BodyTemplate>,
    run_id: u64,
    from: String,
    date: String,
    header: Vec<u8>,
    trailer: Vec<u8>,
    checksum: u64,
    /// Add `X-Loadtest-Sent-At`, see [`MessageGen::with_stamp`].
    stamp: bool,
    /// Where the 16 digits of `X-Loadtest-Sent-At` are in `header`.
    stamp_at: usize,
}

/// Name of the send-time header `loadtest smtp --stamp` adds: Unix time in
/// microseconds, 16 digits (zero-padded), set just before the message is written.
pub const SENT_AT_HEADER: &str = "X-Loadtest-Sent-At";
/// Digits of the `X-Loadtest-Sent-At` value (fixed, so stamping never moves bytes).
pub const SENT_AT_DIGITS: usize = 16;

impl MessageGen {
    pub fn new(template: Arc<BodyTemplate>, run_id: u64, from: &str, date: &str) -> Self {
        Self {
            template,
            run_id,
            from: from.to_owned(),
            date: date.to_owned(),
            header: Vec::with_capacity(512),
            trailer: Vec::with_capacity(TRAILER_LEN),
            checksum: 0,
            stamp: false,
            stamp_at: 0,
        }
    }

    /// Messages get an `X-Loadtest-Sent-At` header, set by [`MessageGen::stamp_now`]
    /// when the message is about to be written. It is in the header block, so the
    /// checksum (which covers the body only) does not change.
    pub fn with_stamp(mut self) -> Self {
        self.stamp = true;
        self
    }

    /// Sets `X-Loadtest-Sent-At` to `unix_micros` (no-op without [`with_stamp`]).
    ///
    /// [`with_stamp`]: MessageGen::with_stamp
    pub fn stamp(&mut self, unix_micros: u64) {
        if !self.stamp || self.header.len() < self.stamp_at + SENT_AT_DIGITS {
            return;
        }
        let digits = format!("{:0width$}", unix_micros, width = SENT_AT_DIGITS);
        let digits = &digits.as_bytes()[digits.len() - SENT_AT_DIGITS..];
        self.header[self.stamp_at..self.stamp_at + SENT_AT_DIGITS].copy_from_slice(digits);
    }

    /// Sets `X-Loadtest-Sent-At` to the current time (no-op without `with_stamp`).
    pub fn stamp_now(&mut self) {
        if self.stamp {
            self.stamp(unix_micros());
        }
    }

    /// The body template for the next messages (a size distribution changes it per
    /// message).
    pub fn set_template(&mut self, template: Arc<BodyTemplate>) {
        self.template = template;
    }

    /// Builds message `seq`, addressed (in its `To:` header) to `to`.
    pub fn prepare(&mut self, seq: u64, to: &str) {
        self.trailer.clear();
        write!(
            self.trailer,
            "loadtest-seq {seq:020} run {:016x}\r\n",
            self.run_id
        )
        .expect("write to Vec");
        debug_assert_eq!(self.trailer.len(), TRAILER_LEN);
        let mut h = self.template.state;
        h.update(&self.trailer);
        self.checksum = h.finish();

        self.header.clear();
        write!(
            self.header,
            "From: <{from}>\r\n\
             To: <{to}>\r\n\
             Subject: loadtest message {seq}\r\n\
             Date: {date}\r\n\
             Message-ID: <{run:016x}.{seq}@loadtest.invalid>\r\n\
             X-Loadtest-Seq: {seq}\r\n\
             X-Loadtest-Checksum: {sum:016x}\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=us-ascii\r\n\
             \r\n",
            from = self.from,
            date = self.date,
            run = self.run_id,
            sum = self.checksum,
        )
        .expect("write to Vec");
        if self.stamp {
            // before the empty line that ends the header block
            let end = self.header.len() - 2;
            let line = format!("{SENT_AT_HEADER}: {:0w$}\r\n", 0, w = SENT_AT_DIGITS);
            self.header.splice(end..end, line.bytes());
            self.stamp_at = end + SENT_AT_HEADER.len() + 2;
        }
    }

    pub fn checksum(&self) -> u64 {
        self.checksum
    }

    /// Size of the message as stored (unstuffed, without the final ".").
    pub fn len(&self) -> usize {
        self.header.len() + self.template.raw.len() + self.trailer.len()
    }

    /// Never true once prepared (the trailer line is always there).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message as stored, in pieces: for BDAT.
    pub fn parts_raw(&self) -> [&[u8]; 3] {
        [&self.header, &self.template.raw, &self.trailer]
    }

    /// The message dot-stuffed, in pieces, for DATA (the caller adds ".\r\n").
    /// The header block and the trailer never start a line with ".".
    pub fn parts_stuffed(&self) -> [&[u8]; 3] {
        [&self.header, &self.template.stuffed, &self.trailer]
    }
}

/// What [`verify`] found in a good message.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    pub seq: u64,
    pub checksum: u64,
}

/// Checks a stored (unstuffed) message against its `X-Loadtest-Checksum` header.
pub fn verify(message: &[u8]) -> Result<Verified, String> {
    let split = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of header block")?;
    let (headers, body) = (&message[..split + 2], &message[split + 4..]);
    let mut seq = None;
    let mut checksum = None;
    for line in headers.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        let value = std::str::from_utf8(value).map_err(|_| "header value is not UTF-8")?;
        if name.eq_ignore_ascii_case(b"X-Loadtest-Seq") {
            seq = Some(value.parse::<u64>().map_err(|e| format!("bad seq: {e}"))?);
        } else if name.eq_ignore_ascii_case(b"X-Loadtest-Checksum") {
            checksum =
                Some(u64::from_str_radix(value, 16).map_err(|e| format!("bad checksum: {e}"))?);
        }
    }
    let seq = seq.ok_or("no X-Loadtest-Seq header")?;
    let checksum = checksum.ok_or("no X-Loadtest-Checksum header")?;
    let actual = fnv1a(body);
    if actual != checksum {
        return Err(format!(
            "seq {seq}: checksum mismatch: header {checksum:016x}, body {actual:016x}"
        ));
    }
    Ok(Verified { seq, checksum })
}

/// The splitmix64 finaliser: a well-mixed 64-bit hash of `z`.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The (run id, seq) of a generated `Message-ID: <RUNID.SEQ@loadtest.invalid>`
/// (angle brackets optional).
pub fn parse_message_id(id: &str) -> Option<(u64, u64)> {
    let id = id.trim();
    let id = id.strip_prefix('<').unwrap_or(id);
    let id = id.strip_suffix('>').unwrap_or(id);
    let local = id.strip_suffix("@loadtest.invalid")?;
    let (run, seq) = local.split_once('.')?;
    if run.len() != 16 {
        return None;
    }
    Some((u64::from_str_radix(run, 16).ok()?, seq.parse().ok()?))
}

/// The N of a generated recipient `userN@domain` (any case).
pub fn parse_recipient(addr: &str) -> Option<u64> {
    let addr = addr.trim().trim_start_matches('<').trim_end_matches('>');
    let (local, _) = addr.rsplit_once('@')?;
    let n = local
        .get(..4)?
        .eq_ignore_ascii_case("user")
        .then(|| &local[4..])?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// Microseconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Parses a `X-Loadtest-Sent-At` value.
pub fn parse_sent_at(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value.trim_ascii()).ok()?.parse().ok()
}

/// RFC 5322 date for a Unix time, in UTC: "Thu, 01 Jan 1970 00:00:00 +0000".
pub fn rfc5322_date(unix_secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    // civil_from_days (H. Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(size: usize, seq: u64) -> (MessageGen, Vec<u8>) {
        let t = Arc::new(BodyTemplate::new(size, 42));
        let mut g = MessageGen::new(t, 0xabcd, "a@b.test", "Thu, 01 Jan 1970 00:00:00 +0000");
        g.prepare(seq, "user1@c.test");
        let mut wire = Vec::new();
        for p in g.parts_stuffed() {
            wire.extend_from_slice(p);
        }
        (g, wire)
    }

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn checksum_matches_after_unstuffing() {
        for size in [0, 1, 57, 58, 59, 100, 1000, 4096, 65_536] {
            for seq in [1, 2, 999_999] {
                let (g, wire) = build(size, seq);
                let stored = dot_unstuff(&wire);
                assert_eq!(stored.len(), g.len());
                let v = verify(&stored).unwrap_or_else(|e| panic!("size {size}: {e}"));
                assert_eq!(
                    v,
                    Verified {
                        seq,
                        checksum: g.checksum()
                    }
                );
                // same bytes as the raw (BDAT) form
                let raw: Vec<u8> = g.parts_raw().concat();
                assert_eq!(stored, raw);
            }
        }
    }

    #[test]
    fn body_shape() {
        let (g, wire) = build(4096, 7);
        let raw: Vec<u8> = g.parts_raw().concat();
        let body_start = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let body = &raw[body_start..];
        assert_eq!(body.len(), 4096);
        assert!(body.ends_with(b"\r\n"));
        for line in body[..body.len() - 1].split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").expect("CRLF line endings");
            assert!(line.len() <= MAX_LINE, "line too long: {}", line.len());
            assert!(line.iter().all(|b| (0x20..0x7f).contains(b)));
        }
        // dot-stuffing was exercised, and no line of the wire form is a lone "."
        assert!(wire.windows(3).any(|w| w == b"\n.."));
        assert!(!wire.windows(5).any(|w| w == b"\r\n.\r\n"));
    }

    #[test]
    fn checksum_detects_corruption() {
        let (_, wire) = build(1000, 3);
        let mut stored = dot_unstuff(&wire);
        let n = stored.len();
        stored[n - 10] ^= 1;
        assert!(verify(&stored).is_err());
        // a body that was not unstuffed does not verify either
        assert!(verify(&wire).is_err());
    }

    #[test]
    fn stamp_keeps_the_checksum() {
        let t = Arc::new(BodyTemplate::new(1000, 42));
        let mut g =
            MessageGen::new(t, 1, "a@b.test", "Thu, 01 Jan 1970 00:00:00 +0000").with_stamp();
        g.prepare(5, "u@c.test");
        let before = g.checksum();
        g.stamp(1_700_000_000_123_456);
        let raw: Vec<u8> = g.parts_raw().concat();
        let text = String::from_utf8_lossy(&raw);
        assert!(
            text.contains("\r\nX-Loadtest-Sent-At: 1700000000123456\r\n\r\n"),
            "{text}"
        );
        assert_eq!(verify(&raw).unwrap().checksum, before);
        let len = g.len();
        g.stamp_now();
        assert_eq!(g.len(), len);
        let raw: Vec<u8> = g.parts_raw().concat();
        assert!(verify(&raw).is_ok());
        // a plain generator has no such header
        let (g, _) = build(100, 1);
        let raw: Vec<u8> = g.parts_raw().concat();
        assert!(!String::from_utf8_lossy(&raw).contains("Sent-At"));
    }

    #[test]
    fn message_ids_and_recipients_parse_back() {
        let (g, _) = build(10, 77);
        let raw = String::from_utf8(g.parts_raw().concat()).unwrap();
        let id = raw
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: "))
            .unwrap();
        assert_eq!(parse_message_id(id), Some((0xabcd, 77)));
        assert_eq!(parse_message_id("<0000000000000001.5@other.invalid>"), None);
        assert_eq!(parse_message_id("<1.5@loadtest.invalid>"), None);
        assert_eq!(parse_recipient("user12@gmail.test"), Some(12));
        assert_eq!(parse_recipient("<USER3@x.test>"), Some(3));
        for bad in ["user@x", "userx1@x", "bob@x", "user1"] {
            assert_eq!(parse_recipient(bad), None, "{bad}");
        }
    }

    #[test]
    fn seq_changes_checksum() {
        let (a, _) = build(4096, 1);
        let (b, _) = build(4096, 2);
        assert_ne!(a.checksum(), b.checksum());
    }

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_700_000_000),
            "Tue, 14 Nov 2023 22:13:20 +0000"
        );
    }
}
