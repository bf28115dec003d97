//! TLS for STARTTLS: the verifying client configuration (the unverified one is
//! [`smtp_wire::tls::unverified_client`]) and the name to present.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use rustls::RootCertStore;
use rustls_pki_types::ServerName;

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
        rustls::ClientConfig::builder_with_provider(smtp_wire::tls::provider())
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
