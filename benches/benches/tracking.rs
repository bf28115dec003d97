//! The tracking hot paths: checking a link's token (every open and click request
//! does it) and dressing a message (every tracked message: a token per link).
//!
//! `cargo bench -p postroad-benches --bench tracking`

use std::time::Instant;

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use postroad_api::tracking::{Claims, Purpose, Signer, Wanted};
use postroad_api::{Tracking, TrackingConfig};
use postroad_queue::{MessageId, Metadata};

fn meta() -> Metadata {
    Metadata {
        user_id: Some(123_456),
        email_type: Some("newsletter".into()),
        tenant: Some("acme".into()),
        campaign: Some("spring-sale-2027".into()),
        variant: Some("b".into()),
        ..Metadata::default()
    }
}

/// A newsletter of about 20 KiB with 30 links.
fn newsletter() -> String {
    let mut html = String::from("<html><head><style>p{margin:0}</style></head><body>");
    for i in 0..30 {
        html.push_str(&format!(
            "<table><tr><td><h2>Offer {i}</h2><p>{}</p><a class=\"button\" href=\"https://shop.example.com/p/{i}?utm_source=mail&amp;utm_campaign=spring\">See offer {i}</a></td></tr></table>",
            "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(9)
        ));
    }
    html.push_str("</body></html>");
    html
}

fn bench(c: &mut Criterion) {
    let signer = Signer::new(b"a key of thirty-two bytes, 012345");
    let claims = Claims {
        purpose: Purpose::Click,
        message: MessageId::new(),
        sender: "news@mail.example.com".into(),
        recipient: "ann.example@example.net".into(),
        meta: meta(),
        link: Some((4, "https://shop.example.com/p/4?utm_source=mail".into())),
    };
    let token = signer.sign(&claims).unwrap();
    let config = TrackingConfig {
        base_url: "https://t.example.com".into(),
        ..TrackingConfig::default()
    };
    let tracking = Tracking::new(&config, "a key of thirty-two bytes, 012345");
    let html = newsletter();
    let wanted = Wanted {
        opens: true,
        clicks: true,
        unsubscribe: true,
    };

    // Plain measurements first, printed whatever criterion's verbosity.
    let n = 200_000;
    let start = Instant::now();
    for _ in 0..n {
        black_box(signer.verify(black_box(&token)).unwrap());
    }
    let per = start.elapsed() / n;
    println!(
        "token check: {per:?} each, {:.0}/s on one core ({} characters)",
        1.0 / per.as_secs_f64(),
        token.len()
    );
    let n = 2_000;
    let start = Instant::now();
    for _ in 0..n {
        black_box(tracking.dress(
            MessageId::new(),
            "news@mail.example.com",
            "ann.example@example.net",
            &meta(),
            Some(&html),
            wanted,
        ));
    }
    let per = start.elapsed() / n;
    println!(
        "dressing a {} KiB newsletter with 30 links: {per:?} each, {:.0} messages/s on one core",
        html.len() / 1024,
        1.0 / per.as_secs_f64()
    );

    let mut group = c.benchmark_group("tracking");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify_click_token", |b| {
        b.iter(|| signer.verify(black_box(&token)).unwrap())
    });
    group.bench_function("sign_click_token", |b| {
        b.iter(|| signer.sign(black_box(&claims)).unwrap())
    });
    group.throughput(Throughput::Bytes(html.len() as u64));
    group.bench_function("dress_newsletter_30_links", |b| {
        b.iter(|| {
            tracking.dress(
                MessageId::new(),
                "news@mail.example.com",
                "ann.example@example.net",
                &meta(),
                Some(black_box(&html)),
                wanted,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
