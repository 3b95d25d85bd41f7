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
mod error;
pub mod fdb;
mod io;
mod membership;
mod metrics;
pub mod offload;
pub mod portable;
pub mod sources;
pub mod switch;
pub mod tap;
mod types;
pub mod udp;
pub mod wg;

pub use counters::{Counters, DropReason};
pub use error::Error;
pub use offload::Features;
pub use switch::{FromTap, FromUdp, NetworkSpec, Switch};
pub use types::{
    EncryptionSpec, OffloadsOff, Overlay, OverlaySpec, PlainSockets, TapNetwork, Underlay,
};

use crate::part::Part;
use crate::registry::Registry;
use crate::shutdown::Shutdown;
use membership::Membership;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Binds the underlay sockets for `spec` (errors stop startup). With offloads on a kernel
/// that has multi-queue TAPs, the receive socket allows one more per queue.
pub fn bind(spec: &OverlaySpec) -> Result<Underlay, Error> {
    let reuse_port = spec.offload && offload::wanted_queues(&spec.offloads_off) > 1;
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

/// Opens the TAPs (errors here stop startup) and starts the datapath on the `underlay`
/// sockets ([`bind`]), the registry follower and the bridge keeper: the handle, and the
/// part whose `run` is the overlay's life.
pub async fn start(
    cfg: &OverlaySpec,
    underlay: Underlay,
    node: &str,
    registry: &Arc<Registry>,
    mut gateways: tokio::sync::watch::Receiver<Vec<std::net::IpAddr>>,
    shutdown: &Shutdown,
) -> Result<(Overlay, Part<Error>), Error> {
    let mut part = Part::new();
    let tasks = &mut part;
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
        source_check: cfg.source_check,
        isolated_networks: cfg.isolated_networks,
        gateways: gateways.borrow_and_update().clone(),
        peer_gateways: cfg.peer_gateways.clone(),
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
        offload::start(
            &cfg.networks,
            &cfg.offloads_off,
            underlay,
            &switch,
            shutdown,
            tasks,
        )?
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
                    // the source check's own addresses (Docker may address the bridge late)
                    Ok(()) = gateways.changed() => {
                        membership.gateways = gateways.borrow_and_update().clone();
                        membership.apply(&switch, &registry_snapshot(&rx));
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
    let overlay = Overlay {
        switch,
        networks,
        features,
        wireguard,
        wireguard_peers,
    };
    Ok((overlay, part))
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
