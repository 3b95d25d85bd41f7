//! TLS from the ingress to backends labelled `vxgate.protocol = "h2"`.
//!
//! The backend's certificate is verified against `ingress.backend_ca_file` when it is set,
//! for the name vxgate's own DNS gives the backend's service, `<service>.<zone>` (what a
//! client inside the overlay would use too). Without a CA file the connection is encrypted
//! but the certificate is not checked (nginx's `proxy_ssl_verify off` default: containers
//! mostly serve self-signed certificates); the first such connection logs a warning.

use super::tls::TlsError;
use crate::crypto::provider;
use crate::registry::Registry;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// The client side of TLS to backends: verified against `ca_file`'s roots, or (none) not.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let cfg = match ca_file {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let pem = |source| TlsError::Pem {
                path: path.to_owned(),
                source,
            };
            for cert in CertificateDer::pem_file_iter(path).map_err(pem)? {
                roots.add(cert.map_err(pem)?)?;
            }
            if roots.is_empty() {
                return Err(TlsError::NoCertificate {
                    path: path.to_owned(),
                });
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider())))
            .with_no_client_auth(),
    };
    Ok(cfg)
}

static WARNED: AtomicBool = AtomicBool::new(false);

/// Accepts any certificate (the handshake's signatures are still checked, so the peer holds
/// the key of the certificate it sent).
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !WARNED.swap(true, Relaxed) {
            tracing::warn!(
                backend = ?server_name,
                "ingress: TLS to h2 backends without ingress.backend_ca_file: their certificates are not verified"
            );
        }
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The name a backend's certificate must hold: `<service>.<zone>` of the container at
/// `ip` (the connector sees only the address it dials). An address no container has (it
/// went away between the request and the connect) is verified as the address itself.
pub fn server_name(registry: &Registry, zone: &str, ip: IpAddr) -> ServerName<'static> {
    let snapshot = registry.snapshot();
    snapshot
        .by_ip(ip)
        .and_then(|c| c.labels.get(&snapshot.service_label))
        .and_then(|s| ServerName::try_from(format!("{}.{zone}", s.to_ascii_lowercase())).ok())
        .unwrap_or(ServerName::IpAddress(ip.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().expect("test setup");
        let p = dir.path().join("empty.pem");
        std::fs::write(&p, "not a certificate\n").expect("test setup");
        assert!(matches!(
            client_config(Some(&p)),
            Err(TlsError::NoCertificate { .. })
        ));
        assert!(client_config(None).is_ok());
    }

    #[test]
    fn backends_are_named_by_their_service() {
        let r = Registry::new("app");
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("app".to_owned(), "grpc".to_owned());
        r.add(crate::registry::Container {
            name: "g1".into(),
            ip: "10.0.0.5".parse().expect("test setup"),
            mac: None,
            port: 8443,
            labels,
            network: "default".into(),
            node: "n".into(),
            health: crate::registry::Health::Unknown,
            ready: true,
            origin: crate::registry::Origin::Config,
        })
        .expect("test setup");
        let name = server_name(&r, "example.com", "10.0.0.5".parse().expect("test setup"));
        assert_eq!(name.to_str(), "grpc.example.com");
        let other = server_name(&r, "example.com", "10.0.0.6".parse().expect("test setup"));
        assert_eq!(other.to_str(), "10.0.0.6");
    }
}
