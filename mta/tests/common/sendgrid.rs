//! The SendGrid stand-in (`clients/sendgrid_recorder.py`): checks each `mail/send`
//! request against SendGrid's documented schema, records it, and answers as told.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub struct SendGridRecorder {
    child: Child,
    pub port: u16,
}

impl SendGridRecorder {
    /// Listening, and taking requests with `api_key` only.
    pub fn start(api_key: &str) -> Self {
        let mut child = Command::new("python3")
            .arg(super::scripts_dir().join("sendgrid_recorder.py"))
            .arg(api_key)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the SendGrid recorder");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the recorder said {line:?}, not its port"));
        Self { child, port }
    }

    /// Answer valid requests with `status` (and `headers`) from now on.
    pub fn answer(&self, status: u16, headers: &[(&str, &str)]) {
        let headers: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        let body = serde_json::json!({"status": status, "headers": headers}).to_string();
        let url = format!("http://127.0.0.1:{}/control/answer", self.port);
        let (ok, out) = super::run("curl", &["-sS", "--fail", "-d", &body, &url], None);
        assert!(ok, "POST {url}: {out}");
    }

    /// Every request so far: `{authorized, body, status, message_id}`.
    pub fn requests(&self) -> Vec<Value> {
        let url = format!("http://127.0.0.1:{}/control/requests", self.port);
        let (ok, out) = super::run("curl", &["-sS", "--fail", &url], None);
        assert!(ok, "GET {url}: {out}");
        serde_json::from_str(&out).expect("the recorder answers JSON")
    }
}

impl Drop for SendGridRecorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
