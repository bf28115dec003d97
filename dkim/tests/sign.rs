//! Messages signed with RSA and Ed25519 keys made by `openssl` verify with mail-auth's
//! verifier against the keys' DNS records; a changed message does not; keys are chosen
//! by the `From:` domain; bad configuration is refused with the key named.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
};
use postroad_dkim::{KeyConfig, Signer};

const MESSAGE: &str = "From: News <news@mail.example.com>\r\nTo: ann@example.net\r\nSubject: Hello\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@mail.example.com>\r\nList-Unsubscribe: <https://u.example.com/x>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHi Ann,\r\n\r\nthe news.\r\n";

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A new key in `dir` (`rsa` PKCS#1, `rsa8` PKCS#8, `ed25519`) and its DKIM TXT record.
fn key(dir: &Path, kind: &str) -> (PathBuf, String) {
    let path = dir.join(format!("{kind}.pem"));
    let file = path.to_str().unwrap();
    match kind {
        "rsa" => openssl(&["genrsa", "-traditional", "-out", file, "2048"]),
        "rsa8" => openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            file,
        ]),
        _ => openssl(&["genpkey", "-algorithm", "ed25519", "-out", file]),
    };
    let der = openssl(&["pkey", "-in", file, "-pubout", "-outform", "DER"]);
    let record = if kind == "ed25519" {
        // RFC 8463: the raw 32-byte key, the tail of its SubjectPublicKeyInfo.
        format!("v=DKIM1; k=ed25519; p={}", base64(&der[der.len() - 32..]))
    } else {
        format!("v=DKIM1; k=rsa; p={}", base64(&der))
    };
    (path, record)
}

fn base64(bytes: &[u8]) -> String {
    let out = Command::new("openssl")
        .args(["base64", "-A"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(bytes)?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

fn config(domain: &str, selector: &str, key_file: &Path) -> KeyConfig {
    KeyConfig {
        domain: domain.into(),
        selector: selector.into(),
        key_file: key_file.into(),
        headers: None,
        expire_secs: 0,
    }
}

/// DNS answers for the verifier: TXT records by name.
#[derive(Default)]
struct Records(Mutex<HashMap<Box<str>, Txt>>);

impl Records {
    fn publish(&self, name: &str, record: &str) {
        let key = DomainKey::parse(record.as_bytes()).unwrap();
        self.0
            .lock()
            .unwrap()
            .insert(name.into(), Txt::DomainKey(Arc::new(key)));
    }
}

impl ResolverCache<Box<str>, Txt> for Records {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().get(name).cloned()
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().remove(name)
    }

    fn insert(&self, key: Box<str>, value: Txt, _: std::time::Instant) {
        self.0.lock().unwrap().insert(key, value);
    }
}

/// mail-auth's result for each signature of `message`.
async fn verify(message: &[u8], records: &Records) -> Vec<DkimResult> {
    let authenticator = MessageAuthenticator::new(Default::default(), Default::default()).unwrap();
    let parsed = AuthenticatedMessage::parse(message).unwrap();
    authenticator
        .verify_dkim(Parameters::new(&parsed).with_txt_cache(records))
        .await
        .into_iter()
        .map(|output| output.result().clone())
        .collect()
}

#[tokio::test]
async fn rsa_and_ed25519_signatures_verify_and_a_changed_message_fails() {
    let dir = tempfile::tempdir().unwrap();
    let records = Records::default();
    let mut configs = Vec::new();
    for (kind, selector) in [("rsa", "r2026"), ("ed25519", "e2026"), ("rsa8", "p2026")] {
        let (path, record) = key(dir.path(), kind);
        records.publish(&format!("{selector}._domainkey.example.com."), &record);
        configs.push(config("example.com", selector, &path));
    }
    let signer = Signer::load(&configs).unwrap().unwrap();
    // mail.example.com has no key of its own: example.com's sign it (DMARC-aligned).
    let signed = signer.sign(MESSAGE.as_bytes()).unwrap().unwrap();
    let text = String::from_utf8(signed.clone()).unwrap();
    assert!(text.ends_with(MESSAGE), "signatures go in front");
    let headers: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("DKIM-Signature:"))
        .collect();
    assert_eq!(headers.len(), 3, "{text}");
    for (header, algorithm) in headers
        .iter()
        .zip(["rsa-sha256", "ed25519-sha256", "rsa-sha256"])
    {
        assert!(header.contains(&format!("a={algorithm}")), "{header}");
        assert!(
            header.contains("d=example.com") && header.contains("c=relaxed/relaxed"),
            "{header}"
        );
    }
    let h = text
        .split("h=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_ascii_lowercase();
    for name in [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "mime-version",
        "content-type",
    ] {
        assert!(
            h.split(':').any(|n| n.trim() == name),
            "{name} not signed: h={h}"
        );
    }

    assert_eq!(
        verify(&signed, &records).await,
        [DkimResult::Pass, DkimResult::Pass, DkimResult::Pass]
    );

    let body_changed = text.replace("the news.", "the NEWS.");
    let header_changed = text.replace("Subject: Hello", "Subject: Hellp");
    for changed in [body_changed, header_changed] {
        let results = verify(changed.as_bytes(), &records).await;
        assert_eq!(results.len(), 3);
        assert!(
            results.iter().all(|r| *r != DkimResult::Pass),
            "{results:?}"
        );
    }
    // A From: or Subject: added above the signed one (which a reader would be shown)
    // breaks the signatures too: they are signed over.
    for (name, value) in [("From", "evil@attacker.test"), ("Subject", "Urgent")] {
        let added = text.replacen(
            &format!("{name}: "),
            &format!("{name}: {value}\r\n{name}: "),
            1,
        );
        let results = verify(added.as_bytes(), &records).await;
        assert!(
            results.iter().all(|r| *r != DkimResult::Pass),
            "{name}: {results:?}"
        );
    }
}

#[tokio::test]
async fn mail_from_domains_without_keys_goes_out_unsigned() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = key(dir.path(), "ed25519");
    let signer = Signer::load(&[config("example.com", "s1", &path)])
        .unwrap()
        .unwrap();
    for from in [
        "someone@example.org",
        "someone@notexample.com",
        "no address at all",
    ] {
        let message = MESSAGE.replace("News <news@mail.example.com>", from);
        assert_eq!(signer.sign(message.as_bytes()).unwrap(), None, "{from}");
    }
    let no_from = MESSAGE.replace("From: News <news@mail.example.com>\r\n", "");
    assert_eq!(signer.sign(no_from.as_bytes()).unwrap(), None);
    assert!(Signer::load(&[]).unwrap().is_none());
}

#[test]
fn bad_keys_and_settings_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (good, _) = key(dir.path(), "ed25519");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a key").unwrap();
    let cert = dir.path().join("cert.pem");
    let file = cert.to_str().unwrap();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ed25519",
        "-nodes",
        "-keyout",
        "/dev/null",
        "-subj",
        "/CN=x",
        "-out",
        file,
    ]);

    let cases: Vec<(KeyConfig, &str)> = vec![
        (
            config("example.com", "s1", &dir.path().join("missing.pem")),
            "cannot read",
        ),
        (config("example.com", "s1", &junk), "no PEM private key"),
        (config("example.com", "s1", &cert), "no PEM private key"),
        (config("exa mple.com", "s1", &good), "not a domain name"),
        (config("example.com", "s 1", &good), "not a DNS label"),
        (
            KeyConfig {
                headers: Some(vec!["Subject".into(), "To".into()]),
                ..config("example.com", "s1", &good)
            },
            "must include From",
        ),
    ];
    for (config, expected) in cases {
        let error = Signer::load(std::slice::from_ref(&config))
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{config:?}: {error}");
        assert!(error.contains(&config.domain), "{error}");
    }
    let twice = [
        config("example.com", "s1", &good),
        config("EXAMPLE.com", "s1", &good),
    ];
    let error = Signer::load(&twice).unwrap_err().to_string();
    assert!(error.contains("two keys for example.com"), "{error}");
}
