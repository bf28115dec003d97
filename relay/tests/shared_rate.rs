//! The shared message rate against the machine's Redis (127.0.0.1:6379), on a clock the
//! test sets: two relay processes' limiters on one key reserve slots that follow each
//! other, so together they get what the rate allows and no more, each a share; a
//! reservation behind another says how long to wait; Redis down does not block.

use std::time::Duration;

use postroad_redis_link::RedisLink;
use postroad_relay::shared_rate::{SharedRate, batch};

const REDIS: &str = "redis://127.0.0.1:6379/";

fn key() -> String {
    format!(
        "mx:test-{}-{}.invalid:25",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    )
}

#[tokio::test]
async fn two_processes_sharing_a_rate_take_what_it_allows_together() {
    let key = key();
    // Two links, as two relay processes have.
    let limiters = [
        SharedRate::new(RedisLink::new(REDIS).unwrap(), &key),
        SharedRate::new(RedisLink::new(REDIS).unwrap(), &key),
    ];
    let rate = 100.0;
    let want = batch(rate);
    assert_eq!(want, 20, "a fifth of a second's worth");
    let interval_us = 10_000u64;
    let start_us = 1_000_000_000_000u64;
    let end_us = start_us + 10_000_000;
    // Each process reserves its next batch as soon as its slots run out: both ask
    // for far more than the rate.
    let mut used_until = [start_us; 2];
    let mut slots: Vec<(u64, usize)> = Vec::new();
    let mut now = start_us;
    while now < end_us {
        for (i, limiter) in limiters.iter().enumerate() {
            if used_until[i] <= now {
                let wait = limiter.reserve(rate, want, Some(now)).await.unwrap();
                let first = now + wait.as_micros() as u64;
                for k in 0..want {
                    slots.push((first + k * interval_us, i));
                }
                used_until[i] = first + want * interval_us;
            }
        }
        now += 1_000;
    }
    slots.sort_unstable();
    // No two slots closer than the interval, whoever holds them.
    for pair in slots.windows(2) {
        assert!(pair[1].0 - pair[0].0 >= interval_us, "{pair:?}");
    }
    let within: Vec<&(u64, usize)> = slots.iter().filter(|(at, _)| *at < end_us).collect();
    assert_eq!(within.len(), 1000, "10 s at 100/s, used, never more");
    let first = within.iter().filter(|(_, i)| *i == 0).count();
    assert!(
        (450..=550).contains(&first),
        "both get a share: the first process {first} of 1000"
    );
}

#[tokio::test]
async fn a_reservation_behind_another_says_how_long_to_wait() {
    let limiter = SharedRate::new(RedisLink::new(REDIS).unwrap(), &key());
    let now = 5_000_000_000_000u64;
    let first = limiter.reserve(10.0, 5, Some(now)).await.unwrap();
    assert_eq!(first, Duration::ZERO);
    // Five slots at 10/s are half a second: the next batch starts then.
    let next = limiter.reserve(10.0, 5, Some(now)).await.unwrap();
    assert_eq!(next, Duration::from_millis(500));
    let later = limiter.reserve(10.0, 5, Some(now + 300_000)).await.unwrap();
    assert_eq!(later, Duration::from_millis(700));
    // Once the schedule is past, a reservation starts at once.
    let idle = limiter
        .reserve(10.0, 5, Some(now + 5_000_000))
        .await
        .unwrap();
    assert_eq!(idle, Duration::ZERO);
}

#[tokio::test]
async fn reserved_slots_are_used_at_their_times() {
    let limiter = SharedRate::new(RedisLink::new(REDIS).unwrap(), &key());
    // A fresh key: the first batch starts at once, its 20 slots 10 ms apart (at
    // 100/s): the twentieth is not taken before 190 ms.
    let start = std::time::Instant::now();
    for _ in 0..20 {
        limiter.acquire(100.0).await;
    }
    let spent = start.elapsed();
    assert!(spent >= Duration::from_millis(190), "{spent:?}");
}

#[tokio::test]
async fn without_redis_sending_goes_on_paced_by_the_process_alone() {
    // Nothing listens on port 1.
    let limiter = SharedRate::new(RedisLink::new("redis://127.0.0.1:1/").unwrap(), &key());
    let done = tokio::time::timeout(Duration::from_secs(5), async {
        for _ in 0..3 {
            limiter.acquire(1.0).await;
        }
    })
    .await;
    assert!(done.is_ok(), "a Redis outage must not hold delivery up");
}
