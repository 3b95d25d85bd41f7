//! TLS for the ingress (rustls with the ring provider): TLS 1.3 and 1.2, AEAD suites only
//! (ring's defaults are all AEAD), ALPN h2 and http/1.1, session tickets and a session cache
//! unless `session_resumption = false`.
//!
//! Certificates are chosen per handshake by SNI: the first configured certificate valid for
//! the name (wildcards included, as webpki checks them), else the first one. The names each
//! certificate covers are read once when it is loaded (its subjectAltName DNS names, as
//! webpki parses them), so a handshake looks its name up in two maps: no certificate is
//! parsed, nothing locked and nothing allocated per handshake. With none
//! configured, a self-signed ECDSA P-256 certificate for the zone and `*.zone` (valid for a
//! year, replaced at start within 30 days of its end) is generated once
//! into `state_dir/tls/` and reused. [`CertStore::reload`] re-reads the files (SIGHUP); new
//! handshakes use the new set, open connections keep theirs.

use crate::acme::Acme;
use crate::acme::challenge::{ACME_TLS_ALPN, Challenges};
use crate::config::CertConfig;
use crate::crypto::provider;
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the certificates come from.
#[derive(Debug, Clone)]
pub enum Source {
    Files(Vec<CertConfig>),
    /// Generated for `zone` into `dir` when missing.
    SelfSigned {
        zone: String,
        dir: PathBuf,
    },
}

pub struct CertStore {
    source: Source,
    certs: ArcSwap<Served>,
    /// Certificates and pending challenges from `[ingress.acme]`.
    acme: Option<Acme>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("source", &self.source)
            .field("acme", &self.acme.is_some())
            .finish()
    }
}

/// The loaded certificates, and which one serves a name: `exact` maps each DNS name a
/// certificate covers to the first certificate covering it, `wildcard` maps the parent of each
/// `*.parent` name the same way (lowercase ASCII, as SNI is compared).
#[derive(Default)]
struct Served {
    certs: Vec<Arc<CertifiedKey>>,
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
}

impl Served {
    fn new(certs: Vec<Arc<CertifiedKey>>) -> Served {
        let mut served = Served {
            certs,
            ..Served::default()
        };
        for (i, ck) in served.certs.iter().enumerate() {
            let Some(ee) = ck
                .cert
                .first()
                .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
            else {
                continue;
            };
            for name in ee.valid_dns_names() {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(parent) => served.wildcard.entry(parent.to_owned()).or_insert(i),
                    None => served.exact.entry(name).or_insert(i),
                };
            }
        }
        served
    }

    /// The first certificate valid for `name`: named exactly, or by a wildcard for its
    /// parent (one label: `*.example.com` covers `a.example.com`, not `a.b.example.com`).
    fn fitting(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        // only a DNS name can match (a check, no copy); rustls hands over no other SNI
        rustls::pki_types::DnsName::try_from(name).ok()?;
        let name = name.strip_suffix('.').unwrap_or(name);
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            &lower[..]
        } else {
            name
        };
        let exact = self.exact.get(name).copied();
        let wild = name
            .split_once('.')
            .filter(|(label, _)| !label.is_empty())
            .and_then(|(_, parent)| self.wildcard.get(parent).copied());
        let i = match (exact, wild) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        self.certs.get(i)
    }
}

/// Why the ingress's certificates could not be loaded or made; each names the file to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Pem {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{}: no certificate in the file", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} / {}: {source}", cert.display(), key.display())]
    KeyPair {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot generate the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot generate the self-signed certificate: validity: {0}")]
    Validity(#[from] time::error::ComponentRange),
    #[error("TLS settings: {0}")]
    Settings(#[from] rustls::Error),
}

impl CertStore {
    pub fn load(source: Source) -> Result<CertStore, TlsError> {
        Self::load_with_acme(source, None)
    }

    /// Like [`CertStore::load`], serving ACME certificates (and answering tls-alpn-01) too.
    pub fn load_with_acme(source: Source, acme: Option<Acme>) -> Result<CertStore, TlsError> {
        let certs = read_all(&source)?;
        Ok(CertStore {
            source,
            certs: ArcSwap::from_pointee(Served::new(certs)),
            acme,
        })
    }

    /// Where the certificate served for `sni` comes from, and the certificate.
    pub fn choose_with_source(&self, sni: Option<&str>) -> Option<(CertSource, Arc<CertifiedKey>)> {
        let served = self.certs.load();
        let configured = matches!(self.source, Source::Files(_));
        let kind = if configured {
            CertSource::Config
        } else {
            CertSource::SelfSigned
        };
        if let Some(name) = sni {
            // configured certificates win for the names they cover, then ACME's, then the
            // self-signed fallback
            if configured && let Some(ck) = served.fitting(name) {
                return Some((kind, ck.clone()));
            }
            if let Some(acme) = &self.acme
                && let Some(key) = acme.certs.serving(name, crate::acme::unix_now())
            {
                return Some((CertSource::Acme, key));
            }
            if let Some(ck) = served.fitting(name) {
                return Some((kind, ck.clone()));
            }
        }
        served.certs.first().map(|ck| (kind, ck.clone()))
    }

    /// Re-reads the certificate files; on error the current set stays.
    pub fn reload(&self) -> Result<usize, TlsError> {
        let certs = read_all(&self.source)?;
        let n = certs.len();
        self.certs.store(Arc::new(Served::new(certs)));
        Ok(n)
    }

    /// The certificate for an SNI name (None: the default, the first).
    pub fn choose(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        self.choose_with_source(sni).map(|(_, ck)| ck)
    }

    /// The served certificates for `GET /v1/certificates`: each configured or self-signed
    /// one, then each ACME one.
    pub fn served(&self) -> Vec<(CertSource, Arc<CertifiedKey>)> {
        let kind = match self.source {
            Source::Files(_) => CertSource::Config,
            Source::SelfSigned { .. } => CertSource::SelfSigned,
        };
        let mut out: Vec<_> = self
            .certs
            .load()
            .certs
            .iter()
            .map(|ck| (kind, ck.clone()))
            .collect();
        if let Some(acme) = &self.acme {
            out.extend(
                acme.certs
                    .all()
                    .into_iter()
                    .map(|(_, i)| (CertSource::Acme, i.key)),
            );
        }
        out
    }
}

/// Where a served certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertSource {
    Config,
    Acme,
    SelfSigned,
}

impl CertSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CertSource::Config => "config",
            CertSource::Acme => "acme",
            CertSource::SelfSigned => "self-signed",
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // tls-alpn-01 (RFC 8737): a hello offering only acme-tls/1 gets the challenge
        // certificate for its name, or nothing
        if let Some(acme) = &self.acme
            && let Some(alpn) = hello.alpn()
            && Challenges::is_validation(alpn)
        {
            return hello
                .server_name()
                .and_then(|n| acme.challenges.alpn_cert(n));
        }
        self.choose(hello.server_name())
    }
}

fn read_all(source: &Source) -> Result<Vec<Arc<CertifiedKey>>, TlsError> {
    let provider = provider();
    match source {
        Source::Files(files) => files
            .iter()
            .map(|c| read_pair(&c.cert, &c.key, &provider).map(Arc::new))
            .collect(),
        Source::SelfSigned { zone, dir } => {
            let (cert, key) = (dir.join("self-signed.crt"), dir.join("self-signed.key"));
            let now = unix_now();
            let until = std::fs::read_to_string(cert.with_extension("expires"))
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok());
            if !cert.exists() || !key.exists() || needs_renewal(until, now) {
                generate(zone, &cert, &key, now)?;
            }
            let ck = read_pair(&cert, &key, &provider)?;
            tracing::info!(
                cert = %cert.display(),
                sha256 = %fingerprint(&ck.cert[0]),
                "ingress: no certs configured; using the self-signed certificate for {zone} and *.{zone}"
            );
            Ok(vec![Arc::new(ck)])
        }
    }
}

fn read_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let pem = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Pem { path, source }
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect())
        .map_err(pem(cert))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(pem(key))?;
    CertifiedKey::from_der(chain, key_der, provider).map_err(|source| TlsError::KeyPair {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    })
}

/// How long a generated self-signed certificate is valid: a year (browsers refuse longer
/// leaf certificates), from a day back (clients whose clocks lag).
const SELF_SIGNED_DAYS: u64 = 365;
/// It is replaced at start when less than this is left.
const SELF_SIGNED_RENEW_DAYS: u64 = 30;
const DAY: u64 = 86_400;

/// Whether a generated certificate valid until `until` (Unix seconds; `None`: unknown, as for
/// one written by an older vxgate with a validity of centuries) is due for replacement at `now`.
fn needs_renewal(until: Option<u64>, now: u64) -> bool {
    until.is_none_or(|u| u < now + SELF_SIGNED_RENEW_DAYS * DAY)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A self-signed ECDSA P-256 certificate for `zone` and `*.zone` (key file mode 0600), valid
/// from a day before `now` for [`SELF_SIGNED_DAYS`]; its end goes beside it (`.expires`).
fn generate(zone: &str, cert: &Path, key: &Path, now: u64) -> Result<(), TlsError> {
    let expires = cert.with_extension("expires");
    let write = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Write { path, source }
    };
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(vec![zone.to_owned(), format!("*.{zone}")])?;
    let at = |secs: u64| {
        time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
    };
    let until = now + SELF_SIGNED_DAYS * DAY;
    params.not_before = at(now.saturating_sub(DAY))?;
    params.not_after = at(until)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, zone);
    let c = params.self_signed(&kp)?;
    if let Some(dir) = cert.parent() {
        crate::privilege::private_dir(dir).map_err(write(dir))?;
    }
    // everything in the state_dir is vxgate's own: 0600
    let private = |path: &Path, text: &[u8]| {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(write(path))?;
        std::io::Write::write_all(&mut f, text).map_err(write(path))
    };
    private(cert, c.pem().as_bytes())?;
    private(key, kp.serialize_pem().as_bytes())?;
    private(&expires, format!("{until}\n").as_bytes())?;
    tracing::info!(cert = %cert.display(), "ingress: generated a self-signed certificate");
    Ok(())
}

/// SHA-256 of a certificate, as colon-separated hex (what `openssl x509 -fingerprint` prints).
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let mut s = String::new();
    for (i, b) in d.as_ref().iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        let _ = write!(s, "{b:02X}");
    }
    s
}

/// The ingress's server configs: one prefers AES-128-GCM, one follows the client's order. A
/// handshake takes the first unless the client's most preferred suite (of those vxgate has)
/// is ChaCha20-Poly1305: a client that puts it first most likely has no AES instructions,
/// and ChaCha20 is the faster cipher there; every other client gets AES-128-GCM, the cheapest
/// suite on a server with AES-NI (AES-256 does 14 rounds to its 10), whatever order it
/// lists the AES suites in. (OpenSSL clients list AES-256-GCM first.) BoringSSL's
/// "equal preference" groups and Cloudflare's edge choose the same way. Both configs share
/// the session cache and ticket key: a session resumes whichever config it started on.
pub struct ServerConfigs {
    server_order: Arc<rustls::ServerConfig>,
    client_order: Arc<rustls::ServerConfig>,
}

impl ServerConfigs {
    /// Versions, resolver, ALPN and resumption as [`server_config_with`] sets them.
    pub fn new(store: Arc<CertStore>, resumption: bool) -> Result<ServerConfigs, TlsError> {
        let client_order = server_config_with(provider(), store.clone(), resumption)?;
        let mut server_order = server_config_with(aes128_first(), store, resumption)?;
        server_order.ignore_client_order = true;
        server_order.session_storage = client_order.session_storage.clone();
        server_order.ticketer = client_order.ticketer.clone();
        Ok(ServerConfigs {
            server_order: Arc::new(server_order),
            client_order: Arc::new(client_order),
        })
    }

    /// The config for a handshake whose ClientHello offers `suites` (in its order).
    pub fn choose(&self, suites: &[rustls::CipherSuite]) -> &Arc<rustls::ServerConfig> {
        let ours = &self.client_order.crypto_provider().cipher_suites;
        let first = suites
            .iter()
            .find(|s| ours.iter().any(|o| o.suite() == **s));
        match first {
            Some(
                rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
                | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            ) => &self.client_order,
            _ => &self.server_order,
        }
    }
}

/// The process's provider with AES-128-GCM ahead of AES-256-GCM in each group (ring lists
/// AES-256 first); the same suites (a unit test checks).
fn aes128_first() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as cs;
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            Arc::new(CryptoProvider {
                cipher_suites: vec![
                    cs::TLS13_AES_128_GCM_SHA256,
                    cs::TLS13_AES_256_GCM_SHA384,
                    cs::TLS13_CHACHA20_POLY1305_SHA256,
                    cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                    cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                    cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                    cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                    cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                    cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
                ],
                ..CryptoProvider::clone(&provider())
            })
        })
        .clone()
}

/// A rustls server config with `provider`'s suites: versions, resolver, ALPN, resumption.
fn server_config_with(
    provider: Arc<CryptoProvider>,
    store: Arc<CertStore>,
    resumption: bool,
) -> Result<rustls::ServerConfig, TlsError> {
    let acme = store.acme.is_some();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(store);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if acme {
        // last: only a validation (which offers nothing else) negotiates it
        cfg.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    if resumption {
        cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(16 * 1024);
        cfg.ticketer = rustls::crypto::ring::Ticketer::new()?;
    } else {
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        cfg.send_tls13_tickets = 0;
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;

    #[test]
    fn the_aes_128_first_provider_has_the_same_suites() {
        let names = |p: &CryptoProvider| {
            let mut v: Vec<_> = p.cipher_suites.iter().map(|s| s.suite()).collect();
            v.sort_by_key(|s| u16::from(*s));
            v
        };
        let (ours, default) = (aes128_first(), provider());
        assert_eq!(names(&ours), names(&default));
        assert_eq!(
            ours.cipher_suites[0].suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        );
    }

    #[test]
    fn self_signed_is_generated_once_and_chosen_for_zone_names() {
        let dir = tempfile::tempdir().expect("tmp");
        let src = Source::SelfSigned {
            zone: "example.com".into(),
            dir: dir.path().join("tls"),
        };
        let store = CertStore::load(src.clone()).expect("generate");
        let first = std::fs::read(dir.path().join("tls/self-signed.crt")).expect("written");
        let again = CertStore::load(src).expect("reuse");
        assert_eq!(
            std::fs::read(dir.path().join("tls/self-signed.crt")).expect("kept"),
            first,
            "reused, not regenerated"
        );
        let a = store.choose(Some("web.example.com")).expect("cert");
        let b = again.choose(None).expect("default");
        assert_eq!(a.cert[0], b.cert[0]);
        let ee = webpki::EndEntityCert::try_from(&a.cert[0]).expect("parse");
        for n in ["example.com", "web.example.com"] {
            let name = ServerName::try_from(n).expect("name");
            assert!(ee.verify_is_valid_for_subject_name(&name).is_ok(), "{n}");
        }
        assert_eq!(fingerprint(&a.cert[0]).len(), 32 * 3 - 1);
    }

    #[test]
    fn self_signed_is_valid_for_a_year_and_renewed_before_it_ends() {
        let dir = tempfile::tempdir().expect("tmp");
        let src = Source::SelfSigned {
            zone: "example.com".into(),
            dir: dir.path().join("tls"),
        };
        let store = CertStore::load(src.clone()).expect("generate");
        let der = store.choose(None).expect("cert").cert[0].clone();
        let anchor = webpki::anchor_from_trusted_cert(&der).expect("anchor");
        let ee = webpki::EndEntityCert::try_from(&der).expect("parse");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let valid_at = |secs: u64| {
            ee.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                std::slice::from_ref(&anchor),
                &[],
                rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)),
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .is_ok()
        };
        assert!(valid_at(now), "valid now");
        assert!(valid_at(now - DAY / 2), "a lagging client clock");
        assert!(valid_at(now + 364 * DAY));
        assert!(!valid_at(now + 366 * DAY), "not for centuries");
        assert!(!valid_at(now - 2 * DAY));
        // the renewal decision, with the clock as a parameter
        assert!(needs_renewal(None, now), "an older vxgate's certificate");
        assert!(!needs_renewal(Some(now + 31 * DAY), now));
        assert!(needs_renewal(Some(now + 29 * DAY), now));
        // a certificate due for renewal is replaced at start
        std::fs::write(
            dir.path().join("tls/self-signed.expires"),
            format!("{}\n", now + DAY),
        )
        .expect("write");
        let renewed = CertStore::load(src).expect("renew");
        assert_ne!(renewed.choose(None).expect("cert").cert[0], der);
    }

    #[test]
    fn sni_chooses_among_certificates_by_their_names() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut files = Vec::new();
        for zone in ["example.com", "example.org"] {
            let (c, k) = (
                dir.path().join(format!("{zone}.crt")),
                dir.path().join(format!("{zone}.key")),
            );
            generate(zone, &c, &k, unix_now()).expect("gen");
            files.push(CertConfig { cert: c, key: k });
        }
        let store = CertStore::load(Source::Files(files)).expect("load");
        let org = store.choose(Some("api.example.org")).expect("org");
        let com = store.choose(Some("web.example.com")).expect("com");
        assert_ne!(org.cert[0], com.cert[0]);
        assert_eq!(
            store.choose(Some("unknown.net")).expect("default").cert[0],
            com.cert[0]
        );
        assert_eq!(store.choose(None).expect("default").cert[0], com.cert[0]);
        assert!(ServerConfigs::new(Arc::new(store), true).is_ok());
    }

    /// An ACME certificate for `name` valid from `from` to `to` (Unix seconds).
    fn acme_cert(name: &str, from: i64, to: i64) -> crate::acme::store::Issued {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut p = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
        p.not_before = time::OffsetDateTime::from_unix_timestamp(from).expect("t");
        p.not_after = time::OffsetDateTime::from_unix_timestamp(to).expect("t");
        let c = p.self_signed(&kp).expect("cert");
        crate::acme::store::Issued::from_pem(c.pem().as_bytes(), kp.serialize_pem().as_bytes())
            .expect("issued")
    }

    #[test]
    fn configured_certificates_win_then_valid_acme_ones_then_the_fallback() {
        let dir = tempfile::tempdir().expect("tmp");
        let (c, k) = (dir.path().join("org.crt"), dir.path().join("org.key"));
        generate("example.org", &c, &k, unix_now()).expect("gen");
        let acme = Acme {
            certs: Arc::default(),
            challenges: Arc::default(),
            stats: Arc::default(),
        };
        let now = unix_now() as i64;
        for (name, from, to) in [
            ("web.example.org", now - DAY as i64, now + 90 * DAY as i64), // the config covers it
            ("api.example.com", now - DAY as i64, now + 90 * DAY as i64),
            ("old.example.com", now - 91 * DAY as i64, now - DAY as i64), // expired
        ] {
            acme.certs.insert(name, acme_cert(name, from, to));
        }
        let files = vec![CertConfig { cert: c, key: k }];
        let store =
            CertStore::load_with_acme(Source::Files(files), Some(acme.clone())).expect("load");
        let config_cert = store.choose(None).expect("default").cert[0].clone();
        let pick = |sni: &str| store.choose_with_source(Some(sni)).expect("a certificate");
        let (src, ck) = pick("web.example.org");
        assert_eq!((src, &ck.cert[0]), (CertSource::Config, &config_cert));
        let (src, ck) = pick("API.example.com");
        assert_eq!(
            src,
            CertSource::Acme,
            "ACME's certificate, names without case"
        );
        assert_eq!(
            ck.cert[0],
            acme.certs.get("api.example.com").expect("api").key.cert[0]
        );
        let (src, ck) = pick("old.example.com");
        assert_eq!(
            (src, &ck.cert[0]),
            (CertSource::Config, &config_cert),
            "expired: the fallback"
        );
        // and with the self-signed fallback instead of configured files
        let tmp = tempfile::tempdir().expect("tmp");
        let selfsigned = Source::SelfSigned {
            zone: "example.com".into(),
            dir: tmp.path().join("tls"),
        };
        let store = CertStore::load_with_acme(selfsigned, Some(acme)).expect("load");
        assert_eq!(
            store
                .choose_with_source(Some("api.example.com"))
                .expect("c")
                .0,
            CertSource::Acme
        );
        assert_eq!(
            store
                .choose_with_source(Some("web.example.com"))
                .expect("c")
                .0,
            CertSource::SelfSigned
        );
        let sources: Vec<_> = store.served().iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(sources, ["self-signed", "acme", "acme", "acme"]);
    }

    #[test]
    fn a_key_that_does_not_match_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let (c1, k1) = (dir.path().join("a.crt"), dir.path().join("a.key"));
        let (c2, k2) = (dir.path().join("b.crt"), dir.path().join("b.key"));
        generate("a.test", &c1, &k1, unix_now()).expect("gen");
        generate("b.test", &c2, &k2, unix_now()).expect("gen");
        let err = CertStore::load(Source::Files(vec![CertConfig { cert: c1, key: k2 }]))
            .expect_err("mismatch");
        assert!(err.to_string().contains("a.crt"), "{err}");
    }
    /// The names read at load choose exactly what webpki's own check would: for each name,
    /// the first certificate that webpki says is valid for it (or none).
    #[test]
    fn the_precomputed_choice_is_webpkis_choice() {
        let sets: [&[&str]; 3] = [
            &["example.com", "*.example.com"],
            &["a.example.com", "*.b.example.com", "Mixed.Example.NET"],
            &["*.example.org", "a.example.com"],
        ];
        let certs: Vec<Arc<CertifiedKey>> = sets
            .iter()
            .map(|names| {
                let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
                let params = rcgen::CertificateParams::new(
                    names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
                )
                .expect("params");
                let cert = params.self_signed(&kp).expect("sign");
                let key = PrivateKeyDer::try_from(kp.serialize_der()).expect("key der");
                Arc::new(
                    CertifiedKey::from_der(vec![cert.der().clone()], key, &provider())
                        .expect("pair"),
                )
            })
            .collect();
        let served = Served::new(certs.clone());
        let webpki_choice = |name: &str| {
            let sn = ServerName::try_from(name.to_owned()).ok()?;
            certs.iter().position(|ck| {
                webpki::EndEntityCert::try_from(&ck.cert[0])
                    .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&sn).is_ok())
            })
        };
        let names = [
            "example.com",
            "a.example.com",
            "x.a.example.com",
            "c.b.example.com",
            "d.c.b.example.com",
            "b.example.com",
            "mixed.example.net",
            "MIXED.Example.net",
            "example.net",
            "example.org",
            "z.example.org",
            "y.z.example.org",
            "A.EXAMPLE.COM",
            "example.com.",
            "a..example.com",
            ".example.com",
            "*.example.com",
            "nothing.test",
        ];
        for name in names {
            let ours = served
                .fitting(name)
                .and_then(|ck| certs.iter().position(|c| Arc::ptr_eq(c, ck)));
            assert_eq!(ours, webpki_choice(name), "{name:?}");
        }
        // and the cases that matter, spelled out
        let pos = |n: &str| {
            served
                .fitting(n)
                .and_then(|ck| certs.iter().position(|c| Arc::ptr_eq(c, ck)))
        };
        assert_eq!(pos("a.example.com"), Some(0), "the first certificate wins");
        assert_eq!(pos("c.b.example.com"), Some(1));
        assert_eq!(pos("y.z.example.org"), None, "a wildcard covers one label");
    }
}
