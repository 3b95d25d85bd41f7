//! Who the overlay's peers are, followed from the registry: the configured VTEPs plus every
//! node the shared registry knows, and the static FDB entries and ARP answers for the
//! containers on other nodes.

use super::switch::Switch;
use crate::registry::Snapshot;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Who the peers are: the configured ones plus every node the shared registry knows.
pub(super) struct Membership {
    pub(super) peers: Vec<SocketAddr>,
    pub(super) peer_nodes: HashMap<String, SocketAddr>,
    /// This node's own VTEP, never a peer of itself.
    pub(super) me: SocketAddr,
}

impl Membership {
    pub(super) fn apply(&self, switch: &Switch, snapshot: &Snapshot) {
        let mut node_vteps = self.peer_nodes.clone();
        let mut peers = self.peers.clone();
        for (node, vtep) in snapshot.nodes() {
            if let Some(v) = *vtep
                && v != self.me
            {
                node_vteps.insert(node.clone(), v);
                peers.push(v);
            }
        }
        if switch.set_peers(peers) {
            tracing::info!(peers = ?switch.peers(), "overlay peers changed");
        }
        switch.sync_registry(snapshot, &node_vteps);
    }
}
