//! Opens and clicks made by machines: mail privacy proxies that fetch every image at
//! delivery (Apple Mail Privacy Protection) and link scanners of mail gateways that
//! follow every link before the reader sees it. They are recorded, flagged (the
//! event's `reason` is `machine`), and not counted as the reader's.

use std::time::Duration;

/// User-Agent parts of known prefetchers and scanners (lowercase).
const SCANNERS: [&str; 16] = [
    "bot",
    "crawler",
    "spider",
    "scanner",
    "preview",
    "barracuda",
    "proofpoint",
    "mimecast",
    "symantec",
    "trendmicro",
    "forcepoint",
    "safelinks",
    "python-requests",
    "go-http-client",
    "curl/",
    "wget/",
];

/// Whether a request looks made by a machine: a `HEAD` request (a scanner checking a
/// link), no User-Agent, Apple's privacy proxy (it sends exactly `Mozilla/5.0`), a
/// known scanner's User-Agent, or a request within `window` of the message being
/// queued (`sent_ms`), sooner than a reader could.
pub fn is_machine(
    head: bool,
    user_agent: Option<&str>,
    sent_ms: u64,
    now_ms: u64,
    window: Duration,
) -> bool {
    if head || now_ms.saturating_sub(sent_ms) < window.as_millis() as u64 {
        return true;
    }
    let Some(agent) = user_agent.map(str::trim).filter(|a| !a.is_empty()) else {
        return true;
    };
    if agent == "Mozilla/5.0" {
        return true;
    }
    let agent = agent.to_ascii_lowercase();
    SCANNERS.iter().any(|s| agent.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BROWSER: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15";

    #[test]
    fn readers_are_told_from_prefetchers_and_scanners() {
        let w = Duration::from_secs(2);
        let (sent, later) = (1_000_000, 1_060_000);
        assert!(!is_machine(false, Some(BROWSER), sent, later, w));
        // Gmail's image proxy fetches when the reader opens: a reader.
        assert!(!is_machine(
            false,
            Some(
                "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
            ),
            sent,
            later,
            w
        ));
        assert!(is_machine(false, Some("Mozilla/5.0"), sent, later, w));
        assert!(is_machine(false, None, sent, later, w));
        assert!(is_machine(true, Some(BROWSER), sent, later, w));
        assert!(is_machine(
            false,
            Some("Mozilla/5.0 (compatible; Barracuda Sentinel)"),
            sent,
            later,
            w
        ));
        assert!(is_machine(false, Some(BROWSER), sent, sent + 500, w));
    }
}
