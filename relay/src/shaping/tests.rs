use super::*;

fn parse(text: &str) -> Result<Shaping, String> {
    Shaping::parse(text, "test.toml").map_err(|e| e.to_string())
}

const FILE: &str = r#"
[default]
connection_limit = 8
max_message_rate = "1,000/h"

[provider.gmail]
match = [{ MXSuffix = ".google.com" }, { MXSuffix = "googlemail.com" }]
connection_limit = 4
max_message_rate = "50/s"

[provider.workspace]
match = [{ MXSuffix = ".aspmx.l.google.com" }]
max_deliveries_per_connection = 7

[domain."Example.COM"]
connection_limit = 2
tls = "required"
"#;

#[test]
fn layers_override_default_then_provider_then_domain() {
    let shaping = parse(FILE).unwrap();
    let plain = shaping.shape(None, ["mx.other.net"]);
    assert_eq!(plain.connection_limit, 8);
    assert_eq!(plain.max_message_rate, Some(Rate::parse("1000/h").unwrap()));
    // The fallbacks, below [default]:
    assert_eq!(plain.max_deliveries_per_connection, 1000);
    assert_eq!(plain.idle_timeout, Duration::from_secs(30));
    assert_eq!(
        (plain.provider, plain.domain, plain.tls),
        (None, None, None)
    );

    let gmail = shaping.shape(None, ["alt1.gmail-smtp-in.l.google.com."]);
    assert_eq!(gmail.provider.as_deref(), Some("gmail"));
    assert_eq!(gmail.connection_limit, 4);
    assert_eq!(gmail.max_message_rate.unwrap().per_sec(), 50.0);
    // No leading dot: the name itself and its subdomains, not "notgooglemail.com".
    for (host, provider) in [
        ("googlemail.com", Some("gmail")),
        ("mx.googlemail.com", Some("gmail")),
        ("notgooglemail.com", None),
        ("google.com", None),
    ] {
        assert_eq!(shaping.provider_of([host]), provider, "{host}");
    }
    // The longest suffix wins.
    let workspace = shaping.shape(None, ["ASPMX.L.GOOGLE.COM", "x.aspmx.l.google.com"]);
    assert_eq!(workspace.provider.as_deref(), Some("workspace"));
    assert_eq!(
        (
            workspace.connection_limit,
            workspace.max_deliveries_per_connection
        ),
        (8, 7)
    );

    assert!(shaping.has_domain("example.com"));
    let own = shaping.shape(Some("example.com"), ["aspmx.l.google.com"]);
    assert_eq!(own.domain.as_deref(), Some("example.com"));
    assert_eq!(own.connection_limit, 2);
    assert_eq!(own.tls, Some(TlsPolicy::Required));
    assert_eq!(
        own.max_message_rate.unwrap().per_sec(),
        50.0,
        "from the provider"
    );
    let other = shaping.shape(Some("other.com"), ["mx.other.net"]);
    assert_eq!(other.domain, None);
}

#[test]
fn the_built_in_file_covers_the_big_receivers_and_a_catch_all() {
    let shaping = Shaping::load(None).unwrap();
    for (host, provider) in [
        ("gmail-smtp-in.l.google.com", "gmail"),
        ("example-com.mail.protection.outlook.com", "outlook"),
        ("hotmail-com.olc.protection.outlook.com", "outlook"),
        ("mta5.am0.yahoodns.net", "yahoo"),
        ("mx01.mail.icloud.com", "icloud"),
    ] {
        let shape = shaping.shape(None, [host]);
        assert_eq!(shape.provider.as_deref(), Some(provider), "{host}");
        assert!(shape.max_message_rate.is_some(), "{host}");
        assert!(shape.connection_limit <= 10, "{host}");
    }
    let other = shaping.shape(None, ["mx.example.net"]);
    assert_eq!(other.provider, None);
    assert_eq!(other.connection_limit, 16);
    let yahoo = shaping.rules_for(Some("yahoo"), None);
    assert!(
        yahoo
            .iter()
            .any(|r| r.matches("421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred"))
    );
    assert!(
        shaping.rules_for(None, None).is_empty(),
        "the built-in rules are per provider"
    );
}

#[test]
fn mistakes_are_refused_naming_the_key() {
    for (text, expected) in [
        ("[default]\nconection_limit = 3\n", "conection_limit"),
        (
            "[default]\nconnection_limit = 0\n",
            "default.connection_limit must be above 0",
        ),
        (
            "[domain.\"a.test\"]\nmax_deliveries_per_connection = 0\n",
            "max_deliveries_per_connection",
        ),
        ("[default]\nmax_message_rate = \"5/week\"\n", "unit"),
        ("[default]\nmax_message_rate = \"0/s\"\n", "above 0"),
        ("[provider.x]\nconnection_limit = 3\n", "match"),
        (
            "[provider.x]\nmatch = []\n",
            "provider.x.match names no MX suffix",
        ),
        (
            "[provider.x]\nmatch = [{ MXSuffix = \".\" }]\n",
            "empty MXSuffix",
        ),
        ("[provider.x]\nmatch = [{ Suffix = \".a\" }]\n", "Suffix"),
        (
            "[provider.x]\nmatch = [{ MXSuffix = \".a.test\" }]\n[provider.y]\nmatch = [{ MXSuffix = \".A.test.\" }]\n",
            "in both provider.x and provider.y",
        ),
        (
            "[provider.x]\nmatch = [{ MXSuffix = \".a\" }]\nrate = 5\n",
            "rate",
        ),
        ("[domain.\"a.test\"]\ntls = \"sometimes\"\n", "sometimes"),
        ("[domain.\"A.test\"]\n[domain.\"a.test\"]\n", "given twice"),
        ("[default\n", "test.toml"),
    ] {
        let error = parse(text).unwrap_err();
        assert!(error.contains(expected), "{text}: {error}");
    }
}

#[test]
fn the_summary_shows_every_layer() {
    let summary = parse(FILE).unwrap().summary();
    assert!(
        summary.contains("provider gmail (MX .google.com, googlemail.com)"),
        "{summary}"
    );
    assert!(
        summary.contains("domain example.com: connection_limit = 2"),
        "{summary}"
    );
    assert!(
        summary.contains("max_message_rate = \"1000/h\""),
        "{summary}"
    );
}
