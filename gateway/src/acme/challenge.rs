//! Pending challenges, answered by the ingress while an order waits for the CA:
//! - tls-alpn-01 (RFC 8737): a ClientHello for the name that offers only `acme-tls/1` gets a
//!   self-signed certificate for the name with the critical acmeIdentifier extension holding
//!   the SHA-256 of the key authorization; the connection is then closed;
//! - http-01 (RFC 8555 §8.3): `GET /.well-known/acme-challenge/<token>` on the plain-HTTP
//!   listeners answers the key authorization.

use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The ALPN protocol of tls-alpn-01.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// The path prefix of http-01.
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

#[derive(Debug, Default)]
pub struct Challenges {
    alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    http: RwLock<HashMap<String, String>>,
}

impl Challenges {
    /// Whether a ClientHello is a tls-alpn-01 validation: it offers `acme-tls/1` and nothing
    /// else (RFC 8737 §3).
    pub fn is_validation<'a>(mut alpn: impl Iterator<Item = &'a [u8]>) -> bool {
        alpn.next() == Some(ACME_TLS_ALPN) && alpn.next().is_none()
    }

    /// The challenge certificate for `name`, if one is pending.
    pub fn alpn_cert(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let m = self.alpn.read().unwrap_or_else(|p| p.into_inner());
        m.get(&name.to_ascii_lowercase()).cloned()
    }

    /// The key authorization for an http-01 request path, if one is pending.
    pub fn http_answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(HTTP01_PREFIX)?;
        let m = self.http.read().unwrap_or_else(|p| p.into_inner());
        m.get(token).cloned()
    }

    pub fn set_alpn(
        &self,
        domain: &str,
        key_authorization_digest: &[u8],
    ) -> Result<(), super::Error> {
        let ck = alpn_certificate(domain, key_authorization_digest)?;
        let mut m = self.alpn.write().unwrap_or_else(|p| p.into_inner());
        m.insert(domain.to_ascii_lowercase(), Arc::new(ck));
        Ok(())
    }

    pub fn set_http(&self, token: &str, key_authorization: &str) {
        let mut m = self.http.write().unwrap_or_else(|p| p.into_inner());
        m.insert(token.to_owned(), key_authorization.to_owned());
    }

    /// Forgets an http-01 token.
    pub fn clear_http(&self, token: &str) {
        self.http
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }

    /// Forgets a domain's tls-alpn-01 certificate and an http-01 token.
    pub fn clear(&self, domain: &str, token: Option<&str>) {
        self.alpn
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&domain.to_ascii_lowercase());
        if let Some(t) = token {
            self.http
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(t);
        }
    }
}

/// The tls-alpn-01 certificate: self-signed, for `domain` only, with the critical
/// acmeIdentifier extension (id-pe-acmeIdentifier, 1.3.6.1.5.5.7.1.31) holding `digest`.
pub fn alpn_certificate(domain: &str, digest: &[u8]) -> Result<CertifiedKey, super::Error> {
    let key = |source| super::Error::Key {
        what: "tls-alpn-01 certificate",
        source,
    };
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(key)?;
    let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()]).map_err(key)?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let cert = params.self_signed(&kp).map_err(key)?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(kp.serialize_der().into());
    // not CertifiedKey::from_der: its key check parses the certificate with webpki, which
    // refuses the (critical, unknown to it) acmeIdentifier extension
    let signer = crate::crypto::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|source| super::Error::Rustls {
            what: "tls-alpn-01 key",
            source,
        })?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alpn_certificate_names_the_domain_and_carries_the_digest_critically() {
        let digest = [7u8; 32];
        let ck = alpn_certificate("web.example.com", &digest).expect("cert");
        let (_, cert) = x509_parser::parse_x509_certificate(&ck.cert[0]).expect("parse");
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical, "RFC 8737 §3: critical");
        // an OCTET STRING of the 32-byte SHA-256 digest
        assert_eq!(ext.value, [&[0x04, 32][..], &digest[..]].concat());
        let names: Vec<String> = cert
            .subject_alternative_name()
            .expect("san")
            .expect("present")
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, ["DNSName(web.example.com)"]);
    }

    #[test]
    fn only_a_hello_offering_just_acme_tls_is_a_validation() {
        let v = |p: &[&[u8]]| Challenges::is_validation(p.iter().copied());
        assert!(v(&[b"acme-tls/1"]));
        assert!(!v(&[b"acme-tls/1", b"h2"]));
        assert!(!v(&[b"h2", b"acme-tls/1"]));
        assert!(!v(&[]));
    }

    #[test]
    fn pending_challenges_are_answered_and_cleared() {
        let c = Challenges::default();
        c.set_http("tok123", "tok123.thumb");
        c.set_alpn("Web.Example.com", &[1; 32]).expect("alpn");
        assert_eq!(
            c.http_answer("/.well-known/acme-challenge/tok123")
                .as_deref(),
            Some("tok123.thumb")
        );
        assert!(c.http_answer("/.well-known/acme-challenge/other").is_none());
        assert!(c.http_answer("/tok123").is_none());
        assert!(c.alpn_cert("web.example.com").is_some());
        c.clear("web.example.com", Some("tok123"));
        assert!(c.alpn_cert("web.example.com").is_none());
        assert!(
            c.http_answer("/.well-known/acme-challenge/tok123")
                .is_none()
        );
    }
}
