//! Message bodies (DATA and BDAT) through the session's own decoders
//! (`postroad::smtp::body`: `DataBody`, `Chunk`, `SkippedChunk`, `chunk_fits`), fed the
//! way `Session::data` and `Session::bdat` feed them over `Conn::read_until`, with the
//! input arriving in arbitrary reads. Only the read loop and BDAT's transaction
//! bookkeeping are modelled here; the decoding is the session's code.
//!
//! Properties:
//! * no panic;
//! * split invariance: how the bytes are cut into reads never changes what is stored,
//!   the verdict (stored / too big / connection closed) or how many bytes the body used
//!   (the rest is the next pipelined command, so this is what stops smuggling);
//! * DATA decodes as RFC 5321 says (CRLF lines, "." alone ends, a leading "." is
//!   removed), compared with a plain line-by-line decoder, with smtp-proto's known
//!   deviations spelled out in [`reference_data`];
//! * BDAT stores exactly the chunk bytes.
//!
//! Input layout: `[mode][max][n][n read sizes...][stream...]`. `mode` bit 0 picks BDAT
//! (bit 1 is unused: it chose whether DATA was primed, which the session now always
//! is); for BDAT the stream starts with `count` (size, last) pairs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use postroad::smtp::body::{Chunk as BdatChunk, DataBody, SkippedChunk, chunk_fits};
use postroad::smtp::conn::Fed;

/// Stands in for the `Received:` header the session puts before the body.
const HEADER: &[u8] = b"Received: from fuzz\r\n";

/// BDAT chunk sizes smtp-proto lets through go up to `usize::MAX - 1`.
const HUGE: usize = usize::MAX - 1;

fuzz_target!(|data: &[u8]| {
    let [mode, max, n, rest @ ..] = data else {
        return;
    };
    // 255: no limit in practice; otherwise small, so the limit is often hit mid-body.
    let max = if *max == 255 { 25 << 20 } else { *max as usize };
    let n = (*n as usize % 32).min(rest.len());
    let (reads, stream) = rest.split_at(n);
    let reads: Vec<usize> = reads.iter().map(|&r| r as usize + 1).collect();

    if mode & 1 == 0 {
        let whole = run_data(stream, &[], max);
        let split = run_data(stream, &reads, max);
        assert_eq!(
            whole, split,
            "DATA result depends on how the input is split"
        );
        check_data_against_reference(stream, &whole, max);
    } else {
        let [count, rest @ ..] = stream else {
            return;
        };
        let count = (*count as usize % 8).min(rest.len() / 2);
        let (commands, stream) = rest.split_at(count * 2);
        let commands: Vec<(usize, bool)> = commands
            .chunks(2)
            .map(|c| {
                let size = if c[0] == 255 { HUGE } else { c[0] as usize };
                (size, c[1] & 1 != 0)
            })
            .collect();
        let whole = run_bdat(stream, &[], &commands, max);
        let split = run_bdat(stream, &reads, &commands, max);
        assert_eq!(
            whole, split,
            "BDAT result depends on how the input is split"
        );
        check_bdat_against_reference(stream, &commands, &whole, max);
    }
});

/// The client's byte stream, delivered in reads of the given sizes (then the rest in
/// one read), with `Conn`'s input buffer.
struct Conn<'a> {
    stream: &'a [u8],
    pos: usize,
    reads: std::slice::Iter<'a, usize>,
    input: Vec<u8>,
}

/// The client closed its side before the body was complete (`Interrupt::Closed`).
#[derive(Debug, PartialEq, Eq)]
struct Closed;

impl<'a> Conn<'a> {
    fn new(stream: &'a [u8], reads: &'a [usize]) -> Self {
        Self {
            stream,
            pos: 0,
            reads: reads.iter(),
            input: Vec::new(),
        }
    }

    /// `Conn::fill`: one read (never empty; end of stream is `Closed`).
    fn fill(&mut self) -> Result<(), Closed> {
        let left = self.stream.len() - self.pos;
        if left == 0 {
            return Err(Closed);
        }
        let n = self.reads.next().map_or(left, |&r| r.min(left));
        self.input
            .extend_from_slice(&self.stream[self.pos..self.pos + n]);
        self.pos += n;
        Ok(())
    }

    /// `Conn::read_until`, line for line (no memory budget: never `Blocked`).
    fn read_until(&mut self, mut consume: impl FnMut(&[u8]) -> (usize, Fed)) -> Result<(), Closed> {
        loop {
            if !self.input.is_empty() {
                let (used, fed) = consume(&self.input);
                assert!(used <= self.input.len());
                self.input.drain(..used);
                match fed {
                    Fed::Done => return Ok(()),
                    Fed::More => {}
                    Fed::Blocked => panic!("blocked with unlimited room"),
                }
            }
            self.fill()?;
        }
    }

    /// Bytes of the stream the body used: read and not left in the buffer.
    fn used(&self) -> usize {
        self.pos - self.input.len()
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The body as it would be stored (after the header).
    Stored(Vec<u8>),
    TooBig,
    Closed,
}

/// `Session::data`: returns the verdict and how many stream bytes the body used.
fn run_data(stream: &[u8], reads: &[usize], max: usize) -> (Verdict, usize) {
    let mut conn = Conn::new(stream, reads);
    let mut message = HEADER.to_vec();
    let mut body = DataBody::new(HEADER.len(), max);
    let read = conn.read_until(|input| body.feed(input, &mut message, usize::MAX));
    let used = conn.used();
    let verdict = match read {
        Err(Closed) => Verdict::Closed,
        Ok(()) if body.refusal().is_some() => Verdict::TooBig,
        Ok(()) => {
            assert!(message.starts_with(HEADER), "the receiver ate the header");
            Verdict::Stored(message[HEADER.len()..].to_vec())
        }
    };
    (verdict, used)
}

/// One BDAT command's outcome, as the session answers it.
#[derive(Debug, PartialEq, Eq)]
enum Chunk {
    /// `250 <size> octets received`.
    Received,
    /// The transaction went over the limit; the chunk was read and dropped.
    TooBig,
    /// No transaction any more (after TooBig): `503 need MAIL`, chunk skipped.
    NoTransaction,
    /// The LAST chunk: the whole body as it would be stored.
    Stored(Vec<u8>),
}

/// `Session::bdat` for each (size, last) command in turn, until LAST or the client
/// closes. Returns the outcomes, whether it ended with the client closing, and the
/// bytes used.
fn run_bdat(
    stream: &[u8],
    reads: &[usize],
    commands: &[(usize, bool)],
    max: usize,
) -> (Vec<Chunk>, bool, usize) {
    let mut conn = Conn::new(stream, reads);
    // The transaction's message so far: (message, header_len, too_big); None once the
    // transaction is over.
    let mut tx: Option<Option<(Vec<u8>, usize, bool)>> = Some(None);
    let mut outcomes = Vec::new();
    for &(size, last) in commands {
        let Some(chunks) = tx.as_mut() else {
            // `Session::skip_chunk` then NEED_MAIL.
            if skip(&mut conn, size).is_err() {
                return (outcomes, true, conn.used());
            }
            outcomes.push(Chunk::NoTransaction);
            continue;
        };
        let (message, header_len, too_big) = chunks.get_or_insert_with(|| {
            let message = HEADER.to_vec();
            let len = message.len();
            (message, len, false)
        });
        if !chunk_fits(message.len() - *header_len, size, max) {
            *too_big = true;
            *message = Vec::new();
        }
        let read = if *too_big {
            skip(&mut conn, size)
        } else if size == 0 {
            Ok(())
        } else {
            message.reserve(size);
            let mut chunk = BdatChunk::new(size, last);
            conn.read_until(|input| chunk.feed(input, message))
        };
        if read.is_err() {
            return (outcomes, true, conn.used());
        }
        if *too_big {
            tx = None;
            outcomes.push(Chunk::TooBig);
            continue;
        }
        if !last {
            outcomes.push(Chunk::Received);
            continue;
        }
        let (message, header_len, _) = tx.take().flatten().expect("transaction");
        assert!(message.starts_with(HEADER));
        outcomes.push(Chunk::Stored(message[header_len..].to_vec()));
        // Later chunks would belong to a new transaction, which needs MAIL first.
        break;
    }
    (outcomes, false, conn.used())
}

/// `Session::skip`.
fn skip(conn: &mut Conn<'_>, size: usize) -> Result<(), Closed> {
    if size == 0 {
        return Ok(());
    }
    let mut skip = SkippedChunk::new(size);
    conn.read_until(|input| skip.feed(input))
}

/// What a DATA body decodes to: the stored bytes and the stream bytes used up to and
/// including the terminator, or None when the stream ends first.
///
/// RFC 5321: the body is CRLF-terminated lines; a line that is just "." ends it; any
/// other line starting with "." loses that dot. Bare CR and bare LF are data. The CRLF
/// that ended the DATA command counts as the one before the first line.
///
/// smtp-proto deviation, kept here so the rest is checked exactly: a line that is "."
/// followed by one or more CRs (".\r\r\n") also ends the body, and those CRs (all but
/// the one of the final CRLF) are stored. A compliant client dot-stuffs such a line, so this is no
/// smuggling vector, but it is not RFC behaviour.
fn reference_data(stream: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(len) = memchr::memmem::find(&stream[pos..], b"\r\n") {
        let line = &stream[pos..pos + len];
        pos += len + 2;
        if let Some(tail) = line.strip_prefix(b".") {
            if tail.iter().all(|&b| b == b'\r') {
                out.extend_from_slice(tail);
                return Some((out, pos));
            }
            out.extend_from_slice(tail);
        } else {
            out.extend_from_slice(line);
        }
        out.extend_from_slice(b"\r\n");
    }
    None
}

fn check_data_against_reference(stream: &[u8], got: &(Verdict, usize), max: usize) {
    let (verdict, used) = got;
    match reference_data(stream) {
        None => {
            assert_eq!(*verdict, Verdict::Closed, "body ended without a terminator");
            assert_eq!(*used, stream.len());
        }
        Some((body, end)) => {
            assert_eq!(*used, end, "body used a different number of bytes");
            if body.len() > max {
                assert_eq!(*verdict, Verdict::TooBig, "{} > {max} bytes", body.len());
            } else {
                assert_eq!(*verdict, Verdict::Stored(body));
            }
        }
    }
}

fn check_bdat_against_reference(
    stream: &[u8],
    commands: &[(usize, bool)],
    got: &(Vec<Chunk>, bool, usize),
    max: usize,
) {
    let (outcomes, closed, used) = got;
    let mut pos = 0usize;
    let mut body = Vec::new();
    let mut over = false;
    for (i, &(size, last)) in commands.iter().enumerate() {
        let Some(end) = pos.checked_add(size).filter(|&e| e <= stream.len()) else {
            assert!(
                *closed && outcomes.len() == i,
                "chunk {i} cannot be complete"
            );
            assert_eq!(*used, stream.len());
            return;
        };
        if !over {
            body.extend_from_slice(&stream[pos..end]);
            over = body.len() > max;
            let expected = if over {
                Chunk::TooBig
            } else if last {
                Chunk::Stored(std::mem::take(&mut body))
            } else {
                Chunk::Received
            };
            assert_eq!(outcomes[i], expected, "chunk {i}");
            if last && !over {
                assert_eq!(outcomes.len(), i + 1);
                assert_eq!(*used, end);
                return;
            }
        } else {
            assert_eq!(outcomes[i], Chunk::NoTransaction, "chunk {i}");
        }
        pos = end;
    }
    assert!(!*closed);
    assert_eq!(outcomes.len(), commands.len());
    assert_eq!(*used, pos);
}
