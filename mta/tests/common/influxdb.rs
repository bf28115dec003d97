//! An InfluxDB 1.x server of a test's own (Debian's `influxd`, installed by
//! `scripts/install-test-deps`, with its own directories and ports), which the test
//! can kill and start again, and InfluxQL queries against it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct PrivateInfluxdb {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl PrivateInfluxdb {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let rpc = super::free_port();
        let d = dir.path().display();
        let config = format!(
            "reporting-disabled = true\n\
             bind-address = \"127.0.0.1:{rpc}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n\
             [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
             [http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n\
             [monitor]\n  store-enabled = false\n\
             [continuous_queries]\n  enabled = false\n"
        );
        std::fs::write(dir.path().join("influxdb.conf"), config).unwrap();
        let mut db = Self {
            dir,
            port,
            child: None,
        };
        db.restart();
        db
    }

    /// The server's URL for `[influx] url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts the server (again, on the same port and data) and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill the server first");
        let log = std::fs::File::create(self.dir.path().join("influxd.log")).unwrap();
        let child = Command::new("influxd")
            .arg("-config")
            .arg(self.dir.path().join("influxdb.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("influxd runs (scripts/install-test-deps installs Debian's influxdb)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.pings() {
            assert!(
                Instant::now() < deadline,
                "influxd did not answer within 60 s:\n{}",
                std::fs::read_to_string(self.dir.path().join("influxd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn pings(&self) -> bool {
        ureq::get(format!("{}/ping", self.url()))
            .call()
            .is_ok_and(|r| r.status() == 204)
    }

    /// An InfluxQL query on `database`: the first statement's result.
    pub fn query(&self, database: &str, q: &str) -> Value {
        let text = ureq::post(format!("{}/query", self.url()))
            .query("db", database)
            .send_form([("q", q)])
            .unwrap_or_else(|e| panic!("influx query {q:?}: {e}"))
            .body_mut()
            .read_to_string()
            .unwrap();
        let mut answer: Value = serde_json::from_str(&text).unwrap();
        answer["results"][0].take()
    }

    /// The single value a query of one aggregate over one series returns; `None`
    /// when there are no points.
    pub fn scalar(&self, database: &str, q: &str) -> Option<f64> {
        let result = self.query(database, q);
        assert!(result.get("error").is_none(), "{q}: {result}");
        result["series"][0]["values"][0][1].as_f64()
    }
}

impl Drop for PrivateInfluxdb {
    fn drop(&mut self) {
        self.kill();
    }
}
