//! Per-network overlay counters, shared lock-free with the admin API and the shutdown log.

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
}

impl Counters {
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

    pub fn tx(&self, bytes: usize) {
        self.tx_n(1, bytes);
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
}
