//! MariaDB for tests: a database of a test's own on the machine's server
//! (127.0.0.1:3306 as root), or a server of a test's own (the machine's `mariadbd`, its
//! own data directory and port), so the test can kill it and start it again while
//! Postroad runs.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PrivateMariadb {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl PrivateMariadb {
    /// A fresh data directory (`mariadb-install-db`), the server started on a free
    /// port, and an empty database `postroad`.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let out = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--user=root", "--skip-test-db"])
            .arg("--auth-root-authentication-method=normal")
            .arg(format!("--datadir={}", data.display()))
            .output()
            .expect("mariadb-install-db runs");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut db = Self {
            dir,
            port: super::free_port(),
            child: None,
        };
        db.restart();
        db.sql("CREATE DATABASE postroad");
        db
    }

    /// The database's URL for `[history] url`.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/postroad", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// SIGKILL: the database vanishes mid-transaction, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts the server (again, on the same port and data) and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill the server first");
        let data = self.data();
        let child = Command::new("/usr/sbin/mariadbd")
            .args(["--no-defaults", "--user=root", "--bind-address=127.0.0.1"])
            .args(["--skip-name-resolve", "--innodb-buffer-pool-size=64M"])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={}", self.port))
            .arg(format!(
                "--socket={}",
                self.dir.path().join("sock").display()
            ))
            .arg(format!(
                "--pid-file={}",
                self.dir.path().join("pid").display()
            ))
            .arg(format!(
                "--log-error={}",
                self.dir.path().join("error.log").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.try_sql("SELECT 1").is_none() {
            assert!(
                Instant::now() < deadline,
                "mariadbd did not answer within 60 s:\n{}",
                std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `sql` with the `mariadb` client; its tab-separated output.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|| panic!("mariadb on port {} failed: {sql}", self.port))
    }

    fn try_sql(&self, sql: &str) -> Option<String> {
        let out = Command::new("mariadb")
            .args(["--no-defaults", "-h127.0.0.1", "-uroot", "-N", "-B"])
            .arg(format!("-P{}", self.port))
            .args(["-e", sql])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A database of a test's own on the machine's MariaDB (127.0.0.1:3306, root), dropped
/// at the end (kept when the test fails).
pub struct MachineDatabase {
    pub name: String,
}

impl MachineDatabase {
    /// A new empty database `name` (any `-` becomes `_`), replacing a leftover one.
    pub fn create(name: &str) -> Self {
        let db = Self {
            name: name.replace('-', "_"),
        };
        db.sql(&format!(
            "DROP DATABASE IF EXISTS {0}; CREATE DATABASE {0}",
            db.name
        ));
        db
    }

    /// The database's URL for `[history] url`.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:3306/{}", self.name)
    }

    /// Runs `sql` with the `mariadb` client; its tab-separated output.
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new("mariadb")
            .args([
                "--no-defaults",
                "-h127.0.0.1",
                "-P3306",
                "-uroot",
                "-N",
                "-B",
            ])
            .args(["-e", sql])
            .output()
            .expect("the mariadb client runs");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for MachineDatabase {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept database {} for a look at what failed", self.name);
            return;
        }
        let _ = Command::new("mariadb")
            .args(["--no-defaults", "-h127.0.0.1", "-P3306", "-uroot"])
            .args(["-e", &format!("DROP DATABASE IF EXISTS {}", self.name)])
            .output();
    }
}
