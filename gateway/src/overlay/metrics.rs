//! `vxgate_overlay_*`: the overlay's families, rendered from the counters each network keeps
//! and from the running datapath's features.

use super::counters::{Counters, DropReason};
use super::types::Overlay;
use std::sync::atomic::Ordering::Relaxed;
use vxgate_metrics::text::{family, sample};

/// Reads one sample of a per-network family from a network's counters.
type Reading<'a> = (&'a str, &'a dyn Fn(&Counters) -> u64);

/// A family with one sample per network and per reading: `name{network="…",label="…"}`,
/// or `name{network="…"}` when `label` is empty.
fn per_network(
    out: &mut String,
    (name, kind, help): (&str, &str, &str),
    counters: &[(String, std::sync::Arc<Counters>)],
    label: &str,
    readings: &[Reading<'_>],
) {
    family(out, name, kind, help);
    for (net, c) in counters {
        for (value, read) in readings {
            if label.is_empty() {
                sample(out, name, &[("network", net)], read(c));
            } else {
                sample(out, name, &[("network", net), (label, value)], read(c));
            }
        }
    }
}

impl Overlay {
    /// Appends the overlay's families to `out`.
    pub fn render_metrics(&self, out: &mut String) {
        if let Some(w) = &self.wireguard {
            let c = &w.counters;
            vxgate_metrics::text::by_label(
                out,
                "vxgate_overlay_wireguard_packets_total",
                "counter",
                "VXLAN datagrams sealed to and opened from WireGuard peers, and handshake and keepalive messages sent.",
                "kind",
                &[
                    ("sealed", c.sealed.load(Relaxed)),
                    ("opened", c.opened.load(Relaxed)),
                    ("control_sent", c.control_sent.load(Relaxed)),
                ],
            );
            vxgate_metrics::text::by_label(
                out,
                "vxgate_overlay_wireguard_handshakes_total",
                "counter",
                "WireGuard handshakes: initiations sent (first, retries, rekeys), of them rekeys (a session was up), completed (as initiator or responder), initiations started by a peer's datagram for no session of ours (after our restart), and cookie replies sent under load.",
                "kind",
                &[
                    ("initiated", c.initiations.load(Relaxed)),
                    ("rekey", c.rekeys.load(Relaxed)),
                    ("completed", c.handshakes.load(Relaxed)),
                    ("after_restart", c.restarts_seen.load(Relaxed)),
                    ("cookie_sent", c.cookies_sent.load(Relaxed)),
                ],
            );
            vxgate_metrics::text::by_label(
                out,
                "vxgate_overlay_wireguard_dropped_total",
                "counter",
                "WireGuard datagrams dropped: for no peer of ours, refused (authentication, replay, stale), an inner source that is not the peer's tunnel address, not VXLAN inside.",
                "reason",
                &[
                    ("unknown_peer", c.unknown_peer.load(Relaxed)),
                    ("rejected", c.rejected.load(Relaxed)),
                    ("not_peer_source", c.not_peer_source.load(Relaxed)),
                    ("not_vxlan", c.not_vxlan.load(Relaxed)),
                ],
            );
            vxgate_metrics::text::single(
                out,
                "vxgate_overlay_plaintext_dropped_total",
                "counter",
                "Plain VXLAN datagrams dropped, received or to send (encryption on, allow_plaintext off).",
                c.plaintext_dropped.load(Relaxed),
            );
        }
        let counters = self.counters();
        let (rx_p, tx_p) = (
            |c: &Counters| c.rx_packets.load(Relaxed),
            |c: &Counters| c.tx_packets.load(Relaxed),
        );
        per_network(
            out,
            (
                "vxgate_overlay_packets_total",
                "counter",
                "Overlay packets by network and direction (rx: underlay to TAP).",
            ),
            &counters,
            "direction",
            &[("rx", &rx_p), ("tx", &tx_p)],
        );
        let (rx_b, tx_b) = (
            |c: &Counters| c.rx_bytes.load(Relaxed),
            |c: &Counters| c.tx_bytes.load(Relaxed),
        );
        per_network(
            out,
            (
                "vxgate_overlay_bytes_total",
                "counter",
                "Overlay bytes by network and direction.",
            ),
            &counters,
            "direction",
            &[("rx", &rx_b), ("tx", &tx_b)],
        );
        // one closure type for every reason, so they sit in one Vec without boxes
        let reads: Vec<_> = DropReason::ALL
            .iter()
            .map(|&r| move |c: &Counters| c.drops(r))
            .collect();
        let drops: Vec<Reading<'_>> = DropReason::ALL
            .iter()
            .zip(&reads)
            .map(|(r, f)| (r.name(), f as &dyn Fn(&Counters) -> u64))
            .collect();
        per_network(
            out,
            (
                "vxgate_overlay_drops_total",
                "counter",
                "Dropped frames and datagrams by network and reason.",
            ),
            &counters,
            "reason",
            &drops,
        );
        let arp = |c: &Counters| c.arp_suppressed.load(Relaxed);
        per_network(
            out,
            (
                "vxgate_overlay_arp_suppressed_total",
                "counter",
                "ARP requests answered locally.",
            ),
            &counters,
            "",
            &[("", &arp)],
        );
        let full = |c: &Counters| c.fdb_full.load(Relaxed);
        per_network(
            out,
            (
                "vxgate_overlay_fdb_full_total",
                "counter",
                "Received frames whose source MAC was not learned: the FDB was full.",
            ),
            &counters,
            "",
            &[("", &full)],
        );
        family(
            out,
            "vxgate_overlay_fdb_entries",
            "gauge",
            "FDB entries by network.",
        );
        {
            let sw = &self.switch;
            for (i, n) in self.networks.iter().enumerate() {
                sample(
                    out,
                    "vxgate_overlay_fdb_entries",
                    &[("network", &n.name)],
                    sw.fdb(i).len(),
                );
            }
        }
        family(
            out,
            "vxgate_overlay_datapath_mode",
            "gauge",
            "The active datapath (1 for the mode in use).",
        );
        let mode = self.features.mode();
        for m in ["portable", "offload"] {
            sample(
                out,
                "vxgate_overlay_datapath_mode",
                &[("mode", m)],
                u8::from(m == mode),
            );
        }
        family(
            out,
            "vxgate_overlay_offload",
            "gauge",
            "1 for each offload in use (tap_tso, udp_gso, udp_gro, multi_queue).",
        );
        for (name, on) in self.features.list() {
            sample(
                out,
                "vxgate_overlay_offload",
                &[("feature", name)],
                u8::from(on),
            );
        }
        vxgate_metrics::text::single(
            out,
            "vxgate_overlay_queues",
            "gauge",
            "TAP queues, one datapath worker each.",
            self.features.queues,
        );
        let peers = self.switch.peer_counters().all();
        for (i, (name, help)) in [
            (
                "vxgate_overlay_peer_packets_total",
                "Plain VXLAN datagrams sent to (tx) and received from (rx) each peer VTEP (WireGuard peers: vxgate_overlay_wireguard_*).",
            ),
            (
                "vxgate_overlay_peer_bytes_total",
                "UDP payload bytes (VXLAN header and frame) sent to (tx) and received from (rx) each peer VTEP over plain VXLAN.",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            family(out, name, "counter", help);
            for (peer, r) in &peers {
                let peer = peer.to_string();
                sample(out, name, &[("peer", &peer), ("direction", "tx")], r[i]);
                sample(out, name, &[("peer", &peer), ("direction", "rx")], r[2 + i]);
            }
        }
        let (tso, gso, gro) = (
            |c: &Counters| c.tso_frames.load(Relaxed),
            |c: &Counters| c.gso_sends.load(Relaxed),
            |c: &Counters| c.gro_merged.load(Relaxed),
        );
        per_network(
            out,
            (
                "vxgate_overlay_offload_events_total",
                "counter",
                "TSO super-frames segmented, UDP GSO sends, and received segments merged (GRO).",
            ),
            &counters,
            "event",
            &[
                ("tso_frames", &tso),
                ("gso_sends", &gso),
                ("gro_merged", &gro),
            ],
        );
    }
}
