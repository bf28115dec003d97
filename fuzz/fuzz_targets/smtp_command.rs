//! `postroad::smtp::command::parse` on arbitrary bytes: as given, with "\r\n" added, and
//! framed the way `Conn::read_line` hands lines to the session (up to the first LF).
//!
//! Never panics; an accepted MAIL/RCPT carries no CR, LF or NUL in anything that is
//! stored with the message (a relay would send it on in a command line); an error is
//! a well-formed 4xx/5xx reply whose wire form is only complete CRLF lines.

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

fn check(line: &[u8]) {
    match parse(line) {
        Ok(Request::Mail { from }) => {
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
