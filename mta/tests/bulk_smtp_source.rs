//! A bulk run with Postfix's `smtp-source`: 10,000 messages over 20 sessions, all in the
//! spool afterwards.

mod common;

use common::{Server, run};
use postroad_queue::Queue;

#[tokio::test(flavor = "multi_thread")]
async fn smtp_source_ten_thousand_messages() {
    let mut server = Server::start("");
    let target = format!("127.0.0.1:{}", server.relay);
    let (ok, out) = run(
        "smtp-source",
        &[
            "-s",
            "20",
            "-m",
            "10000",
            "-l",
            "4096",
            "-f",
            "bulk@source.test",
            "-t",
            "rcpt@sink.test",
            &target,
        ],
        None,
    );
    assert!(ok, "smtp-source failed:\n{out}\n{}", server.log());
    server.stop();
    let stats = server.open_spool().stats().await.unwrap();
    assert_eq!(stats.queued, 10_000, "{stats:?}");
    let queued_lines = server.log().matches(" queued ").count();
    assert_eq!(queued_lines, 10_000, "one log line per accepted message");
}
