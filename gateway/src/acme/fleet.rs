//! Once per fleet: with `registry.backend = "etcd"`, the nodes share ACME through etcd, under
//! the fleet prefix:
//!
//! ```text
//! {prefix}acme/certs/{domain}    {"chain": PEM, "key": PEM}   no lease: outlives every node
//! {prefix}acme/backoff/{domain}  {"failures": n, "next_at": unix s}   the fleet's retry state
//! {prefix}acme/lock/{domain}     node name   under the orderer's lease for this order
//! {prefix}acme/http/{token}      key authorization               "
//! {prefix}acme/alpn/{domain}     hex SHA-256 of the key authorization   "
//! ```
//!
//! A node that finds a domain due takes its lock (a transaction that creates the key only if
//! it does not exist, under a fresh lease kept alive while the order runs), reads the fleet's
//! certificate and retry state again, and orders only if both still call for it. It puts its
//! pending challenges next to the lock, so whichever node the CA reaches answers them, and
//! after the order puts the certificate (or the retry state) and revokes the lease, which
//! deletes the lock and the challenges at once. A node that dies mid-order loses its lease
//! after `registry.lease_ttl_s`, and another node may then take the lock.
//!
//! Every node watches `{prefix}acme/`: certificates are served and written to its own
//! `state_dir/acme/` (so it serves them after a restart even without etcd), challenges are
//! answered. A node orders nothing before its first full read, so a node that joins later
//! takes existing certificates from etcd, not from the CA.

use super::challenge::Challenges;
use super::plan::Backoff;
use super::store::{AcmeCerts, Issued, Store};
use serde::{Deserialize, Serialize};

/// What a key under `{prefix}acme/` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Cert(String),
    Backoff(String),
    Lock(String),
    Http(String),
    Alpn(String),
}

/// Key names under `{prefix}acme/`.
#[derive(Debug, Clone)]
pub struct Layout {
    base: String,
}

impl Layout {
    /// `prefix` is the registry's (`registry.prefix`).
    pub fn new(prefix: &str) -> Layout {
        let sep = if prefix.ends_with('/') { "" } else { "/" };
        Layout {
            base: format!("{prefix}{sep}acme/"),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn key(&self, k: &Key) -> String {
        let (kind, name) = match k {
            Key::Cert(d) => ("certs", d),
            Key::Backoff(d) => ("backoff", d),
            Key::Lock(d) => ("lock", d),
            Key::Http(t) => ("http", t),
            Key::Alpn(d) => ("alpn", d),
        };
        format!("{}{kind}/{name}", self.base)
    }

    /// Names a key; `None` for keys of another layout or with a name that is not a valid
    /// domain (or, for http-01, token: base64url, RFC 8555 §8.3).
    pub fn parse(&self, key: &[u8]) -> Option<Key> {
        let rest = std::str::from_utf8(key).ok()?.strip_prefix(&self.base)?;
        let (kind, name) = rest.split_once('/')?;
        let domain = || {
            (name == name.to_ascii_lowercase() && vxgate_dns::name::parse_zone(name).is_ok())
                .then(|| name.to_owned())
        };
        match kind {
            "certs" => domain().map(Key::Cert),
            "backoff" => domain().map(Key::Backoff),
            "lock" => domain().map(Key::Lock),
            "alpn" => domain().map(Key::Alpn),
            "http" => (!name.is_empty()
                && name.len() <= 256
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
            .then(|| Key::Http(name.to_owned())),
            _ => None,
        }
    }
}

/// The value of a `certs/` key.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertRecord {
    pub chain: String,
    pub key: String,
    /// The CA's directory URL: a node configured for another CA ignores the record.
    pub directory: String,
}

/// The value of a `backoff/` key.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffRecord {
    pub failures: u32,
    pub next_at: u64,
}

impl From<Backoff> for BackoffRecord {
    fn from(b: Backoff) -> Self {
        BackoffRecord {
            failures: b.failures,
            next_at: b.next_at,
        }
    }
}

impl From<BackoffRecord> for Backoff {
    fn from(b: BackoffRecord) -> Self {
        Backoff {
            failures: b.failures,
            next_at: b.next_at,
        }
    }
}

/// Why the fleet's ACME state could not be read, written, or taken from a record.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("issued by {record}, not by the configured {configured}")]
    OtherCa { record: String, configured: String },
    #[error("{0}")]
    Utf8(#[from] std::str::Utf8Error),
    #[error("not 64 hex digits")]
    Digest,
    #[error("no etcd endpoint configured")]
    NoEndpoint,
    #[error("read: no revision")]
    NoRevision,
    #[error("watch stream closed")]
    WatchClosed,
    #[cfg(feature = "etcd")]
    #[error("watch: {0}")]
    Watch(etcd_client::Error),
    #[cfg(feature = "etcd")]
    #[error(transparent)]
    Call(#[from] crate::registry::etcd::CallError),
    #[cfg(feature = "etcd")]
    #[error(transparent)]
    Auth(#[from] crate::registry::etcd::AuthError),
    #[error(transparent)]
    Acme(Box<super::Error>),
}

impl From<super::Error> for FleetError {
    fn from(e: super::Error) -> Self {
        FleetError::Acme(Box::new(e))
    }
}

/// What the watcher does with one put or delete; `Err` for a value that does not parse.
/// Without I/O except the node's own store (certificates are written through to disk).
pub fn apply(
    key: &Key,
    value: Option<&[u8]>,
    certs: &AcmeCerts,
    challenges: &Challenges,
    store: &Store,
) -> Result<(), FleetError> {
    match (key, value) {
        (Key::Cert(domain), Some(v)) => {
            let rec: CertRecord = serde_json::from_slice(v)?;
            if rec.directory != store.ca() {
                return Err(FleetError::OtherCa {
                    record: rec.directory,
                    configured: store.ca().to_owned(),
                });
            }
            let issued = Issued::from_pem(rec.chain.as_bytes(), rec.key.as_bytes())?;
            // another node's renewal replaces what this node has; an older record (one this
            // node replaced, read again after a resync) does not
            let newer = certs.get(domain).is_none_or(|cur| {
                cur.serial != issued.serial && issued.validity.not_after >= cur.validity.not_after
            });
            if newer {
                tracing::info!(%domain, serial = %issued.serial, not_after = issued.validity.not_after, "acme: certificate from the fleet");
                store.save_cert(domain, &rec.chain, &rec.key)?;
                certs.insert(domain, issued);
            }
            Ok(())
        }
        // a deleted certificate record keeps being served: the files stay, as for a service
        // that disappears
        (Key::Cert(_), None) => Ok(()),
        (Key::Http(token), Some(v)) => {
            let ka = std::str::from_utf8(v)?;
            challenges.set_http(token, ka);
            Ok(())
        }
        (Key::Http(token), None) => {
            challenges.clear_http(token);
            Ok(())
        }
        (Key::Alpn(domain), Some(v)) => {
            let digest = hex_decode(v)
                .filter(|d| d.len() == 32)
                .ok_or(FleetError::Digest)?;
            Ok(challenges.set_alpn(domain, &digest)?)
        }
        (Key::Alpn(domain), None) => {
            challenges.clear(domain, None);
            Ok(())
        }
        (Key::Lock(_) | Key::Backoff(_), _) => Ok(()),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(s: &[u8]) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    s.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

#[cfg(feature = "etcd")]
pub use with_etcd::{Claim, Fleet, FleetSpec, Lock};

#[cfg(feature = "etcd")]
mod with_etcd {
    use super::*;
    use crate::shutdown::Shutdown;
    use etcd_client::{
        Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
        TxnOpResponse, WatchOptions,
    };
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    use std::time::Duration;

    use crate::registry::etcd::{CALL_TIMEOUT, call};
    const RETRY_MAX: Duration = Duration::from_secs(5);

    /// What the fleet mode needs from the config.
    #[derive(Debug, Clone)]
    pub struct FleetSpec {
        pub endpoints: Vec<String>,
        pub prefix: String,
        pub lease_ttl: Duration,
        pub node: String,
        /// The CA's directory URL (`ingress.acme.directory`).
        pub directory: String,
        /// How to authenticate to etcd (as the registry does).
        pub auth: crate::registry::EtcdAuth,
    }

    /// The etcd side of ACME for one node.
    pub struct Fleet {
        spec: FleetSpec,
        layout: Layout,
        synced: AtomicBool,
        client: tokio::sync::Mutex<Option<Client>>,
        /// The member the next connection goes to; moved on after a failure (one member per
        /// connection, as the registry does: a balanced channel kept using a dead member,
        /// and its watch streams broke every few seconds).
        endpoint: AtomicUsize,
    }

    /// The answer to "may this node order `domain` now?".
    pub enum Claim {
        /// Yes: the lock is this node's until [`Lock::release`] (or its lease expires).
        Mine(Box<Lock>),
        /// Another node holds the lock (its name).
        Held(String),
        /// The fleet has a certificate that is not due: serve it (and store it).
        Have(Box<Issued>, CertRecord),
        /// The fleet's retry state says not yet.
        Wait(Backoff),
    }

    /// A domain's lock, with the lease its challenges are put under.
    pub struct Lock {
        client: Client,
        lease: i64,
        layout: Layout,
        domain: String,
        keepalive: tokio::task::JoinHandle<()>,
    }

    impl Fleet {
        pub fn new(spec: FleetSpec) -> Arc<Fleet> {
            let layout = Layout::new(&spec.prefix);
            Arc::new(Fleet {
                spec,
                layout,
                synced: AtomicBool::new(false),
                client: tokio::sync::Mutex::new(None),
                endpoint: AtomicUsize::new(0),
            })
        }

        /// Whether the watcher has read the fleet's state once (no order before that).
        pub fn synced(&self) -> bool {
            self.synced.load(Relaxed)
        }

        async fn connect(&self) -> Result<Client, FleetError> {
            let options = ConnectOptions::new()
                .with_connect_timeout(CALL_TIMEOUT)
                // etcd closes connections that ping more often than every 5 s
                // (--grpc-keepalive-min-time) without sending data, as an idle watch does
                .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
                .with_keep_alive_while_idle(true)
                .with_require_leader(true);
            let options = crate::registry::etcd::with_auth(options, &self.spec.auth)?;
            let n = self.spec.endpoints.len().max(1);
            let endpoint = self
                .spec
                .endpoints
                .get(self.endpoint.load(Relaxed) % n)
                .ok_or(FleetError::NoEndpoint)?;
            Ok(call("connect", Client::connect([endpoint], Some(options))).await?)
        }

        /// After a failure: the next connection goes to the next member.
        fn next_endpoint(&self) {
            self.endpoint.fetch_add(1, Relaxed);
        }

        /// A client for one call, connected on first use; dropped after an error so the next
        /// call connects again.
        async fn client(&self) -> Result<Client, FleetError> {
            let mut c = self.client.lock().await;
            if let Some(c) = &*c {
                return Ok(c.clone());
            }
            let new = self.connect().await?;
            *c = Some(new.clone());
            Ok(new)
        }

        async fn forget_client(&self) {
            *self.client.lock().await = None;
            self.next_endpoint();
        }

        /// Tries to take `domain`'s lock, then reads the fleet's certificate and retry state.
        /// `current` is the serial this node serves and found due: the fleet's certificate
        /// is taken instead of an order only if it is another one, not due.
        pub async fn claim(
            &self,
            domain: &str,
            now: u64,
            current: Option<&str>,
        ) -> Result<Claim, FleetError> {
            let r = self.try_claim(domain, now, current).await;
            if r.is_err() {
                self.forget_client().await;
            }
            r
        }

        async fn try_claim(
            &self,
            domain: &str,
            now: u64,
            current: Option<&str>,
        ) -> Result<Claim, FleetError> {
            let mut client = self.client().await?;
            let ttl = self.spec.lease_ttl.as_secs().max(2) as i64;
            let lease = call("lease grant", client.lease_grant(ttl, None))
                .await?
                .id();
            let lock_key = self.layout.key(&Key::Lock(domain.to_owned()));
            let txn = Txn::new()
                .when([Compare::create_revision(
                    lock_key.as_str(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then([TxnOp::put(
                    lock_key.as_str(),
                    self.spec.node.as_str(),
                    Some(PutOptions::new().with_lease(lease)),
                )])
                .or_else([TxnOp::get(lock_key.as_str(), None)]);
            let resp = match call("lock", client.txn(txn)).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = call("lease revoke", client.lease_revoke(lease)).await;
                    return Err(e.into());
                }
            };
            if !resp.succeeded() {
                let _ = call("lease revoke", client.lease_revoke(lease)).await;
                let holder = resp
                    .op_responses()
                    .into_iter()
                    .find_map(|r| match r {
                        TxnOpResponse::Get(g) => g
                            .kvs()
                            .first()
                            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                        _ => None,
                    })
                    .unwrap_or_default();
                return Ok(Claim::Held(holder));
            }
            let (mut keeper, mut stream) =
                call("lease keep-alive", client.lease_keep_alive(lease)).await?;
            let every = self.spec.lease_ttl / 3;
            let keepalive = tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    if keeper.keep_alive().await.is_err() {
                        return;
                    }
                    match stream.message().await {
                        Ok(Some(r)) if r.ttl() > 0 => {}
                        _ => return,
                    }
                }
            });
            let lock = Lock {
                client: client.clone(),
                lease,
                layout: self.layout.clone(),
                domain: domain.to_owned(),
                keepalive,
            };
            // what the fleet has, read after taking the lock: another node may have just
            // finished this domain
            let cert_key = self.layout.key(&Key::Cert(domain.to_owned()));
            if let Some(kv) = call("read", client.get(cert_key.as_str(), None))
                .await?
                .kvs()
                .first()
                && let Ok(rec) = serde_json::from_slice::<CertRecord>(kv.value())
                && rec.directory == self.spec.directory
                && let Ok(issued) = Issued::from_pem(rec.chain.as_bytes(), rec.key.as_bytes())
                && !issued.validity.due(now)
                && current != Some(issued.serial.as_str())
            {
                lock.release().await;
                return Ok(Claim::Have(Box::new(issued), rec));
            }
            let backoff_key = self.layout.key(&Key::Backoff(domain.to_owned()));
            if let Some(kv) = call("read", client.get(backoff_key.as_str(), None))
                .await?
                .kvs()
                .first()
                && let Ok(rec) = serde_json::from_slice::<BackoffRecord>(kv.value())
            {
                let b = Backoff::from(rec);
                if !b.may_try(now) {
                    lock.release().await;
                    return Ok(Claim::Wait(b));
                }
            }
            Ok(Claim::Mine(Box::new(lock)))
        }

        /// Starts the watcher that serves the fleet's certificates and challenges.
        pub fn spawn_watcher(
            self: &Arc<Self>,
            certs: Arc<AcmeCerts>,
            challenges: Arc<Challenges>,
            store: Store,
            shutdown: &Shutdown,
            tasks: &mut crate::part::Part<crate::acme::Error>,
        ) {
            let (fleet, mut shutdown) = (self.clone(), shutdown.clone());
            tasks.spawn(async move {
                let mut wait = Duration::from_millis(100);
                loop {
                    let session = fleet.watch(&certs, &challenges, &store);
                    let e = tokio::select! {
                        _ = shutdown.wait() => return Ok(()),
                        r = session => match r { Ok(()) => continue, Err(e) => e },
                    };
                    fleet.next_endpoint();
                    tracing::warn!(retry_in = ?wait, "acme: fleet watch: {e}");
                    tokio::select! {
                        _ = shutdown.wait() => return Ok(()),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(RETRY_MAX);
                }
            });
        }

        /// One watch session: a full read of `{prefix}acme/`, then its events.
        async fn watch(
            &self,
            certs: &AcmeCerts,
            challenges: &Challenges,
            store: &Store,
        ) -> Result<(), FleetError> {
            let mut client = self.connect().await?;
            let base = self.layout.base().to_owned();
            let resp = call(
                "read",
                client.get(base.as_str(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
            let revision = resp
                .header()
                .map(|h| h.revision())
                .ok_or(FleetError::NoRevision)?;
            for kv in resp.kvs() {
                self.take(kv.key(), Some(kv.value()), certs, challenges, store);
            }
            if !self.synced.swap(true, Relaxed) {
                tracing::info!(
                    certificates = certs.all().len(),
                    "acme: fleet state read from etcd"
                );
            }
            let mut stream = call(
                "watch",
                client.watch(
                    base.as_str(),
                    Some(
                        WatchOptions::new()
                            .with_prefix()
                            .with_start_revision(revision + 1),
                    ),
                ),
            )
            .await?;
            loop {
                let resp = match stream.message().await {
                    Ok(Some(r)) => r,
                    Ok(None) => return Err(FleetError::WatchClosed),
                    Err(e) => return Err(FleetError::Watch(e)),
                };
                if resp.canceled() || resp.compact_revision() > 0 {
                    return Ok(()); // a new full read
                }
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let value = (ev.event_type() == EventType::Put).then(|| kv.value());
                    self.take(kv.key(), value, certs, challenges, store);
                }
            }
        }

        fn take(
            &self,
            key: &[u8],
            value: Option<&[u8]>,
            certs: &AcmeCerts,
            challenges: &Challenges,
            store: &Store,
        ) {
            let Some(k) = self.layout.parse(key) else {
                tracing::warn!(
                    key = %String::from_utf8_lossy(key),
                    "acme: ignoring an unknown key"
                );
                return;
            };
            if let Err(e) = apply(&k, value, certs, challenges, store) {
                tracing::warn!(key = %String::from_utf8_lossy(key), "acme: ignoring a bad record: {e}");
            }
        }
    }

    impl Lock {
        async fn put(&mut self, key: Key, value: String) -> Result<(), FleetError> {
            let k = self.layout.key(&key);
            call(
                "put",
                self.client
                    .put(k, value, Some(PutOptions::new().with_lease(self.lease))),
            )
            .await?;
            Ok(())
        }

        /// Shares an http-01 answer with the fleet.
        pub async fn put_http(
            &mut self,
            token: &str,
            key_authorization: &str,
        ) -> Result<(), FleetError> {
            self.put(Key::Http(token.to_owned()), key_authorization.to_owned())
                .await
        }

        /// Shares a tls-alpn-01 challenge with the fleet (each node makes its certificate).
        pub async fn put_alpn(&mut self, digest: &[u8]) -> Result<(), FleetError> {
            self.put(Key::Alpn(self.domain.clone()), hex(digest)).await
        }

        /// Stores the new certificate for every node, and clears the retry state.
        pub async fn put_cert(
            &mut self,
            chain: &str,
            key: &str,
            ca: &str,
        ) -> Result<(), FleetError> {
            let rec = serde_json::to_string(&CertRecord {
                chain: chain.to_owned(),
                key: key.to_owned(),
                directory: ca.to_owned(),
            })?;
            let ck = self.layout.key(&Key::Cert(self.domain.clone()));
            let bk = self.layout.key(&Key::Backoff(self.domain.clone()));
            call("put", self.client.put(ck, rec, None)).await?;
            call("delete", self.client.delete(bk, None)).await?;
            Ok(())
        }

        /// Stores the fleet's retry state after a failed order.
        pub async fn put_backoff(&mut self, b: Backoff) -> Result<(), FleetError> {
            let rec = serde_json::to_string(&BackoffRecord::from(b))?;
            let bk = self.layout.key(&Key::Backoff(self.domain.clone()));
            call("put", self.client.put(bk, rec, None)).await?;
            Ok(())
        }

        /// Revokes the lease: the lock and the pending challenges go with it.
        pub async fn release(mut self) {
            self.keepalive.abort();
            if let Err(e) = call("lease revoke", self.client.lease_revoke(self.lease)).await {
                tracing::warn!(domain = %self.domain, "acme: {e}; the lock expires with its lease");
            }
        }
    }

    impl Drop for Lock {
        fn drop(&mut self) {
            self.keepalive.abort();
        }
    }
}

/// Without the etcd feature there is no fleet: these types have no values.
#[cfg(not(feature = "etcd"))]
pub use without_etcd::{Claim, Fleet, Lock};

#[cfg(not(feature = "etcd"))]
mod without_etcd {
    use super::{Backoff, CertRecord, FleetError, Issued};

    pub enum Fleet {}
    pub enum Lock {}
    #[allow(dead_code)]
    pub enum Claim {
        Mine(Box<Lock>),
        Held(String),
        Have(Box<Issued>, CertRecord),
        Wait(Backoff),
    }

    impl Fleet {
        pub fn synced(&self) -> bool {
            match *self {}
        }
        pub async fn claim(&self, _: &str, _: u64, _: Option<&str>) -> Result<Claim, FleetError> {
            match *self {}
        }
    }

    impl Lock {
        pub async fn put_http(&mut self, _: &str, _: &str) -> Result<(), FleetError> {
            match *self {}
        }
        pub async fn put_alpn(&mut self, _: &[u8]) -> Result<(), FleetError> {
            match *self {}
        }
        pub async fn put_cert(&mut self, _: &str, _: &str, _: &str) -> Result<(), FleetError> {
            match *self {}
        }
        pub async fn put_backoff(&mut self, _: Backoff) -> Result<(), FleetError> {
            match *self {}
        }
        pub async fn release(self) {
            match self {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_bad_names_are_refused() {
        let l = Layout::new("/vxgate");
        assert_eq!(l.base(), "/vxgate/acme/");
        for k in [
            Key::Cert("web.example.com".into()),
            Key::Backoff("web.example.com".into()),
            Key::Lock("web.example.com".into()),
            Key::Alpn("web.example.com".into()),
            Key::Http("abc-DEF_123".into()),
        ] {
            assert_eq!(l.parse(l.key(&k).as_bytes()), Some(k.clone()), "{k:?}");
        }
        for bad in [
            "/vxgate/acme/certs/../../etc",
            "/vxgate/acme/certs/Web.example.com",
            "/vxgate/acme/certs/",
            "/vxgate/acme/http/a/b",
            "/vxgate/acme/http/a.b",
            "/vxgate/acme/other/web.example.com",
            "/vxgate/nodes/h1",
            "/other/acme/certs/web.example.com",
        ] {
            assert_eq!(l.parse(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn the_fleets_records_are_served_and_written_through() {
        use crate::acme::store::pem_pair;
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::new(dir.path(), "https://ca.test/dir");
        let (certs, ch) = (AcmeCerts::default(), Challenges::default());
        let (chain, key) = pem_pair("web.example.com");
        let other = CertRecord {
            chain: chain.clone(),
            key: key.clone(),
            directory: "https://staging.test/dir".into(),
        };
        let other = serde_json::to_vec(&other).expect("json");
        let d = "web.example.com".to_owned();
        assert!(apply(&Key::Cert(d.clone()), Some(&other), &certs, &ch, &store).is_err());
        assert!(
            certs.get(&d).is_none(),
            "another CA's certificate is not served"
        );
        let rec = CertRecord {
            chain,
            key,
            directory: "https://ca.test/dir".into(),
        };
        let rec = serde_json::to_vec(&rec).expect("json");
        apply(&Key::Cert(d.clone()), Some(&rec), &certs, &ch, &store).expect("cert");
        let served = certs.get("web.example.com").expect("served");
        let on_disk = store.load_certs();
        assert_eq!(on_disk.len(), 1);
        assert_eq!(on_disk[0].1.serial, served.serial);
        // a delete keeps it
        apply(&Key::Cert(d.clone()), None, &certs, &ch, &store).expect("delete");
        assert!(certs.get("web.example.com").is_some());
        // garbage is an error and changes nothing
        assert!(apply(&Key::Cert(d.clone()), Some(b"{}"), &certs, &ch, &store).is_err());
        assert_eq!(certs.get(&d).expect("kept").serial, served.serial);

        apply(
            &Key::Http("tok".into()),
            Some(b"tok.thumb"),
            &certs,
            &ch,
            &store,
        )
        .expect("http");
        assert_eq!(
            ch.http_answer("/.well-known/acme-challenge/tok").as_deref(),
            Some("tok.thumb")
        );
        apply(&Key::Http("tok".into()), None, &certs, &ch, &store).expect("http delete");
        assert!(ch.http_answer("/.well-known/acme-challenge/tok").is_none());

        let digest = [0xabu8; 32];
        apply(
            &Key::Alpn(d.clone()),
            Some(hex(&digest).as_bytes()),
            &certs,
            &ch,
            &store,
        )
        .expect("alpn");
        let c = ch.alpn_cert(&d).expect("challenge certificate");
        let (_, x) = x509_parser::parse_x509_certificate(&c.cert[0]).expect("parse");
        let ext = x
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier");
        assert_eq!(&ext.value[2..], &digest[..]);
        assert!(apply(&Key::Alpn(d.clone()), Some(b"abcd"), &certs, &ch, &store).is_err());
        apply(&Key::Alpn(d.clone()), None, &certs, &ch, &store).expect("alpn delete");
        assert!(ch.alpn_cert(&d).is_none());
    }

    #[test]
    fn hex_round_trips() {
        let b = [0u8, 1, 0x7f, 0xff];
        assert_eq!(hex(&b), "00017fff");
        assert_eq!(hex_decode(b"00017fff").as_deref(), Some(&b[..]));
        assert!(hex_decode(b"0").is_none() && hex_decode(b"zz").is_none());
    }
}
