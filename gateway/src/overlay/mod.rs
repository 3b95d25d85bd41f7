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
pub mod offload;
pub mod portable;
pub mod switch;
pub mod tap;
pub mod udp;

pub use counters::{Counters, DropReason};
pub use offload::Features;
pub use switch::{FromTap, FromUdp, NetworkSpec, Switch};

use crate::config::{Offload, OverlayConfig};
use crate::registry::Registry;
use crate::shutdown::Shutdown;
use membership::Membership;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// What the rest of vxgate can see of a running overlay.
#[derive(Clone)]
pub struct Overlay {
    pub switch: Arc<Mutex<Switch>>,
    pub networks: Vec<NetworkSpec>,
    /// The datapath in use and its offloads.
    pub features: Arc<Features>,
}

impl Overlay {
    /// (network name, counters) for each network, then ("underlay", drops of no network).
    pub fn counters(&self) -> Vec<(String, Arc<Counters>)> {
        let s = lock(&self.switch);
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

pub(crate) fn lock(m: &Mutex<Switch>) -> std::sync::MutexGuard<'_, Switch> {
    // A panic elsewhere cannot leave the switch half-updated in a way that matters more
    // than stopping forwarding would.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Opens the TAPs and sockets (errors here stop startup), then spawns the forwarding tasks.
pub async fn start(
    cfg: &OverlayConfig,
    node: &str,
    registry: &Arc<Registry>,
    shutdown: &Shutdown,
    tasks: &mut JoinSet<Result<(), String>>,
) -> Result<Overlay, String> {
    let networks: Vec<NetworkSpec> = cfg
        .networks
        .iter()
        .map(|n| NetworkSpec {
            name: n.name.clone(),
            vni: n.vni,
            mtu: n.mtu,
        })
        .collect();
    let switch = Arc::new(Mutex::new(Switch::new(
        node,
        &cfg.peers,
        &networks,
        fdb::DEFAULT_CAPACITY,
        cfg.fdb_aging,
    )));
    let membership = Membership {
        peers: cfg.peers.clone(),
        peer_nodes: cfg.peer_nodes.clone().into_iter().collect(),
        me: cfg.advertise.unwrap_or(cfg.listen),
    };
    membership.apply(&mut lock(&switch), &registry.snapshot());
    let (features, ports) = match cfg.offload {
        Offload::Auto => offload::start(&cfg.networks, cfg.listen, &switch, shutdown, tasks)?,
        Offload::Off => portable::start(cfg, &switch, shutdown, tasks)?,
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
        listen = %cfg.listen,
        peers = ?lock(&switch).peers(),
        source_ports = ?ports,
        networks = ?cfg.networks.iter().map(|n| format!("{}:vni={}:tap={}", n.name, n.vni, n.tap)).collect::<Vec<_>>(),
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
                        membership.apply(&mut lock(&switch), &snap);
                    }
                    _ = tick.tick() => lock(&switch).tick(Instant::now()),
                }
            }
        });
    }
    Ok(Overlay {
        switch,
        networks,
        features,
    })
}

fn log_counters(switch: &Mutex<Switch>, names: &[String]) {
    let s = lock(switch);
    for (i, name) in names.iter().enumerate() {
        tracing::info!(network = %name, "overlay counters: {}", s.counters(i).summary());
    }
    tracing::info!(
        "overlay underlay counters: {}",
        s.underlay_counters().summary()
    );
}
