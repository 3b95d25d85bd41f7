//! The offload datapath (`overlay.offload = "auto"`): what the kernel and the devices accept
//! is detected at start, and each feature falls back on its own.
//!
//! - **TAP offloads.** The TAP is opened with `IFF_VNET_HDR` and `TUNSETOFFLOAD` (checksum,
//!   TSO4, TSO6), so the bridge hands over TCP super-frames of up to 64 KiB with the checksum
//!   left to the "device". They are cut in software ([`offload::segment`]) into MTU-sized
//!   frames, each behind its VXLAN header, back to back in one buffer.
//! - **UDP GSO.** Datagrams to one VTEP from one source port and of one size (the segments
//!   of a super-frame, or a run of equal-sized frames read from the TAP) go out in one
//!   `sendmsg` with `UDP_SEGMENT`. A kernel or device that refuses (EIO: the underlay has no
//!   checksum offload) turns GSO off at run time, logged and visible in the metrics.
//! - **UDP GRO.** One `recvmsg` returns up to 64 datagrams of one flow. Consecutive
//!   in-order TCP segments of one inner flow, each verified, are merged into one frame
//!   written to the TAP with a GSO vnet header: the kernel takes it as one packet, as its
//!   own GRO would have made it. Other frames are written one by one.
//! - **Multi-queue.** With `IFF_MULTI_QUEUE`, one queue and one worker thread per core (up
//!   to 4), each with its own receive socket (`SO_REUSEPORT`) and send sockets. The kernel
//!   keeps a flow on one TAP queue and one receive socket, so a flow stays on one worker.
//!
//! Buffers are allocated once per worker; the TAP is read straight into the send buffer
//! behind room for the VXLAN header, and merged frames are written from the receive buffer
//! with `writev`, so the only copies are the segmentation itself.

use super::batch::{self, Delivery, FRAME_MAX, GRO_MAX, Merged, Merger, Run, RunJoiner};
use super::io::{bind_send_pool, bind_udp, register, send, write_tap};
use super::switch::{FromTap, FromUdp, Switch, flow_hash};
use super::tap::{Tap, TapOptions};
use super::udp;
use super::{Counters, DropReason, lock};
use crate::config::NetworkConfig;
use crate::shutdown::Shutdown;
use crate::wire::checksum::{self, Partial};
use crate::wire::offload::{self, F_NEEDS_CSUM, GSO_ECN, GSO_NONE, VNET_HDR_LEN, VnetHdr};
use crate::wire::{tcp_segment, vxlan};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

/// Frames handled per wake-up before yielding.
const BATCH: usize = 64;
/// Receive buffer for one GRO read.
const GRO_BUF: usize = FRAME_MAX + 1;
/// Without GRO: datagrams per recvmmsg, each in a slot that fits the largest datagram.
const SLOTS: usize = 16;
const SLOT: usize = FRAME_MAX + 1;
/// Worker threads at most (one TAP queue each).
const MAX_QUEUES: usize = 4;

/// What the running datapath uses. Shown in the start log, the admin API and the metrics.
#[derive(Debug)]
pub struct Features {
    /// TAP vnet headers with checksum and TSO offloads.
    pub tap_offload: bool,
    /// The TAP takes UDP segmentation (USO) frames from us (Linux ≥ 6.2), so received UDP
    /// datagrams of one flow are merged like TCP segments.
    pub tap_uso: bool,
    /// TAP queues, one worker each.
    pub queues: usize,
    /// UDP GSO; cleared at run time if the kernel refuses it.
    pub udp_gso: AtomicBool,
    /// UDP GRO on the receive sockets.
    pub udp_gro: bool,
}

impl Features {
    /// The datapath without offloads (`overlay.offload = "off"`).
    pub fn portable() -> Features {
        Features {
            tap_offload: false,
            tap_uso: false,
            queues: 1,
            udp_gso: AtomicBool::new(false),
            udp_gro: false,
        }
    }

    /// `"offload"` when any offload is in use, else `"portable"`.
    pub fn mode(&self) -> &'static str {
        if self.list().iter().any(|(_, on)| *on) {
            "offload"
        } else {
            "portable"
        }
    }

    /// Each feature and whether it is on.
    pub fn list(&self) -> [(&'static str, bool); 5] {
        [
            ("tap_tso", self.tap_offload),
            ("tap_uso", self.tap_uso),
            ("udp_gso", self.udp_gso.load(Relaxed)),
            ("udp_gro", self.udp_gro),
            ("multi_queue", self.queues > 1),
        ]
    }

    /// One line for logs: `offload (tap_tso udp_gso udp_gro, 2 queues)`.
    pub fn describe(&self) -> String {
        let on: Vec<&str> = self
            .list()
            .iter()
            .filter(|(n, on)| *on && *n != "multi_queue")
            .map(|(n, _)| *n)
            .collect();
        format!(
            "{} ({}, {} queue{})",
            self.mode(),
            if on.is_empty() {
                "no offloads".to_owned()
            } else {
                on.join(" ")
            },
            self.queues,
            if self.queues == 1 { "" } else { "s" }
        )
    }
}

/// The fds of one worker: a queue of every network's TAP and a receive socket.
struct Worker {
    taps: Vec<Tap>,
    recv: std::net::UdpSocket,
    senders: Vec<std::net::UdpSocket>,
}

/// Features named in `VXGATE_OFFLOAD_DISABLE` (comma-separated: tap_tso, tap_uso, udp_gso,
/// udp_gro, multi_queue) are not used even where the kernel has them: for troubleshooting
/// and for testing each fallback.
fn disabled(feature: &str) -> bool {
    std::env::var("VXGATE_OFFLOAD_DISABLE").is_ok_and(|v| v.split(',').any(|f| f.trim() == feature))
}

/// Opens every network's TAP with the offloads and queues the kernel accepts, and the
/// sockets. Returns the features in use and one set of fds per worker.
fn open(networks: &[NetworkConfig], listen: SocketAddr) -> Result<(Features, Vec<Worker>), String> {
    let mut kernel = Tap::features().unwrap_or(0);
    if disabled("tap_tso") {
        kernel &= !libc::IFF_VNET_HDR;
    }
    if disabled("multi_queue") {
        kernel &= !libc::IFF_MULTI_QUEUE;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let want_queues = if kernel & libc::IFF_MULTI_QUEUE != 0 {
        cores.clamp(1, MAX_QUEUES)
    } else {
        1
    };
    let options = TapOptions {
        offload: kernel & libc::IFF_VNET_HDR != 0,
        multi_queue: want_queues > 1,
    };
    // Each network's TAP: try the richest options, then fewer. A TAP that exists already
    // only takes the queue mode it was created with, so both modes are tried.
    let mut attempts: Vec<TapOptions> = Vec::with_capacity(4);
    for offload in [options.offload, false] {
        for multi_queue in [options.multi_queue, !options.multi_queue] {
            let a = TapOptions {
                offload,
                multi_queue,
            };
            if !attempts.contains(&a) {
                attempts.push(a);
            }
        }
    }
    let open_net = |n: &NetworkConfig, opts: &[TapOptions]| -> Result<(Tap, TapOptions), String> {
        let mut last_err = String::new();
        for a in opts {
            match Tap::open_with(&n.tap, n.mtu, *a) {
                Ok(t) => return Ok((t, *a)),
                Err(e) => {
                    tracing::info!(
                        tap = %n.tap,
                        offload = a.offload,
                        multi_queue = a.multi_queue,
                        "overlay: TAP refused these options ({e}); trying fewer"
                    );
                    last_err = e.to_string();
                }
            }
        }
        Err(format!(
            "overlay: cannot open TAP {:?} (network {:?}): {last_err}",
            n.tap, n.name
        ))
    };
    let mut first: Vec<(Tap, TapOptions)> = Vec::with_capacity(networks.len());
    for n in networks {
        first.push(open_net(n, &attempts)?);
    }
    // vnet headers are all or nothing (one receive path serves every network)
    if first.iter().any(|(_, o)| o.offload) && !first.iter().all(|(_, o)| o.offload) {
        for (i, n) in networks.iter().enumerate() {
            if first[i].1.offload {
                let fewer: Vec<TapOptions> =
                    attempts.iter().filter(|a| !a.offload).copied().collect();
                // close this queue first: a single-queue TAP takes one fd at a time
                let (old, _) = first.remove(i);
                drop(old);
                first.insert(i, open_net(n, &fewer)?);
            }
        }
    }
    let offload = first.iter().all(|(_, o)| o.offload);
    // more queues only when every network's TAP is multi-queue
    let queues = if first.iter().all(|(_, o)| o.multi_queue) {
        want_queues.max(1)
    } else {
        1
    };
    let per_net: Vec<TapOptions> = first.iter().map(|(_, o)| *o).collect();
    let mut workers: Vec<Worker> = Vec::with_capacity(queues);
    let mut first_queue: Vec<Tap> = first.into_iter().map(|(t, _)| t).collect();
    for q in 0..queues {
        let taps = if q == 0 {
            std::mem::take(&mut first_queue)
        } else {
            let mut taps = Vec::with_capacity(networks.len());
            for (n, o) in networks.iter().zip(&per_net) {
                taps.push(Tap::open_with(&n.tap, n.mtu, *o).map_err(|e| {
                    format!(
                        "overlay: cannot open TAP {:?} queue {q} (network {:?}): {e}",
                        n.tap, n.name
                    )
                })?);
            }
            taps
        };
        let recv = bind_udp(listen, queues > 1)
            .map_err(|e| format!("overlay: cannot bind {listen}: {e}"))?;
        let senders = bind_send_pool(listen)?;
        workers.push(Worker {
            taps,
            recv,
            senders,
        });
    }
    let udp_gro = !disabled("udp_gro") && workers.iter().all(|w| udp::enable_gro(&w.recv).is_ok());
    let udp_gso =
        !disabled("udp_gso") && workers[0].senders.first().is_some_and(udp::gso_supported);
    let tap_uso = offload && !disabled("tap_uso") && workers[0].taps.iter().all(Tap::probe_uso);
    let features = Features {
        tap_offload: offload,
        tap_uso,
        queues,
        udp_gso: AtomicBool::new(udp_gso),
        udp_gro,
    };
    Ok((features, workers))
}

/// Starts the offload datapath: one thread per worker, each with a single-threaded runtime.
pub(super) fn start(
    networks: &[NetworkConfig],
    listen: SocketAddr,
    switch: &Arc<Mutex<Switch>>,
    shutdown: &Shutdown,
    tasks: &mut JoinSet<Result<(), String>>,
) -> Result<(Arc<Features>, Vec<u16>), String> {
    let (features, workers) = open(networks, listen)?;
    let features = Arc::new(features);
    let ports: Vec<u16> = workers
        .iter()
        .flat_map(|w| w.senders.iter())
        .filter_map(|s| s.local_addr().ok())
        .map(|a| a.port())
        .collect();
    for (q, w) in workers.into_iter().enumerate() {
        let (switch, shutdown, features) = (switch.clone(), shutdown.clone(), features.clone());
        crate::worker::spawn(format!("overlay-{q}"), tasks, move || {
            worker(w, switch, features, shutdown)
        })?;
    }
    Ok((features, ports))
}

async fn worker(
    w: Worker,
    switch: Arc<Mutex<Switch>>,
    features: Arc<Features>,
    mut shutdown: Shutdown,
) -> Result<(), String> {
    let (taps, recv, senders) = register(w.taps, w.recv, w.senders)?;
    let mut txs: Vec<Tx> = taps
        .iter()
        .enumerate()
        .map(|(i, t)| Tx::new(i, t.clone(), &switch, &features))
        .collect();
    let mut rx = Rx::new(taps.clone(), &switch, &features);
    // Busy-polling after the last packet (yielding to the runtime's I/O driver instead of
    // sleeping) was measured here: on 2 vCPUs shared with the load it made the round trip
    // worse (the pollers took the CPU the containers' stacks needed), so a worker sleeps as
    // soon as its fds are empty.
    loop {
        let mut work = rx_drain(&mut rx, &recv, &switch);
        for tx in &mut txs {
            work += tx_drain(tx, &switch, &senders, &features).await?;
        }
        if work > 0 {
            // give the runtime a turn (shutdown, timers), then look again
            tokio::task::yield_now().await;
            if shutdown.is_stopping() {
                return Ok(());
            }
            continue;
        }
        // idle: sleep until a fd is readable
        tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            _ = std::future::poll_fn(|cx| {
                if recv.poll_recv_ready(cx).is_ready() {
                    return std::task::Poll::Ready(());
                }
                for t in &taps {
                    if t.poll_read_ready(cx).is_ready() {
                        return std::task::Poll::Ready(());
                    }
                }
                std::task::Poll::Pending
            }) => {}
        }
    }
}

/// Sends `data` (datagrams of `seg` bytes back to back, `count` of them) to `dst`: one GSO
/// send while GSO works, else one send per datagram.
async fn send_run(
    sock: &UdpSocket,
    data: &[u8],
    seg: usize,
    count: usize,
    dst: SocketAddr,
    features: &Features,
    counters: &Counters,
) {
    if count > 1 && features.udp_gso.load(Relaxed) {
        loop {
            match sock.try_io(Interest::WRITABLE, || udp::send_gso(sock, data, dst, seg)) {
                Ok(_) => {
                    counters.tx_n(count, data.len());
                    counters.gso_sends.fetch_add(1, Relaxed);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if sock.writable().await.is_err() {
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
                    ) =>
                {
                    if features.udp_gso.swap(false, Relaxed) {
                        tracing::warn!(
                            "overlay: the kernel refused a UDP GSO send ({e}); the underlay \
                             likely has no checksum offload. Sending datagrams one by one from now on"
                        );
                    }
                    break;
                }
                Err(e) => {
                    tracing::debug!(%dst, "overlay GSO send failed: {e}");
                    for _ in 0..count {
                        counters.dropped(DropReason::Send);
                    }
                    return;
                }
            }
        }
    }
    // one sendmmsg per run (GSO off or refused)
    let mut rest = data;
    while !rest.is_empty() {
        match sock.try_io(Interest::WRITABLE, || udp::send_many(sock, rest, seg, dst)) {
            // sendmmsg sends at least one message or fails; 0 would mean no progress
            Ok(0) => break,
            Ok(n) => {
                let bytes = (n * seg).min(rest.len());
                counters.tx_n(n, bytes);
                rest = &rest[bytes..];
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if sock.writable().await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::debug!(%dst, "overlay send failed: {e}");
                break;
            }
        }
    }
    for _ in 0..rest.len().div_ceil(seg) {
        counters.dropped(DropReason::Send);
    }
}

/// Sends a run of datagrams that lie in `buf`.
async fn send_pending(
    run: Option<Run>,
    buf: &[u8],
    senders: &[UdpSocket],
    features: &Features,
    counters: &Counters,
) {
    if let Some(p) = run {
        let data = &buf[p.start..p.end];
        send_run(
            &senders[p.sock],
            data,
            p.seg,
            p.count,
            p.dst,
            features,
            counters,
        )
        .await;
    }
}

/// Sends segmented datagrams (`stride` bytes each but the last) in GSO-sized runs.
async fn send_segments(
    sock: &UdpSocket,
    data: &[u8],
    stride: usize,
    dst: SocketAddr,
    features: &Features,
    counters: &Counters,
) {
    for (run, count) in batch::gso_runs(data.len(), stride) {
        send_run(sock, &data[run], stride, count, dst, features, counters).await;
    }
}

/// One network's TAP → UDP state: buffers allocated once.
struct Tx {
    net: usize,
    tap: Arc<AsyncFd<Tap>>,
    counters: Arc<Counters>,
    vx: [u8; vxlan::HEADER_LEN],
    vnet_on: bool,
    /// Room for a run of datagrams and one more frame read behind them.
    buf: Vec<u8>,
    /// Segmentation output: the payload once, plus per segment a VXLAN header and the
    /// frame's headers (at most 18 + 60 + 60 bytes), for segments of at least 88 bytes.
    segbuf: Vec<u8>,
    vnet: [u8; VNET_HDR_LEN],
    reply: [u8; 64],
    runs: RunJoiner,
}

impl Tx {
    fn new(net: usize, tap: Arc<AsyncFd<Tap>>, switch: &Mutex<Switch>, features: &Features) -> Tx {
        let (vni, counters) = {
            let s = lock(switch);
            (s.vni(net), s.counters(net).clone())
        };
        let mut vx = [0u8; vxlan::HEADER_LEN];
        vxlan::emit_header(&mut vx, vni);
        Tx {
            net,
            tap,
            counters,
            vx,
            vnet_on: features.tap_offload,
            buf: vec![0u8; 4 * (FRAME_MAX + vxlan::HEADER_LEN)],
            segbuf: vec![0u8; 4 * FRAME_MAX],
            vnet: [0u8; VNET_HDR_LEN],
            reply: [0u8; 64],
            runs: RunJoiner::default(),
        }
    }
}

/// Reads what the TAP has queued (at most [`BATCH`] frames) and sends it. Returns the number
/// of frames read.
async fn tx_drain(
    st: &mut Tx,
    switch: &Mutex<Switch>,
    senders: &[UdpSocket],
    features: &Features,
) -> Result<usize, String> {
    let (net, vnet_on, vx) = (st.net, st.vnet_on, st.vx);
    let Tx {
        tap,
        counters,
        buf,
        segbuf,
        vnet,
        reply,
        runs,
        ..
    } = st;
    let mut handled = 0;
    let mut pos = 0usize;
    for _ in 0..BATCH {
        if pos + vxlan::HEADER_LEN + FRAME_MAX > buf.len() {
            send_pending(runs.take(), buf, senders, features, counters).await;
            pos = 0;
        }
        let at = pos + vxlan::HEADER_LEN;
        let window = &mut buf[at..at + FRAME_MAX];
        let read = tap.try_io(Interest::READABLE, |t| {
            if vnet_on {
                t.read_split(&mut vnet[..], window)
            } else {
                t.read(window)
            }
        });
        let n = match read {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(format!("overlay: TAP {} read: {e}", tap.get_ref().name()));
            }
            Ok(n) => n,
        };
        handled += 1;
        let (hdr, len) = if vnet_on {
            match (VnetHdr::parse(&vnet[..]), n.checked_sub(VNET_HDR_LEN)) {
                (Ok(h), Some(len)) => (h, len),
                _ => {
                    counters.dropped(DropReason::ShortTapFrame);
                    continue;
                }
            }
        } else {
            (VnetHdr::default(), n)
        };
        let end = at + len;
        let (decision, peers) = {
            let mut s = lock(switch);
            let d = s.from_tap(net, &buf[at..end], Instant::now(), &mut reply[..]);
            let peers = (d == FromTap::Flood).then(|| s.peers().clone());
            (d, peers)
        };
        let one;
        let dsts: &[SocketAddr] = match (&decision, &peers) {
            (FromTap::Unicast(v), _) => {
                one = [*v];
                &one
            }
            (FromTap::Flood, Some(p)) => p,
            (FromTap::Reply(len), _) => {
                let res = if vnet_on {
                    let zero = [0u8; VNET_HDR_LEN];
                    tap.get_ref()
                        .write_vectored(&[IoSlice::new(&zero), IoSlice::new(&reply[..*len])])
                } else {
                    write_tap(tap, &reply[..*len]).await
                };
                if let Err(e) = res {
                    counters.dropped(DropReason::TapWrite);
                    tracing::debug!("overlay: ARP reply to TAP: {e}");
                }
                continue;
            }
            _ => continue,
        };
        let sock = flow_hash(&buf[at..end]) as usize % senders.len();
        if hdr.gso_type & !GSO_ECN != GSO_NONE {
            // a TSO super-frame: cut it, then send the segments in GSO runs
            send_pending(runs.take(), buf, senders, features, counters).await;
            pos = 0;
            match offload::segment(
                &buf[at..end],
                Some(usize::from(hdr.csum_start)),
                usize::from(hdr.gso_size),
                &vx,
                &mut segbuf[..],
            ) {
                Ok(s) => {
                    counters.tso_frames.fetch_add(1, Relaxed);
                    for dst in dsts {
                        send_segments(
                            &senders[sock],
                            &segbuf[..s.len],
                            s.stride,
                            *dst,
                            features,
                            counters,
                        )
                        .await;
                    }
                }
                Err(_) => counters.dropped(DropReason::BadOffload),
            }
            continue;
        }
        if hdr.flags & F_NEEDS_CSUM != 0
            && offload::complete_checksum(
                &mut buf[at..end],
                usize::from(hdr.csum_start),
                usize::from(hdr.csum_offset),
            )
            .is_err()
        {
            counters.dropped(DropReason::BadOffload);
            continue;
        }
        buf[pos..at].copy_from_slice(&vx);
        // a run of equal-sized datagrams to one VTEP leaves in one call: one GSO send, or one
        // sendmmsg where GSO is off (send_run decides)
        if let FromTap::Unicast(vtep) = decision {
            let done = runs.push(pos, end, vtep, sock);
            send_pending(done, buf, senders, features, counters).await;
            pos = end;
            continue;
        }
        // flood: in order, one datagram per peer
        send_pending(runs.take(), buf, senders, features, counters).await;
        for dst in dsts {
            send(&senders[sock], &buf[pos..end], *dst, counters).await;
        }
        pos = 0;
    }
    send_pending(runs.take(), buf, senders, features, counters).await;
    Ok(handled)
}

/// Writes a merge to its network's TAP: one frame, or one GSO frame for several, with
/// `writev` straight from the receive buffer.
fn write_merged(
    m: Merged<'_>,
    buf: &[u8],
    taps: &[Arc<AsyncFd<Tap>>],
    counters: &[Arc<Counters>],
    hdr: &mut [u8],
) {
    let c = &counters[m.net];
    let count = m.frames.len();
    let (vnet_part, rest) = hdr.split_at_mut(VNET_HDR_LEN);
    let Ok((hl, vnet)) = m.header(buf, rest) else {
        for _ in 0..count {
            c.dropped(DropReason::TapWrite);
        }
        return;
    };
    let mut vh = [0u8; VNET_HDR_LEN];
    vnet.emit(&mut vh);
    vnet_part.copy_from_slice(&vh);
    let head = &hdr[..VNET_HDR_LEN + hl];
    let mut iov = [IoSlice::new(&[]); GRO_MAX + 1];
    iov[0] = IoSlice::new(head);
    for (i, (s, e)) in m.frames.iter().enumerate() {
        iov[i + 1] = IoSlice::new(&buf[s + hl..*e]);
    }
    match taps[m.net].get_ref().write_vectored(&iov[..count + 1]) {
        Ok(_) => {
            c.rx_n(count, m.bytes());
            if count > 1 {
                c.gro_merged.fetch_add(count as u64, Relaxed);
            }
        }
        Err(e) => {
            tracing::debug!("overlay: TAP write: {e}");
            for _ in 0..count {
                c.dropped(DropReason::TapWrite);
            }
        }
    }
}

/// UDP → TAP state of one worker: buffers allocated once.
struct Rx {
    taps: Vec<Arc<AsyncFd<Tap>>>,
    counters: Vec<Arc<Counters>>,
    vnet_on: bool,
    /// The TAP takes USO frames: same-sized UDP datagrams of one flow are merged too.
    uso: bool,
    buf: Vec<u8>,
    scratch: Vec<u8>,
    hdr: [u8; VNET_HDR_LEN + 256],
    decisions: [FromUdp; GRO_MAX],
    /// (sender, start, end) of each datagram of the current read in `buf`.
    list: [(SocketAddr, usize, usize); GRO_MAX],
    /// Without GRO: recvmmsg headers, one slot of [`SLOT`] bytes per datagram.
    gro: bool,
    slots: udp::Slots,
    merge: Merger,
}

impl Rx {
    fn new(taps: Vec<Arc<AsyncFd<Tap>>>, switch: &Mutex<Switch>, features: &Features) -> Rx {
        let counters = {
            let s = lock(switch);
            (0..taps.len()).map(|i| s.counters(i).clone()).collect()
        };
        Rx {
            taps,
            counters,
            vnet_on: features.tap_offload,
            uso: features.tap_uso,
            buf: vec![
                0u8;
                if features.udp_gro {
                    GRO_BUF
                } else {
                    SLOTS * SLOT
                }
            ],
            scratch: vec![0u8; FRAME_MAX],
            hdr: [0u8; VNET_HDR_LEN + 256],
            decisions: [FromUdp::Drop(DropReason::Truncated); GRO_MAX],
            list: [(SocketAddr::from(([0, 0, 0, 0], 0)), 0, 0); GRO_MAX],
            gro: features.udp_gro,
            slots: udp::Slots::new(if features.udp_gro { 0 } else { SLOTS }),
            merge: Merger::default(),
        }
    }
}

/// Receives what the socket has queued (at most [`BATCH`] reads) and writes it to the TAPs.
/// Returns the number of reads.
fn rx_drain(st: &mut Rx, sock: &UdpSocket, switch: &Mutex<Switch>) -> usize {
    let (vnet_on, uso, gro) = (st.vnet_on, st.uso, st.gro);
    let Rx {
        taps,
        counters,
        buf,
        scratch,
        hdr,
        decisions,
        list,
        slots,
        merge,
        ..
    } = st;
    let (taps, counters) = (&taps[..], &counters[..]);
    let zero = [0u8; VNET_HDR_LEN];
    let mut handled = 0;
    for _ in 0..BATCH {
        // one read: a GRO run of one sender's datagrams, or a recvmmsg batch
        let got = if gro {
            sock.try_io(Interest::READABLE, || {
                udp::recv_gro(sock, &mut buf[..GRO_BUF])
            })
            .map(|(n, src, seg)| (n.div_ceil(seg.max(1)), Some((n, src, seg))))
        } else {
            sock.try_io(Interest::READABLE, || {
                udp::recv_slots(sock, &mut buf[..], SLOT, slots)
            })
            .map(|k| (k, None))
        };
        let (count, run) = match got {
            Ok(x) => {
                handled += 1;
                x
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                tracing::debug!("overlay: UDP receive: {e}");
                continue;
            }
        };
        // the datagrams of this read, at most GRO_MAX at a time
        let mut first = 0;
        while first < count {
            let k = (count - first).min(GRO_MAX);
            {
                let mut s = lock(switch);
                let now = Instant::now();
                for j in 0..k {
                    let i = first + j;
                    let (entry, cut) = match run {
                        Some((n, src, seg)) => ((src, i * seg, ((i + 1) * seg).min(n)), false),
                        None => match slots.get(i) {
                            Some((len, src, cut)) => ((src, i * SLOT, i * SLOT + len), cut),
                            None => ((SocketAddr::from(([0, 0, 0, 0], 0)), 0, 0), false),
                        },
                    };
                    list[j] = entry;
                    let (src, ds, de) = entry;
                    decisions[j] = if cut {
                        // longer than a slot: cut, so not forwarded
                        s.underlay_counters().dropped(DropReason::Oversize);
                        FromUdp::Drop(DropReason::Oversize)
                    } else {
                        // counts its own drops, empty datagrams included
                        s.from_udp(src, &buf[ds..de], now)
                    };
                }
            }
            first += k;
            for (decision, &(_, ds, de)) in decisions.iter().zip(list.iter()).take(k) {
                let (fs, fe) = (ds + vxlan::HEADER_LEN, de);
                match batch::delivery(*decision, &buf[ds..de], vnet_on, uso) {
                    Delivery::Merge { net, seg } => {
                        if let Some(m) = merge.push(net, seg, (fs, fe), buf) {
                            write_merged(m, buf, taps, counters, hdr);
                        }
                    }
                    Delivery::Single { net } => {
                        if let Some(m) = merge.take() {
                            write_merged(m, buf, taps, counters, hdr);
                        }
                        let c = &counters[net];
                        if checksum::complete_partial(&mut buf[fs..fe]) == Partial::Completed {
                            c.checksum_completed.fetch_add(1, Relaxed);
                        }
                        let frame = &buf[fs..fe];
                        let res = if vnet_on {
                            taps[net]
                                .get_ref()
                                .write_vectored(&[IoSlice::new(&zero), IoSlice::new(frame)])
                        } else {
                            taps[net].get_ref().write(frame)
                        };
                        match res {
                            Ok(_) => c.rx(frame.len()),
                            Err(e) => {
                                c.dropped(DropReason::TapWrite);
                                tracing::debug!("overlay: TAP write: {e}");
                            }
                        }
                    }
                    Delivery::Segment { net, mss } => {
                        if let Some(m) = merge.take() {
                            write_merged(m, buf, taps, counters, hdr);
                        }
                        let c = &counters[net];
                        let tap = taps[net].get_ref();
                        let res = tcp_segment::segment(&buf[fs..fe], mss, &mut scratch[..], |s| {
                            let r = if vnet_on {
                                tap.write_vectored(&[IoSlice::new(&zero), IoSlice::new(s)])
                            } else {
                                tap.write(s)
                            };
                            match r {
                                Ok(_) => c.rx(s.len()),
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
                    Delivery::Drop => {}
                }
            }
        }
        if let Some(m) = merge.take() {
            write_merged(m, buf, taps, counters, hdr);
        }
    }
    handled
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GSO send the kernel refuses (here: a socket without UDP checksums, which GSO
    /// needs) turns GSO off and the datagrams still go out, one per send.
    #[tokio::test]
    async fn a_refused_gso_send_falls_back_to_single_datagrams() {
        use std::os::fd::AsRawFd;
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let tx = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        if !udp::gso_supported(&tx) {
            eprintln!("no UDP_SEGMENT on this kernel; the fallback is the only path");
        }
        let one: libc::c_int = 1;
        // SAFETY: setsockopt(2) with a pointer to an int on an open socket.
        let rc = unsafe {
            libc::setsockopt(
                tx.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                std::ptr::addr_of!(one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        let features = Features {
            tap_offload: true,
            tap_uso: false,
            queues: 1,
            udp_gso: AtomicBool::new(true),
            udp_gro: false,
        };
        let counters = Counters::default();
        let data: Vec<u8> = (0..250u32).map(|i| i as u8).collect();
        let dst = rx.local_addr().expect("addr");
        send_run(&tx, &data, 100, 3, dst, &features, &counters).await;
        assert!(!features.udp_gso.load(Relaxed), "GSO turned off");
        assert_eq!(counters.tx_packets.load(Relaxed), 3);
        assert_eq!(counters.gso_sends.load(Relaxed), 0);
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .expect("timeout");
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        for _ in 0..3 {
            let n = rx.recv(&mut buf).expect("datagram");
            got.push(buf[..n].to_vec());
        }
        assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [100, 100, 50]);
        assert_eq!(got.concat(), data);
        // later runs go out one by one without trying GSO again
        send_run(&tx, &data, 100, 3, dst, &features, &counters).await;
        assert_eq!(counters.tx_packets.load(Relaxed), 6);
    }

    #[test]
    fn mode_names_what_is_on() {
        let f = Features::portable();
        assert_eq!(f.mode(), "portable");
        assert_eq!(f.describe(), "portable (no offloads, 1 queue)");
        let f = Features {
            tap_offload: true,
            tap_uso: false,
            queues: 2,
            udp_gso: AtomicBool::new(true),
            udp_gro: true,
        };
        assert_eq!(f.describe(), "offload (tap_tso udp_gso udp_gro, 2 queues)");
        f.udp_gso.store(false, Relaxed);
        assert_eq!(f.list()[2], ("udp_gso", false));
    }
}
