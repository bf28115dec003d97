//! TLS for the SMTP listeners and the HTTP API: load the configured certificate, or
//! generate and keep a self-signed one at first start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate {path}: {source}")]
    Cert {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("certificate file {0} holds no certificate")]
    NoCert(PathBuf),
    #[error("cannot read private key {path}: {source}")]
    Key {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate and key do not fit together: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the TLS configuration shared by all listeners.
///
/// Without a configured pair, uses `<data_dir>/tls/{cert,key}.pem`, generating them
/// (self-signed for `hostname`) when they do not exist yet.
pub fn server_config(
    config: &TlsConfig,
    data_dir: &Path,
    hostname: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert_path, key_path) = match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => {
            let dir = data_dir.join("tls");
            let pair = (dir.join("cert.pem"), dir.join("key.pem"));
            if !pair.0.exists() || !pair.1.exists() {
                generate_self_signed(&dir, &pair.0, &pair.1, hostname)?;
                tracing::warn!(
                    cert = %pair.0.display(),
                    "no TLS certificate configured: generated a self-signed one for {hostname}; set tls.cert_file and tls.key_file for production"
                );
            }
            pair
        }
    };
    let certs = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Cert {
            path: cert_path.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(cert_path));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|source| TlsError::Key {
        path: key_path.clone(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(server))
}

fn generate_self_signed(
    dir: &Path,
    cert: &Path,
    key: &Path,
    hostname: &str,
) -> Result<(), TlsError> {
    let pair =
        rcgen::generate_simple_self_signed(vec![hostname.to_string(), "localhost".to_string()])?;
    let write = |path: &Path, text: String| {
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(path, text))
            .map_err(|source| TlsError::Write {
                path: path.to_path_buf(),
                source,
            })
    };
    write(key, pair.signing_key.serialize_pem())?;
    restrict_permissions(key);
    write(cert, pair.cert.pem())
}

fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(path = %path.display(), "cannot restrict key permissions: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_reuses() {
        let dir = tempfile::tempdir().unwrap();
        server_config(&TlsConfig::default(), dir.path(), "mx.test").unwrap();
        let first = std::fs::read(dir.path().join("tls/cert.pem")).unwrap();
        server_config(&TlsConfig::default(), dir.path(), "mx.test").unwrap();
        let second = std::fs::read(dir.path().join("tls/cert.pem")).unwrap();
        assert_eq!(
            first, second,
            "the generated certificate must survive restarts"
        );
    }

    #[test]
    fn missing_configured_cert_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = TlsConfig {
            cert_file: Some(dir.path().join("nope.pem")),
            key_file: Some(dir.path().join("nope.key")),
        };
        let err = server_config(&config, dir.path(), "mx.test").expect_err("must fail");
        assert!(err.to_string().contains("nope.pem"), "{err}");
    }
}
