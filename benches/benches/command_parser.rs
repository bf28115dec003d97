//! The SMTP command parser (`postroad::smtp::command::parse` over smtp-proto) and the
//! session's own DATA decoder (`postroad::smtp::body::DataBody`: dot-unstuffing and
//! the size limit), fed 16 KiB reads as `Conn` hands them over.
//!
//!     cargo bench -p postroad-benches --bench command_parser

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use postroad::smtp::body::DataBody;
use postroad::smtp::command::parse;
use postroad::smtp::conn::Fed;
use std::hint::black_box;

const COMMANDS: &[&[u8]] = &[
    b"EHLO client.example.com\r\n",
    b"MAIL FROM:<newsletter-bounces+u123@lists.example.com> SIZE=4096 BODY=8BITMIME RET=HDRS ENVID=abc123\r\n",
    b"RCPT TO:<someone.with.a.long.name@recipient-domain.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y.example\r\n",
    b"RCPT TO:<a@b.example>\r\n",
    b"DATA\r\n",
    b"BDAT 65536 LAST\r\n",
    b"RSET\r\n",
    b"\xff\xfegarbage that is not a command\r\n",
];

fn commands(c: &mut Criterion) {
    let mut group = c.benchmark_group("command_parse");
    group.throughput(Throughput::Elements(COMMANDS.len() as u64));
    group.bench_function("mixed_session_commands", |b| {
        b.iter(|| {
            for line in COMMANDS {
                let _ = black_box(parse(black_box(line)));
            }
        })
    });
    group.finish();
}

/// A message body with CRLF lines, some starting with a dot (stuffed on the wire).
fn wire_body(size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 64);
    let mut n = 0;
    while out.len() < size {
        if n % 10 == 0 {
            out.extend_from_slice(b"..a stuffed line\r\n");
        } else {
            out.extend_from_slice(
                b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n",
            );
        }
        n += 1;
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn data(c: &mut Criterion) {
    let mut group = c.benchmark_group("data_unstuff");
    for size in [4 * 1024, 256 * 1024] {
        let wire = wire_body(size);
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &wire, |b, wire| {
            let mut message = Vec::with_capacity(wire.len());
            b.iter(|| {
                message.clear();
                let mut body = DataBody::new(0, 64 << 20);
                // Feed it in 16 KiB reads, as the session does.
                let mut done = false;
                for chunk in wire.chunks(16 * 1024) {
                    let (_, fed) = body.feed(chunk, &mut message, usize::MAX);
                    done = fed == Fed::Done;
                }
                assert!(done);
                black_box(message.len())
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = commands, data
}
criterion_main!(benches);
