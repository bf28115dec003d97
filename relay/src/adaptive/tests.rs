use super::*;

/// `n` sends spread over the second before `at`.
fn send_for_a_second(c: &mut Controller, at: Instant, n: u32) {
    for i in 0..n {
        c.sending(at - Duration::from_secs(1) + Duration::from_secs(1) * i / n);
    }
}

#[test]
fn a_throttle_cuts_to_seventy_percent_of_what_was_sent_then_it_climbs_back() {
    let t0 = Instant::now();
    let mut c = Controller::new(true, None, 10, t0);
    assert_eq!(
        c.limits(),
        Limits {
            rate: None,
            connections: 10
        }
    );
    let t = t0 + Duration::from_secs(2);
    send_for_a_second(&mut c, t - Duration::from_secs(1), 100);
    send_for_a_second(&mut c, t, 100);
    let cut = c.throttled("421 4.7.0 slow down".into(), false, t).unwrap();
    assert!((cut.rate.unwrap() - 70.0).abs() < 1.0, "{cut:?}");
    assert_eq!(
        cut.connections, 10,
        "a rate throttle leaves the connections"
    );
    assert!(c.backoff().unwrap().contains("421 4.7.0 slow down"));
    // The other replies of the same overload do not cut again.
    assert_eq!(
        c.throttled("421 again".into(), false, t + Duration::from_millis(500)),
        None
    );

    assert_eq!(
        c.delivered(t + Duration::from_millis(900)),
        None,
        "not calm for a second yet"
    );
    // Back along CUBIC's curve: fast, then flat near the 100/s it was cut from, which
    // it reaches again after RECOVER, then ever faster above it.
    let mut rates = Vec::new();
    for s in 1..=12 {
        let at = t + Duration::from_secs(s);
        rates.push(c.delivered(at).map(|l| l.rate.unwrap().round() as u32));
        assert_eq!(
            c.delivered(at + Duration::from_millis(500)),
            None,
            "once per second"
        );
    }
    assert_eq!(
        rates,
        [85, 94, 98, 100, 100, 100, 102, 106, 115, 130, 152, 182].map(Some)
    );
    // Without a configured rate the learned one is forgotten after calm minutes.
    let late = t + FORGET_AFTER + Duration::from_secs(1);
    assert_eq!(c.delivered(late).unwrap().rate, None);
    assert_eq!(c.backoff(), None);
}

#[test]
fn a_cut_made_too_deep_heals_in_seconds() {
    // The first throttle came 50 ms after the site started sending (at 300/s): it is
    // measured at that pace, not as 15 sends in an idle second.
    let t0 = Instant::now();
    let mut c = Controller::new(true, None, 16, t0);
    let t = t0 + Duration::from_secs(3);
    for i in 0..15u32 {
        c.sending(t - Duration::from_millis(50) + Duration::from_millis(50) * i / 15);
    }
    let cut = c.throttled("421 4.7.0 slow down".into(), false, t).unwrap();
    assert!((cut.rate.unwrap() - 105.0).abs() < 1.0, "{cut:?}");
    // Cut to 10/s (from 14.3/s) by a receiver that takes 100/s: growth finds 100/s
    // again within 20 s, not in the minutes an additive step of 5% would take.
    let mut c = Controller::new(true, None, 16, t0);
    send_for_a_second(&mut c, t, 14);
    let cut = c.throttled("421".into(), false, t).unwrap();
    assert!((cut.rate.unwrap() - 9.8).abs() < 0.1, "{cut:?}");
    let back = (1..60)
        .find(|s| {
            c.delivered(t + Duration::from_secs(*s))
                .is_some_and(|l| l.rate.unwrap() >= 100.0)
        })
        .unwrap();
    assert!((15..=20).contains(&back), "100/s after {back} s");
}

#[test]
fn the_rate_never_rises_above_the_configured_one() {
    let t0 = Instant::now();
    let mut c = Controller::new(true, Some(50.0), 4, t0);
    assert_eq!(c.delivered(t0 + Duration::from_secs(5)), None);
    let t = t0 + Duration::from_secs(10);
    send_for_a_second(&mut c, t, 50);
    let cut = c
        .throttled("451 4.7.1 rate limited".into(), false, t)
        .unwrap();
    assert!((cut.rate.unwrap() - 35.0).abs() < 1.0, "{cut:?}");
    let mut at = t;
    let mut rate = cut.rate.unwrap();
    for _ in 0..20 {
        at += Duration::from_secs(1);
        if let Some(up) = c.delivered(at) {
            rate = up.rate.unwrap();
        }
    }
    assert_eq!(rate, 50.0);
    assert_eq!(c.backoff(), None, "back at the ceiling");
}

#[test]
fn connection_throttles_halve_the_pool_down_to_one_and_it_grows_back_one_by_one() {
    let t0 = Instant::now();
    let mut c = Controller::new(true, None, 10, t0);
    let mut at = t0;
    let mut counts = Vec::new();
    for _ in 0..5 {
        at += COOLDOWN;
        counts.push(
            c.throttled("421 4.7.0 Too many connections".into(), true, at)
                .unwrap()
                .connections,
        );
    }
    assert_eq!(counts, [7, 4, 2, 1, 1]);
    assert_eq!(
        c.limits().rate,
        None,
        "a connection throttle leaves the rate"
    );
    assert_eq!(
        c.delivered(at + Duration::from_secs(4)),
        None,
        "not calm for 5 s yet"
    );
    let grown = c.delivered(at + CONN_RAISE_EVERY).unwrap();
    assert_eq!(grown.connections, 2);
    assert!(c.backoff().unwrap().contains("Too many connections"));
}

#[test]
fn disabled_control_keeps_the_configured_limits() {
    let t0 = Instant::now();
    let mut c = Controller::new(false, Some(20.0), 5, t0);
    send_for_a_second(&mut c, t0 + Duration::from_secs(1), 20);
    assert_eq!(
        c.throttled("421".into(), true, t0 + Duration::from_secs(1)),
        None
    );
    assert_eq!(
        c.limits(),
        Limits {
            rate: Some(20.0),
            connections: 5
        }
    );
}

#[test]
fn a_new_shape_keeps_what_was_learned_below_its_ceilings() {
    let t0 = Instant::now();
    let mut c = Controller::new(true, Some(100.0), 10, t0);
    let t = t0 + Duration::from_secs(1);
    send_for_a_second(&mut c, t, 100);
    c.throttled("421".into(), true, t).unwrap();
    assert_eq!(
        c.reshape(true, Some(40.0), 3),
        Limits {
            rate: Some(40.0),
            connections: 3
        }
    );
    let mut fresh = Controller::new(true, Some(100.0), 10, t0);
    assert_eq!(
        fresh.reshape(true, Some(40.0), 3),
        Limits {
            rate: Some(40.0),
            connections: 3
        }
    );
    assert_eq!(
        fresh.reshape(true, None, 12),
        Limits {
            rate: None,
            connections: 12
        }
    );
}
