//! TLS for STARTTLS: rustls (ring) client configurations, shared by every connection so
//! sessions can be resumed.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// For opportunistic TLS: encrypts, does not authenticate (any certificate is taken, as
/// Postfix's `may` level does), but still checks the handshake signatures.
pub(super) fn opportunistic() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    if let Some(config) = CONFIG.get() {
        return Ok(config.clone());
    }
    let provider = provider();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider }))
        .with_no_client_auth();
    Ok(CONFIG.get_or_init(|| Arc::new(config)).clone())
}

/// For `verify`: the chain must lead to one of `roots` and name the server.
pub(super) fn verifying(roots: &Arc<RootCertStore>) -> Result<Arc<rustls::ClientConfig>, String> {
    // One trust store in practice (the relay's); rebuilt only if another one shows up.
    static CACHE: Mutex<Option<(Arc<RootCertStore>, Arc<rustls::ClientConfig>)>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((cached_roots, config)) = cache.as_ref()
        && Arc::ptr_eq(cached_roots, roots)
    {
        return Ok(config.clone());
    }
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots.clone())
            .with_no_client_auth(),
    );
    *cache = Some((roots.clone(), config.clone()));
    Ok(config)
}

/// The name to send in SNI and verify: the MX host name without its trailing dot. An
/// IP literal is used as an address; for opportunistic TLS a name that is not valid
/// falls back to the peer's address (no SNI).
pub(super) fn server_name(
    name: &str,
    peer: IpAddr,
    verify: bool,
) -> Result<ServerName<'static>, String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    match ServerName::try_from(name.to_string()) {
        Ok(n) => Ok(n),
        Err(_) if !verify => Ok(ServerName::IpAddress(peer.into())),
        Err(e) => Err(format!("cannot verify {name:?}: {e}")),
    }
}

#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
