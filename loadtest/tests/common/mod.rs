//! The `postroad` binary the smoke tests spawn.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("loadtest/ is in the workspace")
        .to_path_buf()
}

/// target/debug: $CARGO_TARGET_DIR, else where this test binary lives
/// (target/debug/deps/..), else the workspace's target/.
fn debug_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        let dir = if dir.is_relative() {
            workspace_root().join(dir)
        } else {
            dir
        };
        return dir.join("debug");
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(deps) = exe.parent()
        && deps.ends_with("deps")
        && let Some(debug) = deps.parent()
    {
        return debug.to_path_buf();
    }
    workspace_root().join("target").join("debug")
}

/// `$CARGO_TARGET_DIR/debug/postroad` (or `POSTROAD_BIN`), built when missing.
pub fn postroad_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("POSTROAD_BIN") {
        return PathBuf::from(bin);
    }
    let bin = debug_dir().join("postroad");
    if !bin.exists() {
        eprintln!("{} missing: cargo build -p postroad", bin.display());
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "postroad"])
            .current_dir(workspace_root())
            .status()
            .expect("run cargo build -p postroad");
        assert!(status.success(), "cargo build -p postroad failed");
    }
    assert!(
        bin.exists(),
        "{} still missing after the build",
        bin.display()
    );
    bin
}
