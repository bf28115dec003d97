//! `postroad queue sites` and `postroad queue providers`: the relay's sites and
//! providers as tables.

use serde_json::Value;

use crate::text_table::with_header;

/// One line per site: its key, provider or own domain, state (and until when), open
/// connections over the limit, the message rate limit, waiting jobs, and why.
pub fn format_sites(sites: &[Value]) -> String {
    if sites.is_empty() {
        return "no sites yet (the relay has delivered to none since it started)\n".into();
    }
    let rows: Vec<[String; 7]> = sites.iter().map(row).collect();
    let header = [
        "SITE",
        "SHAPED BY",
        "STATE",
        "CONNS",
        "RATE",
        "QUEUED",
        "WHY",
    ];
    with_header(header, &rows)
}

/// One line per provider: name, kind, state (and until when), the rate allowed now,
/// requests in flight and waiting, and why.
pub fn format_providers(providers: &[Value]) -> String {
    if providers.is_empty() {
        return "no providers configured ([relay.providers.NAME])\n".into();
    }
    let text = |v: &Value| v.as_str().map(str::to_string).unwrap_or_default();
    let rows: Vec<[String; 6]> = providers
        .iter()
        .map(|p| {
            [
                format!("{} ({})", text(&p["name"]), text(&p["kind"])),
                state(p),
                p["message_rate"]
                    .as_f64()
                    .map_or_else(|| "-".into(), |r| format!("{r:.1}/s")),
                p["in_flight"].as_u64().unwrap_or(0).to_string(),
                p["queued"].as_u64().unwrap_or(0).to_string(),
                text(&p["reason"]),
            ]
        })
        .collect();
    with_header(
        ["PROVIDER", "STATE", "RATE", "IN FLIGHT", "QUEUED", "WHY"],
        &rows,
    )
}

/// `state`, with ` until HH:MM:SSZ` when it has an end.
fn state(item: &Value) -> String {
    let mut state = item["state"].as_str().unwrap_or_default().to_string();
    if let Some(until) = item["until_ms"].as_i64()
        && let Some(at) = chrono::DateTime::from_timestamp_millis(until)
    {
        state.push_str(&format!(" until {}", at.format("%H:%M:%SZ")));
    }
    state
}

fn row(site: &Value) -> [String; 7] {
    let text = |v: &Value| v.as_str().map(str::to_string);
    let shape = &site["shape"];
    let shaped_by = match (text(&shape["domain"]), text(&shape["provider"])) {
        (Some(domain), _) => format!("domain {domain}"),
        (None, Some(provider)) => format!("provider {provider}"),
        (None, None) => "default".into(),
    };
    [
        text(&site["site"]).unwrap_or_default(),
        shaped_by,
        state(site),
        format!(
            "{}/{}",
            site["connections"].as_u64().unwrap_or(0),
            shape["connection_limit"].as_u64().unwrap_or(0)
        ),
        text(&shape["max_message_rate"]).unwrap_or_else(|| "-".into()),
        site["queued"].as_u64().unwrap_or(0).to_string(),
        text(&site["reason"]).unwrap_or_default(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_show_what_shapes_them_and_why_they_wait() {
        let sites = serde_json::json!([
            {"site": "aspmx.l.google.com", "state": "normal", "until_ms": null, "reason": null,
             "connections": 3, "queued": 12,
             "shape": {"provider": "gmail", "domain": null, "connection_limit": 10, "max_message_rate": "50/s"}},
            {"site": "example.com@mx.example.com", "state": "backoff", "until_ms": 1764892800000u64,
             "reason": "unreachable: 421 4.7.0 try later", "connections": 0, "queued": 2,
             "shape": {"provider": null, "domain": "example.com", "connection_limit": 2, "max_message_rate": null}}
        ]);
        let table = format_sites(sites.as_array().unwrap());
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("SITE") && lines[0].ends_with("WHY"),
            "{table}"
        );
        assert!(
            lines[1].contains("provider gmail")
                && lines[1].contains("3/10")
                && lines[1].contains("50/s"),
            "{table}"
        );
        assert!(
            lines[2].contains("domain example.com") && lines[2].contains("backoff until 00:00:00Z"),
            "{table}"
        );
        assert!(
            lines[2].ends_with("unreachable: 421 4.7.0 try later"),
            "{table}"
        );
        assert!(format_sites(&[]).contains("no sites yet"));
    }

    #[test]
    fn providers_show_their_state_and_rate() {
        let providers = serde_json::json!([
            {"name": "sendgrid", "kind": "sendgrid", "state": "open", "until_ms": 1764892800000u64,
             "reason": "repeated failures", "message_rate": 100.0, "in_flight": 0, "queued": 3},
            {"name": "ses", "kind": "ses", "state": "normal", "until_ms": null, "reason": null,
             "message_rate": null, "in_flight": 2, "queued": 0}
        ]);
        let table = format_providers(providers.as_array().unwrap());
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("PROVIDER") && lines[0].ends_with("WHY"),
            "{table}"
        );
        assert!(
            lines[1].starts_with("sendgrid (sendgrid)")
                && lines[1].contains("open until 00:00:00Z")
                && lines[1].contains("100.0/s")
                && lines[1].ends_with("repeated failures"),
            "{table}"
        );
        assert!(
            lines[2].starts_with("ses (ses)") && lines[2].contains("normal"),
            "{table}"
        );
        assert!(format_providers(&[]).contains("no providers configured"));
    }
}
