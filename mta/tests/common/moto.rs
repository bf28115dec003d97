//! moto's server (PyPI `moto[server]`, installed by `scripts/install-test-deps`) on a
//! port of its own: S3 with one bucket (the object store of the archival tests), or
//! SES v2 with verified sender identities (the provider tests).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    /// moto listening, with nothing in it.
    pub fn launch() -> Self {
        let port = super::free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server runs (scripts/install-test-deps installs moto[server])");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, port }
    }

    /// moto with the S3 bucket `bucket`.
    pub fn start(bucket: &str) -> Self {
        let moto = Self::launch();
        let port = moto.port;
        let (ok, out) = super::run(
            "curl",
            &[
                "-sS",
                "--fail",
                "-X",
                "PUT",
                &format!("http://127.0.0.1:{port}/{bucket}"),
            ],
            None,
        );
        assert!(ok, "create bucket {bucket}: {out}");
        moto
    }

    /// Verifies SES sender identities (addresses or domains) through boto3.
    pub fn ses_verify(&self, identities: &[&str]) {
        let script = super::scripts_dir().join("ses_identity.py");
        let port = self.port.to_string();
        let mut args = vec![script.to_str().unwrap(), &port];
        args.extend(identities);
        let (ok, out) = super::run("python3", &args, None);
        assert!(ok, "verify {identities:?}: {out}");
    }

    /// What SES sent (moto's `/moto-api/data.json`): `{id, source, destinations,
    /// raw_data}` per message.
    pub fn ses_sent(&self) -> Vec<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}/moto-api/data.json", self.port);
        let (ok, out) = super::run("curl", &["-sS", "--fail", &url], None);
        assert!(ok, "GET {url}: {out}");
        let data: serde_json::Value = serde_json::from_str(&out).expect("moto data is JSON");
        data["ses"]["RawMessage"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// `[history.archive]` for `s3://{bucket}/{prefix}` on this server.
    pub fn archive_section(&self, bucket: &str, prefix: &str) -> String {
        format!(
            "[history.archive]\nurl = \"s3://{bucket}/{prefix}\"\n\
             endpoint = \"http://127.0.0.1:{}\"\naccess_key_id = \"testing\"\n\
             secret_access_key = \"testing\"\n",
            self.port
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
