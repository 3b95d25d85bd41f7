//! The VXLAN overlay (RFC 7348): containers on different hosts share one L2 network.
//!
//! ```text
//!  bridge br0 ──► TAP ──read──► [headroom | frame] ──switch.from_tap──► VXLAN header written in
//!                                                                       the headroom ──► UDP send
//!  UDP :4789 ──recv──► [VXLAN | frame] ──switch.from_udp──► frame slice ──write──► TAP ──► br0
//! ```
//!
//! Protocol logic, no I/O, time passed in: `fdb` (MAC → VTEP), `switch` (every forwarding
//! decision), `batch` (which datagrams leave in one GSO send, which received frames merge
//! into one TAP write). The I/O shell: `io` (sockets, registration, sends and TAP writes),
//! `tap`, `udp` (the GSO/GRO syscalls), and the two datapaths, `offload` (TAP offloads, GSO,
//! GRO, one thread per TAP queue) and `portable` (one frame per syscall). This file starts
//! them and follows the registry (`membership`); `bridge` keeps each TAP in its bridge.

pub mod batch;
pub mod bridge;
pub mod counters;
pub mod fdb;
mod io;
mod membership;
mod metrics;
pub mod offload;
pub mod portable;
pub mod switch;
pub mod tap;
pub mod udp;
pub mod wg;

pub use counters::{Counters, DropReason};
pub use offload::Features;
pub use switch::{FromTap, FromUdp, NetworkSpec, Switch};

use crate::registry::Registry;
use crate::shutdown::Shutdown;
use membership::Membership;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the overlay needs to start: the underlay socket, the peers, and each network with
/// its TAP.
#[derive(Debug, Clone)]
pub struct OverlaySpec {
    /// The plain VXLAN socket; None only with encryption and no plain peers.
    pub listen: Option<SocketAddr>,
    /// The VTEP other nodes reach this one at, when it is not `listen`.
    pub advertise: Option<SocketAddr>,
    /// Remote VTEPs known without the shared registry.
    pub peers: Vec<SocketAddr>,
    /// Which node sits behind which of those VTEPs (for static FDB entries).
    pub peer_nodes: BTreeMap<String, SocketAddr>,
    pub fdb_aging: Duration,
    /// Use the kernel's TAP and UDP offloads where it has them.
    pub offload: bool,
    pub networks: Vec<TapNetwork>,
    /// WireGuard between hosts: VXLAN to `peers` that are tunnel addresses goes sealed.
    pub encryption: Option<EncryptionSpec>,
}

/// `[overlay.encryption]`, as the overlay takes it (the key is read or made at bind).
#[derive(Debug, Clone)]
pub struct EncryptionSpec {
    pub listen: SocketAddr,
    pub address: std::net::Ipv4Addr,
    pub key_file: std::path::PathBuf,
    pub allow_plaintext: bool,
    pub peers: Vec<wg::PeerSpec>,
}

/// One overlay network and its TAP.
#[derive(Debug, Clone)]
pub struct TapNetwork {
    pub spec: NetworkSpec,
    /// The TAP device (created if missing).
    pub tap: String,
    /// A Linux bridge to keep the TAP in, when it exists.
    pub bridge: Option<String>,
}

/// Why the overlay could not start, or why its datapath stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("overlay: cannot open TAP {tap:?} (network {network:?}): {source}")]
    OpenTap {
        tap: String,
        network: String,
        source: std::io::Error,
    },
    #[error("overlay: cannot open TAP {tap:?} queue {queue} (network {network:?}): {source}")]
    OpenQueue {
        tap: String,
        queue: usize,
        network: String,
        source: std::io::Error,
    },
    #[error("overlay: cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("overlay: cannot bind a send socket on {addr}: {source}")]
    BindSend {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("overlay: no free source port in 49152-65535 on {ip}")]
    NoSourcePort { ip: std::net::IpAddr },
    #[error("overlay: cannot register {what} with the datapath's runtime: {source}")]
    Register {
        what: String,
        source: std::io::Error,
    },
    #[error("overlay: {what} {name}: {source}")]
    Io {
        what: &'static str,
        name: String,
        source: std::io::Error,
    },
    #[error("overlay task: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("overlay: WireGuard key {path}: {source}")]
    Key {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Worker(#[from] crate::worker::WorkerError),
    #[error("overlay: the offload datapath needs overlay.listen")]
    NoListen,
}

/// The underlay sockets, bound before the overlay starts: the receive socket on
/// `overlay.listen` and the send sockets beside it (source ports 49152–65535).
pub struct Underlay {
    /// Plain VXLAN's sockets; None without `overlay.listen` (encrypted only).
    pub plain: Option<PlainSockets>,
    /// `recv` has `SO_REUSEPORT`, so further TAP queues can each bind a receive socket.
    pub reuse_port: bool,
    /// With `[overlay.encryption]`: WireGuard's socket and the sessions.
    pub wireguard: Option<(std::net::UdpSocket, Arc<wg::Crypto>)>,
}

/// Plain VXLAN's receive socket and the send sockets beside it.
pub struct PlainSockets {
    /// The address `recv` is bound at (the actual port, when `listen` asked for port 0).
    pub listen: SocketAddr,
    pub recv: std::net::UdpSocket,
    pub senders: Vec<std::net::UdpSocket>,
}

impl PlainSockets {
    /// Binds the receive socket at `listen` and the send pool beside it.
    pub fn bind(listen: SocketAddr, reuse_port: bool) -> Result<PlainSockets, Error> {
        let recv = io::bind_udp(listen, reuse_port).map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
        let listen = recv.local_addr().unwrap_or(listen);
        let senders = io::bind_send_pool(listen)?;
        Ok(PlainSockets {
            listen,
            recv,
            senders,
        })
    }
}

/// Binds the underlay sockets for `spec` (errors stop startup). With offloads on a kernel
/// that has multi-queue TAPs, the receive socket allows one more per queue.
pub fn bind(spec: &OverlaySpec) -> Result<Underlay, Error> {
    let reuse_port = spec.offload && offload::wanted_queues() > 1;
    let plain = spec
        .listen
        .map(|l| PlainSockets::bind(l, reuse_port))
        .transpose()?;
    let wireguard = match &spec.encryption {
        None => None,
        Some(e) => {
            let private_key = wg::load_or_create_key(&e.key_file).map_err(|source| Error::Key {
                path: e.key_file.clone(),
                source,
            })?;
            // more queues each bind WireGuard's port too (offload datapath)
            let sock = io::bind_udp(e.listen, reuse_port).map_err(|source| Error::Bind {
                addr: e.listen,
                source,
            })?;
            let crypto = wg::Crypto::new(&wg::WgSpec {
                listen: sock.local_addr().unwrap_or(e.listen),
                address: e.address,
                private_key,
                allow_plaintext: e.allow_plaintext,
                peers: e.peers.clone(),
            });
            Some((sock, Arc::new(crypto)))
        }
    };
    Ok(Underlay {
        plain,
        reuse_port,
        wireguard,
    })
}

/// What the rest of vxgate can see of a running overlay.
#[derive(Clone)]
pub struct Overlay {
    pub switch: Arc<Switch>,
    pub networks: Vec<NetworkSpec>,
    /// The datapath in use and its offloads.
    pub features: Arc<Features>,
    /// WireGuard's sessions, with `[overlay.encryption]`.
    pub wireguard: Option<Arc<wg::Crypto>>,
    /// The configured WireGuard peers, changed by a reload.
    pub wireguard_peers: Option<tokio::sync::watch::Sender<Vec<wg::PeerSpec>>>,
}

impl Overlay {
    /// (network name, counters) for each network, then ("underlay", drops of no network).
    pub fn counters(&self) -> Vec<(String, Arc<Counters>)> {
        let s = &self.switch;
        let mut out: Vec<_> = self
            .networks
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), s.counters(i).clone()))
            .collect();
        out.push(("underlay".into(), s.underlay_counters().clone()));
        out
    }
}

/// Opens the TAPs (errors here stop startup) and starts the datapath on the `underlay`
/// sockets ([`bind`]), the registry follower and the bridge keeper.
pub async fn start(
    cfg: &OverlaySpec,
    underlay: Underlay,
    node: &str,
    registry: &Arc<Registry>,
    shutdown: &Shutdown,
    tasks: &mut crate::Tasks,
) -> Result<Overlay, Error> {
    let networks: Vec<NetworkSpec> = cfg.networks.iter().map(|n| n.spec.clone()).collect();
    let switch = Arc::new(Switch::new(
        node,
        &cfg.peers,
        &networks,
        fdb::DEFAULT_CAPACITY,
        cfg.fdb_aging,
    ));
    let wireguard = underlay.wireguard.as_ref().map(|(_, c)| c.clone());
    let mut membership = Membership {
        peers: cfg.peers.clone(),
        peer_nodes: cfg.peer_nodes.clone().into_iter().collect(),
        me: cfg.advertise.or(cfg.listen),
        wireguard: wireguard
            .clone()
            .zip(cfg.encryption.as_ref().map(|e| e.peers.clone())),
        last: cfg
            .encryption
            .as_ref()
            .map(|e| e.peers.clone())
            .unwrap_or_default(),
    };
    membership.apply(&switch, &registry.snapshot());
    let (wireguard_peers, mut configured) = match &membership.wireguard {
        Some((_, peers)) => {
            let (tx, rx) = tokio::sync::watch::channel(peers.clone());
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    if let Some(c) = &wireguard {
        tracing::info!(public_key = %c.public_key(), "overlay: WireGuard on");
    }
    let (features, ports) = if cfg.offload {
        offload::start(&cfg.networks, underlay, &switch, shutdown, tasks)?
    } else {
        portable::start(cfg, underlay, &switch, shutdown, tasks)?
    };
    bridge::start(
        cfg.networks
            .iter()
            .filter_map(|n| Some((n.tap.clone(), n.bridge.clone()?)))
            .collect(),
        shutdown,
        tasks,
    );
    tracing::info!(
        listen = ?cfg.listen,
        peers = ?switch.peers(),
        source_ports = ?ports,
        networks = ?cfg.networks.iter().map(|n| format!("{}:vni={}:tap={}", n.spec.name, n.spec.vni, n.tap)).collect::<Vec<_>>(),
        "overlay up (datapath: {})",
        features.describe()
    );
    {
        let (switch, mut shutdown) = (switch.clone(), shutdown.clone());
        let names: Vec<String> = networks.iter().map(|n| n.name.clone()).collect();
        let mut rx = registry.subscribe();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = shutdown.wait() => {
                        log_counters(&switch, &names);
                        return Ok(());
                    }
                    changed = rx.changed() => {
                        if changed.is_err() { return Ok(()); }
                        let snap = rx.borrow_and_update().clone();
                        membership.apply(&switch, &snap);
                    }
                    Some(peers) = configured_changed(&mut configured) => {
                        if let Some((_, configured)) = &mut membership.wireguard {
                            *configured = peers;
                        }
                        membership.apply(&switch, &registry_snapshot(&rx));
                    }
                    _ = tick.tick() => switch.tick(Instant::now()),
                }
            }
        });
    }
    Ok(Overlay {
        switch,
        networks,
        features,
        wireguard,
        wireguard_peers,
    })
}

/// The configured WireGuard peers when a reload changed them; never without encryption.
async fn configured_changed(
    rx: &mut Option<tokio::sync::watch::Receiver<Vec<wg::PeerSpec>>>,
) -> Option<Vec<wg::PeerSpec>> {
    if let Some(r) = rx {
        if r.changed().await.is_ok() {
            return Some(r.borrow_and_update().clone());
        }
        *rx = None;
    }
    std::future::pending().await
}

fn registry_snapshot(
    rx: &tokio::sync::watch::Receiver<Arc<crate::registry::Snapshot>>,
) -> Arc<crate::registry::Snapshot> {
    rx.borrow().clone()
}

fn log_counters(s: &Switch, names: &[String]) {
    for (i, name) in names.iter().enumerate() {
        tracing::info!(network = %name, "overlay counters: {}", s.counters(i).summary());
    }
    tracing::info!(
        "overlay underlay counters: {}",
        s.underlay_counters().summary()
    );
}
