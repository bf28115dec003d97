//! `postroad::smtp::command::parse` on arbitrary bytes: as given, with "\r\n" added, and
//! framed the way `Conn::read_line` hands lines to the session (up to the first LF).
//!
//! Never panics; an accepted MAIL/RCPT carries no CR, LF or NUL in anything that is
//! stored with the message (a relay would send it on in a command line); an error is
//! a well-formed 4xx/5xx reply whose wire form is only complete CRLF lines. Numbers are
//! exact: an accepted BDAT's chunk size and an accepted MAIL's `SIZE=` are the decimal
//! value written on the line (checked against a `u128` reading of the digits), never a
//! wrapped one.

#![no_main]

use libfuzzer_sys::fuzz_target;
use postroad::smtp::command::parse;
use smtp_proto::Request;

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut line = data.to_vec();
    line.extend_from_slice(b"\r\n");
    check(&line);
    if let Some(lf) = memchr::memchr(b'\n', data) {
        check(&data[..=lf]);
    }
});

/// The words of the line, without its line ending (as the server splits them).
fn words(line: &[u8]) -> Vec<&[u8]> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.split(|&b| b == b' ')
        .filter(|w| !w.is_empty())
        .collect()
}

/// A run of ASCII digits as a u128 (leading zeros allowed), `None` past 38
/// significant digits (beyond any u64 anyway).
fn decimal(digits: &[u8]) -> Option<u128> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let significant = &digits[digits.iter().take_while(|&&d| d == b'0').count()..];
    if significant.len() > 38 {
        return None;
    }
    Some(
        significant
            .iter()
            .fold(0u128, |v, d| v * 10 + u128::from(d - b'0')),
    )
}

fn check(line: &[u8]) {
    match parse(line) {
        Ok(Request::Bdat { chunk_size, .. }) => {
            let words = words(line);
            let written = words.get(1).and_then(|w| decimal(w));
            assert_eq!(
                written,
                Some(chunk_size as u128),
                "BDAT size {chunk_size} is not what {line:?} says"
            );
        }
        Ok(Request::Mail { from }) => {
            // Quoting cannot hide a SIZE here: only lines whose address has no quote;
            // the parameters are what follows the path's `>`.
            let params = line
                .iter()
                .position(|&b| b == b'>')
                .map(|end| &line[end + 1..])
                .filter(|_| !line.contains(&b'"'));
            if let Some(params) = params {
                let sizes: Vec<&[u8]> = words(params)
                    .into_iter()
                    .filter_map(|w| {
                        w.get(..5)
                            .filter(|k| k.eq_ignore_ascii_case(b"SIZE="))
                            .map(|_| &w[5..])
                    })
                    .collect();
                for value in &sizes {
                    assert!(
                        decimal(value).is_some_and(|n| n <= u64::MAX as u128),
                        "accepted SIZE {value:?} that is not a 64-bit number: {line:?}"
                    );
                }
                if let Some(size) = sizes.last().and_then(|v| decimal(v)) {
                    assert_eq!(from.size as u128, size, "SIZE wrapped in {line:?}");
                }
            }
            clean("MAIL address", &from.address);
            if let Some(envid) = &from.env_id {
                clean("MAIL ENVID", envid);
            }
        }
        Ok(Request::Rcpt { to }) => {
            clean("RCPT address", &to.address);
            if let Some(orcpt) = &to.orcpt {
                clean("RCPT ORCPT", orcpt);
            }
        }
        Ok(_) => {}
        Err(reply) => {
            assert!(
                (400..600).contains(&reply.code),
                "error reply with code {}",
                reply.code
            );
            let mut wire = Vec::new();
            reply.write_to(&mut wire);
            assert!(wire.ends_with(b"\r\n"), "{wire:?}");
            for l in wire[..wire.len() - 2].split(|&b| b == b'\n') {
                let l = l.strip_suffix(b"\r").unwrap_or(l);
                assert!(
                    l.len() >= 4
                        && l[..3].iter().all(u8::is_ascii_digit)
                        && matches!(l[3], b' ' | b'-')
                        && !l.contains(&b'\r')
                        && !l.contains(&0),
                    "malformed reply line {l:?} for {line:?}"
                );
            }
        }
    }
}

fn clean(what: &str, value: &str) {
    assert!(
        !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)),
        "{what} {value:?} has CR, LF or NUL"
    );
}
