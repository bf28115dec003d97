//! Message content without I/O: the DATA body (dot-unstuffing with smtp-proto's
//! smuggling-safe receiver, the size limit, the memory room) and BDAT chunks, decoded
//! from whatever the connection has read so far. The session drives these through
//! `Conn::read_until`; the `smtp_data` fuzz target and the `data_unstuff` bench feed
//! them directly, so what is fuzzed and measured is the session's own code.

use smtp_proto::request::receiver::{BdatReceiver, DataReceiver, DummyDataReceiver};

use super::conn::Fed;
use super::reply::{self, Reply};

fn fed(done: bool) -> Fed {
    if done { Fed::Done } else { Fed::More }
}

/// A DATA body being received into a message buffer that already holds `header_len`
/// bytes (our `Received:` header).
pub struct DataBody {
    receiver: DataReceiver,
    /// Set once the message is refused: the rest is read and dropped.
    discard: Option<(DummyDataReceiver, Reply)>,
    header_len: usize,
    max: usize,
}

impl DataBody {
    /// A body that starts right after the `354`: the CRLF that ended the DATA command
    /// counts as the line end before the first line (RFC 5321 4.1.1.4), so `.` alone at
    /// once is an empty message and a first line `..x` loses its stuffing dot.
    pub fn new(header_len: usize, max: usize) -> Self {
        let mut receiver = DataReceiver::new();
        receiver.ingest(&mut b"\r\n".iter(), &mut Vec::new());
        Self {
            receiver,
            discard: None,
            header_len,
            max,
        }
    }

    /// Decodes from `input` into `message`, never letting `message` grow past `room`
    /// bytes. Returns the bytes of `input` used and whether the body is complete
    /// (`Done`: the rest of `input` is the next command), needs more input, or is
    /// `Blocked` for want of room (grow `room`, or [`DataBody::refuse`]). A body over
    /// the size limit is refused (`552`) and the rest of it read and dropped.
    pub fn feed(&mut self, input: &[u8], message: &mut Vec<u8>, room: usize) -> (usize, Fed) {
        if let Some((skip, _)) = &mut self.discard {
            let mut bytes = input.iter();
            let done = skip.ingest(&mut bytes);
            return (input.len() - bytes.as_slice().len(), fed(done));
        }
        // Unstuffing never makes data longer: input up to the room left fits.
        let take = input.len().min(room.saturating_sub(message.len()));
        if take == 0 {
            return (0, Fed::Blocked);
        }
        let mut bytes = input[..take].iter();
        let done = self.receiver.ingest(&mut bytes, message);
        // While not done, the last byte may be the CR of the final ".\r\n", which the
        // receiver takes off again once the LF comes: allow it, or a body of exactly
        // `max` bytes would be refused or not depending on where the reads fall.
        if message.len() - self.header_len > self.max + usize::from(!done) {
            self.refuse(reply::TOO_BIG, message);
        }
        (take - bytes.as_slice().len(), fed(done))
    }

    /// Stops storing the message: `message` is emptied and the rest of the body will be
    /// read and dropped; `reply` is the answer once it is over.
    pub fn refuse(&mut self, reply: Reply, message: &mut Vec<u8>) {
        if self.discard.is_none() {
            self.discard = Some((DummyDataReceiver::new_data(&self.receiver), reply));
            *message = Vec::new();
        }
    }

    /// Why the message is refused, if it is.
    pub fn refusal(&self) -> Option<&Reply> {
        self.discard.as_ref().map(|(_, reply)| reply)
    }

    /// The size limit, for growing the buffer: the body, plus the CR of a final CRLF
    /// that may sit in the buffer until the LF comes.
    pub fn cap(&self) -> usize {
        self.header_len + self.max + 2
    }
}

/// Whether a BDAT chunk of `size` octets keeps a body of `stored` octets within `max`.
/// Saturating: smtp-proto passes sizes up to `usize::MAX - 1`.
pub fn chunk_fits(stored: usize, size: usize, max: usize) -> bool {
    stored.saturating_add(size) <= max
}

/// One BDAT chunk, stored as it is.
pub struct Chunk(BdatReceiver);

impl Chunk {
    pub fn new(size: usize, last: bool) -> Self {
        Self(BdatReceiver::new(size, last))
    }

    /// Appends chunk bytes from `input` to `message`; `Done` once all `size` arrived.
    pub fn feed(&mut self, input: &[u8], message: &mut Vec<u8>) -> (usize, Fed) {
        let mut bytes = input.iter();
        let done = self.0.ingest(&mut bytes, message);
        (input.len() - bytes.as_slice().len(), fed(done))
    }
}

/// A BDAT chunk read and dropped (the message is refused, or there is none).
pub struct SkippedChunk(Option<DummyDataReceiver>);

impl SkippedChunk {
    pub fn new(size: usize) -> Self {
        Self((size > 0).then(|| DummyDataReceiver::new_bdat(size)))
    }

    pub fn feed(&mut self, input: &[u8]) -> (usize, Fed) {
        let Some(skip) = &mut self.0 else {
            return (0, Fed::Done);
        };
        let mut bytes = input.iter();
        let done = skip.ingest(&mut bytes);
        (input.len() - bytes.as_slice().len(), fed(done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &[u8] = b"Received: x\r\n";

    fn data(input: &[u8], max: usize, reads: usize) -> (Vec<u8>, Option<Reply>, usize) {
        let mut message = HEADER.to_vec();
        let mut body = DataBody::new(HEADER.len(), max);
        let mut used = 0;
        for chunk in input.chunks(reads) {
            let mut pos = 0;
            while pos < chunk.len() {
                let (n, status) = body.feed(&chunk[pos..], &mut message, usize::MAX);
                pos += n;
                used += n;
                if status == Fed::Done {
                    return (message, body.refusal().cloned(), used);
                }
                if n == 0 {
                    break;
                }
            }
        }
        panic!("body did not end");
    }

    #[test]
    fn unstuffs_and_stops_at_the_dot() {
        for reads in [1, 3, 1000] {
            let (message, refusal, used) = data(b"..a\r\nb\r\n.\r\nRSET\r\n", 100, reads);
            assert_eq!(&message[HEADER.len()..], b".a\r\nb\r\n");
            assert_eq!(refusal, None);
            assert_eq!(used, 11, "the next command is not part of the body");
        }
        let (message, _, _) = data(b".\r\n", 100, 1);
        assert_eq!(message, HEADER, "an empty body ends at once");
    }

    #[test]
    fn over_the_limit_is_read_to_the_end_and_refused() {
        let (message, refusal, used) = data(b"0123456789\r\n.\r\nQUIT\r\n", 5, 4);
        assert!(message.is_empty());
        assert_eq!(refusal, Some(reply::TOO_BIG));
        assert_eq!(used, 15);
        // Exactly at the limit is fine, however the reads fall.
        for reads in 1..8 {
            let (message, refusal, _) = data(b"abc\r\n.\r\n", 5, reads);
            assert_eq!((refusal, message.len()), (None, HEADER.len() + 5));
        }
    }

    #[test]
    fn no_room_blocks_without_consuming() {
        let mut message = HEADER.to_vec();
        let mut body = DataBody::new(HEADER.len(), 100);
        let room = HEADER.len() + 2;
        let (n, status) = body.feed(b"abcdef\r\n.\r\n", &mut message, room);
        assert_eq!((n, status), (2, Fed::More));
        assert_eq!(
            body.feed(b"cdef\r\n.\r\n", &mut message, room),
            (0, Fed::Blocked)
        );
        body.refuse(reply::NO_MEMORY, &mut message);
        assert_eq!(
            body.feed(b"cdef\r\n.\r\n", &mut message, room),
            (9, Fed::Done)
        );
        assert_eq!(body.refusal(), Some(&reply::NO_MEMORY));
    }

    #[test]
    fn chunks() {
        let mut message = Vec::new();
        let mut chunk = Chunk::new(4, true);
        assert_eq!(chunk.feed(b"ab", &mut message), (2, Fed::More));
        assert_eq!(chunk.feed(b"cdQUIT", &mut message), (2, Fed::Done));
        assert_eq!(message, b"abcd");
        let mut skip = SkippedChunk::new(3);
        assert_eq!(skip.feed(b"xyzRSET"), (3, Fed::Done));
        assert_eq!(SkippedChunk::new(0).feed(b"RSET"), (0, Fed::Done));
        assert!(chunk_fits(2, 3, 5) && !chunk_fits(3, 3, 5));
        assert!(!chunk_fits(1, usize::MAX - 1, 5));
    }
}
