//! The portable datapath (`overlay.offload = "off"`, or a kernel without the offloads): one
//! `overlay` thread, one TAP queue per network without vnet headers, one frame per syscall.
//!
//! A frame is read from the TAP after [`vxlan::HEADER_LEN`] bytes of headroom, the header is
//! written there, and the same buffer is sent; on receive the payload slice is written to the
//! TAP. Every loop handles at most [`BATCH`] packets per wake-up and then yields, so a flood
//! cannot starve the other tasks.

use super::io::{register, send, write_tap};
use super::offload::Features;
use super::switch::{FromTap, FromUdp, Switch, flow_hash};
use super::tap::{Tap, TapOptions};
use super::{Counters, DropReason, Error};
use super::{OverlaySpec, Underlay};
use crate::shutdown::Shutdown;
use crate::wire::checksum::{self, Partial};
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
const HEADROOM: usize = vxlan::HEADER_LEN;

/// `overlay.offload = "off"`: one TAP queue without vnet headers, one frame per syscall, on
/// one `overlay` thread.
pub(super) fn start(
    cfg: &OverlaySpec,
    underlay: Underlay,
    switch: &Arc<Switch>,
    shutdown: &Shutdown,
    tasks: &mut crate::Tasks,
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
    let Underlay { recv, senders, .. } = underlay;
    let ports: Vec<u16> = senders
        .iter()
        .filter_map(|s| s.local_addr().ok())
        .map(|a| a.port())
        .collect();
    // The datapath runs on its own thread with a single-threaded runtime: a frame's path
    // from one fd to the other never crosses threads (one wake-up, no cross-core hand-off).
    let (switch, shutdown) = (switch.clone(), shutdown.clone());
    crate::worker::spawn("overlay".into(), tasks, move || {
        datapath(taps, recv, senders, switch, shutdown)
    })?;
    Ok((Arc::new(Features::portable()), ports))
}

/// Registers the fds with the datapath's runtime and runs the forwarding tasks.
async fn datapath(
    taps: Vec<Tap>,
    recv: std::net::UdpSocket,
    senders: Vec<std::net::UdpSocket>,
    switch: Arc<Switch>,
    shutdown: Shutdown,
) -> Result<(), Error> {
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
    mut shutdown: Shutdown,
) -> Result<(), Error> {
    let (vni, counters) = (switch.vni(net), switch.counters(net).clone());
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

async fn udp_to_tap(
    sock: UdpSocket,
    taps: Vec<Arc<AsyncFd<Tap>>>,
    switch: Arc<Switch>,
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
            let decision = switch.from_udp(src, &buf[..n], Instant::now());
            if let FromUdp::Segment { network, mss } = decision {
                let c = &counters[network];
                let tap = taps[network].get_ref();
                let res = offload::segment_each(
                    &buf[vxlan::HEADER_LEN..n],
                    None,
                    mss,
                    &mut scratch,
                    |seg| {
                        // A TAP write does not block: the kernel queues or drops, it never waits.
                        match tap.write(seg) {
                            Ok(_) => c.rx(seg.len()),
                            Err(_) => c.dropped(DropReason::TapWrite),
                        }
                    },
                );
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
