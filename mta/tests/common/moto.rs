//! moto's S3 server (PyPI `moto[server]`, installed by `scripts/install-test-deps`) on
//! a port of its own, with one bucket: the object store of the archival tests.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    pub fn start(bucket: &str) -> Self {
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
        Self { child, port }
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
