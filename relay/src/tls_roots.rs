//! Trust anchors for `verify` TLS: the system store plus an optional extra CA file.

use std::path::Path;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::engine::RelayError;

/// Debian's (and most distributions') bundle of trusted CAs.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

pub fn load(extra: Option<&Path>) -> Result<RootCertStore, RelayError> {
    let mut roots = RootCertStore::empty();
    if Path::new(SYSTEM_BUNDLE).exists() {
        add_file(&mut roots, Path::new(SYSTEM_BUNDLE))?;
    }
    if let Some(path) = extra {
        add_file(&mut roots, path)?;
    }
    Ok(roots)
}

fn add_file(roots: &mut RootCertStore, path: &Path) -> Result<(), RelayError> {
    let error = |reason: String| RelayError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| error(e.to_string()))?;
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(error("no usable certificate in it".into()));
    }
    Ok(())
}
