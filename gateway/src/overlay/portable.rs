//! The portable datapath (`overlay.offload = "off"`, or a kernel without the offloads): one
//! `overlay` thread, one TAP queue per network without vnet headers, one frame per syscall.
//!
//! A frame is read from the TAP after [`vxlan::HEADER_LEN`] bytes of headroom, the header is
//! written there, and the same buffer is sent; on receive the payload slice is written to the
//! TAP. Every loop handles at most [`BATCH`] packets per wake-up and then yields, so a flood
//! cannot starve the other tasks.
//!
//! With WireGuard ([`super::wg`]) the headroom also takes the inner IPv4 and UDP headers: a
//! datagram to a peer's tunnel address is sealed and sent from WireGuard's socket, and what
//! that socket receives is opened and decided as a VXLAN datagram from the peer's tunnel
//! address. Plain VXLAN is then dropped and counted unless `allow_plaintext`.

use super::counters::{Counters, DropReason};
use super::error::Error;
use super::io::{register, register_taps, send, write_tap};
use super::offload::Features;
use super::switch::{FromTap, FromUdp, RunCache, Switch, flow_hash};
use super::tap::{Tap, TapOptions};
use super::types::{OverlaySpec, Underlay};
use super::wg::{Crypto, Opened, Sealed};
use crate::shutdown::Shutdown;
use crate::wire::partial::{self, Partial};
use crate::wire::{offload, vxlan};
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

/// Packets handled per wake-up before yielding.
pub const BATCH: usize = 64;
/// Largest UDP payload, and so the largest frame buffer needed.
const MAX_DATAGRAM: usize = 65_535;
const HEADROOM: usize = super::wg::INNER_HEADERS + vxlan::HEADER_LEN;
/// Where the VXLAN datagram starts in the send buffer (the inner headers' room before it).
const VXLAN_AT: usize = super::wg::INNER_HEADERS;
/// How often WireGuard's timers run (handshake retries, rekeys, keepalives).
const WG_TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// `overlay.offload = "off"`: one TAP queue without vnet headers, one frame per syscall, on
/// one `overlay` thread.
pub(super) fn start(
    cfg: &OverlaySpec,
    underlay: Underlay,
    switch: &Arc<Switch>,
    shutdown: &Shutdown,
    tasks: &mut crate::part::Part<Error>,
) -> Result<(Arc<Features>, Vec<u16>), Error> {
    let mut taps = Vec::new();
    for n in &cfg.networks {
        // a TAP created multi-queue only takes that mode: one queue of it then
        let tap = Tap::open(&n.tap, n.spec.mtu)
            .or_else(|e| match e.raw_os_error() {
                Some(libc::EINVAL) => Tap::open_with(
                    &n.tap,
                    n.spec.mtu,
                    TapOptions {
                        offload: false,
                        multi_queue: true,
                    },
                ),
                _ => Err(e),
            })
            .map_err(|source| Error::OpenTap {
                tap: n.tap.clone(),
                network: n.spec.name.clone(),
                source,
            })?;
        taps.push(tap);
    }
    let Underlay {
        plain, wireguard, ..
    } = underlay;
    let (recv, senders) = match plain {
        Some(p) => (Some(p.recv), p.senders),
        None => (None, Vec::new()),
    };
    let ports: Vec<u16> = senders
        .iter()
        .filter_map(|s| s.local_addr().ok())
        .map(|a| a.port())
        .collect();
    // The datapath runs on its own thread with a single-threaded runtime: a frame's path
    // from one fd to the other never crosses threads (one wake-up, no cross-core hand-off).
    let (switch, shutdown) = (switch.clone(), shutdown.clone());
    crate::worker::spawn("overlay".into(), tasks, move || {
        datapath(taps, recv, senders, wireguard, switch, shutdown)
    })?;
    Ok((Arc::new(Features::portable()), ports))
}

/// Registers the fds with the datapath's runtime and runs the forwarding tasks.
async fn datapath(
    taps: Vec<Tap>,
    recv: Option<std::net::UdpSocket>,
    senders: Vec<std::net::UdpSocket>,
    wireguard: Option<(std::net::UdpSocket, Arc<Crypto>)>,
    switch: Arc<Switch>,
    shutdown: Shutdown,
) -> Result<(), Error> {
    let (registered, recv, senders) = match recv {
        Some(recv) => {
            let (taps, recv, senders) = register(taps, recv, senders)?;
            (taps, Some(recv), senders)
        }
        None => (register_taps(taps)?, None, Vec::new()),
    };
    let senders = Arc::new(senders);
    let wg: Option<Wg> = match wireguard {
        None => None,
        Some((sock, crypto)) => Some(Wg {
            sock: Arc::new(UdpSocket::from_std(sock).map_err(|e| Error::Register {
                what: "WireGuard's socket".into(),
                source: e,
            })?),
            crypto,
        }),
    };
    let mut set = JoinSet::new();
    for (i, tap) in registered.iter().enumerate() {
        let (tap, switch, senders, shutdown, wg) = (
            tap.clone(),
            switch.clone(),
            senders.clone(),
            shutdown.clone(),
            wg.clone(),
        );
        set.spawn(async move { tap_to_udp(i, tap, switch, senders, wg, shutdown).await });
    }
    if let Some(wg) = &wg {
        let (wg, taps, switch, shutdown) = (
            wg.clone(),
            registered.clone(),
            switch.clone(),
            shutdown.clone(),
        );
        set.spawn(async move { wg_to_tap(wg, taps, switch, shutdown).await });
    }
    let plain_refused = wg.filter(|w| !w.crypto.allow_plaintext).map(|w| w.crypto);
    if let Some(recv) = recv {
        set.spawn(
            async move { udp_to_tap(recv, registered, switch, plain_refused, shutdown).await },
        );
    }
    while let Some(done) = set.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(Error::Task(e)),
        }
    }
    Ok(())
}

async fn tap_to_udp(
    net: usize,
    tap: Arc<AsyncFd<Tap>>,
    switch: Arc<Switch>,
    senders: Arc<Vec<UdpSocket>>,
    wg: Option<Wg>,
    mut shutdown: Shutdown,
) -> Result<(), Error> {
    let (vni, counters) = (switch.vni(net), switch.counters(net).clone());
    let mut sealed = vec![0u8; HEADROOM + MAX_DATAGRAM + super::wg::OVERHEAD];
    let mut header = [0u8; vxlan::HEADER_LEN];
    vxlan::emit_header(&mut header, vni);
    let mut buf = vec![0u8; HEADROOM + MAX_DATAGRAM];
    let mut reply = [0u8; 64];
    loop {
        let mut guard = tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            g = tap.readable() => g.map_err(|source| Error::Io {
                what: "TAP poll",
                name: tap.get_ref().name().to_owned(),
                source,
            })?,
        };
        for _ in 0..BATCH {
            let n = match guard.try_io(|t| t.get_ref().read(&mut buf[HEADROOM..])) {
                Err(_would_block) => break,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => {
                    return Err(Error::Io {
                        what: "read from TAP",
                        name: tap.get_ref().name().to_owned(),
                        source: e,
                    });
                }
                Ok(Ok(n)) => n,
            };
            let decision = switch.from_tap(
                net,
                &buf[HEADROOM..HEADROOM + n],
                Instant::now(),
                &mut reply,
            );
            // the flood list as of this decision; an Arc clone, not a copy
            let peers = (decision == FromTap::Flood).then(|| switch.peers());
            let packet = HEADROOM + n;
            if wg.is_some() && matches!(decision, FromTap::Unicast(_) | FromTap::Flood) {
                // a TAP without vnet headers can hand over a checksum the sender's veth left
                // to be finished; a kernel VTEP behind WireGuard delivers it as it is
                partial::complete_partial(&mut buf[HEADROOM..packet]);
            }
            match decision {
                FromTap::Unicast(vtep) => {
                    buf[VXLAN_AT..HEADROOM].copy_from_slice(&header);
                    let sock = pick(&senders, &buf[HEADROOM..packet]);
                    let sport = flow_hash(&buf[HEADROOM..packet]) as u16 | 0xc000;
                    to_vtep(
                        sock,
                        wg.as_ref(),
                        &mut buf[..packet],
                        vtep,
                        sport,
                        &mut sealed,
                        &counters,
                    )
                    .await;
                }
                FromTap::Flood => {
                    buf[VXLAN_AT..HEADROOM].copy_from_slice(&header);
                    let sock = pick(&senders, &buf[HEADROOM..packet]);
                    let sport = flow_hash(&buf[HEADROOM..packet]) as u16 | 0xc000;
                    for p in peers.iter().flat_map(|p| p.iter()) {
                        to_vtep(
                            sock,
                            wg.as_ref(),
                            &mut buf[..packet],
                            *p,
                            sport,
                            &mut sealed,
                            &counters,
                        )
                        .await;
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

/// WireGuard's socket and sessions, shared by the datapath's tasks.
#[derive(Clone)]
struct Wg {
    sock: Arc<UdpSocket>,
    crypto: Arc<Crypto>,
}

/// Sends the VXLAN datagram in `packet[VXLAN_AT..]` (the room before it for the inner
/// headers) to `vtep`: sealed to a WireGuard peer's tunnel address, plain otherwise (plain
/// is dropped and counted with encryption on and `allow_plaintext` off).
async fn to_vtep(
    sock: Option<&UdpSocket>,
    wg: Option<&Wg>,
    packet: &mut [u8],
    vtep: std::net::SocketAddr,
    sport: u16,
    sealed: &mut [u8],
    counters: &Counters,
) {
    let Some(wg) = wg else {
        if let Some(sock) = sock {
            send(sock, &packet[VXLAN_AT..], vtep, counters).await;
        }
        return;
    };
    match wg.crypto.seal(vtep, sport, packet, sealed) {
        Sealed::Send(msg, endpoint) => {
            send(&wg.sock, msg, endpoint, counters).await;
        }
        Sealed::Nothing => {}
        Sealed::NotAPeer if wg.crypto.allow_plaintext && sock.is_some() => {
            if let Some(sock) = sock {
                send(sock, &packet[VXLAN_AT..], vtep, counters).await;
            }
        }
        Sealed::NotAPeer => {
            wg.crypto.counters.plaintext_dropped.fetch_add(1, Relaxed);
        }
    }
}

/// WireGuard's socket: each datagram opened, and a VXLAN datagram in it decided and
/// delivered as one from the plain socket is; handshake answers, and the timers' messages
/// every [`WG_TICK`], go out from the same socket.
async fn wg_to_tap(
    wg: Wg,
    taps: Vec<Arc<AsyncFd<Tap>>>,
    switch: Arc<Switch>,
    mut shutdown: Shutdown,
) -> Result<(), Error> {
    let counters: Vec<Arc<Counters>> = (0..taps.len())
        .map(|i| switch.counters(i).clone())
        .collect();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut out = vec![0u8; MAX_DATAGRAM];
    let mut scratch = vec![0u8; MAX_DATAGRAM];
    let mut timers = tokio::time::interval(WG_TICK);
    timers.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reply = |msg: &[u8], to: std::net::SocketAddr| {
        // a handshake answer that finds the buffer full is retried by the peer's timers
        let _ = wg.sock.try_send_to(msg, to);
    };
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = timers.tick() => {
                wg.crypto.tick(&mut out, &mut |m, to| reply(m, to));
                continue;
            }
            r = wg.sock.readable() => r.map_err(|source| Error::Io {
                what: "UDP poll",
                name: "WireGuard's socket".into(),
                source,
            })?,
        }
        for _ in 0..BATCH {
            let (n, src) = match wg.sock.try_recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!("overlay: WireGuard receive: {e}");
                    continue;
                }
            };
            let Opened::Vxlan { from, datagram } =
                wg.crypto
                    .open(src, &buf[..n], &mut out, &mut |m, to| reply(m, to))
            else {
                continue;
            };
            let decision = switch.from_udp(from, datagram, Instant::now());
            deliver(decision, datagram, &taps, &counters, &mut scratch).await;
        }
        tokio::task::yield_now().await;
    }
    Ok(())
}

/// The send socket of this frame's flow; None without plain sockets (encrypted only).
fn pick<'a>(senders: &'a [UdpSocket], frame: &[u8]) -> Option<&'a UdpSocket> {
    senders.get(flow_hash(frame) as usize % senders.len().max(1))
}

async fn udp_to_tap(
    sock: UdpSocket,
    taps: Vec<Arc<AsyncFd<Tap>>>,
    switch: Arc<Switch>,
    plain_refused: Option<Arc<Crypto>>,
    mut shutdown: Shutdown,
) -> Result<(), Error> {
    let counters: Vec<Arc<Counters>> = (0..taps.len())
        .map(|i| switch.counters(i).clone())
        .collect();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut scratch = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            r = sock.readable() => r.map_err(|source| Error::Io {
                what: "UDP poll",
                name: "the receive socket".into(),
                source,
            })?,
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
            if let Some(c) = &plain_refused {
                // encryption on, plaintext off: nothing unsealed gets in
                c.counters.plaintext_dropped.fetch_add(1, Relaxed);
                continue;
            }
            let mut cache = RunCache::default();
            let decision = switch.from_udp_in_run(src, &buf[..n], Instant::now(), &mut cache);
            if !matches!(decision, FromUdp::Drop(_))
                && let Some(vtep) = cache.vtep()
            {
                switch.peer_counters().rx(vtep, 1, n as u64);
            }
            deliver(decision, &mut buf[..n], &taps, &counters, &mut scratch).await;
        }
        tokio::task::yield_now().await;
    }
    Ok(())
}

/// Performs the switch's decision on a received VXLAN datagram: its frame (or the segments
/// of a TSO frame) written to the network's TAP, counted.
async fn deliver(
    decision: FromUdp,
    datagram: &mut [u8],
    taps: &[Arc<AsyncFd<Tap>>],
    counters: &[Arc<Counters>],
    scratch: &mut [u8],
) {
    let n = datagram.len();
    if let FromUdp::Segment { network, mss } = decision {
        let c = &counters[network];
        let tap = taps[network].get_ref();
        let res =
            offload::segment_each(&datagram[vxlan::HEADER_LEN..n], None, mss, scratch, |seg| {
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
        if partial::complete_partial(&mut datagram[vxlan::HEADER_LEN..n]) == Partial::Completed {
            counters[network].checksum_completed.fetch_add(1, Relaxed);
        }
        let frame = &datagram[vxlan::HEADER_LEN..n];
        match write_tap(&taps[network], frame).await {
            Ok(_) => counters[network].rx(frame.len()),
            Err(e) => {
                counters[network].dropped(DropReason::TapWrite);
                tracing::debug!("overlay: TAP write: {e}");
            }
        }
    }
}
