//! DKIM keys made by openssl for the tests that sign mail, with the TXT records that
//! publish them.

use std::path::Path;
use std::process::Command;

pub fn openssl(args: &[&str]) -> Vec<u8> {
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

/// A new private key file in `dir` and the TXT record that publishes it.
pub fn key(dir: &Path, ed25519: bool) -> (String, String) {
    let path = dir.join(if ed25519 { "ed.pem" } else { "rsa.pem" });
    let file = path.to_str().unwrap();
    if ed25519 {
        openssl(&["genpkey", "-algorithm", "ed25519", "-out", file]);
    } else {
        openssl(&["genrsa", "-traditional", "-out", file, "2048"]);
    }
    let pem = String::from_utf8(openssl(&["pkey", "-in", file, "-pubout"])).unwrap();
    let spki: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let record = if ed25519 {
        // RFC 8463: the raw 32-byte key, the last 32 bytes of the SubjectPublicKeyInfo.
        let der = openssl(&["pkey", "-in", file, "-pubout", "-outform", "DER"]);
        let raw = dir.join("ed.raw");
        std::fs::write(&raw, &der[der.len() - 32..]).unwrap();
        let b64 = openssl(&["base64", "-A", "-in", raw.to_str().unwrap()]);
        format!("v=DKIM1; k=ed25519; p={}", String::from_utf8(b64).unwrap())
    } else {
        format!("v=DKIM1; k=rsa; p={spki}")
    };
    (file.to_string(), record)
}
