//! The overlay switch: every forwarding decision, no I/O, time passed in.
//!
//! ```text
//!  TAP frame ──► from_tap ──► Unicast(vtep) | Flood (every peer) | Reply (ARP, to the TAP) | Drop
//!  datagram  ──► from_udp ──► Deliver { network } (frame = datagram[8..]) | Drop
//! ```
//!
//! Frames received from a VTEP go only to the TAP: vxgate never relays between VTEPs, so a
//! frame is never sent back to where it came from, and the VNI picks the network, so nothing
//! crosses from one VNI to another (the kernel's vxlan behaves the same).

use super::counters::{Counters, DropReason, PeerTable};
use super::fdb::{Fdb, Learned};
use crate::registry::Snapshot;
use crate::wire::ethernet::{self, Frame, MacAddr, ethertype};
use crate::wire::{WireError, arp, ipv4, offload, vxlan};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One overlay network as the switch needs it.
#[derive(Debug, Clone)]
pub struct NetworkSpec {
    pub name: String,
    pub vni: u32,
    pub mtu: u16,
}

#[derive(Debug)]
struct Network {
    spec: NetworkSpec,
    fdb: Fdb,
    /// Remote containers' IPv4 → MAC, for ARP suppression; swapped whole on registry changes.
    arp: ArcSwap<HashMap<Ipv4Addr, MacAddr>>,
    counters: Arc<Counters>,
}

/// A decision about a frame read from a network's TAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromTap {
    /// Encapsulate and send to this VTEP.
    Unicast(SocketAddr),
    /// Encapsulate and send to every peer (head-end replication).
    Flood,
    /// Write the first `n` bytes of the reply buffer back to the TAP (a suppressed ARP).
    Reply(usize),
    Drop(DropReason),
}

/// A decision about a datagram from the underlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromUdp {
    /// Write `datagram[vxlan::HEADER_LEN..]` to this network's TAP.
    Deliver {
        network: usize,
    },
    /// The inner frame is a TCP super-frame (GSO, handed over by a veth) larger than the MTU:
    /// cut it into segments of at most `mss` payload bytes and write each to the TAP.
    Segment {
        network: usize,
        mss: usize,
    },
    Drop(DropReason),
}

/// What [`Switch::from_udp_in_run`] keeps between the datagrams of one receive batch (a GRO
/// read is one sender's, usually of one inner source): the sender and its VTEP, the last VNI
/// and its network, the last MAC learned (and where). Each is then looked up once per batch,
/// not once per datagram. It holds no lock and nothing of the tables; start a fresh one for
/// every batch, so that a change of peers or a MAC that moves is seen at the next one.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunCache {
    peer: Option<(SocketAddr, SocketAddr)>,
    /// The last inner source address checked, and the VTEP it came from.
    source: Option<(SocketAddr, IpAddr)>,
    vni: Option<(u32, usize)>,
    learned: Option<(usize, MacAddr, SocketAddr)>,
}

impl RunCache {
    /// The VTEP of the last datagram accepted from a peer.
    pub fn vtep(&self) -> Option<SocketAddr> {
        self.peer.map(|(_, vtep)| vtep)
    }
}

/// The peers: the flood list and the accepted senders, swapped whole when they change.
#[derive(Debug, Default)]
struct Peers {
    /// Shared with the sender so a flood needs no copy.
    list: Arc<[SocketAddr]>,
    by_ip: HashMap<IpAddr, SocketAddr>,
}

impl Peers {
    fn new(mut peers: Vec<SocketAddr>) -> Peers {
        peers.sort();
        peers.dedup();
        Peers {
            by_ip: peers.iter().map(|p| (p.ip(), *p)).collect(),
            list: peers.into(),
        }
    }
}

/// Shared by every datapath thread without a lock: each decision reads the peers and the
/// static tables from snapshots ([`ArcSwap`]) and the learned FDB from its shards
/// ([`Fdb`]); counters are atomics. Changes (peers, registry) build new snapshots off the
/// packet path and swap them in; `changes` only keeps two changes from interleaving.
#[derive(Debug)]
pub struct Switch {
    node: String,
    peers: ArcSwap<Peers>,
    /// What is sent to and received from each peer over plain VXLAN.
    peer_counters: Arc<PeerTable>,
    networks: Vec<Network>,
    by_vni: HashMap<u32, usize>,
    /// Drops that belong to no network (unknown sender, bad header, unknown VNI).
    underlay: Arc<Counters>,
    last_sweep: Mutex<Option<Instant>>,
    changes: Mutex<()>,
    /// Who may send from which address, while source validation is on (none: off).
    sources: arc_swap::ArcSwapOption<super::sources::Sources>,
}

impl Switch {
    /// A switch for `node` with these peers (flood list and accepted senders) and networks.
    pub fn new(
        node: &str,
        peers: &[SocketAddr],
        networks: &[NetworkSpec],
        fdb_capacity: usize,
        fdb_aging: Duration,
    ) -> Switch {
        let peers = Peers::new(peers.to_vec());
        let peer_counters = Arc::new(PeerTable::default());
        peer_counters.set(&peers.list);
        Switch {
            node: node.to_owned(),
            peers: ArcSwap::from_pointee(peers),
            by_vni: networks
                .iter()
                .enumerate()
                .map(|(i, n)| (n.vni, i))
                .collect(),
            networks: networks
                .iter()
                .map(|spec| Network {
                    spec: spec.clone(),
                    fdb: Fdb::new(fdb_capacity, fdb_aging),
                    arp: ArcSwap::from_pointee(HashMap::new()),
                    counters: Arc::new(Counters::with_peers(peer_counters.clone())),
                })
                .collect(),
            peer_counters,
            underlay: Arc::default(),
            last_sweep: Mutex::new(None),
            changes: Mutex::new(()),
            sources: Default::default(),
        }
    }

    fn changing(&self) -> MutexGuard<'_, ()> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The flood list.
    pub fn peers(&self) -> Arc<[SocketAddr]> {
        self.peers.load().list.clone()
    }

    /// Replaces the peers (flood list and accepted senders). FDB entries that point at a VTEP
    /// no longer listed are removed, so those MACs flood again. Returns whether anything
    /// changed.
    pub fn set_peers(&self, peers: Vec<SocketAddr>) -> bool {
        let _one = self.changing();
        let new = Peers::new(peers);
        if *self.peers.load().list == *new.list {
            return false;
        }
        let by_ip = new.by_ip.clone();
        self.peer_counters.set(&new.list);
        self.peers.store(Arc::new(new));
        for n in &self.networks {
            n.fdb
                .retain_vteps(|v| by_ip.get(&v.ip()).is_some_and(|p| *p == v));
        }
        true
    }

    pub fn vni(&self, network: usize) -> u32 {
        self.networks[network].spec.vni
    }

    pub fn counters(&self, network: usize) -> &Arc<Counters> {
        &self.networks[network].counters
    }

    /// Per-peer counters (plain VXLAN), for the receive paths and the admin API.
    pub fn peer_counters(&self) -> &Arc<PeerTable> {
        &self.peer_counters
    }

    pub fn underlay_counters(&self) -> &Arc<Counters> {
        &self.underlay
    }

    pub fn fdb(&self, network: usize) -> &Fdb {
        &self.networks[network].fdb
    }

    /// Decides what to do with `frame`, read from network `net`'s TAP. For a suppressed ARP
    /// request the reply is written into `reply` (at least 42 bytes).
    pub fn from_tap(&self, net: usize, frame: &[u8], now: Instant, reply: &mut [u8]) -> FromTap {
        let n = &self.networks[net];
        let Ok(f) = Frame::new_checked(frame) else {
            n.counters.dropped(DropReason::ShortTapFrame);
            return FromTap::Drop(DropReason::ShortTapFrame);
        };
        if let Some(sources) = self.sources.load().as_deref()
            && !sources.from_local(frame)
        {
            n.counters.dropped(DropReason::ForgedSource);
            return FromTap::Drop(DropReason::ForgedSource);
        }
        // The source is on this side now; a learned remote entry for it is stale.
        if f.src().is_unicast() {
            n.fdb.forget_learned(f.src());
        }
        if f.ethertype() == ethertype::ARP
            && let Some(len) = suppress_arp(&n.arp.load(), &f, reply)
        {
            n.counters
                .arp_suppressed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return FromTap::Reply(len);
        }
        let decision = if f.dst().is_multicast() {
            FromTap::Flood
        } else {
            match n.fdb.lookup(f.dst(), now) {
                Some(vtep) => FromTap::Unicast(vtep),
                None => FromTap::Flood,
            }
        };
        if decision == FromTap::Flood && self.peers.load().list.is_empty() {
            n.counters.dropped(DropReason::NoPeer);
            return FromTap::Drop(DropReason::NoPeer);
        }
        decision
    }

    /// Validates a datagram from `src` and learns its inner source MAC.
    pub fn from_udp(&self, src: SocketAddr, datagram: &[u8], now: Instant) -> FromUdp {
        self.from_udp_in_run(src, datagram, now, &mut RunCache::default())
    }

    /// [`Switch::from_udp`] for one datagram of a receive batch: what `cache` holds from the
    /// batch's earlier datagrams (the sender's VTEP, the network of the VNI, the MAC just
    /// learned) is not looked up again. The decision is the same as `from_udp`'s.
    pub fn from_udp_in_run(
        &self,
        src: SocketAddr,
        datagram: &[u8],
        now: Instant,
        cache: &mut RunCache,
    ) -> FromUdp {
        let drop = |c: &Counters, r| {
            c.dropped(r);
            FromUdp::Drop(r)
        };
        let vtep = match cache.peer {
            Some((from, vtep)) if from == src => vtep,
            _ => {
                let Some(vtep) = self.peers.load().by_ip.get(&src.ip()).copied() else {
                    return drop(&self.underlay, DropReason::NotFromPeer);
                };
                cache.peer = Some((src, vtep));
                vtep
            }
        };
        let packet = match vxlan::Packet::new_checked(datagram) {
            Ok(p) => p,
            Err(WireError::Truncated) => return drop(&self.underlay, DropReason::Truncated),
            Err(WireError::Malformed) => return drop(&self.underlay, DropReason::NoIFlag),
        };
        let vni = packet.vni();
        let net = match cache.vni {
            Some((v, net)) if v == vni => net,
            _ => {
                let Some(&net) = self.by_vni.get(&vni) else {
                    return drop(&self.underlay, DropReason::UnknownVni);
                };
                cache.vni = Some((vni, net));
                net
            }
        };
        let n = &self.networks[net];
        let Ok(inner) = Frame::new_checked(packet.payload()) else {
            return drop(&n.counters, DropReason::Truncated);
        };
        if !inner.src().is_unicast() {
            return drop(&n.counters, DropReason::BadSourceMac);
        }
        // the inner source is parsed once a datagram, looked up once a run of one source
        if let Some(sources) = self.sources.load().as_deref()
            && let Some(ip) = super::sources::Sources::source(packet.payload())
            && cache.source != Some((vtep, ip))
        {
            if !sources.peer_may_send(vtep, ip) {
                return drop(&n.counters, DropReason::ForgedSource);
            }
            cache.source = Some((vtep, ip));
        }
        // room for an 802.1Q tag on top of the MTU and the Ethernet header
        let max = usize::from(n.spec.mtu) + ethernet::HEADER_LEN + ethernet::VLAN_TAG_LEN;
        let mut decision = FromUdp::Deliver { network: net };
        if packet.payload().len() > max {
            let mtu = usize::from(n.spec.mtu);
            match offload::segmentable_ipv4(packet.payload()) {
                Ok((hdr, _)) if hdr - ethernet::HEADER_LEN < mtu => {
                    let mss = mtu - (hdr - ethernet::HEADER_LEN);
                    decision = FromUdp::Segment { network: net, mss };
                }
                _ => return drop(&n.counters, DropReason::Oversize),
            }
        }
        let learned = (net, inner.src(), vtep);
        if cache.learned != Some(learned) {
            if n.fdb.learn(inner.src(), vtep, now) == Learned::Full {
                n.counters
                    .fdb_full
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            } else {
                cache.learned = Some(learned);
            }
        }
        decision
    }

    /// Sweeps expired FDB entries, at most once a second.
    pub fn tick(&self, now: Instant) {
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1)) {
                return;
            }
            *last = Some(now);
        }
        for n in &self.networks {
            n.fdb.expire(now);
        }
    }

    /// Rebuilds static FDB entries and ARP answers from the registry: every container with a
    /// known MAC on another node; FDB entries where that node's VTEP is known. The new tables
    /// are built before they are swapped in: the datapath never waits for this.
    /// The node this switch belongs to.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Turns source validation on with these owners, or off (`None`).
    pub fn set_sources(&self, sources: Option<super::sources::Sources>) {
        self.sources.store(sources.map(Arc::new));
    }

    /// Whether source validation is on.
    pub fn source_check(&self) -> bool {
        self.sources.load().is_some()
    }

    pub fn sync_registry(&self, snapshot: &Snapshot, node_vteps: &HashMap<String, SocketAddr>) {
        let _one = self.changing();
        for n in &self.networks {
            let remote = || {
                snapshot
                    .containers()
                    .filter(|c| c.network == n.spec.name && c.node != self.node)
            };
            let statics = remote().filter_map(|c| Some((c.mac?, *node_vteps.get(&c.node)?)));
            let left_out = n.fdb.set_static(statics);
            if left_out > 0 {
                tracing::warn!(network = %n.spec.name, left_out, "FDB full: static entries left out");
            }
            n.arp.store(Arc::new(
                remote()
                    .filter_map(|c| match (c.ip, c.mac) {
                        (IpAddr::V4(ip), Some(mac)) => Some((ip, mac)),
                        _ => None,
                    })
                    .collect(),
            ));
        }
    }
}

/// Answers an ARP request for a known remote container into `reply`; returns its length.
fn suppress_arp(
    table: &HashMap<Ipv4Addr, MacAddr>,
    f: &Frame<&[u8]>,
    reply: &mut [u8],
) -> Option<usize> {
    let req = arp::Repr::parse(f.payload()).ok()?;
    if req.operation != arp::Operation::Request || req.sender_ip == req.target_ip {
        return None; // gratuitous ARP announces; it is not a question
    }
    let mac = *table.get(&req.target_ip)?;
    let len = ethernet::HEADER_LEN + arp::PACKET_LEN;
    let out = reply.get_mut(..len)?;
    let mut eth = Frame::new_checked(&mut *out).ok()?;
    eth.set_dst(req.sender_mac);
    eth.set_src(mac);
    eth.set_ethertype(ethertype::ARP);
    arp::Repr {
        operation: arp::Operation::Reply,
        sender_mac: mac,
        sender_ip: req.target_ip,
        target_mac: req.sender_mac,
        target_ip: req.sender_ip,
    }
    .emit(eth.payload_mut())
    .ok()?;
    Some(len)
}

/// A hash of the inner flow (MACs, ethertype, and for IPv4 the addresses, protocol and
/// TCP/UDP ports), stable for the life of a flow, so the UDP source port spreads flows over
/// underlay paths (RFC 7348 §5).
pub fn flow_hash(frame: &[u8]) -> u32 {
    let Ok(f) = Frame::new_checked(frame) else {
        return 0;
    };
    let mut h = Fnv::default();
    h.write(&frame[..ethernet::HEADER_LEN]);
    if f.ethertype() == ethertype::IPV4
        && let Ok(ip) = ipv4::Packet::new_checked(f.payload())
    {
        h.write(&ip.src().octets());
        h.write(&ip.dst().octets());
        h.write(&[ip.protocol()]);
        // TCP and UDP put their ports in the same place
        let ports = matches!(ip.protocol(), ipv4::protocol::TCP | ipv4::protocol::UDP);
        if ports && !ip.is_later_fragment() && ip.payload().len() >= 4 {
            h.write(&ip.payload()[crate::wire::tcp::field::PORTS]);
        }
    }
    h.finish()
}

/// FNV-1a, 32 bits: tiny, no allocation, good enough to spread flows.
struct Fnv(u32);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0x811c_9dc5)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u32::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0193);
        }
    }
    fn finish(&self) -> u32 {
        // fold the high bits in: the low bits pick the port
        self.0 ^ (self.0 >> 16)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::registry::{Container, Health, Origin, Registry};

    const H1: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1)), 4789);
    const H2: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 99, 0, 2)), 4789);
    const H3: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 99, 0, 3)), 4789);

    fn net(name: &str, vni: u32) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            vni,
            mtu: 1450,
        }
    }

    fn switch(node: &str, peers: &[SocketAddr]) -> Switch {
        Switch::new(
            node,
            peers,
            &[net("default", 42), net("other", 43)],
            64,
            Duration::from_secs(300),
        )
    }

    pub(crate) fn mac(last: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, last])
    }

    fn frame(dst: MacAddr, src: MacAddr, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        let mut e = Frame::new_checked(&mut f[..]).expect("fits");
        e.set_dst(dst);
        e.set_src(src);
        e.set_ethertype(ethertype::IPV4);
        f
    }

    fn encap(vni: u32, frame: &[u8]) -> Vec<u8> {
        let mut h = [0u8; vxlan::HEADER_LEN];
        vxlan::emit_header(&mut h, vni);
        [&h[..], frame].concat()
    }

    /// Two switches wired by a fake underlay: what h1 sends from its TAP arrives at h2.
    #[test]
    fn two_switches_learn_each_other() {
        let now = Instant::now();
        let (s1, s2) = (switch("h1", &[H2]), switch("h2", &[H1]));
        let mut reply = [0u8; 64];
        let (a, b) = (mac(1), mac(2));
        // a (on h1) broadcasts: flooded to h2, which learns a -> h1
        let bcast = frame(MacAddr::BROADCAST, a, 60);
        assert_eq!(s1.from_tap(0, &bcast, now, &mut reply), FromTap::Flood);
        assert_eq!(
            s2.from_udp(H1, &encap(42, &bcast), now),
            FromUdp::Deliver { network: 0 }
        );
        // b answers a: h2 now knows where a is
        let answer = frame(a, b, 60);
        assert_eq!(
            s2.from_tap(0, &answer, now, &mut reply),
            FromTap::Unicast(H1)
        );
        assert_eq!(
            s1.from_udp(H2, &encap(42, &answer), now),
            FromUdp::Deliver { network: 0 }
        );
        assert_eq!(
            s1.from_tap(0, &frame(b, a, 60), now, &mut reply),
            FromTap::Unicast(H2)
        );
    }

    /// A batch decided with one [`RunCache`] gives every datagram the decision, the counts
    /// and the learning that `from_udp` gives it alone: senders, VNIs and inner sources that
    /// change within the batch, a MAC that moves to another VTEP within it, datagrams that
    /// are dropped, a full FDB counted on every datagram.
    #[test]
    fn a_run_decides_as_each_datagram_alone() {
        let now = Instant::now();
        let h4: SocketAddr = "10.99.0.4:4789".parse().expect("addr");
        let big = frame(mac(9), mac(1), 1600);
        let batch: Vec<(SocketAddr, Vec<u8>)> = vec![
            (H2, encap(42, &frame(mac(9), mac(1), 60))),
            (H2, encap(42, &frame(mac(9), mac(1), 60))),
            (H2, encap(43, &frame(mac(9), mac(1), 60))),
            (H2, encap(42, &frame(mac(9), mac(2), 60))),
            (H3, encap(42, &frame(mac(9), mac(2), 60))), // mac 2 moves to h3
            (H3, encap(44, &frame(mac(9), mac(3), 60))), // unknown VNI
            (h4, encap(42, &frame(mac(9), mac(4), 60))), // not a peer
            (H3, encap(42, &frame(mac(9), MacAddr::BROADCAST, 60))),
            (H3, encap(42, &big)), // oversize, not IPv4
            (H2, vec![0u8; 4]),    // truncated
            (H2, encap(42, &frame(mac(9), mac(1), 60))),
        ];
        let (alone, run) = (switch("h1", &[H2, H3]), switch("h1", &[H2, H3]));
        let mut cache = RunCache::default();
        for (i, (src, d)) in batch.iter().enumerate() {
            assert_eq!(
                run.from_udp_in_run(*src, d, now, &mut cache),
                alone.from_udp(*src, d, now),
                "datagram {i}"
            );
        }
        let mut reply = [0u8; 64];
        for (net, m, at) in [(0, 1, H2), (1, 1, H2), (0, 2, H3)] {
            let f = frame(mac(m), mac(9), 60);
            assert_eq!(
                run.from_tap(net, &f, now, &mut reply),
                FromTap::Unicast(at),
                "network {net}: mac {m} learned behind {at}"
            );
        }
        // the drops compared below are there: not from a peer, unknown VNI, truncated; a
        // broadcast source, oversize
        assert_eq!(run.underlay_counters().total_drops(), 3);
        assert_eq!(run.counters(0).total_drops(), 2);
        for (a, b) in [
            (alone.underlay_counters(), run.underlay_counters()),
            (alone.counters(0), run.counters(0)),
            (alone.counters(1), run.counters(1)),
        ] {
            assert_eq!(a.summary(), b.summary());
            assert_eq!(a.total_drops(), b.total_drops());
        }
        // a full FDB: every datagram from a new MAC is counted, in a run as alone
        let one_entry = || {
            Switch::new(
                "h1",
                &[H2],
                &[net("default", 42)],
                1,
                Duration::from_secs(300),
            )
        };
        let (alone, run) = (one_entry(), one_entry());
        let mut cache = RunCache::default();
        for m in [1, 2, 2, 2] {
            let d = encap(42, &frame(mac(9), mac(m), 60));
            assert_eq!(
                run.from_udp_in_run(H2, &d, now, &mut cache),
                alone.from_udp(H2, &d, now)
            );
        }
        let full = |s: &Switch| {
            s.counters(0)
                .fdb_full
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        assert_eq!((full(&alone), full(&run)), (3, 3));
    }

    #[test]
    fn learning_is_per_vni() {
        let now = Instant::now();
        let s = switch("h1", &[H2]);
        let mut reply = [0u8; 64];
        s.from_udp(H2, &encap(42, &frame(mac(1), mac(2), 60)), now);
        assert_eq!(
            s.from_tap(0, &frame(mac(2), mac(1), 60), now, &mut reply),
            FromTap::Unicast(H2)
        );
        // network 1 (VNI 43) has not learned mac 2: flood within VNI 43 only
        assert_eq!(
            s.from_tap(1, &frame(mac(2), mac(1), 60), now, &mut reply),
            FromTap::Flood
        );
        assert_eq!(
            s.from_udp(H2, &encap(43, &frame(mac(1), mac(2), 60)), now),
            FromUdp::Deliver { network: 1 }
        );
    }

    #[test]
    fn bad_datagrams_are_dropped_with_a_reason() {
        let now = Instant::now();
        let s = switch("h1", &[H2]);
        let good = encap(42, &frame(mac(1), mac(2), 60));
        let stranger = SocketAddr::from(([10, 99, 0, 9], 4789));
        assert_eq!(
            s.from_udp(stranger, &good, now),
            FromUdp::Drop(DropReason::NotFromPeer)
        );
        assert_eq!(
            s.from_udp(H2, &good[..7], now),
            FromUdp::Drop(DropReason::Truncated)
        );
        assert_eq!(
            s.from_udp(H2, &good[..8 + 13], now),
            FromUdp::Drop(DropReason::Truncated)
        );
        let mut no_i = good.clone();
        no_i[0] = 0;
        assert_eq!(
            s.from_udp(H2, &no_i, now),
            FromUdp::Drop(DropReason::NoIFlag)
        );
        assert_eq!(
            s.from_udp(H2, &encap(7, &frame(mac(1), mac(2), 60)), now),
            FromUdp::Drop(DropReason::UnknownVni)
        );
        let big = encap(42, &frame(mac(1), mac(2), 1450 + 14 + 4 + 1));
        assert_eq!(
            s.from_udp(H2, &big, now),
            FromUdp::Drop(DropReason::Oversize)
        );
        // an oversize TCP super-frame is cut into segments, not dropped
        let tcp = tcp_frame(mac(1), mac(2), 40000, &[7; 4000 - 14 - 20 - 20]);
        assert_eq!(
            s.from_udp(H2, &encap(42, &tcp), now),
            FromUdp::Segment {
                network: 0,
                mss: 1410
            }
        );
        let vlan_max = encap(42, &frame(mac(1), mac(2), 1450 + 14 + 4));
        assert_eq!(
            s.from_udp(H2, &vlan_max, now),
            FromUdp::Deliver { network: 0 }
        );
        let mcast_src = encap(42, &frame(mac(1), MacAddr::BROADCAST, 60));
        assert_eq!(
            s.from_udp(H2, &mcast_src, now),
            FromUdp::Drop(DropReason::BadSourceMac)
        );
        assert_eq!(s.underlay_counters().total_drops(), 4);
        assert_eq!(s.counters(0).total_drops(), 3);
        // a peer's datagram from another source port is still the peer
        let other_port = SocketAddr::from(([10, 99, 0, 2], 51234));
        assert_eq!(
            s.from_udp(other_port, &good, now),
            FromUdp::Deliver { network: 0 }
        );
    }

    #[test]
    fn three_hosts_unicast_goes_only_to_the_owner() {
        let now = Instant::now();
        let s1 = switch("h1", &[H2, H3]);
        let mut reply = [0u8; 64];
        s1.from_udp(H3, &encap(42, &frame(MacAddr::BROADCAST, mac(3), 60)), now);
        assert_eq!(
            s1.from_tap(0, &frame(mac(3), mac(1), 60), now, &mut reply),
            FromTap::Unicast(H3)
        );
        // the MAC shows up on h1's own side: the remote entry is forgotten
        s1.from_tap(0, &frame(MacAddr::BROADCAST, mac(3), 60), now, &mut reply);
        assert_eq!(
            s1.from_tap(0, &frame(mac(3), mac(1), 60), now, &mut reply),
            FromTap::Flood
        );
    }

    #[test]
    fn peers_that_leave_are_forgotten() {
        let now = Instant::now();
        let s = switch("h1", &[]);
        let mut reply = [0u8; 64];
        let good = encap(42, &frame(MacAddr::BROADCAST, mac(2), 60));
        assert_eq!(
            s.from_udp(H2, &good, now),
            FromUdp::Drop(DropReason::NotFromPeer)
        );
        assert!(s.set_peers(vec![H3, H2, H2]));
        assert!(!s.set_peers(vec![H2, H3]), "same set, other order");
        assert_eq!(&*s.peers(), &[H2, H3]);
        assert_eq!(s.from_udp(H2, &good, now), FromUdp::Deliver { network: 0 });
        assert_eq!(
            s.from_tap(0, &frame(mac(2), mac(1), 60), now, &mut reply),
            FromTap::Unicast(H2)
        );
        // h2 leaves: its MAC floods (to h3) instead of going to a dead VTEP
        assert!(s.set_peers(vec![H3]));
        assert_eq!(
            s.from_tap(0, &frame(mac(2), mac(1), 60), now, &mut reply),
            FromTap::Flood
        );
        assert_eq!(
            s.from_udp(H2, &good, now),
            FromUdp::Drop(DropReason::NotFromPeer)
        );
    }

    #[test]
    fn no_peers_means_flood_is_a_counted_drop() {
        let now = Instant::now();
        let s = switch("h1", &[]);
        let mut reply = [0u8; 64];
        assert_eq!(
            s.from_tap(0, &frame(MacAddr::BROADCAST, mac(1), 60), now, &mut reply),
            FromTap::Drop(DropReason::NoPeer)
        );
        assert_eq!(
            s.from_tap(0, &[0u8; 13], now, &mut reply),
            FromTap::Drop(DropReason::ShortTapFrame)
        );
    }

    fn arp_request(sender_mac: MacAddr, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
        let mut f = vec![0u8; 42];
        let mut e = Frame::new_checked(&mut f[..]).expect("fits");
        e.set_dst(MacAddr::BROADCAST);
        e.set_src(sender_mac);
        e.set_ethertype(ethertype::ARP);
        arp::Repr {
            operation: arp::Operation::Request,
            sender_mac,
            sender_ip: sender,
            target_mac: MacAddr::default(),
            target_ip: target,
        }
        .emit(e.payload_mut())
        .expect("fits");
        f
    }

    fn registry_with(containers: &[(&str, &str, u8, &str)]) -> Registry {
        let r = Registry::new("app");
        for (name, ip, m, node) in containers {
            r.add(Container {
                name: (*name).into(),
                ip: ip.parse().expect("ip"),
                mac: Some(mac(*m)),
                port: 80,
                labels: Default::default(),
                network: "default".into(),
                node: (*node).into(),
                health: Health::Unknown,
                ready: true,
                origin: Origin::Config,
            })
            .expect("add");
        }
        r
    }

    #[test]
    fn arp_for_remote_containers_is_answered_locally() {
        let now = Instant::now();
        let s = switch("h1", &[H2]);
        let r = registry_with(&[("a", "10.200.1.11", 1, "h1"), ("b", "10.200.2.11", 2, "h2")]);
        let vteps = HashMap::from([("h2".to_string(), H2)]);
        s.sync_registry(&r.snapshot(), &vteps);
        let mut reply = [0u8; 64];
        let req = arp_request(
            mac(1),
            Ipv4Addr::new(10, 200, 1, 11),
            Ipv4Addr::new(10, 200, 2, 11),
        );
        let FromTap::Reply(len) = s.from_tap(0, &req, now, &mut reply) else {
            panic!("expected a local ARP reply");
        };
        let f = Frame::new_checked(&reply[..len]).expect("frame");
        assert_eq!((f.dst(), f.src()), (mac(1), mac(2)));
        let a = arp::Repr::parse(f.payload()).expect("arp");
        assert_eq!(a.operation, arp::Operation::Reply);
        assert_eq!(
            (a.sender_mac, a.sender_ip),
            (mac(2), Ipv4Addr::new(10, 200, 2, 11))
        );
        assert_eq!(
            (a.target_mac, a.target_ip),
            (mac(1), Ipv4Addr::new(10, 200, 1, 11))
        );
        // local containers and unknown IPs are not answered: the request is flooded
        let local = arp_request(
            mac(2),
            Ipv4Addr::new(10, 200, 2, 11),
            Ipv4Addr::new(10, 200, 1, 11),
        );
        assert_eq!(s.from_tap(0, &local, now, &mut reply), FromTap::Flood);
        let unknown = arp_request(
            mac(1),
            Ipv4Addr::new(10, 200, 1, 11),
            Ipv4Addr::new(10, 200, 9, 9),
        );
        assert_eq!(s.from_tap(0, &unknown, now, &mut reply), FromTap::Flood);
        // and the static FDB entry sends unicast to h2 without any learning
        assert_eq!(
            s.from_tap(0, &frame(mac(2), mac(1), 60), now, &mut reply),
            FromTap::Unicast(H2)
        );
    }

    #[test]
    fn learned_entries_age_out_with_the_clock() {
        let t0 = Instant::now();
        let s = Switch::new(
            "h1",
            &[H2],
            &[net("default", 42)],
            8,
            Duration::from_secs(5),
        );
        let mut reply = [0u8; 64];
        s.from_udp(H2, &encap(42, &frame(mac(1), mac(2), 60)), t0);
        assert_eq!(
            s.from_tap(0, &frame(mac(2), mac(1), 60), t0, &mut reply),
            FromTap::Unicast(H2)
        );
        let later = t0 + Duration::from_secs(6);
        assert_eq!(
            s.from_tap(0, &frame(mac(2), mac(1), 60), later, &mut reply),
            FromTap::Flood
        );
        s.tick(later);
        assert!(s.fdb(0).is_empty());
    }

    /// An Ethernet/IPv4/TCP frame `src` → `dst` from port `src_port`, built through `emit`.
    pub(crate) fn tcp_frame(dst: MacAddr, src: MacAddr, src_port: u16, payload: &[u8]) -> Vec<u8> {
        use crate::wire::build::{Ip, Transport, frame};
        use crate::wire::tcp;
        frame(
            ethernet::Repr {
                dst,
                src,
                ethertype: ethertype::IPV4,
            },
            Ip::V4(ipv4::Repr {
                src: Ipv4Addr::new(10, 200, 1, 11),
                dst: Ipv4Addr::new(10, 200, 2, 11),
                protocol: ipv4::protocol::TCP,
                payload_len: 0,
                ttl: 64,
                ident: 1,
                dont_frag: true,
            }),
            Transport::Tcp(tcp::Repr {
                src_port,
                dst_port: 80,
                seq: 1,
                ack: 1,
                flags: tcp::flags::ACK,
                window: 512,
                options: &[],
            }),
            payload,
        )
    }

    #[test]
    fn forged_sources_are_dropped_and_counted_while_the_check_is_on() {
        use crate::registry::{Container, Health, Origin, Registry};
        let r = Registry::new("app");
        let add = |name: &str, ip: [u8; 4], node: &str, m: u8| {
            r.add(Container {
                name: name.into(),
                ip: IpAddr::from(ip),
                mac: Some(mac(m)),
                port: 80,
                labels: Default::default(),
                network: "default".into(),
                node: node.into(),
                health: Health::Unknown,
                ready: true,
                origin: Origin::Config,
            })
            .expect("add");
        };
        add("h1c1", [10, 200, 1, 11], "h1", 1);
        add("h2c1", [10, 200, 2, 11], "h2", 7);
        let s = switch("h1", &[H2]);
        let vteps = HashMap::from([("h2".to_string(), H2)]);
        s.set_sources(Some(super::super::sources::Sources::build(
            &r.snapshot(),
            "h1",
            &[],
            &vteps,
            &Default::default(),
        )));
        let now = Instant::now();
        let mut reply = [0u8; 64];
        // tcp_frame's source address is 10.200.1.11: h1c1's, with MAC 1
        let own = tcp_frame(mac(2), mac(1), 40000, b"x");
        assert_eq!(s.from_tap(0, &own, now, &mut reply), FromTap::Flood);
        let forged = tcp_frame(mac(2), mac(9), 40000, b"x");
        assert_eq!(
            s.from_tap(0, &forged, now, &mut reply),
            FromTap::Drop(DropReason::ForgedSource)
        );
        assert_eq!(
            s.from_udp(H2, &encap(42, &tcp_frame(mac(1), mac(7), 1, b"x")), now),
            FromUdp::Drop(DropReason::ForgedSource),
            "h2 sending from h1c1's address"
        );
        assert_eq!(s.counters(0).drops(DropReason::ForgedSource), 2);
        s.set_sources(None);
        assert_eq!(
            s.from_tap(0, &forged, now, &mut reply),
            FromTap::Flood,
            "check off"
        );
    }

    #[test]
    fn flow_hash_is_stable_per_flow_and_spreads_flows() {
        let flow = |src_port, payload: &[u8]| tcp_frame(mac(2), mac(1), src_port, payload);
        let h1 = flow_hash(&flow(40000, b"a"));
        assert_eq!(
            h1,
            flow_hash(&flow(40000, b"other bytes")),
            "one flow, one hash"
        );
        assert_ne!(h1, flow_hash(&flow(40001, b"a")), "another source port");
        assert_eq!(flow_hash(&[0u8; 3]), 0);
    }
}
