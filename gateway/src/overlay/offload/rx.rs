//! UDP → TAP on the offload datapath: one GRO `recvmsg` (or, without GRO, one `recvmmsg`)
//! fills the receive buffer; the switch decides on every datagram, looking up the sender, the
//! VNI and the inner source once per read ([`RunCache`]), not once per datagram; merge
//! candidates go through the [`Merger`] and reach the TAP as one GSO frame written with
//! `writev` straight from the receive buffer; other frames are written one by one.

use super::{BATCH, Features, WgSock};
use crate::overlay::batch::{self, Delivery, FRAME_MAX, GRO_MAX, Merged, Merger};
use crate::overlay::counters::{Counters, DropReason, PeerRun};
use crate::overlay::switch::{FromUdp, RunCache, Switch};
use crate::overlay::tap::Tap;
use crate::overlay::udp;
use crate::overlay::wg::Crypto;
use crate::wire::offload::VNET_HDR_LEN;
use crate::wire::partial::{self, Partial};
use crate::wire::{offload, vxlan};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;

/// Receive buffer for one GRO read; the buffer holds two, which reads fill in turn, so that
/// a merge can go on into the next read (a 64 KiB TSO frame crosses as two GSO sends, 44
/// segments and 3, and is written back to the TAP as one frame).
const GRO_BUF: usize = FRAME_MAX + 1;
/// Without GRO: datagrams per recvmmsg, each in a slot that fits the largest datagram.
const SLOTS: usize = 16;
const SLOT: usize = FRAME_MAX + 1;

/// UDP → TAP state of one worker: buffers allocated once.
pub(super) struct Rx {
    sink: Sink,
    /// The TAP takes USO frames: same-sized UDP datagrams of one flow are merged too.
    uso: bool,
    buf: Vec<u8>,
    decisions: [FromUdp; GRO_MAX],
    /// (sender, start, end) of each datagram of the current read in `buf`.
    list: [(SocketAddr, usize, usize); GRO_MAX],
    /// Without GRO: recvmmsg headers, one slot of [`SLOT`] bytes per datagram.
    gro: bool,
    /// With GRO: the half of `buf` the next read fills.
    half: usize,
    slots: udp::Slots,
    merge: Merger,
    /// With encryption: the buffer of what a read's datagrams that are not transport data
    /// (handshakes, cookies) open into.
    scratch: Vec<u8>,
}

/// Where received frames go: each network's TAP and counters, and room for headers and
/// for segmentation.
struct Sink {
    taps: Vec<Arc<AsyncFd<Tap>>>,
    counters: Vec<Arc<Counters>>,
    vnet_on: bool,
    scratch: Vec<u8>,
    hdr: [u8; VNET_HDR_LEN + 256],
}

/// What one read of the socket gave: `count` datagrams, and for a GRO read where it starts
/// in the buffer, its length, sender and segment size (without GRO each slot says its own).
type Got = (usize, Option<(usize, usize, SocketAddr, usize)>);

impl Rx {
    pub(super) fn new(taps: Vec<Arc<AsyncFd<Tap>>>, switch: &Switch, features: &Features) -> Rx {
        let counters = (0..taps.len())
            .map(|i| switch.counters(i).clone())
            .collect();
        Rx {
            sink: Sink {
                taps,
                counters,
                vnet_on: features.tap_tso,
                scratch: vec![0u8; FRAME_MAX],
                hdr: [0u8; VNET_HDR_LEN + 256],
            },
            uso: features.tap_uso,
            buf: vec![
                0u8;
                if features.udp_gro {
                    2 * GRO_BUF
                } else {
                    SLOTS * SLOT
                }
            ],
            decisions: [FromUdp::Drop(DropReason::Truncated); GRO_MAX],
            list: [(SocketAddr::from(([0, 0, 0, 0], 0)), 0, 0); GRO_MAX],
            gro: features.udp_gro,
            half: 0,
            slots: udp::Slots::new(if features.udp_gro { 0 } else { SLOTS }),
            merge: Merger::default(),
            scratch: Vec::new(),
        }
    }

    /// Makes room for reads of WireGuard's socket into halves of `buf` (as GRO reads do),
    /// opened in place.
    pub(super) fn with_wireguard(&mut self) {
        self.scratch = vec![0u8; GRO_BUF];
        if self.buf.len() < 2 * GRO_BUF {
            self.buf = vec![0u8; 2 * GRO_BUF];
        }
    }

    /// Where the half of `buf` the next read fills starts, the merge in progress written out
    /// first if it starts there (a merge may go on from the other half). The caller flips
    /// `half` once the read filled it.
    fn claim_half(&mut self) -> usize {
        let base = self.half * GRO_BUF;
        if self
            .merge
            .pending_start()
            .is_some_and(|s| (base..base + GRO_BUF).contains(&s))
            && let Some(m) = self.merge.take()
        {
            self.sink.merged(m, &self.buf);
        }
        base
    }

    /// One read of WireGuard's socket (a GRO run of one sender's datagrams, or one) into the
    /// next half of `buf`, each datagram opened where it lies; `list` then holds the VXLAN
    /// datagrams in them, and the count is returned. Handshake answers go out from the same
    /// socket.
    fn read_sealed(&mut self, wg: &WgSock) -> io::Result<usize> {
        let base = self.claim_half();
        let gro = self.gro;
        let run = &mut self.buf[base..base + GRO_BUF];
        let (n, src, seg) = wg.sock.try_io(Interest::READABLE, || {
            if gro {
                udp::recv_gro(&wg.sock, &mut run[..])
            } else {
                let (n, src) = wg.sock.try_recv_from(&mut run[..])?;
                Ok((n, src, n))
            }
        })?;
        self.half ^= 1;
        let mut reply = |m: &[u8], to: SocketAddr| {
            // a handshake answer that finds the buffer full is retried by the peer's timers
            let _ = wg.sock.try_send_to(m, to);
        };
        // at most GRO_MAX datagrams a read (a GRO read holds no more)
        let seg = seg.max(1);
        let n = n.min(seg * GRO_MAX);
        let (list, mut k) = (&mut self.list, 0);
        wg.crypto.open_run(
            src,
            (&mut self.buf[base..base + n], seg),
            &mut self.scratch,
            &mut reply,
            &mut |from, r| {
                if let Some(slot) = list.get_mut(k) {
                    *slot = (from, base + r.start, base + r.end);
                    k += 1;
                }
            },
        );
        Ok(k)
    }

    /// After a read: the merge in progress is written out, unless it is a TCP merge and
    /// `keep_tcp` (the next read, into the other half, may continue it).
    fn end_read(&mut self, keep_tcp: bool) {
        if !(keep_tcp && self.merge.pending_is_tcp())
            && let Some(m) = self.merge.take()
        {
            self.sink.merged(m, &self.buf);
        }
    }

    /// The switch's decisions on the `k` datagrams in `list`.
    fn decide_listed(&mut self, s: &Switch, k: usize) {
        let now = Instant::now();
        let mut cache = RunCache::default();
        for j in 0..k {
            let (src, ds, de) = self.list[j];
            self.decisions[j] = s.from_udp_in_run(src, &self.buf[ds..de], now, &mut cache);
        }
    }

    /// One read: a GRO run of one sender's datagrams (into the half of the buffer that the
    /// merge in progress does not start in, written out first if it does), or a recvmmsg
    /// batch.
    fn read(&mut self, sock: &UdpSocket) -> io::Result<Got> {
        if self.gro {
            let base = self.claim_half();
            let buf = &mut self.buf[base..base + GRO_BUF];
            let (n, src, seg) =
                sock.try_io(Interest::READABLE, || udp::recv_gro(sock, &mut buf[..]))?;
            self.half ^= 1;
            return Ok((n.div_ceil(seg.max(1)), Some((base, n, src, seg))));
        }
        let (buf, slots) = (&mut self.buf, &mut self.slots);
        sock.try_io(Interest::READABLE, || {
            udp::recv_slots(sock, &mut buf[..], SLOT, slots)
        })
        .map(|k| (k, None))
    }

    /// The switch's decisions on datagrams `first..first + k` of the read.
    fn decide(&mut self, s: &Switch, (first, k): (usize, usize), run: Got) {
        let now = Instant::now();
        let mut cache = RunCache::default();
        let mut counted = PeerRun::default();
        for j in 0..k {
            let i = first + j;
            let (entry, cut) = match run.1 {
                Some((base, n, src, seg)) => {
                    ((src, base + i * seg, base + ((i + 1) * seg).min(n)), false)
                }
                None => match self.slots.get(i) {
                    Some((len, src, cut)) => ((src, i * SLOT, i * SLOT + len), cut),
                    None => ((SocketAddr::from(([0, 0, 0, 0], 0)), 0, 0), false),
                },
            };
            self.list[j] = entry;
            let (src, ds, de) = entry;
            self.decisions[j] = if cut {
                // longer than a slot: cut, so not forwarded
                s.underlay_counters().dropped(DropReason::Oversize);
                FromUdp::Drop(DropReason::Oversize)
            } else {
                // counts its own drops, empty datagrams included
                s.from_udp_in_run(src, &self.buf[ds..de], now, &mut cache)
            };
            if !matches!(self.decisions[j], FromUdp::Drop(_))
                && let Some(vtep) = cache.vtep()
            {
                counted.add(s.peer_counters(), vtep, de - ds);
            }
        }
        counted.flush(s.peer_counters());
    }

    /// Carries out the first `k` decisions.
    fn deliver(&mut self, k: usize) {
        let Rx {
            sink,
            uso,
            buf,
            decisions,
            list,
            merge,
            ..
        } = self;
        for (decision, &(_, ds, de)) in decisions.iter().zip(list.iter()).take(k) {
            let (fs, fe) = (ds + vxlan::HEADER_LEN, de);
            match batch::delivery(*decision, &buf[ds..de], sink.vnet_on, *uso) {
                Delivery::Merge { net, seg } => {
                    if let Some(m) = merge.push(net, seg, (fs, fe), buf) {
                        sink.merged(m, buf);
                    }
                }
                Delivery::Single { net } => {
                    if let Some(m) = merge.take() {
                        sink.merged(m, buf);
                    }
                    sink.single(net, &mut buf[fs..fe]);
                }
                Delivery::Segment { net, mss } => {
                    if let Some(m) = merge.take() {
                        sink.merged(m, buf);
                    }
                    sink.segmented(net, &buf[fs..fe], mss);
                }
                Delivery::Drop => {}
            }
        }
    }
}

impl Sink {
    /// Writes one frame as it is (behind an empty vnet header where the TAP takes them).
    fn write(&self, net: usize, frame: &[u8]) -> io::Result<usize> {
        let tap = self.taps[net].get_ref();
        if self.vnet_on {
            let zero = [0u8; VNET_HDR_LEN];
            tap.write_vectored(&[IoSlice::new(&zero), IoSlice::new(frame)])
        } else {
            tap.write(frame)
        }
    }

    /// A frame that is not merged, its partial checksum completed first.
    fn single(&self, net: usize, frame: &mut [u8]) {
        let c = &self.counters[net];
        if partial::complete_partial(frame) == Partial::Completed {
            c.checksum_completed.fetch_add(1, Relaxed);
        }
        match self.write(net, frame) {
            Ok(_) => c.rx(frame.len()),
            Err(e) => {
                c.dropped(DropReason::TapWrite);
                tracing::debug!("overlay: TAP write: {e}");
            }
        }
    }

    /// A frame larger than the TAP's MTU (a sender's GSO super-frame), cut into segments.
    fn segmented(&mut self, net: usize, frame: &[u8], mss: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let c = &self.counters[net];
        let res = offload::segment_each(frame, None, mss, &mut scratch[..], |s| {
            match self.write(net, s) {
                Ok(_) => c.rx(s.len()),
                Err(_) => c.dropped(DropReason::TapWrite),
            }
        });
        match res {
            Ok(_) => {
                c.segmented.fetch_add(1, Relaxed);
            }
            Err(_) => c.dropped(DropReason::Oversize),
        }
        self.scratch = scratch;
    }

    /// Writes a merge to its network's TAP: one frame, or one GSO frame for several, with
    /// `writev` straight from the receive buffer.
    fn merged(&mut self, m: Merged<'_>, buf: &[u8]) {
        let c = &self.counters[m.net];
        let count = m.frames.len();
        let (vnet_part, rest) = self.hdr.split_at_mut(VNET_HDR_LEN);
        let Ok((hl, vnet)) = m.header(buf, rest) else {
            for _ in 0..count {
                c.dropped(DropReason::TapWrite);
            }
            return;
        };
        let mut vh = [0u8; VNET_HDR_LEN];
        vnet.emit(&mut vh);
        vnet_part.copy_from_slice(&vh);
        let head = &self.hdr[..VNET_HDR_LEN + hl];
        let mut iov = [IoSlice::new(&[]); GRO_MAX + 1];
        iov[0] = IoSlice::new(head);
        for (i, (s, e)) in m.frames.iter().enumerate() {
            iov[i + 1] = IoSlice::new(&buf[s + hl..*e]);
        }
        match self.taps[m.net].get_ref().write_vectored(&iov[..count + 1]) {
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
}

/// Receives what WireGuard's socket has queued (at most [`BATCH`] reads), opens it and
/// writes the VXLAN frames inside to the TAPs, merged as plain ones are. Returns the reads.
pub(super) fn rx_drain_wg(st: &mut Rx, wg: &WgSock, switch: &Switch) -> usize {
    let mut handled = 0;
    for _ in 0..BATCH {
        let k = match st.read_sealed(wg) {
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                tracing::debug!("overlay: WireGuard receive: {e}");
                continue;
            }
        };
        handled += 1;
        st.decide_listed(switch, k);
        st.deliver(k);
        // a TCP merge may go on into the next read (into the other half), as with GRO
        st.end_read(true);
    }
    st.end_read(false);
    handled
}

/// Receives what the socket has queued (at most [`BATCH`] reads) and writes it to the TAPs.
/// With `refuse` (encryption on, `allow_plaintext` off) every plain datagram is dropped and
/// counted instead. Returns the number of reads.
pub(super) fn rx_drain(
    st: &mut Rx,
    sock: &UdpSocket,
    switch: &Switch,
    refuse: Option<&Crypto>,
) -> usize {
    let mut handled = 0;
    for _ in 0..BATCH {
        let got = match st.read(sock) {
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                tracing::debug!("overlay: UDP receive: {e}");
                continue;
            }
        };
        handled += 1;
        if let Some(c) = refuse {
            c.counters
                .plaintext_dropped
                .fetch_add(got.0 as u64, Relaxed);
            continue;
        }
        // the datagrams of this read, at most GRO_MAX at a time
        let count = got.0;
        let mut first = 0;
        while first < count {
            let k = (count - first).min(GRO_MAX);
            st.decide(switch, (first, k), got);
            st.deliver(k);
            first += k;
        }
        // with GRO a TCP merge may go on into the next read (which writes it out if it must
        // reuse the half it starts in); a UDP one ends with its read; recvmmsg reuses the
        // slots at once
        st.end_read(st.gro);
    }
    st.end_read(false);
    handled
}
