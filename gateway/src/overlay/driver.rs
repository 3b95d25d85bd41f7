//! The overlay's I/O shell: one TAP per network, one UDP socket on `overlay.listen` for
//! receiving, and a small pool of send sockets whose source ports (49152–65535) are picked by
//! the inner flow's hash (RFC 7348 §5), so the underlay can spread flows.
//!
//! Buffers are allocated once per task. A frame is read from the TAP after
//! [`vxlan::HEADER_LEN`] bytes of headroom, the header is written there, and the same buffer is
//! sent; on receive the payload slice is written to the TAP. Every loop handles at most
//! [`BATCH`] packets per wake-up and then yields, so a flood cannot starve other tasks.

use super::bridge;
use super::fast::{self, Features};
use super::switch::{FromTap, FromUdp, NetworkSpec, Switch, flow_hash};
use super::tap::{Tap, TapOptions};
use super::{Counters, DropReason, fdb};
use crate::config::{Offload, OverlayConfig};
use crate::registry::Registry;
use crate::shutdown::Shutdown;
use crate::wire::checksum::{self, Partial};
use crate::wire::tcp_segment;
use crate::wire::vxlan;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

/// Packets handled per wake-up before yielding.
pub const BATCH: usize = 64;
/// Send sockets, each with its own source port.
const SEND_PORTS: usize = 8;
/// Largest UDP payload, and so the largest frame buffer needed.
const MAX_DATAGRAM: usize = 65_535;
const HEADROOM: usize = vxlan::HEADER_LEN;
const SOCKET_BUFFER: usize = 4 << 20;

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

pub(super) fn lock(m: &Mutex<Switch>) -> std::sync::MutexGuard<'_, Switch> {
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
        Offload::Auto => fast::start(&cfg.networks, cfg.listen, &switch, shutdown, tasks)?,
        Offload::Off => start_portable(cfg, &switch, shutdown, tasks)?,
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

/// `overlay.offload = "off"`: one TAP queue without vnet headers, one frame per syscall, on
/// one `overlay` thread.
fn start_portable(
    cfg: &OverlayConfig,
    switch: &Arc<Mutex<Switch>>,
    shutdown: &Shutdown,
    tasks: &mut JoinSet<Result<(), String>>,
) -> Result<(Arc<Features>, Vec<u16>), String> {
    let mut taps = Vec::new();
    for n in &cfg.networks {
        // a TAP created multi-queue only takes that mode: one queue of it then
        let tap = Tap::open(&n.tap, n.mtu)
            .or_else(|e| match e.raw_os_error() {
                Some(libc::EINVAL) => Tap::open_with(
                    &n.tap,
                    n.mtu,
                    TapOptions {
                        offload: false,
                        multi_queue: true,
                    },
                ),
                _ => Err(e),
            })
            .map_err(|e| {
                format!(
                    "overlay: cannot open TAP {:?} (network {:?}): {e}",
                    n.tap, n.name
                )
            })?;
        taps.push(tap);
    }
    let recv = bind_udp(cfg.listen, false)
        .map_err(|e| format!("overlay: cannot bind {}: {e}", cfg.listen))?;
    let senders = bind_send_pool(cfg.listen)?;
    let ports: Vec<u16> = senders
        .iter()
        .filter_map(|s| s.local_addr().ok())
        .map(|a| a.port())
        .collect();
    // The datapath runs on its own thread with a single-threaded runtime: a frame's path
    // from one fd to the other never crosses threads (one wake-up, no cross-core hand-off).
    let (switch2, shutdown2) = (switch.clone(), shutdown.clone());
    let thread = std::thread::Builder::new()
        .name("overlay".into())
        .spawn(move || -> Result<(), String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("overlay runtime: {e}"))?;
            rt.block_on(datapath(taps, recv, senders, switch2, shutdown2))
        })
        .map_err(|e| format!("overlay: cannot start the datapath thread: {e}"))?;
    tasks.spawn(async move {
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| format!("overlay datapath: {e}"))?
            .map_err(|_| "overlay datapath panicked".to_owned())?
    });
    Ok((Arc::new(Features::portable()), ports))
}

/// Who the peers are: the configured ones plus every node the shared registry knows.
struct Membership {
    peers: Vec<SocketAddr>,
    peer_nodes: HashMap<String, SocketAddr>,
    /// This node's own VTEP, never a peer of itself.
    me: SocketAddr,
}

impl Membership {
    fn apply(&self, switch: &mut Switch, snapshot: &crate::registry::Snapshot) {
        let mut node_vteps = self.peer_nodes.clone();
        let mut peers = self.peers.clone();
        for (node, vtep) in snapshot.nodes() {
            if let Some(v) = *vtep
                && v != self.me
            {
                node_vteps.insert(node.clone(), v);
                peers.push(v);
            }
        }
        if switch.set_peers(peers) {
            tracing::info!(peers = ?switch.peers(), "overlay peers changed");
        }
        switch.sync_registry(snapshot, &node_vteps);
    }
}

/// Registers the fds with the datapath's runtime and runs the forwarding tasks.
async fn datapath(
    taps: Vec<Tap>,
    recv: std::net::UdpSocket,
    senders: Vec<std::net::UdpSocket>,
    switch: Arc<Mutex<Switch>>,
    shutdown: Shutdown,
) -> Result<(), String> {
    let (registered, recv, senders) = register(taps, recv, senders)?;
    let senders = Arc::new(senders);
    let mut set = JoinSet::new();
    for (i, tap) in registered.iter().enumerate() {
        let (tap, switch, senders, shutdown) = (
            tap.clone(),
            switch.clone(),
            senders.clone(),
            shutdown.clone(),
        );
        set.spawn(async move { tap_to_udp(i, tap, switch, senders, shutdown).await });
    }
    set.spawn(async move { udp_to_tap(recv, registered, switch, shutdown).await });
    while let Some(done) = set.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(format!("overlay task: {e}")),
        }
    }
    Ok(())
}

/// Registers the TAPs and sockets with the calling thread's runtime.
#[allow(clippy::type_complexity)]
pub(super) fn register(
    taps: Vec<Tap>,
    recv: std::net::UdpSocket,
    senders: Vec<std::net::UdpSocket>,
) -> Result<(Vec<Arc<AsyncFd<Tap>>>, UdpSocket, Vec<UdpSocket>), String> {
    let mut registered = Vec::with_capacity(taps.len());
    for tap in taps {
        let name = tap.name().to_owned();
        // SAFETY: the Tap owns its fd for its whole life and always returns the same one.
        let tap = unsafe { AsyncFd::register(tap) }.map_err(|e| {
            format!(
                "overlay: cannot register TAP {name:?}: {}",
                e.into_parts().1
            )
        })?;
        registered.push(Arc::new(tap));
    }
    let recv = UdpSocket::from_std(recv).map_err(|e| format!("overlay: {e}"))?;
    let senders: Vec<UdpSocket> = senders
        .into_iter()
        .map(UdpSocket::from_std)
        .collect::<io::Result<_>>()
        .map_err(|e| format!("overlay: {e}"))?;
    Ok((registered, recv, senders))
}

pub(super) fn bind_udp(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    // Root may exceed net.core.[rw]mem_max; otherwise take what the limit allows.
    if force_buffer(&s, libc::SO_RCVBUFFORCE).is_err() {
        let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    }
    if force_buffer(&s, libc::SO_SNDBUFFORCE).is_err() {
        let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

fn force_buffer(s: &Socket, option: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let size = SOCKET_BUFFER as libc::c_int;
    // SAFETY: setsockopt(2) with a pointer to a c_int and its size, on an open socket.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            std::ptr::addr_of!(size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Binds [`SEND_PORTS`] sockets on the listen address at free ports in 49152–65535, starting
/// at a place derived from the address so hosts differ.
pub(super) fn bind_send_pool(listen: SocketAddr) -> Result<Vec<std::net::UdpSocket>, String> {
    const LOW: u32 = 49152;
    const SPAN: u32 = 65536 - LOW;
    let seed = listen
        .ip()
        .to_string()
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let mut out = Vec::with_capacity(SEND_PORTS);
    let mut tried = 0;
    while out.len() < SEND_PORTS && tried < SPAN {
        let port = LOW + (seed.wrapping_add(tried.wrapping_mul(997))) % SPAN;
        tried += 1;
        let addr = SocketAddr::new(listen.ip(), port as u16);
        match bind_udp(addr, false) {
            Ok(s) => out.push(s),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(format!("overlay: cannot bind a send socket on {addr}: {e}")),
        }
    }
    if out.is_empty() {
        return Err(format!(
            "overlay: no free source port in 49152-65535 on {}",
            listen.ip()
        ));
    }
    Ok(out)
}

/// Sends `data` to `dst`, waiting while the socket buffer is full. Returns false (counted)
/// when the kernel refuses it.
pub(super) async fn send(
    sock: &UdpSocket,
    data: &[u8],
    dst: SocketAddr,
    counters: &Counters,
) -> bool {
    loop {
        match sock.try_send_to(data, dst) {
            Ok(_) => {
                counters.tx(data.len());
                return true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if sock.writable().await.is_err() {
                    counters.dropped(DropReason::Send);
                    return false;
                }
            }
            Err(e) => {
                counters.dropped(DropReason::Send);
                tracing::debug!(%dst, "overlay send failed: {e}");
                return false;
            }
        }
    }
}

async fn tap_to_udp(
    net: usize,
    tap: Arc<AsyncFd<Tap>>,
    switch: Arc<Mutex<Switch>>,
    senders: Arc<Vec<UdpSocket>>,
    mut shutdown: Shutdown,
) -> Result<(), String> {
    let (vni, counters) = {
        let s = lock(&switch);
        (s.vni(net), s.counters(net).clone())
    };
    let mut header = [0u8; vxlan::HEADER_LEN];
    vxlan::emit_header(&mut header, vni);
    let mut buf = vec![0u8; HEADROOM + MAX_DATAGRAM];
    let mut reply = [0u8; 64];
    loop {
        let mut guard = tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            g = tap.readable() => g.map_err(|e| format!("overlay: TAP poll: {e}"))?,
        };
        for _ in 0..BATCH {
            let n = match guard.try_io(|t| t.get_ref().read(&mut buf[HEADROOM..])) {
                Err(_would_block) => break,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => {
                    return Err(format!("overlay: TAP {} read: {e}", tap.get_ref().name()));
                }
                Ok(Ok(n)) => n,
            };
            let (decision, peers) = {
                let mut s = lock(&switch);
                let d = s.from_tap(
                    net,
                    &buf[HEADROOM..HEADROOM + n],
                    Instant::now(),
                    &mut reply,
                );
                // the flood list as of this decision; an Arc clone, not a copy
                let peers = (d == FromTap::Flood).then(|| s.peers().clone());
                (d, peers)
            };
            let packet = HEADROOM + n;
            match decision {
                FromTap::Unicast(vtep) => {
                    buf[..HEADROOM].copy_from_slice(&header);
                    let sock = pick(&senders, &buf[HEADROOM..packet]);
                    send(sock, &buf[..packet], vtep, &counters).await;
                }
                FromTap::Flood => {
                    buf[..HEADROOM].copy_from_slice(&header);
                    let sock = pick(&senders, &buf[HEADROOM..packet]);
                    for p in peers.iter().flat_map(|p| p.iter()) {
                        send(sock, &buf[..packet], *p, &counters).await;
                    }
                }
                FromTap::Reply(len) => {
                    if let Err(e) = write_tap(&tap, &reply[..len]).await {
                        counters.dropped(DropReason::TapWrite);
                        tracing::debug!("overlay: ARP reply to TAP: {e}");
                    }
                }
                FromTap::Drop(_) => {}
            }
        }
        tokio::task::yield_now().await;
    }
}

fn pick<'a>(senders: &'a [UdpSocket], frame: &[u8]) -> &'a UdpSocket {
    &senders[flow_hash(frame) as usize % senders.len()]
}

pub(super) async fn write_tap(tap: &AsyncFd<Tap>, frame: &[u8]) -> io::Result<usize> {
    tap.async_io(Interest::WRITABLE, |t| t.write(frame)).await
}

async fn udp_to_tap(
    sock: UdpSocket,
    taps: Vec<Arc<AsyncFd<Tap>>>,
    switch: Arc<Mutex<Switch>>,
    mut shutdown: Shutdown,
) -> Result<(), String> {
    let counters: Vec<Arc<Counters>> = {
        let s = lock(&switch);
        (0..taps.len()).map(|i| s.counters(i).clone()).collect()
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut scratch = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            r = sock.readable() => r.map_err(|e| format!("overlay: UDP poll: {e}"))?,
        }
        for _ in 0..BATCH {
            let (n, src) = match sock.try_recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ICMP errors for earlier sends surface here on some kernels; not fatal
                Err(e) => {
                    tracing::debug!("overlay: UDP receive: {e}");
                    continue;
                }
            };
            let decision = lock(&switch).from_udp(src, &buf[..n], Instant::now());
            if let FromUdp::Segment { network, mss } = decision {
                let c = &counters[network];
                let tap = taps[network].get_ref();
                let res =
                    tcp_segment::segment(&buf[vxlan::HEADER_LEN..n], mss, &mut scratch, |seg| {
                        // A TAP write does not block: the kernel queues or drops, it never waits.
                        match tap.write(seg) {
                            Ok(_) => c.rx(seg.len()),
                            Err(_) => c.dropped(DropReason::TapWrite),
                        }
                    });
                match res {
                    Ok(_) => c.segmented.fetch_add(1, Relaxed),
                    Err(_) => {
                        c.dropped(DropReason::Oversize);
                        0
                    }
                };
            }
            if let FromUdp::Deliver { network } = decision {
                if checksum::complete_partial(&mut buf[vxlan::HEADER_LEN..n]) == Partial::Completed
                {
                    counters[network].checksum_completed.fetch_add(1, Relaxed);
                }
                let frame = &buf[vxlan::HEADER_LEN..n];
                match write_tap(&taps[network], frame).await {
                    Ok(_) => counters[network].rx(frame.len()),
                    Err(e) => {
                        counters[network].dropped(DropReason::TapWrite);
                        tracing::debug!("overlay: TAP write: {e}");
                    }
                }
            }
        }
        tokio::task::yield_now().await;
    }
    Ok(())
}
