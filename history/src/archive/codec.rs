//! An archived month's bytes: NDJSON (one `DeliveryEvent` per line), gzip-compressed,
//! with the count and SHA-256 of the uncompressed lines as its check.

use std::io::Write;

use flate2::Compression;
use flate2::write::{GzDecoder, GzEncoder};
use postroad_queue::DeliveryEvent;
use sha2::{Digest, Sha256};

/// Lines and their SHA-256 (of the uncompressed NDJSON).
#[derive(Debug, Clone, Default)]
pub(crate) struct Digest256 {
    hasher: Sha256,
    pub lines: u64,
}

impl Digest256 {
    fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.lines += bytes.iter().filter(|b| **b == b'\n').count() as u64;
    }

    pub fn hex(&self) -> String {
        self.hasher
            .clone()
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Events in, gzip bytes out (taken a buffer at a time by [`Encoder::take`]).
pub(crate) struct Encoder {
    gz: GzEncoder<Vec<u8>>,
    pub digest: Digest256,
    line: Vec<u8>,
}

impl Encoder {
    pub fn new() -> Self {
        Self {
            gz: GzEncoder::new(Vec::new(), Compression::default()),
            digest: Digest256::default(),
            line: Vec::new(),
        }
    }

    pub fn push(&mut self, event: &DeliveryEvent) -> std::io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, event)?;
        self.line.push(b'\n');
        self.digest.update(&self.line);
        self.gz.write_all(&self.line)
    }

    /// The compressed bytes so far (the encoder keeps going).
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(self.gz.get_mut())
    }

    pub fn pending(&self) -> usize {
        self.gz.get_ref().len()
    }

    /// The last compressed bytes, and the digest of everything.
    pub fn finish(self) -> std::io::Result<(Vec<u8>, Digest256)> {
        Ok((self.gz.finish()?, self.digest))
    }
}

/// Decompressed lines go here: digested, and (when `keep`) parsed into events.
#[derive(Default)]
struct Lines {
    digest: Digest256,
    keep: bool,
    partial: Vec<u8>,
    events: Vec<DeliveryEvent>,
    error: Option<String>,
}

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.digest.update(buf);
        if self.keep {
            let mut rest = buf;
            while let Some(end) = rest.iter().position(|b| *b == b'\n') {
                self.partial.extend_from_slice(&rest[..end]);
                match serde_json::from_slice::<DeliveryEvent>(&self.partial) {
                    Ok(event) => self.events.push(event),
                    Err(e) if self.error.is_none() => {
                        self.error = Some(format!("line {}: {e}", self.digest.lines));
                    }
                    Err(_) => {}
                }
                self.partial.clear();
                rest = &rest[end + 1..];
            }
            self.partial.extend_from_slice(rest);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// gzip bytes in, chunk by chunk; the digest, and the events when asked for.
pub(crate) struct Decoder {
    gz: GzDecoder<Lines>,
}

impl Decoder {
    /// `parse`: also parse each line into a [`DeliveryEvent`] (restore), else only
    /// count and digest (verification).
    pub fn new(parse: bool) -> Self {
        Self {
            gz: GzDecoder::new(Lines {
                keep: parse,
                ..Lines::default()
            }),
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), String> {
        self.gz
            .write_all(chunk)
            .map_err(|e| format!("not gzip: {e}"))?;
        match self.gz.get_mut().error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The events parsed since the last call.
    pub fn events(&mut self) -> Vec<DeliveryEvent> {
        std::mem::take(&mut self.gz.get_mut().events)
    }

    /// The digest of everything, and the events (when parsing) the end of the stream
    /// still held.
    pub fn finish(self) -> Result<(Digest256, Vec<DeliveryEvent>), String> {
        let lines = self
            .gz
            .finish()
            .map_err(|e| format!("truncated gzip: {e}"))?;
        if let Some(e) = lines.error {
            return Err(e);
        }
        if !lines.partial.is_empty() {
            return Err("the last line has no newline".into());
        }
        Ok((lines.digest, lines.events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postroad_queue::{Envelope, EventKind, Recipient};

    #[test]
    fn events_survive_the_round_trip_in_any_chunking_with_the_same_digest() {
        let envelope = Envelope::new(
            "s@example.com",
            vec![Recipient::new("u@example.net")],
            "192.0.2.1".parse().unwrap(),
        );
        let events: Vec<DeliveryEvent> = (0..500)
            .map(|i| {
                DeliveryEvent::new(EventKind::Delivered, &envelope, &envelope.recipients[0], i)
            })
            .collect();
        let mut encoder = Encoder::new();
        let mut bytes = Vec::new();
        for e in &events {
            encoder.push(e).unwrap();
            if encoder.pending() > 64 {
                bytes.extend(encoder.take());
            }
        }
        let (tail, digest) = encoder.finish().unwrap();
        bytes.extend(tail);
        assert_eq!(digest.lines, 500);
        for chunk in [1, 7, 4096, bytes.len()] {
            let mut decoder = Decoder::new(true);
            let mut back = Vec::new();
            for piece in bytes.chunks(chunk) {
                decoder.feed(piece).unwrap();
                back.extend(decoder.events());
            }
            let (check, rest) = decoder.finish().unwrap();
            back.extend(rest);
            assert_eq!(back, events, "chunks of {chunk}");
            assert_eq!((check.lines, check.hex()), (digest.lines, digest.hex()));
        }
        // Truncated: refused, not taken for a shorter month.
        let mut decoder = Decoder::new(false);
        decoder.feed(&bytes[..bytes.len() / 2]).unwrap();
        assert!(decoder.finish().is_err());
        let mut garbage = Decoder::new(false);
        let fed = garbage.feed(b"not gzip at all");
        assert!(fed.is_err() || garbage.finish().is_err());
    }
}
