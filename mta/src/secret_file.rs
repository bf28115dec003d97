//! Secrets Postroad makes for itself on first start, kept in the data directory (the
//! admin token, the VERP key): 32 random bytes as hex in a file of mode 0600, written
//! complete or not at all and never replaced, so that concurrent first starts agree
//! and a damaged file is an error rather than a silent new secret.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// One kind of secret file.
pub struct SecretFile {
    /// File name inside the data directory.
    pub name: &'static str,
    /// What it holds, for messages (`admin token`).
    pub what: &'static str,
    /// Whether a value read back is acceptable.
    pub check: fn(&str) -> Result<(), String>,
}

/// The secret in `<data_dir>/<name>`, generated when the file does not exist yet.
pub fn load_or_create(file: &SecretFile, data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(file.name);
    if let Some(secret) = read(file, &path)? {
        return Ok(secret);
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let secret = random_hex();
    match write_new(&path, &secret) {
        Ok(true) => {
            tracing::info!(file = %path.display(), "generated the {}", file.what);
            Ok(secret)
        }
        // Someone else created it first: theirs wins.
        Ok(false) => read(file, &path)?
            .with_context(|| format!("{} vanished while it was being read", path.display())),
        Err(e) => Err(e),
    }
}

/// The secret given in the config, or else the one in (or generated into) `file`.
pub fn given_or_generated(
    given: &str,
    file: &SecretFile,
    data_dir: &Path,
) -> anyhow::Result<String> {
    if given.is_empty() {
        load_or_create(file, data_dir)
    } else {
        Ok(given.to_string())
    }
}

/// The check of a key for MACs (VERP return paths, tracking links): at least 16
/// characters.
pub fn mac_key(secret: &str) -> Result<(), String> {
    if secret.len() < 16 {
        return Err("must be at least 16 characters long".into());
    }
    Ok(())
}

/// Reads a secret file: `None` when it does not exist.
pub fn read(file: &SecretFile, path: &Path) -> anyhow::Result<Option<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    };
    let secret = text.trim();
    (file.check)(secret).map_err(|e| {
        anyhow::anyhow!(
            "the {} in {} {e}; delete the file to generate a new one",
            file.what,
            path.display()
        )
    })?;
    Ok(Some(secret.to_string()))
}

fn random_hex() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `secret` to `path` (mode 0600) unless the file exists: `Ok(false)` then. The
/// file appears complete or not at all (written to a temporary name, fsync'd, linked).
fn write_new(path: &Path, secret: &str) -> anyhow::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("secret");
    let tmp: PathBuf = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(format!("{secret}\n").as_bytes())?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        anyhow::bail!("cannot write {}: {e}", tmp.display());
    }
    // A hard link never replaces an existing file, unlike a rename.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot sync the data directory");
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(anyhow::anyhow!("cannot create {}: {e}", path.display())),
    }
}
