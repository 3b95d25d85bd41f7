//! Source validation (`overlay.source_check`), pure: a frame whose IP source (or ARP sender)
//! is not one the sending side owns is dropped, so a container cannot forge another
//! service's address and pass the policy's rules on another host.
//!
//! - From the local TAP: the source must be one of this host's containers (from that
//!   container's MAC, where the registry knows it) or this host's gateway addresses.
//! - From a peer: the source must be one of that peer node's containers or gateway addresses.
//!   An address the registry gives to no node whose VTEP is known is not checked (a peer
//!   without a known gateway still reaches containers from its own addresses).
//!
//! Unspecified sources (DHCP's 0.0.0.0, DAD's ::) and IPv6 link-local ones (neighbour
//! discovery) are never refused; frames that are neither IP nor ARP pass.

use crate::registry::Snapshot;
use crate::wire::ethernet::{Frame, MacAddr, ethertype};
use crate::wire::{arp, ipv4, ipv6};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// Who may send from which address, built from a registry snapshot off the packet path.
#[derive(Debug, Default)]
pub struct Sources {
    /// This host's containers and gateway addresses, with the MAC each must come from.
    local: HashMap<IpAddr, Option<MacAddr>>,
    /// Every address that belongs to a node whose VTEP is known, and that VTEP.
    owner: HashMap<IpAddr, SocketAddr>,
}

impl Sources {
    /// `me` is this node; `gateways` its own addresses on the overlay's bridges;
    /// `node_vteps` each other node's VTEP; `peer_gateways` other nodes' gateway addresses
    /// as the config lists them (static fleets).
    pub fn build(
        snapshot: &Snapshot,
        me: &str,
        gateways: &[IpAddr],
        node_vteps: &HashMap<String, SocketAddr>,
        peer_gateways: &std::collections::BTreeMap<String, Vec<IpAddr>>,
    ) -> Sources {
        let mut s = Sources::default();
        for g in gateways {
            s.local.insert(*g, None);
        }
        for c in snapshot.containers() {
            if c.node == me {
                s.local.insert(c.ip, c.mac);
            } else if let Some(v) = node_vteps.get(&c.node) {
                s.owner.insert(c.ip, *v);
            }
        }
        let published = snapshot.nodes().iter().map(|(node, n)| (node, &n.gateways));
        for (node, gateways) in published.chain(peer_gateways.iter()) {
            if let Some(v) = node_vteps.get(node) {
                for g in gateways {
                    s.owner.insert(*g, *v);
                }
            }
        }
        s
    }

    /// Whether a frame read from this host's TAP may leave.
    pub fn from_local(&self, frame: &[u8]) -> bool {
        match source_of(frame) {
            Some((ip, mac)) => match self.local.get(&ip) {
                Some(Some(owner_mac)) => *owner_mac == mac,
                Some(None) => true,
                None => false,
            },
            None => true,
        }
    }

    /// Whether a frame from the peer at `vtep` may be delivered.
    pub fn from_peer(&self, vtep: SocketAddr, frame: &[u8]) -> bool {
        Sources::source(frame).is_none_or(|ip| self.peer_may_send(vtep, ip))
    }

    /// Whether the peer at `vtep` may send from `ip` (a frame's [`Sources::source`]).
    pub fn peer_may_send(&self, vtep: SocketAddr, ip: IpAddr) -> bool {
        !self.local.contains_key(&ip) && self.owner.get(&ip).is_none_or(|v| *v == vtep)
    }

    /// The IP source of `frame` to check; `None`: nothing to check.
    pub fn source(frame: &[u8]) -> Option<IpAddr> {
        source_of(frame).map(|(ip, _)| ip)
    }
}

/// The source address (and MAC) a frame claims: the IP source, or an ARP sender.
fn source_of(frame: &[u8]) -> Option<(IpAddr, MacAddr)> {
    let f = Frame::new_checked(frame).ok()?;
    let (et, l3) = f.network_layer().ok()?;
    let body = frame.get(l3..)?;
    let ip = match et {
        ethertype::IPV4 => IpAddr::V4(ipv4::Packet::header_only(body).ok()?.src()),
        ethertype::IPV6 => IpAddr::V6(ipv6::Packet::header_only(body).ok()?.src()),
        ethertype::ARP => IpAddr::V4(arp::Repr::parse(body).ok()?.sender_ip),
        _ => return None,
    };
    let exempt =
        ip.is_unspecified() || matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
    (!exempt).then_some((ip, f.src()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Container, Health, Node, Origin, Registry};
    use crate::wire::build::{Ip, Transport, frame};
    use crate::wire::{ethernet, tcp};
    use std::collections::BTreeMap;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    fn c(name: &str, ip: &str, node: &str, m: Option<u8>) -> Container {
        Container {
            name: name.into(),
            ip: ip.parse().expect("ip"),
            mac: m.map(mac),
            port: 80,
            labels: BTreeMap::from([("app".into(), "web".into())]),
            network: "default".into(),
            node: node.into(),
            health: Health::Unknown,
            ready: true,
            origin: Origin::Config,
        }
    }

    /// A TCP frame from `src` (MAC `m`).
    fn from(src: &str, m: u8) -> Vec<u8> {
        let ip = match src.parse::<IpAddr>().expect("ip") {
            IpAddr::V4(a) => Ip::V4(ipv4::Repr {
                src: a,
                dst: [10, 200, 9, 9].into(),
                protocol: 0,
                payload_len: 0,
                ttl: 64,
                ident: 1,
                dont_frag: true,
            }),
            IpAddr::V6(a) => Ip::V6(ipv6::Repr {
                src: a,
                dst: "fd00::99".parse().expect("ip"),
                next_header: 0,
                payload_len: 0,
                hop_limit: 64,
                traffic_class: 0,
                flow_label: 0,
            }),
        };
        let eth = ethernet::Repr {
            dst: mac(99),
            src: mac(m),
            ethertype: 0,
        };
        let t = tcp::Repr {
            src_port: 1,
            dst_port: 80,
            seq: 1,
            ack: 0,
            flags: tcp::flags::SYN,
            window: 100,
            options: &[],
        };
        frame(eth, ip, Transport::Tcp(t), b"")
    }

    #[test]
    fn a_container_speaks_only_from_its_own_address_and_mac() {
        let r = Registry::new("app");
        r.add(c("h1c1", "10.200.1.11", "h1", Some(11)))
            .expect("add");
        r.add(c("h1c2", "10.200.1.12", "h1", None)).expect("add");
        r.add(c("h2c1", "10.200.2.11", "h2", Some(21)))
            .expect("add");
        r.add(c("h3c1", "10.200.3.11", "h3", None)).expect("add");
        let h2: SocketAddr = "10.99.0.2:4789".parse().expect("a");
        let vteps = HashMap::from([("h2".to_string(), h2)]);
        let gw: IpAddr = "10.200.1.1".parse().expect("ip");
        let configured =
            BTreeMap::from([("h2".to_string(), vec!["10.200.2.1".parse().expect("ip")])]);
        let s = Sources::build(&r.snapshot(), "h1", &[gw], &vteps, &configured);
        // the local side
        assert!(s.from_local(&from("10.200.1.11", 11)));
        assert!(
            !s.from_local(&from("10.200.1.11", 12)),
            "its address from another MAC"
        );
        assert!(
            s.from_local(&from("10.200.1.12", 77)),
            "no MAC known: the address decides"
        );
        assert!(
            !s.from_local(&from("10.200.2.11", 11)),
            "h2's container's address"
        );
        assert!(
            !s.from_local(&from("10.200.1.99", 11)),
            "an address nobody has"
        );
        assert!(s.from_local(&from("10.200.1.1", 1)), "this host's gateway");
        assert!(
            s.from_local(&from("fe80::1", 11)),
            "link-local: neighbour discovery"
        );
        assert!(
            s.from_local(&[0u8; 10]),
            "not a frame with a source: passes"
        );
        // from peers
        assert!(s.from_peer(h2, &from("10.200.2.11", 21)));
        let h3: SocketAddr = "10.99.0.3:4789".parse().expect("a");
        assert!(
            !s.from_peer(h3, &from("10.200.2.11", 21)),
            "h2's address from another peer"
        );
        assert!(
            !s.from_peer(h2, &from("10.200.1.11", 21)),
            "this host's own container's"
        );
        assert!(
            s.from_peer(h2, &from("10.200.3.11", 5)),
            "h3's VTEP unknown: unchecked"
        );
        assert!(
            !s.from_peer(h2, &from("10.200.1.1", 5)),
            "this host's gateway"
        );
    }

    #[test]
    fn a_peers_published_gateways_are_its_own_and_arp_senders_are_checked() {
        let r = Registry::new("app");
        let h2: SocketAddr = "10.99.0.2:4789".parse().expect("a");
        let node = Node {
            vtep: Some(h2),
            wireguard: None,
            gateways: vec!["10.200.2.1".parse().expect("ip")],
        };
        let refused = r.set_remote(vec![], BTreeMap::from([("h2".to_string(), node)]));
        assert!(refused.is_empty());
        r.add(c("h1c1", "10.200.1.11", "h1", Some(11)))
            .expect("add");
        let vteps = HashMap::from([("h2".to_string(), h2)]);
        let s = Sources::build(&r.snapshot(), "h1", &[], &vteps, &BTreeMap::new());
        let h3: SocketAddr = "10.99.0.3:4789".parse().expect("a");
        assert!(s.from_peer(h2, &from("10.200.2.1", 2)));
        assert!(
            !s.from_peer(h3, &from("10.200.2.1", 2)),
            "h2's gateway from h3"
        );
        // an ARP reply claiming h1c1's address, from another MAC
        let mut arp_frame = vec![0u8; 42];
        {
            let mut f = Frame::new_checked(&mut arp_frame[..]).expect("fits");
            ethernet::Repr {
                dst: MacAddr::BROADCAST,
                src: mac(66),
                ethertype: ethertype::ARP,
            }
            .emit(&mut f);
        }
        let arp = |mac_: MacAddr| arp::Repr {
            operation: arp::Operation::Reply,
            sender_mac: mac_,
            sender_ip: [10, 200, 1, 11].into(),
            target_mac: MacAddr::BROADCAST,
            target_ip: [10, 200, 1, 12].into(),
        };
        arp(mac(66)).emit(&mut arp_frame[14..]).expect("fits");
        assert!(
            !s.from_local(&arp_frame),
            "ARP claiming h1c1's address from MAC 66"
        );
        let mut own = arp_frame.clone();
        own[6..12].copy_from_slice(&mac(11).0);
        assert!(s.from_local(&own), "h1c1's own ARP");
    }
}
