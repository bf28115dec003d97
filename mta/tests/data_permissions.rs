//! The data directory holds every queued message and the whole delivery history: under
//! the common umask 022 it must still be readable by Postroad's user alone.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Client, Server};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[allow(unsafe_code)]
fn set_umask(mask: u32) {
    // SAFETY: umask(2) only sets this process's file creation mask (inherited by the
    // server it spawns); it cannot fail.
    unsafe {
        libc::umask(mask as libc::mode_t);
    }
}

#[test]
fn spool_history_and_keys_are_private_whatever_the_umask() {
    set_umask(0o022);
    let mut server = Server::configure("", &[]);
    // An existing data directory from an older version, open to everyone.
    let data = server.data_dir();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.join("notes.txt"), b"left here").unwrap();
    std::fs::set_permissions(
        data.join("notes.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    server.restart();

    let mut c = Client::greeted(server.relay);
    let r = c.send_mail("a@b.test", &["r@b.test"], "Subject: private\r\n\r\nhi\r\n");
    assert_eq!(r.code, 250, "{r:?}");
    server.stop();

    assert_eq!(mode(&data), 0o700, "data directory");
    for file in [
        "notes.txt",
        "spool/spool.redb",
        "history.sqlite",
        "admin.token",
        "tls/key.pem",
    ] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    for dir in ["spool", "tls"] {
        assert_eq!(mode(&data.join(dir)), 0o700, "{dir}");
    }
    let log = server.log();
    assert!(log.contains("made it private"), "{log}");
}
