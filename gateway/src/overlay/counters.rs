//! Per-network overlay counters, shared lock-free with the admin API and the shutdown log.

use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a frame or datagram was dropped. Counted, never allocated, never panicked on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A datagram from an address that is not a configured peer.
    NotFromPeer,
    /// Shorter than a VXLAN header plus an Ethernet header.
    Truncated,
    /// The VXLAN I flag is clear (RFC 7348 §5).
    NoIFlag,
    /// No network has this VNI.
    UnknownVni,
    /// The inner frame is larger than the network's MTU allows.
    Oversize,
    /// The inner source MAC is multicast or zero.
    BadSourceMac,
    /// A frame read from the TAP was shorter than an Ethernet header.
    ShortTapFrame,
    /// Unicast or flood with no peer to send to.
    NoPeer,
    /// Writing to the TAP failed.
    TapWrite,
    /// Sending to a VTEP failed.
    Send,
    /// A TAP frame whose offload request (vnet header) cannot be carried out.
    BadOffload,
    /// A frame whose source address is not one its sender owns (`overlay.source_check`).
    ForgedSource,
}

impl DropReason {
    pub const ALL: [DropReason; 12] = [
        DropReason::NotFromPeer,
        DropReason::Truncated,
        DropReason::NoIFlag,
        DropReason::UnknownVni,
        DropReason::Oversize,
        DropReason::BadSourceMac,
        DropReason::ShortTapFrame,
        DropReason::NoPeer,
        DropReason::TapWrite,
        DropReason::Send,
        DropReason::BadOffload,
        DropReason::ForgedSource,
    ];

    /// A stable snake_case name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::NotFromPeer => "not_from_peer",
            DropReason::Truncated => "truncated",
            DropReason::NoIFlag => "no_i_flag",
            DropReason::UnknownVni => "unknown_vni",
            DropReason::Oversize => "oversize",
            DropReason::BadSourceMac => "bad_source_mac",
            DropReason::ShortTapFrame => "short_tap_frame",
            DropReason::NoPeer => "no_peer",
            DropReason::TapWrite => "tap_write",
            DropReason::Send => "send",
            DropReason::BadOffload => "bad_offload",
            DropReason::ForgedSource => "forged_source",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Packets and bytes each way, and drops by reason. `rx` is underlay → TAP, `tx` is TAP →
/// underlay (each datagram sent counts once, so a flood to three peers counts three).
#[derive(Debug, Default)]
pub struct Counters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Frames answered locally by ARP suppression.
    pub arp_suppressed: AtomicU64,
    /// MACs not learned because the FDB was full.
    pub fdb_full: AtomicU64,
    /// Received TCP/UDP checksums left partial by the sender's offload, completed here.
    pub checksum_completed: AtomicU64,
    /// Received TCP super-frames (larger than the MTU) cut into segments.
    pub segmented: AtomicU64,
    /// TAP super-frames (TSO) cut into segments for sending.
    pub tso_frames: AtomicU64,
    /// UDP GSO sends (each carried several datagrams).
    pub gso_sends: AtomicU64,
    /// Received TCP segments merged into larger frames for the TAP (GRO).
    pub gro_merged: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
    /// The switch's per-peer counters (shared by its networks), for [`Counters::tx_to`].
    peers: Arc<PeerTable>,
}

impl Counters {
    /// A network's counters that also count what is sent to each peer in `peers`.
    pub fn with_peers(peers: Arc<PeerTable>) -> Counters {
        Counters {
            peers,
            ..Counters::default()
        }
    }

    /// `packets` datagrams of `bytes` in all sent to `dst` in one go: counted for the network
    /// and, when `dst` is a plain VXLAN peer, for that peer.
    pub fn tx_to(&self, dst: SocketAddr, packets: usize, bytes: usize) {
        self.tx_n(packets, bytes);
        self.peers.tx(dst, packets, bytes);
    }

    pub fn dropped(&self, reason: DropReason) {
        self.drops[reason.index()].fetch_add(1, Relaxed);
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()].load(Relaxed)
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().map(|d| d.load(Relaxed)).sum()
    }

    pub fn rx(&self, bytes: usize) {
        self.rx_packets.fetch_add(1, Relaxed);
        self.rx_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// `packets` datagrams of `bytes` in all, sent in one go.
    pub fn tx_n(&self, packets: usize, bytes: usize) {
        self.tx_packets.fetch_add(packets as u64, Relaxed);
        self.tx_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// `packets` frames of `bytes` in all, written to the TAP in one go (merged).
    pub fn rx_n(&self, packets: usize, bytes: usize) {
        self.rx_packets.fetch_add(packets as u64, Relaxed);
        self.rx_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// One line for logs: `rx=… tx=… drops: reason=n …` (non-zero drops only).
    pub fn summary(&self) -> String {
        let mut s = format!(
            "rx_packets={} rx_bytes={} tx_packets={} tx_bytes={} arp_suppressed={} fdb_full={} checksum_completed={} segmented={} tso_frames={} gso_sends={} gro_merged={}",
            self.rx_packets.load(Relaxed),
            self.rx_bytes.load(Relaxed),
            self.tx_packets.load(Relaxed),
            self.tx_bytes.load(Relaxed),
            self.arp_suppressed.load(Relaxed),
            self.fdb_full.load(Relaxed),
            self.checksum_completed.load(Relaxed),
            self.segmented.load(Relaxed),
            self.tso_frames.load(Relaxed),
            self.gso_sends.load(Relaxed),
            self.gro_merged.load(Relaxed),
        );
        for r in DropReason::ALL {
            let n = self.drops(r);
            if n > 0 {
                s.push_str(&format!(" drop_{}={n}", r.name()));
            }
        }
        s
    }
}

/// Datagrams and bytes (UDP payload: VXLAN header and frame) to and from one peer VTEP over
/// plain VXLAN. Added to once per run of datagrams (a GSO send, a receive batch's datagrams
/// from one sender), not once per datagram.
#[derive(Debug, Default)]
pub struct PeerCounters {
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
}

/// One peer's figures, read at once: `[tx_packets, tx_bytes, rx_packets, rx_bytes]`.
pub type PeerReading = [u64; 4];

/// Every peer VTEP's [`PeerCounters`], swapped whole when the peers change; a peer that stays
/// keeps its counters, one that leaves takes them along.
#[derive(Debug, Default)]
pub struct PeerTable(ArcSwap<HashMap<SocketAddr, Arc<PeerCounters>>>);

impl PeerTable {
    /// Makes the table hold exactly `peers`.
    pub fn set(&self, peers: &[SocketAddr]) {
        let old = self.0.load();
        let new = peers
            .iter()
            .map(|p| (*p, old.get(p).cloned().unwrap_or_default()))
            .collect();
        self.0.store(Arc::new(new));
    }

    /// Counts datagrams sent to `dst`; nothing when it is not a peer VTEP (a WireGuard
    /// endpoint: WireGuard counts its own per peer).
    pub fn tx(&self, dst: SocketAddr, packets: usize, bytes: usize) {
        if let Some(c) = self.0.load().get(&dst) {
            c.tx_packets.fetch_add(packets as u64, Relaxed);
            c.tx_bytes.fetch_add(bytes as u64, Relaxed);
        }
    }

    /// Counts datagrams received from peer `vtep`.
    pub fn rx(&self, vtep: SocketAddr, packets: u64, bytes: u64) {
        if let Some(c) = self.0.load().get(&vtep) {
            c.rx_packets.fetch_add(packets, Relaxed);
            c.rx_bytes.fetch_add(bytes, Relaxed);
        }
    }

    /// Every peer's figures, by address.
    pub fn all(&self) -> Vec<(SocketAddr, PeerReading)> {
        let table = self.0.load();
        let mut all: Vec<_> = table
            .keys()
            .filter_map(|p| Some((*p, self.read(*p)?)))
            .collect();
        all.sort_unstable_by_key(|(p, _)| *p);
        all
    }

    /// One peer's figures; None for an address that is not a peer.
    pub fn read(&self, vtep: SocketAddr) -> Option<PeerReading> {
        self.0.load().get(&vtep).map(|c| {
            [
                c.tx_packets.load(Relaxed),
                c.tx_bytes.load(Relaxed),
                c.rx_packets.load(Relaxed),
                c.rx_bytes.load(Relaxed),
            ]
        })
    }
}

/// A receive batch's accepted datagrams per peer, added to the table once per run of one
/// peer's datagrams (a GRO read is one sender's): `add` for each, `flush` at the batch's end.
#[derive(Debug, Default)]
pub struct PeerRun {
    current: Option<(SocketAddr, u64, u64)>,
}

impl PeerRun {
    pub fn add(&mut self, table: &PeerTable, vtep: SocketAddr, bytes: usize) {
        match &mut self.current {
            Some((v, packets, total)) if *v == vtep => {
                *packets += 1;
                *total += bytes as u64;
            }
            _ => {
                self.flush(table);
                self.current = Some((vtep, 1, bytes as u64));
            }
        }
    }

    pub fn flush(&mut self, table: &PeerTable) {
        if let Some((vtep, packets, bytes)) = self.current.take() {
            table.rx(vtep, packets, bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter() {
        let c = Counters::default();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            c.dropped(*r);
        }
        assert_eq!(c.total_drops(), DropReason::ALL.len() as u64);
        assert!(c.summary().contains("drop_unknown_vni=1"));
    }

    #[test]
    fn peers_are_counted_each_way_and_kept_while_they_stay() {
        let (a, b, c) = (
            SocketAddr::from(([10, 0, 0, 2], 4789)),
            SocketAddr::from(([10, 0, 0, 3], 4789)),
            SocketAddr::from(([10, 0, 0, 4], 4789)),
        );
        let table = Arc::new(PeerTable::default());
        table.set(&[a, b]);
        let net = Counters::with_peers(table.clone());
        net.tx_to(a, 3, 300);
        net.tx_to(SocketAddr::from(([10, 0, 0, 2], 51820)), 1, 100);
        assert_eq!(
            net.tx_packets.load(Relaxed),
            4,
            "the network counts every send"
        );
        let mut run = PeerRun::default();
        run.add(&table, b, 10);
        run.add(&table, b, 20);
        run.add(&table, a, 5);
        run.add(&table, c, 7);
        run.flush(&table);
        assert_eq!(table.read(a), Some([3, 300, 1, 5]));
        assert_eq!(table.read(b), Some([0, 0, 2, 30]));
        assert_eq!(table.read(c), None, "not a peer: not counted");
        table.set(&[b, c]);
        assert_eq!(table.read(a), None, "gone with its peer");
        assert_eq!(table.read(b), Some([0, 0, 2, 30]), "kept while it stays");
        assert_eq!(table.read(c), Some([0; 4]));
    }
}
