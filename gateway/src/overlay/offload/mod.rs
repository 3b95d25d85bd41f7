//! The offload datapath (`overlay.offload = "auto"`): what the kernel and the devices accept
//! is detected at start, and each feature falls back on its own.
//!
//! - **TAP offloads.** The TAP is opened with `IFF_VNET_HDR` and `TUNSETOFFLOAD` (checksum,
//!   TSO4, TSO6), so the bridge hands over TCP super-frames of up to 64 KiB with the checksum
//!   left to the "device". They are cut in software ([`crate::wire::offload::segment`]) into MTU-sized
//!   frames, each behind its VXLAN header, back to back in one buffer (`tx.rs`).
//! - **UDP GSO.** Datagrams to one VTEP from one source port and of one size (the segments
//!   of a super-frame, or a run of equal-sized frames read from the TAP) go out in one
//!   `sendmsg` with `UDP_SEGMENT`. A kernel or device that refuses (EIO: the underlay has no
//!   checksum offload) turns GSO off at run time, logged and visible in the metrics.
//! - **UDP GRO.** One `recvmsg` returns up to 64 datagrams of one flow. Consecutive
//!   in-order TCP segments of one inner flow, each verified, are merged into one frame
//!   written to the TAP with a GSO vnet header: the kernel takes it as one packet, as its
//!   own GRO would have made it. Other frames are written one by one (`rx.rs`).
//! - **Multi-queue.** With `IFF_MULTI_QUEUE`, one queue and one worker thread per core (up
//!   to 4), each with its own receive socket (`SO_REUSEPORT`) and send sockets. The kernel
//!   keeps a flow on one TAP queue and one receive socket, so a flow stays on one worker.
//!
//! Buffers are allocated once per worker; the TAP is read straight into the send buffer
//! behind room for the VXLAN header, and merged frames are written from the receive buffer
//! with `writev`, so the only copies are the segmentation itself.

mod rx;
mod tx;

use super::error::Error;
use super::io::{bind_send_pool, bind_udp, register, register_taps};
use super::switch::Switch;
use super::tap::{Tap, TapOptions};
use super::types::{OffloadsOff, PlainSockets, TapNetwork, Underlay};
use super::udp;
use super::wg::Crypto;
use crate::shutdown::Shutdown;
use rx::{Rx, rx_drain, rx_drain_wg};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use tx::{Tx, tx_drain};

/// Frames handled per wake-up before yielding.
const BATCH: usize = 64;
/// Worker threads at most (one TAP queue each).
const MAX_QUEUES: usize = 4;

/// What the running datapath uses. Shown in the start log, the admin API and the metrics.
#[derive(Debug)]
pub struct Features {
    /// TAP vnet headers with checksum and TSO offloads.
    pub tap_tso: bool,
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
            tap_tso: false,
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
            ("tap_tso", self.tap_tso),
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

/// The fds of one worker: a queue of every network's TAP, a receive socket and send
/// sockets for plain VXLAN (none without `overlay.listen`), and with encryption a WireGuard
/// socket of its own (`SO_REUSEPORT` on WireGuard's port when there are several queues).
struct Worker {
    taps: Vec<Tap>,
    recv: Option<std::net::UdpSocket>,
    senders: Vec<std::net::UdpSocket>,
    wg: Option<std::net::UdpSocket>,
}

/// A worker's WireGuard socket and the sessions (shared by every worker).
pub(super) struct WgSock {
    pub(super) sock: tokio::net::UdpSocket,
    pub(super) crypto: Arc<Crypto>,
}

/// How often WireGuard's timers run (handshake retries, rekeys, keepalives): worker 0's job.
const WG_TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// The TUN driver's features, less those turned `off`.
fn kernel_features(off: &OffloadsOff) -> libc::c_int {
    let mut kernel = Tap::features().unwrap_or(0);
    if off.tap_tso {
        kernel &= !libc::IFF_VNET_HDR;
    }
    if off.multi_queue {
        kernel &= !libc::IFF_MULTI_QUEUE;
    }
    kernel
}

/// How many TAP queues (and workers) to ask for: one per core, up to [`MAX_QUEUES`], where
/// the kernel has multi-queue TAPs.
pub(super) fn wanted_queues(off: &OffloadsOff) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if kernel_features(off) & libc::IFF_MULTI_QUEUE != 0 {
        cores.clamp(1, MAX_QUEUES)
    } else {
        1
    }
}

/// Opens every network's TAP with the offloads and queues the kernel accepts. The first
/// worker takes the underlay sockets the caller bound; each further queue binds its own
/// receive socket at the same address (`SO_REUSEPORT`) and its own send sockets. Returns the
/// features in use and one set of fds per worker.
fn open(
    networks: &[TapNetwork],
    off: &OffloadsOff,
    underlay: Underlay,
) -> Result<(Features, Vec<Worker>), Error> {
    let kernel = kernel_features(off);
    let plain = underlay.plain;
    let listen = plain.as_ref().map(|p| p.listen);
    let wg_listen = underlay
        .wireguard
        .as_ref()
        .map(|(s, _)| s.local_addr())
        .transpose()
        .map_err(|source| Error::Bind {
            addr: listen.unwrap_or_else(|| ([0, 0, 0, 0], 0).into()),
            source,
        })?;
    let mut first_wg = underlay.wireguard.map(|(s, _)| s);
    // more queues need a receive socket each, which needs SO_REUSEPORT on the first one
    let want_queues = if underlay.reuse_port {
        wanted_queues(off)
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
    let open_net = |n: &TapNetwork, opts: &[TapOptions]| -> Result<(Tap, TapOptions), Error> {
        let mut last_err = std::io::Error::other("no TAP options to try");
        for a in opts {
            match Tap::open_with(&n.tap, n.spec.mtu, *a) {
                Ok(t) => return Ok((t, *a)),
                Err(e) => {
                    tracing::info!(
                        tap = %n.tap,
                        offload = a.offload,
                        multi_queue = a.multi_queue,
                        "overlay: TAP refused these options ({e}); trying fewer"
                    );
                    // a permission error says more than the EINVAL of a queue-mode mismatch
                    let denied = |e: &std::io::Error| {
                        matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES))
                    };
                    if !denied(&last_err) || denied(&e) {
                        last_err = e;
                    }
                }
            }
        }
        Err(Error::OpenTap {
            tap: n.tap.clone(),
            network: n.spec.name.clone(),
            source: last_err,
        })
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
    let mut first_sockets = Some(plain);
    for q in 0..queues {
        let taps = if q == 0 {
            std::mem::take(&mut first_queue)
        } else {
            let mut taps = Vec::with_capacity(networks.len());
            for (n, o) in networks.iter().zip(&per_net) {
                taps.push(Tap::open_with(&n.tap, n.spec.mtu, *o).map_err(|source| {
                    Error::OpenQueue {
                        tap: n.tap.clone(),
                        queue: q,
                        network: n.spec.name.clone(),
                        source,
                    }
                })?);
            }
            taps
        };
        let (recv, senders) = match (first_sockets.take(), listen) {
            (Some(Some(u)), _) => (Some(u.recv), u.senders),
            (_, Some(listen)) => (
                Some(bind_udp(listen, true).map_err(|source| Error::Bind {
                    addr: listen,
                    source,
                })?),
                bind_send_pool(listen)?,
            ),
            (_, None) => (None, Vec::new()),
        };
        let wg = match (q, wg_listen) {
            (_, None) => None,
            (0, Some(_)) => first_wg.take(),
            (_, Some(addr)) => {
                Some(bind_udp(addr, true).map_err(|source| Error::Bind { addr, source })?)
            }
        };
        workers.push(Worker {
            taps,
            recv,
            senders,
            wg,
        });
    }
    let udp_gro = !off.udp_gro
        && workers
            .iter()
            .flat_map(|w| w.recv.iter().chain(w.wg.iter()))
            .all(|s| udp::enable_gro(s).is_ok());
    let udp_gso = !off.udp_gso
        && workers[0]
            .senders
            .first()
            .or(workers[0].wg.as_ref())
            .is_some_and(udp::gso_supported);
    let tap_uso = offload && !off.tap_uso && workers[0].taps.iter().all(Tap::probe_uso);
    let features = Features {
        tap_tso: offload,
        tap_uso,
        queues,
        udp_gso: AtomicBool::new(udp_gso),
        udp_gro,
    };
    Ok((features, workers))
}

/// Starts the offload datapath: one thread per worker, each with a single-threaded runtime.
pub(super) fn start(
    networks: &[TapNetwork],
    off: &OffloadsOff,
    underlay: Underlay,
    switch: &Arc<Switch>,
    shutdown: &Shutdown,
    tasks: &mut crate::part::Part<Error>,
) -> Result<(Arc<Features>, Vec<u16>), Error> {
    let crypto = underlay.wireguard.as_ref().map(|(_, c)| c.clone());
    let (features, workers) = open(networks, off, underlay)?;
    let features = Arc::new(features);
    let ports: Vec<u16> = workers
        .iter()
        .flat_map(|w| w.senders.iter())
        .filter_map(|s| s.local_addr().ok())
        .map(|a| a.port())
        .collect();
    for (q, w) in workers.into_iter().enumerate() {
        let (switch, shutdown, features) = (switch.clone(), shutdown.clone(), features.clone());
        let crypto = crypto.clone();
        crate::worker::spawn(format!("overlay-{q}"), tasks, move || {
            worker(q, w, crypto, switch, features, shutdown)
        })?;
    }
    Ok((features, ports))
}

/// One worker's registered fds and buffers, and the turn its loop repeats: the loop of
/// [`worker`] and the [`Harness`] the allocation test drives are this same code.
struct Loop {
    taps: Vec<Arc<tokio::io::unix::AsyncFd<Tap>>>,
    txs: Vec<Tx>,
    rx: Rx,
    recv: Option<tokio::net::UdpSocket>,
    senders: Vec<tokio::net::UdpSocket>,
    wg: Option<WgSock>,
    /// With encryption and `allow_plaintext` off: plain VXLAN is read and dropped (counted).
    refuse_plain: Option<Arc<Crypto>>,
    switch: Arc<Switch>,
    features: Arc<Features>,
}

impl Loop {
    /// Registers the worker's fds with the current runtime and allocates its buffers.
    fn new(
        w: Worker,
        crypto: Option<Arc<Crypto>>,
        switch: Arc<Switch>,
        features: Arc<Features>,
    ) -> Result<Loop, Error> {
        let sockets = |source| Error::Register {
            what: "the underlay sockets".into(),
            source,
        };
        let (taps, recv, senders) = match w.recv {
            Some(recv) => {
                let (taps, recv, senders) = register(w.taps, recv, w.senders)?;
                (taps, Some(recv), senders)
            }
            None => (register_taps(w.taps)?, None, Vec::new()),
        };
        let wg = match (w.wg, crypto) {
            (Some(sock), Some(crypto)) => Some(WgSock {
                sock: tokio::net::UdpSocket::from_std(sock).map_err(sockets)?,
                crypto,
            }),
            _ => None,
        };
        let refuse_plain = wg
            .as_ref()
            .filter(|w| !w.crypto.allow_plaintext)
            .map(|w| w.crypto.clone());
        let txs = taps
            .iter()
            .enumerate()
            .map(|(i, t)| Tx::new(i, t.clone(), &switch, &features))
            .collect();
        let mut rx = Rx::new(taps.clone(), &switch, &features);
        if wg.is_some() {
            rx.with_wireguard();
        }
        Ok(Loop {
            taps,
            txs,
            rx,
            recv,
            senders,
            wg,
            refuse_plain,
            switch,
            features,
        })
    }

    /// One turn: the sockets drained to the TAPs, each TAP drained to the underlay. Returns
    /// the reads done (0: nothing was waiting).
    async fn turn(&mut self) -> Result<usize, Error> {
        let mut work = match &self.recv {
            Some(recv) => rx_drain(
                &mut self.rx,
                recv,
                &self.switch,
                self.refuse_plain.as_deref(),
            ),
            None => 0,
        };
        if let Some(wg) = &self.wg {
            work += rx_drain_wg(&mut self.rx, wg, &self.switch);
        }
        for tx in &mut self.txs {
            work += tx_drain(
                tx,
                &self.switch,
                &self.senders,
                self.wg.as_ref(),
                &self.features,
            )
            .await?;
        }
        Ok(work)
    }

    /// Ready when a socket or a TAP has something to read.
    fn poll_readable(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let ready = self
            .recv
            .as_ref()
            .is_some_and(|r| r.poll_recv_ready(cx).is_ready())
            || self
                .wg
                .as_ref()
                .is_some_and(|w| w.sock.poll_recv_ready(cx).is_ready())
            || self.taps.iter().any(|t| t.poll_read_ready(cx).is_ready());
        if ready {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

async fn worker(
    q: usize,
    w: Worker,
    crypto: Option<Arc<Crypto>>,
    switch: Arc<Switch>,
    features: Arc<Features>,
    mut shutdown: Shutdown,
) -> Result<(), Error> {
    let mut l = Loop::new(w, crypto, switch, features)?;
    // worker 0 runs WireGuard's timers
    let mut timers = tokio::time::interval(WG_TICK);
    timers.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut scratch = if l.wg.is_some() && q == 0 {
        vec![0u8; 2048]
    } else {
        Vec::new()
    };
    // Busy-polling after the last packet (yielding to the runtime's I/O driver instead of
    // sleeping) was measured here: on 2 vCPUs shared with the load it made the round trip
    // worse (the pollers took the CPU the containers' stacks needed), so a worker sleeps as
    // soon as its fds are empty.
    loop {
        if l.turn().await? > 0 {
            // give the runtime a turn (shutdown, timers), then look again
            tokio::task::yield_now().await;
            if shutdown.is_stopping() {
                return Ok(());
            }
            continue;
        }
        // idle: sleep until a fd is readable (or, on worker 0, WireGuard's timers are due)
        tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            _ = timers.tick(), if !scratch.is_empty() => {
                if let Some(wg) = &l.wg {
                    wg.crypto.tick(&mut scratch, &mut |m, to| {
                        let _ = wg.sock.try_send_to(m, to);
                    });
                }
            }
            _ = std::future::poll_fn(|cx| l.poll_readable(cx)) => {}
        }
    }
}

/// One worker's datapath on one TAP queue per network, driven by hand: what the allocation
/// test (`tests/overlay_no_alloc.rs`) counts a loop turn with. It runs the worker's own
/// [`Loop`]; vxgate itself runs [`start`].
#[doc(hidden)]
pub struct Harness {
    inner: Loop,
}

impl Harness {
    /// Opens the TAPs (one queue each) and the underlay sockets at `listen`, as [`start`]
    /// does for its first worker. Call it inside a tokio runtime.
    pub fn open(
        networks: &[TapNetwork],
        listen: std::net::SocketAddr,
        switch: Arc<Switch>,
    ) -> Result<Harness, Error> {
        let plain = PlainSockets::bind(listen, false)?;
        let listen = plain.listen;
        let underlay = Underlay {
            plain: Some(plain),
            reuse_port: false,
            wireguard: None,
        };
        let (features, workers) = open(networks, &OffloadsOff::default(), underlay)?;
        let Some(w) = workers.into_iter().next() else {
            return Err(Error::Bind {
                addr: listen,
                source: std::io::Error::other("no worker opened"),
            });
        };
        if w.recv.is_none() {
            return Err(Error::NoListen);
        }
        Ok(Harness {
            inner: Loop::new(w, None, switch, Arc::new(features))?,
        })
    }

    pub fn features(&self) -> &Features {
        &self.inner.features
    }

    /// Where the underlay socket listens.
    pub fn listen(&self) -> std::io::Result<std::net::SocketAddr> {
        match &self.inner.recv {
            Some(r) => r.local_addr(),
            None => Err(std::io::Error::other("no plain socket")),
        }
    }

    /// One turn of the worker's loop ([`Loop::turn`], as [`start`]'s workers run it).
    pub async fn turn(&mut self) -> Result<usize, Error> {
        self.inner.turn().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_names_what_is_on() {
        let f = Features::portable();
        assert_eq!(f.mode(), "portable");
        assert_eq!(f.describe(), "portable (no offloads, 1 queue)");
        let f = Features {
            tap_tso: true,
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
