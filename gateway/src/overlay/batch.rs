//! The batching decisions of the offload datapath, without I/O: which datagrams leave in one
//! UDP GSO send (TX run joining) and which received frames reach the TAP as one merged GSO
//! frame (GRO). Like quinn-proto's `Transmit`, each call takes byte ranges of the driver's
//! buffers and returns what to send or write; the driver owns the buffers and the syscalls.
//!
//! ```text
//!  TAP read ──► switch ──► RunJoiner::push(datagram) ──► Some(Run) = send these back to back
//!  UDP read ──► switch ──► Merger::push(frame)       ──► Some(Merged) = write these as one
//! ```

use super::switch::FromUdp;
use crate::wire::offload::{self, TcpSegment, UdpSegment, VnetHdr};
use crate::wire::{WireError, vxlan};
use std::net::SocketAddr;

/// Most segments the kernel takes in one GSO send (`UDP_MAX_SEGMENTS`, 64 before 5.x kernels
/// raised it; 64 is safe everywhere).
pub const MAX_SEGMENTS: usize = 64;
/// Largest GSO send: one IP datagram's worth of UDP payload.
pub const MAX_GSO_BYTES: usize = 65_535 - 8 - 40;
/// Largest frame (a 64 KiB super-frame), and so the largest merged frame.
pub const FRAME_MAX: usize = 65_535;
/// Most datagrams one GRO read holds (`UDP_GRO_CNT_MAX`), and most merged into one frame.
pub const GRO_MAX: usize = 64;

/// Datagrams lying back to back in the send buffer at `start..end`, all `seg` bytes long but
/// possibly the last, for one VTEP from one send socket: one GSO send (or one `sendmmsg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub start: usize,
    pub end: usize,
    pub seg: usize,
    pub count: usize,
    pub dst: SocketAddr,
    /// Index of the send socket (picked by the inner flow's hash).
    pub sock: usize,
}

/// Joins unicast datagrams read one after another into [`Run`]s.
#[derive(Debug, Default)]
pub struct RunJoiner {
    pending: Option<Run>,
    /// The pending run's last datagram was shorter than `seg`: nothing more may follow.
    closed: bool,
}

impl RunJoiner {
    /// Offers the datagram at `start..end` of the send buffer (VXLAN header included) for
    /// `dst` from socket `sock`. Returns the run that must be sent first when the datagram
    /// does not continue it; the datagram then starts a new run.
    pub fn push(&mut self, start: usize, end: usize, dst: SocketAddr, sock: usize) -> Option<Run> {
        let len = end - start;
        if let Some(p) = self.pending.as_mut()
            && p.end == start
            && p.dst == dst
            && p.sock == sock
            && !self.closed
            && p.count < MAX_SEGMENTS
            && len <= p.seg
            && p.end - p.start + len <= MAX_GSO_BYTES
        {
            p.end = end;
            p.count += 1;
            self.closed = len < p.seg;
            return None;
        }
        self.closed = false;
        self.pending.replace(Run {
            start,
            end,
            seg: len,
            count: 1,
            dst,
            sock,
        })
    }

    /// The run in progress, to be sent now (before the buffer is reused, or at the end of a
    /// batch).
    pub fn take(&mut self) -> Option<Run> {
        self.pending.take()
    }
}

/// Cuts `len` bytes of segments of `stride` bytes (the last may be shorter) into GSO-sized
/// runs: `(range, count)` for each send.
pub fn gso_runs(
    len: usize,
    stride: usize,
) -> impl Iterator<Item = (std::ops::Range<usize>, usize)> {
    let stride = stride.max(1);
    let per_send = (MAX_GSO_BYTES / stride).clamp(1, MAX_SEGMENTS) * stride;
    (0..len.div_ceil(per_send)).map(move |i| {
        let r = i * per_send..((i + 1) * per_send).min(len);
        let count = r.len().div_ceil(stride);
        (r, count)
    })
}

/// A received frame that may be merged: a TCP segment, or a UDP datagram (with USO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg {
    Tcp(TcpSegment),
    Udp(UdpSegment),
}

impl Seg {
    /// The frame as a merge candidate; UDP only when the TAP takes USO frames.
    pub fn parse(frame: &[u8], uso: bool) -> Option<Seg> {
        match TcpSegment::parse(frame) {
            Some(t) => Some(Seg::Tcp(t)),
            None if uso => UdpSegment::parse(frame).map(Seg::Udp),
            None => None,
        }
    }

    pub fn payload(&self) -> usize {
        match self {
            Seg::Tcp(t) => t.payload,
            Seg::Udp(u) => u.payload,
        }
    }

    pub fn header_len(&self) -> usize {
        match self {
            Seg::Tcp(t) => t.header_len(),
            Seg::Udp(u) => u.header_len(),
        }
    }

    /// Whether `next` continues the merge that starts with `first` (parsed as `self`).
    fn follows(&self, first: &[u8], last: &Seg, total: usize, frame: &[u8], next: &Seg) -> bool {
        match (self, last, next) {
            (Seg::Tcp(a), Seg::Tcp(l), Seg::Tcp(n)) => a.follows(first, l, total, frame, n),
            (Seg::Udp(a), Seg::Udp(l), Seg::Udp(n)) => a.follows(first, l, frame, n),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Merge {
    net: usize,
    count: usize,
    first: Seg,
    last: Seg,
    /// Payload bytes so far.
    total: usize,
}

/// One merge and where its frames lie in the receive buffer.
struct Slot {
    merge: Option<Merge>,
    frames: [(usize, usize); GRO_MAX],
}

/// Frames to be written to network `net`'s TAP as one: the first frame's headers (fixed up
/// by [`Merged::header`]) then every frame's payload, each a range of the receive buffer.
#[derive(Debug)]
pub struct Merged<'a> {
    pub net: usize,
    first: Seg,
    total: usize,
    /// (start, end) of each frame in the receive buffer, headers included.
    pub frames: &'a [(usize, usize)],
}

impl Merged<'_> {
    /// Writes into `out` the merged frame's headers and returns their length and the vnet
    /// header for the TAP write (GSO when more than one frame). Each frame then contributes
    /// `buf[start + header_len..end]`.
    pub fn header(&self, buf: &[u8], out: &mut [u8]) -> Result<(usize, VnetHdr), WireError> {
        let (s0, e0) = self.frames[0];
        let first = &buf[s0..e0];
        let count = self.frames.len();
        match &self.first {
            Seg::Tcp(t) => {
                let (sl, el) = self.frames[count - 1];
                offload::merged_header(first, t, self.total, count, &buf[sl..el], out)
            }
            Seg::Udp(u) => offload::merged_udp_header(first, u, self.total, count, out),
        }
    }

    /// Bytes received (every frame, headers included).
    pub fn bytes(&self) -> usize {
        self.frames.iter().map(|(s, e)| e - s).sum()
    }
}

/// The receive-side merger (software GRO): consecutive frames of one flow become one.
/// Two slots, so that the merge that a frame ends can be handed out while that frame starts
/// the next one.
pub struct Merger {
    slots: [Slot; 2],
    cur: usize,
}

impl Default for Merger {
    fn default() -> Self {
        let slot = || Slot {
            merge: None,
            frames: [(0, 0); GRO_MAX],
        };
        Merger {
            slots: [slot(), slot()],
            cur: 0,
        }
    }
}

impl Merger {
    /// Offers the frame at `fs..fe` of `buf` (parsed as `seg`) for network `net`. It joins
    /// the merge in progress if it continues it (`None`); otherwise that merge is returned,
    /// to be written now, and this frame starts a new one.
    pub fn push(
        &mut self,
        net: usize,
        seg: Seg,
        (fs, fe): (usize, usize),
        buf: &[u8],
    ) -> Option<Merged<'_>> {
        let slot = &mut self.slots[self.cur];
        let frames = &mut slot.frames;
        let joined = slot.merge.as_mut().is_some_and(|m| {
            let (s0, e0) = frames[0];
            let ok = m.net == net
                && m.count < GRO_MAX
                && m.total + seg.payload() + seg.header_len() <= FRAME_MAX
                && m.first
                    .follows(&buf[s0..e0], &m.last, m.total, &buf[fs..fe], &seg);
            if ok {
                frames[m.count] = (fs, fe);
                m.count += 1;
                m.total += seg.payload();
                m.last = seg;
            }
            ok
        });
        if joined {
            return None;
        }
        let done = self.cur;
        self.cur ^= 1;
        let next = &mut self.slots[self.cur];
        next.frames[0] = (fs, fe);
        next.merge = Some(Merge {
            net,
            count: 1,
            first: seg,
            last: seg,
            total: seg.payload(),
        });
        Self::hand_out(&mut self.slots[done])
    }

    /// Where the merge in progress starts in the receive buffer (its first frame's start).
    pub fn pending_start(&self) -> Option<usize> {
        let slot = &self.slots[self.cur];
        slot.merge.map(|_| slot.frames[0].0)
    }

    /// Whether the merge in progress may go on into the next read: only a TCP one. UDP
    /// datagrams are merged only as one read brought them (one GSO send, or what the kernel
    /// coalesced); datagrams sent one by one stay one by one, as the kernel's vxlan forwards
    /// them (it has no UDP GRO for forwarded traffic by default).
    pub fn pending_is_tcp(&self) -> bool {
        matches!(
            self.slots[self.cur].merge,
            Some(Merge {
                first: Seg::Tcp(_),
                ..
            })
        )
    }

    /// The merge in progress, to be written now (a frame that cannot merge comes next, or the
    /// read is done).
    pub fn take(&mut self) -> Option<Merged<'_>> {
        Self::hand_out(&mut self.slots[self.cur])
    }

    fn hand_out(slot: &mut Slot) -> Option<Merged<'_>> {
        let m = slot.merge.take()?;
        Some(Merged {
            net: m.net,
            first: m.first,
            total: m.total,
            frames: &slot.frames[..m.count],
        })
    }
}

/// What the receive path does with one decoded datagram, for the driver to carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A merge candidate: offer it to the [`Merger`].
    Merge {
        net: usize,
        seg: Seg,
    },
    /// Write the frame as it is (after completing a partial checksum).
    Single {
        net: usize,
    },
    /// Cut it into frames of at most `mss` payload bytes first.
    Segment {
        net: usize,
        mss: usize,
    },
    Drop,
}

/// Turns the switch's decision about `datagram` (VXLAN header included) into what the
/// receive path does with its frame: merge candidates are TCP (or, with `uso`, UDP) frames,
/// when the TAP takes vnet headers at all. A dropped datagram is not looked at (it may be
/// shorter than a VXLAN header).
pub fn delivery(decision: FromUdp, datagram: &[u8], vnet: bool, uso: bool) -> Delivery {
    match decision {
        FromUdp::Deliver { network } => {
            let frame = datagram.get(vxlan::HEADER_LEN..).unwrap_or_default();
            match vnet.then(|| Seg::parse(frame, uso)).flatten() {
                Some(seg) => Delivery::Merge { net: network, seg },
                None => Delivery::Single { net: network },
            }
        }
        FromUdp::Segment { network, mss } => Delivery::Segment { net: network, mss },
        FromUdp::Drop(_) => Delivery::Drop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::switch::{FromTap, NetworkSpec, Switch};
    use crate::wire::ethernet::{MacAddr, ethertype};
    use crate::wire::offload::{GSO_TCPV4, complete_checksum, segment};
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::{Duration, Instant};

    const H1: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1)), 4789);
    const H2: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 99, 0, 2)), 4789);
    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn switch(node: &str, peer: SocketAddr) -> Switch {
        let net = NetworkSpec {
            name: "default".into(),
            vni: 42,
            mtu: 1450,
        };
        Switch::new(node, &[peer], &[net], 64, Duration::from_secs(300))
    }

    /// An Ethernet/IPv4/TCP frame A → B with valid checksums and a 32-byte TCP header.
    fn tcp_frame(payload_len: usize, seq: u32, flags: u8) -> Vec<u8> {
        tcp_frame_from(40000, payload_len, seq, flags)
    }

    /// [`tcp_frame`] from another source port.
    fn tcp_frame_from(src_port: u16, payload_len: usize, seq: u32, flags: u8) -> Vec<u8> {
        use crate::wire::build::{Ip, Transport, frame};
        use crate::wire::{ethernet, ipv4, tcp};
        let payload: Vec<u8> = (0..payload_len).map(|i| (i * 13 % 251) as u8).collect();
        frame(
            ethernet::Repr {
                dst: B,
                src: A,
                ethertype: ethertype::IPV4,
            },
            Ip::V4(ipv4::Repr {
                src: Ipv4Addr::new(10, 200, 1, 11),
                dst: Ipv4Addr::new(10, 200, 2, 11),
                protocol: ipv4::protocol::TCP,
                payload_len: 0,
                ttl: 64,
                ident: 0x0100,
                dont_frag: true,
            }),
            Transport::Tcp(tcp::Repr {
                src_port,
                dst_port: 80,
                seq,
                ack: 9,
                flags,
                window: 512,
                options: &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
            }),
            &payload,
        )
    }

    /// h1 and h2 with the FDB entries a first exchange would leave: h1 knows B is behind
    /// h2, and h2 has learned A.
    fn pair(now: Instant) -> (Switch, Switch) {
        let (s1, s2) = (switch("h1", H2), switch("h2", H1));
        let mut hello = tcp_frame(0, 0, 0x10);
        hello[0..6].copy_from_slice(&A.0);
        hello[6..12].copy_from_slice(&B.0);
        let mut vx = [0u8; vxlan::HEADER_LEN];
        vxlan::emit_header(&mut vx, 42);
        assert_eq!(
            s1.from_udp(H2, &[&vx[..], &hello].concat(), now),
            FromUdp::Deliver { network: 0 }
        );
        (s1, s2)
    }

    /// A TSO super-frame read from h1's TAP is cut into VXLAN datagrams that leave in GSO
    /// runs; h2's switch delivers each and its merger writes them to the TAP as one GSO
    /// frame, which the kernel would cut back into the same segments: the payload, the IP
    /// length and the TCP header come out as they went in. No sockets, a fixed clock.
    #[test]
    fn a_tso_frame_crosses_two_switches_and_is_merged_back_whole() {
        let now = Instant::now();
        let (s1, s2) = pair(now);
        let big = tcp_frame(20_000, 0xffff_f000, 0x18);
        let mut reply = [0u8; 64];
        let FromTap::Unicast(vtep) = s1.from_tap(0, &big, now, &mut reply) else {
            panic!("h1 should know B");
        };
        assert_eq!(vtep, H2);
        let mut vx = [0u8; vxlan::HEADER_LEN];
        vxlan::emit_header(&mut vx, 42);
        let mss = 1450 - 20 - 32;
        let mut out = vec![0u8; 4 * FRAME_MAX];
        let cut = segment(&big, Some(34), mss, &vx, &mut out).expect("segment");
        assert_eq!(cut.count, 20_000usize.div_ceil(mss));
        // TX: the segments leave in GSO runs; every datagram is in exactly one run
        let runs: Vec<_> = gso_runs(cut.len, cut.stride).collect();
        assert_eq!(runs.iter().map(|(_, n)| n).sum::<usize>(), cut.count);
        assert!(runs.iter().all(|(r, _)| r.len() <= MAX_GSO_BYTES));
        // the fake underlay: one receive buffer of back-to-back datagrams, as a GRO read
        let rx = &out[..cut.len];
        let mut merger = Merger::default();
        let mut written: Vec<(Vec<u8>, VnetHdr)> = Vec::new();
        let mut write = |m: Merged<'_>| {
            let mut hdr = [0u8; 256];
            let (hl, vnet) = m.header(rx, &mut hdr).expect("header");
            let mut frame = hdr[..hl].to_vec();
            for &(s, e) in m.frames {
                frame.extend_from_slice(&rx[s + hl..e]);
            }
            written.push((frame, vnet));
        };
        for (i, d) in rx.chunks(cut.stride).enumerate() {
            let decision = s2.from_udp(H1, d, now);
            let start = i * cut.stride + vxlan::HEADER_LEN;
            let end = i * cut.stride + d.len();
            match delivery(decision, d, true, false) {
                Delivery::Merge { net, seg } => {
                    if let Some(m) = merger.push(net, seg, (start, end), rx) {
                        write(m);
                    }
                }
                other => panic!("segment {i}: {other:?}"),
            }
        }
        if let Some(m) = merger.take() {
            write(m);
        }
        assert!(merger.take().is_none());
        // 14 segments of 1398 bytes: at most 64 per merge and under 64 KiB, so one frame
        assert_eq!(written.len(), 1);
        let (mut frame, vnet) = written.pop().expect("one");
        assert_eq!(vnet.gso_type, GSO_TCPV4);
        assert_eq!(usize::from(vnet.gso_size), mss);
        assert_eq!(frame.len(), big.len());
        assert_eq!(frame[66..], big[66..], "payload");
        assert_eq!(frame[..24], big[..24], "Ethernet, IP version to flags");
        assert_eq!(frame[34..50], big[34..50], "ports, seq, ack, flags, window");
        complete_checksum(&mut frame, 34, 16).expect("complete");
        assert_eq!(frame[50..52], big[50..52], "TCP checksum once completed");
    }

    /// Two flows interleaved: every frame ends the other flow's merge, and each merge handed
    /// out still names its own frames (the slot it came from is not reused until the next).
    #[test]
    fn interleaved_flows_hand_out_each_merge_intact() {
        let a = tcp_frame(1000, 1, 0x10);
        let b = tcp_frame_from(40001, 1000, 1, 0x10); // another source port
        let buf = [a.clone(), b.clone(), a.clone()].concat();
        let n = a.len();
        let seg = |f: &[u8]| Seg::parse(f, false).expect("candidate");
        let mut m = Merger::default();
        assert!(m.push(0, seg(&a), (0, n), &buf).is_none());
        let first = m
            .push(0, seg(&b), (n, 2 * n), &buf)
            .expect("a's merge ends");
        assert_eq!(first.frames, &[(0, n)]);
        let second = m.push(0, seg(&a), (2 * n, 3 * n), &buf).expect("b's ends");
        assert_eq!(second.frames, &[(n, 2 * n)]);
        let last = m.take().expect("a again");
        assert_eq!(last.frames, &[(2 * n, 3 * n)]);
        assert_eq!(last.bytes(), n);
    }

    /// At most 64 frames in one merge (`UDP_GRO_CNT_MAX`), then a new one starts.
    #[test]
    fn a_merge_holds_at_most_64_frames() {
        let mss = 100;
        let frames: Vec<Vec<u8>> = (0..70u32).map(|i| tcp_frame(mss, i * 100, 0x10)).collect();
        let buf = frames.concat();
        let n = frames[0].len();
        let mut m = Merger::default();
        let mut sizes = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let seg = Seg::parse(f, false).expect("candidate");
            if let Some(done) = m.push(0, seg, (i * n, (i + 1) * n), &buf) {
                sizes.push(done.frames.len());
            }
        }
        sizes.extend(m.take().map(|d| d.frames.len()));
        assert_eq!(sizes, [64, 6]);
    }

    #[test]
    fn runs_join_equal_datagrams_to_one_vtep_and_socket() {
        let mut j = RunJoiner::default();
        assert_eq!(j.push(0, 100, H2, 0), None);
        assert_eq!(j.push(100, 200, H2, 0), None);
        assert_eq!(j.push(200, 250, H2, 0), None, "a shorter one ends the run");
        let run = j
            .push(250, 350, H2, 0)
            .expect("nothing follows a short one");
        assert_eq!((run.start, run.end, run.seg, run.count), (0, 250, 100, 3));
        // another VTEP, another socket, a gap, a longer one: each starts a new run
        assert!(j.push(350, 450, H1, 0).is_some());
        assert!(j.push(450, 550, H1, 1).is_some());
        assert!(j.push(600, 700, H1, 1).is_some());
        assert!(j.push(700, 900, H1, 1).is_some());
        let last = j.take().expect("pending");
        assert_eq!((last.start, last.end, last.count), (700, 900, 1));
        assert_eq!(j.take(), None);
        // never more than MAX_SEGMENTS, never more than MAX_GSO_BYTES
        let mut j = RunJoiner::default();
        let mut runs = Vec::new();
        for i in 0..200 {
            runs.extend(j.push(i * 10, (i + 1) * 10, H2, 0));
        }
        runs.extend(j.take());
        assert_eq!(
            runs.iter().map(|r| r.count).collect::<Vec<_>>(),
            [64, 64, 64, 8]
        );
        let mut j = RunJoiner::default();
        let mut runs = Vec::new();
        for i in 0..100 {
            runs.extend(j.push(i * 1500, (i + 1) * 1500, H2, 0));
        }
        runs.extend(j.take());
        assert!(runs.iter().all(|r| r.end - r.start <= MAX_GSO_BYTES));
        assert_eq!(runs.iter().map(|r| r.count).sum::<usize>(), 100);
    }

    #[test]
    fn gso_runs_cover_every_segment_once() {
        let runs: Vec<_> = gso_runs(10 * 1000 + 300, 1000).collect();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0], (0..10_300, 11));
        let runs: Vec<_> = gso_runs(100 * 1500, 1500).collect();
        assert_eq!(runs.iter().map(|(_, n)| n).sum::<usize>(), 100);
        assert!(
            runs.iter()
                .all(|(r, n)| r.len() <= MAX_GSO_BYTES && *n <= MAX_SEGMENTS)
        );
        assert_eq!(gso_runs(0, 1500).count(), 0);
    }

    #[test]
    fn delivery_follows_the_switch_and_the_tap() {
        let f = [&[0u8; vxlan::HEADER_LEN][..], &tcp_frame(500, 7, 0x10)].concat();
        let d = FromUdp::Deliver { network: 1 };
        assert!(matches!(
            delivery(d, &f, true, false),
            Delivery::Merge { net: 1, .. }
        ));
        assert_eq!(delivery(d, &f, false, false), Delivery::Single { net: 1 });
        let syn = [&[0u8; vxlan::HEADER_LEN][..], &tcp_frame(0, 7, 0x02)].concat();
        assert_eq!(delivery(d, &syn, true, true), Delivery::Single { net: 1 });
        assert_eq!(
            delivery(FromUdp::Segment { network: 0, mss: 9 }, &f, true, true),
            Delivery::Segment { net: 0, mss: 9 }
        );
        assert_eq!(
            delivery(
                FromUdp::Drop(crate::overlay::DropReason::Truncated),
                &f,
                true,
                true
            ),
            Delivery::Drop
        );
        // a dropped datagram shorter than a VXLAN header is not sliced
        let drop = FromUdp::Drop(crate::overlay::DropReason::Truncated);
        assert_eq!(delivery(drop, &[8, 0], true, true), Delivery::Drop);
        assert_eq!(
            delivery(d, &[8, 0], true, true),
            Delivery::Single { net: 1 }
        );
    }
}
