//! Who the overlay's peers are, followed from the registry: the configured VTEPs plus every
//! node the shared registry knows, and the static FDB entries and ARP answers for the
//! containers on other nodes.
//!
//! With encryption, a node that publishes a WireGuard identity is a WireGuard peer and its
//! VTEP is its tunnel address; a node that publishes none is used as a plain VTEP only with
//! `allow_plaintext`, and otherwise left out, logged and shown by name.

use super::sources::Sources;
use super::switch::Switch;
use super::wg::{Crypto, PeerSpec, VXLAN_PORT};
use crate::registry::Snapshot;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// Who the peers are: the configured ones plus every node the shared registry knows.
pub(super) struct Membership {
    /// Configured plain VTEPs (`overlay.peers`).
    pub(super) peers: Vec<SocketAddr>,
    pub(super) peer_nodes: HashMap<String, SocketAddr>,
    /// This node's own plain VTEP, never a peer of itself.
    pub(super) me: Option<SocketAddr>,
    /// WireGuard's sessions and the configured WireGuard peers.
    pub(super) wireguard: Option<(Arc<Crypto>, Vec<PeerSpec>)>,
    /// The WireGuard peers last set, to change the sessions only when they change.
    pub(super) last: Vec<PeerSpec>,
    /// `overlay.source_check`: on, off, or `None`: on whenever policy is in use.
    pub(super) source_check: Option<bool>,
    /// Some network is `isolated` (policy is then in use).
    pub(super) isolated_networks: bool,
    /// This node's gateway addresses (on the bridges its TAPs are in), as the one watcher
    /// the policy and the etcd node record share last read them.
    pub(super) gateways: Vec<std::net::IpAddr>,
    /// A static fleet's other nodes' gateway addresses.
    pub(super) peer_gateways: std::collections::BTreeMap<String, Vec<std::net::IpAddr>>,
}

impl Membership {
    pub(super) fn apply(&mut self, switch: &Switch, snapshot: &Snapshot) {
        let mut node_vteps = self.peer_nodes.clone();
        let mut peers = self.peers.clone();
        let mut wg_peers: Vec<PeerSpec> = self
            .wireguard
            .as_ref()
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
        peers.extend(
            wg_peers
                .iter()
                .map(|p| SocketAddr::new(p.address.into(), VXLAN_PORT)),
        );
        let mut left_out = Vec::new();
        for (node, n) in snapshot.nodes() {
            let vtep = match (&self.wireguard, &n.wireguard) {
                (Some(_), Some(w)) => {
                    wg_peers.push(PeerSpec {
                        public_key: w.public_key,
                        endpoint: w.endpoint,
                        address: w.address,
                    });
                    Some(SocketAddr::new(w.address.into(), VXLAN_PORT))
                }
                (Some((c, _)), None) if !c.allow_plaintext => {
                    if n.vtep.is_some() {
                        left_out.push(node.clone());
                    }
                    None
                }
                _ => n.vtep,
            };
            if let Some(v) = vtep
                && Some(v) != self.me
            {
                node_vteps.insert(node.clone(), v);
                peers.push(v);
            }
        }
        if let Some((crypto, _)) = &self.wireguard {
            if wg_peers != self.last {
                for r in crypto.set_peers(&wg_peers) {
                    tracing::warn!(address = %r.address, "overlay: WireGuard peer left out: {}", r.why);
                }
                tracing::info!(peers = wg_peers.len(), "overlay: WireGuard peers changed");
                self.last = wg_peers;
            }
            if crypto.set_left_out(left_out.clone()) && !left_out.is_empty() {
                tracing::warn!(
                    nodes = ?left_out,
                    "overlay: nodes that publish no WireGuard key are not used (this host requires encryption; allow_plaintext = true admits them)"
                );
            }
        }
        if switch.set_peers(peers) {
            tracing::info!(peers = ?switch.peers(), "overlay peers changed");
        }
        switch.sync_registry(snapshot, &node_vteps);
        self.sync_sources(switch, snapshot, &node_vteps);
    }

    /// Source validation: on when configured, or by default whenever policy is in use.
    fn sync_sources(
        &self,
        switch: &Switch,
        snapshot: &Snapshot,
        node_vteps: &HashMap<String, SocketAddr>,
    ) {
        let policy = self.isolated_networks
            || snapshot
                .containers()
                .any(|c| c.labels.contains_key(crate::policy::ALLOW_LABEL));
        let on = self.source_check.unwrap_or(policy);
        let was = switch.source_check();
        switch.set_sources(on.then(|| {
            Sources::build(
                snapshot,
                switch.node(),
                &self.gateways,
                node_vteps,
                &self.peer_gateways,
            )
        }));
        if on != was {
            tracing::info!(on, "overlay: source validation");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::switch::NetworkSpec;
    use crate::overlay::wg::{WgSpec, generate_key, public_key};
    use crate::registry::{Node, Registry, WgIdentity};
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn membership(allow_plaintext: bool) -> (Membership, Arc<Crypto>, Switch) {
        let crypto = Arc::new(Crypto::new(&WgSpec {
            listen: "10.99.0.1:51820".parse().expect("a"),
            address: [10, 250, 0, 1].into(),
            private_key: generate_key().expect("k"),
            allow_plaintext,
            peers: Vec::new(),
        }));
        let net = NetworkSpec {
            name: "default".into(),
            vni: 42,
            mtu: 1390,
        };
        let switch = Switch::new("h1", &[], &[net], 64, Duration::from_secs(300));
        let m = Membership {
            peers: Vec::new(),
            peer_nodes: HashMap::new(),
            me: Some("10.99.0.1:4789".parse().expect("a")),
            wireguard: Some((crypto.clone(), Vec::new())),
            last: Vec::new(),
            source_check: None,
            isolated_networks: false,
            gateways: Vec::new(),
            peer_gateways: Default::default(),
        };
        (m, crypto, switch)
    }

    /// The source check takes this node's gateway addresses from what the shared watcher
    /// last read (`gateways`), not from its own reading: a frame from the TAP with a gateway
    /// address leaves while the address is listed, and is a forged source once it is not.
    #[test]
    fn the_source_check_follows_the_gateway_addresses_it_is_given() {
        use crate::overlay::counters::DropReason;
        use crate::overlay::switch::FromTap;
        use crate::overlay::switch::tests::{mac, tcp_frame};
        let r = Registry::new("app");
        let (mut m, _, switch) = membership(false);
        m.source_check = Some(true);
        m.peers = vec!["10.99.0.2:4789".parse().expect("a")]; // somewhere to flood to
        // tcp_frame's source address is 10.200.1.11; here, this node's gateway
        m.gateways = vec![std::net::IpAddr::from([10, 200, 1, 11])];
        m.apply(&switch, &r.snapshot());
        let frame = tcp_frame(mac(2), mac(1), 40000, b"x");
        let now = std::time::Instant::now();
        let mut reply = [0u8; 64];
        assert_eq!(switch.from_tap(0, &frame, now, &mut reply), FromTap::Flood);
        m.gateways.clear();
        m.apply(&switch, &r.snapshot());
        assert_eq!(
            switch.from_tap(0, &frame, now, &mut reply),
            FromTap::Drop(DropReason::ForgedSource)
        );
    }

    /// etcd's node records make WireGuard peers (their tunnel addresses the VTEPs); a node
    /// without a key is left out and named, unless plain VXLAN is allowed; a node that
    /// leaves takes its session with it.
    #[test]
    fn node_records_make_wireguard_peers_and_keyless_nodes_are_named() {
        let key = public_key(&generate_key().expect("k"));
        let nodes: BTreeMap<String, Node> = [
            (
                "h2".to_string(),
                Node {
                    vtep: Some("10.99.0.2:4789".parse().expect("a")),
                    wireguard: Some(WgIdentity {
                        public_key: key,
                        endpoint: "10.99.0.2:51820".parse().expect("a"),
                        address: [10, 250, 0, 2].into(),
                    }),
                    gateways: vec![],
                },
            ),
            (
                "old".to_string(),
                Node {
                    vtep: Some("10.99.0.3:4789".parse().expect("a")),
                    wireguard: None,
                    gateways: vec![],
                },
            ),
        ]
        .into();
        let r = Registry::new("app");
        r.set_remote(Vec::new(), nodes.clone());
        let (mut m, crypto, switch) = membership(false);
        m.apply(&switch, &r.snapshot());
        let peers = crypto.peers();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].address, std::net::Ipv4Addr::new(10, 250, 0, 2));
        assert_eq!(&*switch.peers(), ["10.250.0.2:4789".parse().expect("a")]);
        assert_eq!(crypto.left_out(), ["old"]);

        let (mut m, crypto, switch) = membership(true);
        m.apply(&switch, &r.snapshot());
        let mut vteps = switch.peers().to_vec();
        vteps.sort();
        assert_eq!(
            vteps,
            [
                "10.99.0.3:4789".parse().expect("a"),
                "10.250.0.2:4789".parse().expect("a")
            ],
            "with allow_plaintext the keyless node is a plain peer"
        );
        assert!(crypto.left_out().is_empty());

        r.set_remote(Vec::new(), BTreeMap::new());
        m.apply(&switch, &r.snapshot());
        assert!(crypto.peers().is_empty() && switch.peers().is_empty());
    }
}
