//! What the overlay's parts share: its specs (what it needs to start), the underlay sockets
//! bound before it starts, and the handle the rest of vxgate keeps of a running overlay.

use super::counters::Counters;
use super::error::Error;
use super::io;
use super::offload::Features;
use super::switch::{NetworkSpec, Switch};
use super::wg;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What the overlay needs to start: the underlay socket, the peers, and each network with
/// its TAP.
#[derive(Debug, Clone)]
pub struct OverlaySpec {
    /// The plain VXLAN socket; None only with encryption and no plain peers.
    pub listen: Option<SocketAddr>,
    /// The VTEP other nodes reach this one at, when it is not `listen`.
    pub advertise: Option<SocketAddr>,
    /// Remote VTEPs known without the shared registry.
    pub peers: Vec<SocketAddr>,
    /// Which node sits behind which of those VTEPs (for static FDB entries).
    pub peer_nodes: BTreeMap<String, SocketAddr>,
    /// Those nodes' gateway addresses (static fleets; with etcd the node records carry them).
    pub peer_gateways: BTreeMap<String, Vec<std::net::IpAddr>>,
    pub fdb_aging: Duration,
    /// Use the kernel's TAP and UDP offloads where it has them.
    pub offload: bool,
    /// Offloads not used even where the kernel has them.
    pub offloads_off: OffloadsOff,
    /// `overlay.source_check`: on, off, or `None`: on whenever policy is in use.
    pub source_check: Option<bool>,
    /// Some network is `isolated` (policy is then in use).
    pub isolated_networks: bool,
    pub networks: Vec<TapNetwork>,
    /// WireGuard between hosts: VXLAN to `peers` that are tunnel addresses goes sealed.
    pub encryption: Option<EncryptionSpec>,
}

/// Offloads turned off by name (`VXGATE_OFFLOAD_DISABLE=udp_gro,udp_gso`): for
/// troubleshooting and for testing each fallback.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OffloadsOff {
    pub tap_tso: bool,
    pub tap_uso: bool,
    pub udp_gso: bool,
    pub udp_gro: bool,
    pub multi_queue: bool,
}

impl OffloadsOff {
    /// The comma-separated names in `list`; the names it does not know, apart.
    pub fn parse(list: &str) -> (OffloadsOff, Vec<String>) {
        let mut off = OffloadsOff::default();
        let mut unknown = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "tap_tso" => off.tap_tso = true,
                "tap_uso" => off.tap_uso = true,
                "udp_gso" => off.udp_gso = true,
                "udp_gro" => off.udp_gro = true,
                "multi_queue" => off.multi_queue = true,
                _ => unknown.push(name.to_owned()),
            }
        }
        (off, unknown)
    }
}

/// `[overlay.encryption]`, as the overlay takes it (the key is read or made at bind).
#[derive(Debug, Clone)]
pub struct EncryptionSpec {
    pub listen: SocketAddr,
    pub address: std::net::Ipv4Addr,
    pub key_file: std::path::PathBuf,
    pub allow_plaintext: bool,
    pub peers: Vec<wg::PeerSpec>,
}

/// One overlay network and its TAP.
#[derive(Debug, Clone)]
pub struct TapNetwork {
    pub spec: NetworkSpec,
    /// The TAP device (created if missing).
    pub tap: String,
    /// A Linux bridge to keep the TAP in, when it exists.
    pub bridge: Option<String>,
}

/// The underlay sockets, bound before the overlay starts: the receive socket on
/// `overlay.listen` and the send sockets beside it (source ports 49152–65535).
pub struct Underlay {
    /// Plain VXLAN's sockets; None without `overlay.listen` (encrypted only).
    pub plain: Option<PlainSockets>,
    /// `recv` has `SO_REUSEPORT`, so further TAP queues can each bind a receive socket.
    pub reuse_port: bool,
    /// With `[overlay.encryption]`: WireGuard's socket and the sessions.
    pub wireguard: Option<(std::net::UdpSocket, Arc<wg::Crypto>)>,
}

/// Plain VXLAN's receive socket and the send sockets beside it.
pub struct PlainSockets {
    /// The address `recv` is bound at (the actual port, when `listen` asked for port 0).
    pub listen: SocketAddr,
    pub recv: std::net::UdpSocket,
    pub senders: Vec<std::net::UdpSocket>,
}

impl PlainSockets {
    /// Binds the receive socket at `listen` and the send pool beside it.
    pub fn bind(listen: SocketAddr, reuse_port: bool) -> Result<PlainSockets, Error> {
        let recv = io::bind_udp(listen, reuse_port).map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
        let listen = recv.local_addr().unwrap_or(listen);
        let senders = io::bind_send_pool(listen)?;
        Ok(PlainSockets {
            listen,
            recv,
            senders,
        })
    }
}

/// What the rest of vxgate can see of a running overlay.
#[derive(Clone)]
pub struct Overlay {
    pub switch: Arc<Switch>,
    pub networks: Vec<NetworkSpec>,
    /// The datapath in use and its offloads.
    pub features: Arc<Features>,
    /// WireGuard's sessions, with `[overlay.encryption]`.
    pub wireguard: Option<Arc<wg::Crypto>>,
    /// The configured WireGuard peers, changed by a reload.
    pub wireguard_peers: Option<tokio::sync::watch::Sender<Vec<wg::PeerSpec>>>,
}

impl Overlay {
    /// (network name, counters) for each network, then ("underlay", drops of no network).
    pub fn counters(&self) -> Vec<(String, Arc<Counters>)> {
        let s = &self.switch;
        let mut out: Vec<_> = self
            .networks
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), s.counters(i).clone()))
            .collect();
        out.push(("underlay".into(), s.underlay_counters().clone()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::OffloadsOff;

    #[test]
    fn offloads_are_turned_off_by_name_and_unknown_names_reported() {
        let (off, unknown) = OffloadsOff::parse(" udp_gro,udp_gso ,bogus,");
        assert!(off.udp_gro && off.udp_gso && !off.tap_tso && !off.multi_queue);
        assert_eq!(unknown, ["bogus"]);
        assert_eq!(OffloadsOff::parse(""), (OffloadsOff::default(), vec![]));
    }
}
