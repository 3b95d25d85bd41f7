//! The etcd backend: shares this node's containers and reads every other node's.
//!
//! One task runs sessions. A session connects, grants a lease of `lease_ttl_s` and keeps it
//! alive (every third of the TTL), then:
//!
//! 1. reads the whole prefix at revision R (a full resync): other nodes' keys replace the
//!    remote part of the registry in one change; this node's keys are compared with what it
//!    wants published (node record + local containers) and put (with the lease) or deleted;
//! 2. watches the prefix from R + 1, applying each response as one registry change, and
//!    re-publishing whenever the local registry changes or someone touches this node's keys;
//! 3. on a compacted revision (or a cancelled watch) goes back to 1.
//!
//! A session talks to one member (its endpoint); any error (etcd unreachable, lease expired,
//! stream broken) ends the session, and the next one tries the next member. The registry
//! keeps the last known remote state, so DNS, the ingress and the overlay keep serving it,
//! and a new session starts after a backoff (0.1 s doubling to 5 s, at most a third of the TTL).
//! A new session keeps the previous lease if etcd still has it; otherwise it takes a new one,
//! re-puts every key under it, and revokes the previous lease. At shutdown the
//! lease is revoked, so other nodes drop this one at once instead of after the TTL.

use super::remote::{Layout, RemoteState, local_records};
use super::{BackendStatus, Registry, Snapshot};
use crate::shutdown::Shutdown;
use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, KeyValue, PutOptions, WatchOptions,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::watch;

/// Bound on every unary etcd call.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Keys per page of a full read.
const PAGE: i64 = 500;
/// Largest gRPC message taken (a page, or a watch response catching up many revisions).
const MAX_MESSAGE: usize = 64 << 20;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Retries never wait longer than this, nor longer than a third of the lease TTL: after an
/// outage, etcd gives every lease a full TTL, and the node must be back within it.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

struct Ctx {
    auth: super::EtcdAuth,
    endpoints: Vec<String>,
    ttl: Duration,
    me: String,
    local: LocalNode,
    layout: Layout,
    registry: Arc<Registry>,
    status: Arc<BackendStatus>,
}

/// Starts the backend task. It never fails startup: without etcd, vxgate serves its local
/// state and keeps trying.
/// What this node publishes about itself in its node record.
#[derive(Debug, Clone)]
pub struct LocalNode {
    /// Its plain VXLAN VTEP.
    pub vtep: Option<SocketAddr>,
    /// With encryption: its WireGuard endpoint and tunnel address, and its public key as
    /// it changes (a key rotation is published at once).
    pub wireguard: Option<(SocketAddr, std::net::Ipv4Addr, watch::Receiver<[u8; 32]>)>,
    /// Its addresses on the overlay's bridges, as they change (a bridge may get its address,
    /// or the TAP its bridge, after the start: Docker makes the bridge).
    pub gateways: watch::Receiver<Vec<std::net::IpAddr>>,
}

impl LocalNode {
    fn now(&self) -> super::Node {
        super::Node {
            vtep: self.vtep,
            wireguard: self
                .wireguard
                .as_ref()
                .map(|(endpoint, address, key)| super::WgIdentity {
                    public_key: *key.borrow(),
                    endpoint: *endpoint,
                    address: *address,
                }),
            gateways: self.gateways.borrow().clone(),
        }
    }
}

pub fn start(
    cfg: &super::EtcdSpec,
    node: &str,
    local: LocalNode,
    registry: &Arc<Registry>,
    shutdown: &Shutdown,
) -> (Arc<BackendStatus>, crate::part::Part<super::EtcdError>) {
    let status = Arc::new(BackendStatus::default());
    let ctx = Ctx {
        auth: cfg.auth.clone(),
        endpoints: cfg.endpoints.clone(),
        ttl: cfg.lease_ttl,
        me: node.to_owned(),
        local,
        layout: Layout::new(&cfg.prefix),
        registry: registry.clone(),
        status: status.clone(),
    };
    tracing::info!(
        endpoints = ?ctx.endpoints,
        prefix = ctx.layout.prefix(),
        lease_ttl_s = ctx.ttl.as_secs(),
        tls = ctx.auth.tls,
        client_certificate = ctx.auth.identity.is_some(),
        user = ctx.auth.user.as_ref().map(|(u, _)| u.as_str()),
        "registry: etcd"
    );
    let mut part = crate::part::Part::new();
    part.spawn(run(ctx, shutdown.clone()));
    (status, part)
}

/// Per-task state that outlives sessions.
struct State {
    remote: RemoteState,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    backoff: Duration,
    /// The last session's lease, revoked once a new one holds every key.
    last_lease: Option<i64>,
    /// Remote names left out for clashing, to log only when that set changes.
    clashing: Vec<String>,
    /// Index of the endpoint the next session uses. A session talks to one member; after a
    /// failure the next session tries the next member (a balanced channel kept sending
    /// requests to a dead member, and leases expired meanwhile).
    endpoint: usize,
    /// Sessions failed in a row.
    failures: usize,
    /// This node's WireGuard public key, to publish it again when it changes.
    public_key: Option<watch::Receiver<[u8; 32]>>,
    gateways: Option<watch::Receiver<Vec<std::net::IpAddr>>>,
}

/// An etcd call that failed or did not answer in time; names the call.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{what}: {source}")]
    Failed {
        what: &'static str,
        source: etcd_client::Error,
    },
    #[error("{what}: no answer within {CALL_TIMEOUT:?}")]
    Timeout { what: &'static str },
}

/// Why a session with etcd ended (logged; a new one follows after backoff).
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("no etcd endpoint configured")]
    NoEndpoint,
    #[error("the lease expired")]
    LeaseExpired,
    #[error("lease keep-alive stream closed")]
    KeepAliveClosed,
    #[error("lease keep-alive: {0}")]
    KeepAlive(etcd_client::Error),
    #[error("watch stream closed")]
    WatchClosed,
    #[error("read: no revision in the answer")]
    NoRevision,
    #[error("watch: {0}")]
    Watch(etcd_client::Error),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

async fn run(ctx: Ctx, mut shutdown: Shutdown) -> Result<(), super::EtcdError> {
    let mut st = State {
        remote: RemoteState::new(&ctx.me, ctx.layout.clone()),
        snapshots: ctx.registry.subscribe(),
        backoff: BACKOFF_MIN.min(ctx.ttl / 3),
        last_lease: None,
        clashing: Vec::new(),
        // nodes start on different members, so one member's loss does not hit them all
        endpoint: ctx.me.bytes().map(usize::from).sum(),
        failures: 0,
        public_key: ctx.local.wireguard.as_ref().map(|(_, _, k)| k.clone()),
        gateways: Some(ctx.local.gateways.clone()),
    };
    let n = ctx.endpoints.len().max(1);
    loop {
        let Err(e) = session(&ctx, &mut st, &mut shutdown).await else {
            return Ok(());
        };
        ctx.status.connected.store(false, Relaxed);
        ctx.status.errors.fetch_add(1, Relaxed);
        let failed = ctx
            .endpoints
            .get(st.endpoint % n)
            .cloned()
            .unwrap_or_default();
        st.endpoint = (st.endpoint + 1) % n;
        st.failures += 1;
        // the next member at once; after a round of failures, back off
        let wait = if st.failures % n != 0 {
            BACKOFF_MIN.min(ctx.ttl / 3)
        } else {
            let w = st.backoff;
            st.backoff = (st.backoff * 2).min(BACKOFF_MAX.min(ctx.ttl / 3));
            w
        };
        tracing::warn!(
            endpoint = %failed,
            remote_containers = st.remote.container_map().len(),
            retry_in = ?wait,
            "etcd: {}{}; serving the last known state",
            Chain(&e),
            closed_at_handshake(&e, ctx.auth.identity.is_some())
        );
        tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// A hint for a connection the server closed while connecting, with a client certificate
/// configured: in TLS 1.3 the server checks the client's certificate after the client has
/// finished its side of the handshake, so a refusal often reaches the client only as a
/// closed or broken connection, without the server's alert (empty otherwise).
fn closed_at_handshake(e: &SessionError, client_certificate: bool) -> &'static str {
    let SessionError::Call(CallError::Failed {
        what: "connect",
        source,
    }) = e
    else {
        return "";
    };
    let text = Chain(source).to_string();
    let closed = [
        "BrokenPipe",
        "Broken pipe",
        "connection closed",
        "operation was canceled",
        "reset",
    ]
    .iter()
    .any(|t| text.contains(t));
    if client_certificate && closed && !text.contains("certificate") {
        " (the server closed the connection during the TLS handshake: if it checks client \
         certificates, it may not trust the CA of tls.cert_file)"
    } else {
        ""
    }
}

/// `fut` within [`CALL_TIMEOUT`]; errors name the call (`what`).
pub(crate) async fn call<T>(
    what: &'static str,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(CallError::Failed { what, source }),
        Err(_) => Err(CallError::Timeout { what }),
    }
}

/// This node's keys as etcd has them: value and lease.
type Own = BTreeMap<String, (String, i64)>;

/// `options` with what `auth` asks: TLS (the CA's roots, else the system's; a client
/// certificate) and a user with its password. The files are read now, so a renewed
/// certificate or password is used from the next connection on.
pub(crate) fn with_auth(
    mut options: ConnectOptions,
    auth: &super::EtcdAuth,
) -> Result<ConnectOptions, AuthError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|source| AuthError::Read {
            path: p.to_owned(),
            source,
        })
    };
    if auth.tls {
        let mut tls = etcd_client::TlsOptions::new();
        tls = match &auth.ca_file {
            Some(ca) => tls.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?)),
            None => tls.with_native_roots(),
        };
        if let Some((cert, key)) = &auth.identity {
            tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
        }
        options = options.with_tls(tls);
    }
    if let Some((user, file)) = &auth.user {
        let password = String::from_utf8_lossy(&read(file)?)
            .trim_end_matches(['\n', '\r'])
            .to_owned();
        options = options.with_user(user.clone(), password);
    }
    Ok(options)
}

/// A credential file that could not be read at connect time.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// An error with its causes, `outer: inner: root` (tonic's "transport error" hides why: a
/// certificate from another CA, a refused connection).
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        let mut last = self.0.to_string();
        while let Some(c) = cause {
            let text = c.to_string();
            // tonic repeats its cause in its own text at times
            if !last.contains(&text) {
                write!(f, ": {text}")?;
            }
            last = text;
            cause = c.source();
        }
        Ok(())
    }
}

/// One connection's life. `Ok` means shutdown was asked and handled.
async fn session(ctx: &Ctx, st: &mut State, shutdown: &mut Shutdown) -> Result<(), SessionError> {
    let options = ConnectOptions::new()
        .with_connect_timeout(CALL_TIMEOUT)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        .with_keep_alive_while_idle(true)
        .with_require_leader(true);
    let options = with_auth(options, &ctx.auth)?;
    let endpoint = ctx
        .endpoints
        .get(st.endpoint % ctx.endpoints.len().max(1))
        .ok_or(SessionError::NoEndpoint)?;
    let mut client = call(
        "connect",
        Client::connect([endpoint.as_str()], Some(options)),
    )
    .await?;
    let ttl = ctx.ttl.as_secs().max(1) as i64;
    // The previous session's lease, if etcd still has it: keys keep existing without a gap.
    let reused = match st.last_lease {
        Some(old) => call("lease lookup", client.lease_time_to_live(old, None))
            .await?
            .ttl()
            .gt(&0)
            .then_some(old),
        None => None,
    };
    let lease = match reused {
        Some(l) => l,
        None => call("lease grant", client.lease_grant(ttl, None))
            .await?
            .id(),
    };
    let (mut keeper, mut keepalive) =
        call("lease keep-alive", client.lease_keep_alive(lease)).await?;
    let mut renew = tokio::time::interval(ctx.ttl / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let prefix = ctx.layout.prefix().to_owned();

    loop {
        // 1. full resync, in pages read at one revision
        st.remote.clear();
        let mut own = Own::new();
        let mut kv = client.kv_client().max_decoding_message_size(MAX_MESSAGE);
        let range_end = prefix_end(prefix.as_bytes());
        let mut from = prefix.as_bytes().to_vec();
        let mut revision = 0;
        loop {
            let mut opts = GetOptions::new()
                .with_range(range_end.clone())
                .with_limit(PAGE);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let resp = call("read", kv.get(from.clone(), Some(opts))).await?;
            if revision == 0 {
                revision = resp
                    .header()
                    .map(|h| h.revision())
                    .ok_or(SessionError::NoRevision)?;
            }
            for kv in resp.kvs() {
                take(ctx, st, &mut own, kv);
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        publish_remote(ctx, st);
        let snap = st.snapshots.borrow_and_update().clone();
        reconcile(ctx, &mut client, lease, &mut own, &snap).await?;
        // what this node's records were last made from
        let mut reconciled = snap;
        ctx.status.resyncs.fetch_add(1, Relaxed);
        if !ctx.status.connected.swap(true, Relaxed) {
            tracing::info!(
                node = %ctx.me,
                endpoint = %endpoint,
                lease = format!("{lease:x}"),
                revision,
                remote_nodes = st.remote.nodes().len(),
                remote_containers = st.remote.container_map().len(),
                "etcd: registered and in sync"
            );
        }
        st.backoff = BACKOFF_MIN.min(ctx.ttl / 3);
        st.failures = 0;
        if let Some(old) = st.last_lease.replace(lease)
            && old != lease
        {
            // every key is under the new lease now; best effort, it expires anyway
            let _ = call("lease revoke", client.lease_revoke(old)).await;
        }

        // 2. follow
        let mut watch = call(
            "watch",
            client
                .watch_client()
                .max_decoding_message_size(MAX_MESSAGE)
                .watch(
                    prefix.as_str(),
                    Some(
                        WatchOptions::new()
                            .with_prefix()
                            .with_start_revision(revision + 1),
                    ),
                ),
        )
        .await?;
        loop {
            tokio::select! {
                _ = shutdown.wait() => {
                    // others drop this node now rather than after the TTL
                    match call("lease revoke", client.lease_revoke(lease)).await {
                        Ok(_) => tracing::info!("etcd: lease revoked, node deregistered"),
                        Err(e) => tracing::warn!("etcd: {e}; the keys expire with the lease"),
                    }
                    return Ok(());
                }
                _ = renew.tick() => {
                    keeper.keep_alive().await.map_err(SessionError::KeepAlive)?;
                }
                msg = keepalive.message() => match msg {
                    Ok(Some(r)) if r.ttl() > 0 => {}
                    Ok(Some(_)) => return Err(SessionError::LeaseExpired),
                    Ok(None) => return Err(SessionError::KeepAliveClosed),
                    Err(e) => return Err(SessionError::KeepAlive(e)),
                },
                msg = watch.message() => {
                    let resp = match msg {
                        Ok(Some(r)) => r,
                        Ok(None) => return Err(SessionError::WatchClosed),
                        Err(e) => return Err(SessionError::Watch(e)),
                    };
                    if resp.compact_revision() > 0 {
                        ctx.status.compacted.fetch_add(1, Relaxed);
                        tracing::warn!(
                            compacted_at = resp.compact_revision(),
                            "etcd: watch revision compacted; full resync"
                        );
                        break;
                    }
                    if resp.canceled() {
                        tracing::warn!(reason = resp.cancel_reason(), "etcd: watch cancelled; full resync");
                        break;
                    }
                    let (mut remote_changed, mut own_touched) = (false, false);
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        if st.remote.is_own(kv.key()) {
                            own_touched = true;
                            let key = String::from_utf8_lossy(kv.key()).into_owned();
                            match ev.event_type() {
                                EventType::Put => {
                                    let v = String::from_utf8_lossy(kv.value()).into_owned();
                                    own.insert(key, (v, kv.lease()));
                                }
                                EventType::Delete => {
                                    own.remove(&key);
                                }
                            }
                            continue;
                        }
                        remote_changed |= match ev.event_type() {
                            EventType::Put => put_remote(ctx, st, kv),
                            EventType::Delete => st.remote.delete(kv.key()),
                        };
                    }
                    if remote_changed {
                        publish_remote(ctx, st);
                    }
                    if own_touched {
                        let snap = st.snapshots.borrow().clone();
                        reconcile(ctx, &mut client, lease, &mut own, &snap).await?;
                    }
                }
                changed = st.snapshots.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let snap = st.snapshots.borrow_and_update().clone();
                    // a change of other nodes' containers only (most changes, in a fleet)
                    // leaves this node's records as they are: not rebuilt from the whole
                    // registry for nothing
                    if reconciled.changes_to(&snap).all(|c| c.is_remote()) {
                        reconciled = snap;
                        continue;
                    }
                    reconcile(ctx, &mut client, lease, &mut own, &snap).await?;
                    reconciled = snap;
                }
                () = changed(&mut st.public_key) => {
                    tracing::info!("etcd: publishing this node's new WireGuard public key");
                    let snap = st.snapshots.borrow().clone();
                    reconcile(ctx, &mut client, lease, &mut own, &snap).await?;
                }
                () = changed(&mut st.gateways) => {
                    tracing::info!(gateways = ?ctx.local.gateways.borrow().clone(), "etcd: publishing this node's gateway addresses");
                    let snap = st.snapshots.borrow().clone();
                    reconcile(ctx, &mut client, lease, &mut own, &snap).await?;
                }
            }
        }
    }
}

/// Sorts one key of a full read into this node's own keys or the remote state.
fn take(ctx: &Ctx, st: &mut State, own: &mut Own, kv: &KeyValue) {
    if st.remote.is_own(kv.key()) {
        own.insert(
            String::from_utf8_lossy(kv.key()).into_owned(),
            (String::from_utf8_lossy(kv.value()).into_owned(), kv.lease()),
        );
    } else {
        put_remote(ctx, st, kv);
    }
}

fn put_remote(ctx: &Ctx, st: &mut State, kv: &KeyValue) -> bool {
    match st.remote.put(kv.key(), kv.value()) {
        Ok(changed) => changed,
        Err(bad) => {
            ctx.status.bad_records.fetch_add(1, Relaxed);
            tracing::warn!("etcd: ignoring a malformed record: {bad}");
            true
        }
    }
}

fn publish_remote(ctx: &Ctx, st: &mut State) {
    // the change since the last publish, not the whole fleet, when it can be (sync_remote)
    let nodes = st.remote.take_nodes_changed().then(|| st.remote.nodes());
    let skipped = ctx.registry.sync_remote(st.remote.container_map(), nodes);
    ctx.status.clashes.store(skipped.len() as u64, Relaxed);
    if skipped != st.clashing {
        if !skipped.is_empty() {
            tracing::warn!(
                containers = ?skipped,
                "etcd: remote containers left out: their name or IP is already taken here"
            );
        }
        st.clashing = skipped;
    }
}

/// Returns when the value changes; never without one (or once its sender is gone).
async fn changed<T>(key: &mut Option<watch::Receiver<T>>) {
    if let Some(rx) = key {
        if rx.changed().await.is_ok() {
            return;
        }
        *key = None;
    }
    std::future::pending::<()>().await
}

/// Makes etcd hold exactly this node's wanted records, under `lease`.
async fn reconcile(
    ctx: &Ctx,
    client: &mut Client,
    lease: i64,
    own: &mut Own,
    snapshot: &Snapshot,
) -> Result<(), CallError> {
    let wanted = local_records(&ctx.layout, &ctx.me, &ctx.local.now(), snapshot);
    for (key, value) in &wanted {
        if own.get(key).is_some_and(|(v, l)| v == value && *l == lease) {
            continue;
        }
        call(
            "put",
            client.put(
                key.as_str(),
                value.as_str(),
                Some(PutOptions::new().with_lease(lease)),
            ),
        )
        .await?;
        own.insert(key.clone(), (value.clone(), lease));
    }
    let stale: Vec<String> = own
        .keys()
        .filter(|k| !wanted.contains_key(*k))
        .cloned()
        .collect();
    for key in stale {
        call("delete", client.delete(key.as_str(), None)).await?;
        own.remove(&key);
    }
    Ok(())
}

/// The end of the key range that holds every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // all keys
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_connection_closed_at_connect_with_a_client_certificate_gets_the_hint() {
        use super::{CallError, SessionError, closed_at_handshake};
        let failed = |what, kind, text: &str| {
            SessionError::Call(CallError::Failed {
                what,
                source: etcd_client::Error::IoError(std::io::Error::new(kind, text.to_owned())),
            })
        };
        let pipe = failed("connect", std::io::ErrorKind::BrokenPipe, "Broken pipe");
        assert!(closed_at_handshake(&pipe, true).contains("CA of tls.cert_file"));
        assert_eq!(
            closed_at_handshake(&pipe, false),
            "",
            "no client certificate"
        );
        let refused = failed(
            "connect",
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused",
        );
        assert_eq!(closed_at_handshake(&refused, true), "", "nothing listening");
        let later = failed("put", std::io::ErrorKind::BrokenPipe, "Broken pipe");
        assert_eq!(
            closed_at_handshake(&later, true),
            "",
            "not while connecting"
        );
    }

    #[test]
    fn prefix_end_is_the_next_key_range() {
        assert_eq!(super::prefix_end(b"/vxgate/"), b"/vxgate0");
        assert_eq!(super::prefix_end(b"a\xff"), b"b");
        assert_eq!(super::prefix_end(b"\xff"), b"\0");
    }
}
