//! The data directory holds every queued message, the delivery history, the TLS key
//! and the admin token: only Postroad's own user may read it, whatever the umask.
//!
//! [`prepare`] creates it `0700`, tightens an existing one (and anything in it that
//! other users can reach) with a warning naming each path, and sets the process umask
//! to `077` so every file Postroad creates later (SQLite's WAL and journal files
//! included) is `0600`.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;

/// Bits that let users other than the owner in.
const OTHERS: u32 = 0o077;

/// Makes the process's new files private, and `dir` (created if missing) with
/// everything in it.
pub fn prepare(dir: &Path) -> anyhow::Result<()> {
    private_umask();
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    }
    tighten(dir)
}

/// Tightens `path` and, for a directory, everything under it (symbolic links are not
/// followed: they are not ours to change).
fn tighten(path: &Path) -> anyhow::Result<()> {
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("cannot read the permissions of {}", path.display()))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & OTHERS != 0 {
        let private = if meta.is_dir() { 0o700 } else { 0o600 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(private)).with_context(
            || {
                format!(
                    "{} is readable by other users (mode {mode:o}) and cannot be made private; \
                     run `chmod -R go= {}` as its owner",
                    path.display(),
                    path.display()
                )
            },
        )?;
        tracing::warn!(path = %path.display(), was = format!("{mode:o}"), now = format!("{private:o}"), "other users could read this; made it private");
    }
    if meta.is_dir() {
        let entries =
            std::fs::read_dir(path).with_context(|| format!("cannot list {}", path.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", path.display()))?;
            tighten(&entry.path())?;
        }
    }
    Ok(())
}

#[allow(unsafe_code)]
fn private_umask() {
    // SAFETY: umask(2) only sets the process's file mode creation mask; it cannot fail
    // and touches no memory.
    unsafe {
        libc::umask(0o077);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn an_open_data_directory_is_made_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir_all(dir.join("spool")).unwrap();
        std::fs::write(dir.join("history.sqlite"), b"x").unwrap();
        std::fs::write(dir.join("spool/spool.redb"), b"x").unwrap();
        for (path, m) in [
            (dir.clone(), 0o755),
            (dir.join("spool"), 0o775),
            (dir.join("history.sqlite"), 0o644),
            (dir.join("spool/spool.redb"), 0o664),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m)).unwrap();
        }
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("spool")), 0o700);
        assert_eq!(mode(&dir.join("history.sqlite")), 0o600);
        assert_eq!(mode(&dir.join("spool/spool.redb")), 0o600);
        // And what is created from now on is private too.
        std::fs::write(dir.join("new"), b"x").unwrap();
        assert_eq!(mode(&dir.join("new")), 0o600);
    }

    #[test]
    fn a_new_data_directory_is_created_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }
}
