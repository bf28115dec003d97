//! The spool's directory and file on disk, with owner-only permissions.
//!
//! Messages in the spool are private mail, so `Spool::open` creates the directory with
//! mode 0700 and `spool.redb` with mode 0600 whatever the process umask, and tightens an
//! existing directory or file that group or others can access (logging a warning).

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of the spool directory.
pub(crate) const DIR_MODE: u32 = 0o700;
/// Mode of the database file.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) with mode 0700, or tightens an existing one.
pub(crate) fn prepare_dir(dir: &Path) -> io::Result<()> {
    let created = match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => false,
        Ok(_) => return Err(io::Error::other("not a directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => return Err(e),
    };
    if created {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)?;
    }
    restrict(dir, DIR_MODE, created)
}

/// Creates the database file empty with mode 0600 if it is missing (redb initializes an
/// empty file), or tightens an existing one.
pub(crate) fn prepare_file(path: &Path) -> io::Result<()> {
    let created = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(e),
    };
    restrict(path, FILE_MODE, created)
}

/// Sets `path` to exactly `mode` if group or others can access it, or if it was just
/// created (a umask can only have removed bits the owner needs).
fn restrict(path: &Path, mode: u32, created: bool) -> io::Result<()> {
    let old = fs::metadata(path)?.permissions().mode() & 0o7777;
    if old == mode {
        return Ok(());
    }
    if old & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            old_mode = format_args!("{old:04o}"),
            new_mode = format_args!("{mode:04o}"),
            "spool is accessible to other users; restricting it to its owner"
        );
    } else if !created {
        // Owner-only already (e.g. 0500 or 0400): leave an operator's choice alone.
        return Ok(());
    }
    fs::set_permissions(path, Permissions::from_mode(mode))
}
