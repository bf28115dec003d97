//! The shared message rate against the machine's Redis (127.0.0.1:6379), on a clock the
//! test sets: two relay processes' limiters on one site take, together, what the rate
//! allows and no more; a full bucket says how long to wait; Redis down does not block.

use std::time::Duration;

use postroad_redis_link::RedisLink;
use postroad_relay::shared_rate::SharedRate;

const REDIS: &str = "redis://127.0.0.1:6379/";

fn site() -> String {
    format!(
        "mx:test-{}-{}.invalid:25",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    )
}

#[tokio::test]
async fn two_processes_sharing_a_rate_take_what_it_allows_together() {
    let site = site();
    // Two links, as two relay processes have.
    let a = SharedRate::new(RedisLink::new(REDIS).unwrap(), &site);
    let b = SharedRate::new(RedisLink::new(REDIS).unwrap(), &site);
    let rate = 100.0;
    let batch = 20;
    let start_us = 1_000_000_000_000u64;
    let mut taken = [0u64; 2];
    // Ten seconds, both asking for a batch every 10 ms: far more than the rate.
    for step in 0..=1000u64 {
        let now = start_us + step * 10_000;
        // Whoever asks first gets the slot that freed; they take turns.
        let order = if step % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let grant = [&a, &b][i].take(rate, batch, Some(now)).await.unwrap();
            taken[i] += grant.granted;
        }
    }
    let total = taken[0] + taken[1];
    // 10 s at 100/s, plus at most the one batch of burst.
    assert!(total <= 1000 + batch, "{taken:?}");
    assert!(total >= 990, "the rate is used, not wasted: {taken:?}");
    assert!(
        taken.iter().all(|t| *t >= 400),
        "both get a share: {taken:?}"
    );
}

#[tokio::test]
async fn a_spent_rate_says_how_long_until_the_next_slot() {
    let limiter = SharedRate::new(RedisLink::new(REDIS).unwrap(), &site());
    let now = 5_000_000_000_000u64;
    let first = limiter.take(10.0, 5, Some(now)).await.unwrap();
    assert_eq!(first.granted, 5);
    let none = limiter.take(10.0, 5, Some(now)).await.unwrap();
    assert_eq!(none.granted, 0);
    // The next slot frees 100 ms (one interval at 10/s) later.
    assert_eq!(none.wait, Duration::from_millis(100));
    let later = limiter.take(10.0, 5, Some(now + 100_000)).await.unwrap();
    assert_eq!(later.granted, 1);
}

#[tokio::test]
async fn without_redis_sending_goes_on_paced_by_the_process_alone() {
    // Nothing listens on port 1.
    let limiter = SharedRate::new(RedisLink::new("redis://127.0.0.1:1/").unwrap(), &site());
    let done = tokio::time::timeout(Duration::from_secs(5), async {
        for _ in 0..3 {
            limiter.acquire(1.0).await;
        }
    })
    .await;
    assert!(done.is_ok(), "a Redis outage must not hold delivery up");
}
