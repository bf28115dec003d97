//! Failed AUTH is throttled per client address and per username: growing delays, then
//! a ban with `421 4.7.0`; the right password still works wherever the address is not
//! banned. Python's smtplib makes the attempts over implicit TLS, each from its own
//! loopback address (127.0.0.0/8 is all local).

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{PASSWORD, Server, USER, run};

const BAN_SECS: u64 = 4;

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        Server::start(&format!(
            "[auth.throttle]\nfree_failures = 2\ndelay_ms = 300\nmax_delay_ms = 600\n\
             ban_after = 5\nwindow_secs = 60\nban_secs = {BAN_SECS}\n"
        ))
    })
}

/// `count` AUTH PLAIN attempts from `source`, one connection each: (code, ms) each.
fn attempts(source: &str, user: &str, password: &str, count: usize) -> Vec<(u16, u64)> {
    let script = common::scripts_dir().join("auth_attempts.py");
    let port = server().submissions.to_string();
    let count = count.to_string();
    let (ok, out) = run(
        "python3",
        &[
            script.to_str().unwrap(),
            &port,
            source,
            user,
            password,
            &count,
        ],
        None,
    );
    assert!(ok, "auth_attempts.py failed:\n{out}");
    out.lines()
        .map(|l| {
            let (code, ms) = l.split_once(' ').unwrap_or_else(|| panic!("{out}"));
            (code.parse().unwrap(), ms.parse().unwrap())
        })
        .collect()
}

fn codes(results: &[(u16, u64)]) -> Vec<u16> {
    results.iter().map(|(code, _)| *code).collect()
}

#[test]
fn a_guessing_address_is_slowed_then_banned_and_the_user_is_not_locked_out() {
    let guesses = attempts("127.0.0.2", USER, "wrong", 8);
    assert_eq!(
        codes(&guesses),
        [535, 535, 535, 535, 421, 421, 421, 421],
        "{guesses:?}"
    );
    // The third and later failures wait before their answer: 300 ms, then 600 ms (the
    // cap); the fifth bans the address, and it is told so.
    assert!(guesses[2].1 >= 300, "{guesses:?}");
    assert!(guesses[3].1 >= 600 && guesses[4].1 >= 600, "{guesses:?}");
    let log = server().log();
    assert!(log.contains("address banned"), "{log}");

    // The banned address cannot get in even with the right password...
    assert_eq!(codes(&attempts("127.0.0.2", USER, PASSWORD, 1)), [421]);
    // ...but the user can, from anywhere else, at once.
    let elsewhere = attempts("127.0.0.3", USER, PASSWORD, 1);
    assert_eq!(codes(&elsewhere), [235], "{elsewhere:?}");

    // The ban ends after ban_secs.
    let banned_until = Instant::now() + Duration::from_secs(BAN_SECS);
    let mut after_ban = Vec::new();
    while Instant::now() < banned_until + Duration::from_secs(20) {
        after_ban = attempts("127.0.0.2", USER, PASSWORD, 1);
        if after_ban[0].0 == 235 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(codes(&after_ban), [235], "still refused after the ban");
}

#[test]
fn a_username_guessed_from_many_addresses_is_slowed_down() {
    // One failure from each of four addresses: none of them has failed enough to be
    // delayed, but the username has.
    let mut results = Vec::new();
    for i in 10..14 {
        results.extend(attempts(&format!("127.0.0.{i}"), "mallory", "guess", 1));
    }
    assert_eq!(codes(&results), [535, 535, 535, 535], "{results:?}");
    assert!(results[2].1 >= 300 && results[3].1 >= 600, "{results:?}");
}
