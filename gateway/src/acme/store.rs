//! What ACME leaves on disk, under `node.state_dir/acme/` (directory 0700, files 0600): the
//! account (`account.json`, instant-acme's credentials with the account key) and, per domain,
//! the chain (`<domain>.crt`) and its key (`<domain>.key`), and `directory`, the CA they
//! come from. Loaded at start, unless they come from another CA than the configured one (a
//! switch from staging to production must not keep serving staging certificates); a service
//! that disappears keeps its files. Files are written to a temporary name and renamed, so a crash
//! never leaves half a certificate.

use super::Error;
use super::plan::{Validity, validity_of};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// A certificate obtained from the CA, ready to serve.
#[derive(Debug, Clone)]
pub struct Issued {
    pub key: Arc<CertifiedKey>,
    pub validity: Validity,
    pub serial: String,
}

impl Issued {
    /// Parses a PEM chain and its PEM key.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Issued, Error> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<_, _>>()
            .map_err(|source| Error::Pem {
                what: "chain",
                source,
            })?;
        let leaf = chain.first().ok_or(Error::Chain("no certificate"))?;
        let (validity, serial) =
            validity_of(leaf).ok_or(Error::Chain("the leaf does not parse"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| Error::Pem {
            what: "key",
            source,
        })?;
        let ck =
            CertifiedKey::from_der(chain, key, &crate::crypto::provider()).map_err(|source| {
                Error::Rustls {
                    what: "chain and key",
                    source,
                }
            })?;
        Ok(Issued {
            key: Arc::new(ck),
            validity,
            serial,
        })
    }
}

/// The certificates served by exact name (lower case), shared with the TLS resolver.
#[derive(Debug, Default)]
pub struct AcmeCerts {
    by_domain: RwLock<HashMap<String, Issued>>,
}

impl AcmeCerts {
    pub fn get(&self, name: &str) -> Option<Issued> {
        let m = self.by_domain.read().unwrap_or_else(|p| p.into_inner());
        m.get(&name.to_ascii_lowercase()).cloned()
    }

    /// The certificate to serve for an SNI name at `now` (valid then), for the TLS resolver:
    /// per handshake, so only the key's `Arc` is cloned and a name is lower-cased only when
    /// it has upper case.
    pub fn serving(&self, name: &str, now: u64) -> Option<Arc<CertifiedKey>> {
        let m = self.by_domain.read().unwrap_or_else(|p| p.into_inner());
        let i = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            m.get(&name.to_ascii_lowercase())
        } else {
            m.get(name)
        }?;
        i.validity.valid(now).then(|| i.key.clone())
    }

    pub fn insert(&self, domain: &str, issued: Issued) {
        let mut m = self.by_domain.write().unwrap_or_else(|p| p.into_inner());
        m.insert(domain.to_ascii_lowercase(), issued);
    }

    /// (domain, certificate), sorted by domain.
    pub fn all(&self) -> Vec<(String, Issued)> {
        let m = self.by_domain.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = m.iter().map(|(d, i)| (d.clone(), i.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// The `acme/` directory of a node.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    /// The CA's directory URL these certificates are for.
    ca: String,
}

impl Store {
    pub fn new(state_dir: &Path, ca_directory: &str) -> Store {
        Store {
            dir: state_dir.join("acme"),
            ca: ca_directory.to_owned(),
        }
    }

    /// The CA's directory URL this store is for.
    pub fn ca(&self) -> &str {
        &self.ca
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn ensure_dir(&self) -> Result<(), Error> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_at(&self.dir))
    }

    /// Writes `data` to `name` (mode 0600) through a temporary file and a rename.
    fn write(&self, name: &str, data: &[u8]) -> Result<(), Error> {
        self.ensure_dir()?;
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_at(&tmp))?;
        std::io::Write::write_all(&mut f, data)
            .and_then(|()| f.sync_all())
            .map_err(io_at(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_at(&path))
    }

    pub fn load_account(&self) -> Option<Vec<u8>> {
        std::fs::read(self.dir.join("account.json")).ok()
    }

    pub fn remove_account(&self) {
        let _ = std::fs::remove_file(self.dir.join("account.json"));
    }

    pub fn save_account(&self, json: &[u8]) -> Result<(), Error> {
        self.write("account.json", json)
    }

    /// Saves a domain's chain and key (key first: a chain without its key is never on disk).
    pub fn save_cert(&self, domain: &str, chain_pem: &str, key_pem: &str) -> Result<(), Error> {
        if std::fs::read(self.dir.join("directory")).ok().as_deref() != Some(self.ca.as_bytes()) {
            self.write("directory", self.ca.as_bytes())?;
        }
        self.write(&format!("{domain}.key"), key_pem.as_bytes())?;
        self.write(&format!("{domain}.crt"), chain_pem.as_bytes())
    }

    /// Every stored certificate that parses with its key; the others are logged and skipped.
    pub fn load_certs(&self) -> Vec<(String, Issued)> {
        if let Ok(from) = std::fs::read_to_string(self.dir.join("directory"))
            && from != self.ca
        {
            tracing::warn!(stored = %from, configured = %self.ca, "acme: the stored certificates come from another CA; not serving them, ordering new ones");
            return Vec::new();
        }
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let p = e.path();
            let (Some(stem), Some("crt")) = (
                p.file_stem().and_then(|s| s.to_str()),
                p.extension().and_then(|s| s.to_str()),
            ) else {
                continue;
            };
            let loaded = std::fs::read(&p).map_err(io_at(&p)).and_then(|c| {
                let kp = p.with_extension("key");
                let k = std::fs::read(&kp).map_err(io_at(&kp))?;
                Issued::from_pem(&c, &k)
            });
            match loaded {
                Ok(i) => out.push((stem.to_owned(), i)),
                Err(e) => {
                    tracing::warn!(file = %p.display(), "acme: skipping a stored certificate: {e}")
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// A self-signed certificate for `name` and its key, PEM (tests).
/// An I/O error at `path`, naming it.
fn io_at(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
pub(crate) fn pem_pair(name: &str) -> (String, String) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let c = rcgen::CertificateParams::new(vec![name.to_owned()])
        .expect("params")
        .self_signed(&kp)
        .expect("cert");
    (c.pem(), kp.serialize_pem())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn certificates_and_the_account_round_trip_with_private_modes() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::new(dir.path(), "https://ca.test/dir");
        assert!(store.load_certs().is_empty() && store.load_account().is_none());
        let (chain, key) = pem_pair("web.example.com");
        store
            .save_cert("web.example.com", &chain, &key)
            .expect("save");
        store.save_account(b"{\"id\":\"x\"}").expect("save");
        let loaded = store.load_certs();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].0, "web.example.com");
        let direct = Issued::from_pem(chain.as_bytes(), key.as_bytes()).expect("parse");
        assert_eq!(loaded[0].1.serial, direct.serial);
        assert_eq!(loaded[0].1.key.cert[0], direct.key.cert[0]);
        assert_eq!(
            store.load_account().as_deref(),
            Some(&b"{\"id\":\"x\"}"[..])
        );
        // certificates of another CA (staging, before a switch to production) are not served
        assert!(
            Store::new(dir.path(), "https://other.test/dir")
                .load_certs()
                .is_empty()
        );
        assert_eq!(
            Store::new(dir.path(), "https://ca.test/dir")
                .load_certs()
                .len(),
            1
        );
        for f in [
            "web.example.com.key",
            "web.example.com.crt",
            "account.json",
            "directory",
        ] {
            let mode = std::fs::metadata(store.dir().join(f))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let mode = std::fs::metadata(store.dir())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn a_broken_or_keyless_certificate_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::new(dir.path(), "https://ca.test/dir");
        let (chain, key) = pem_pair("a.example.com");
        store
            .save_cert("a.example.com", &chain, &key)
            .expect("save");
        store.write("b.example.com.crt", b"garbage").expect("write");
        store
            .write("c.example.com.crt", chain.as_bytes())
            .expect("write"); // no key
        let loaded = store.load_certs();
        assert_eq!(
            loaded.iter().map(|(d, _)| d.as_str()).collect::<Vec<_>>(),
            ["a.example.com"]
        );
    }
}
