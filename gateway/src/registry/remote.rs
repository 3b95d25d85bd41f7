//! The shared registry's key layout and the state built from it, without I/O.
//!
//! Under a prefix (default `/vxgate/`), each node writes, all attached to its own lease:
//!
//! ```text
//! {prefix}nodes/{node}               {"vtep":"10.99.0.1:4789"}      (vtep null without a plain overlay socket)
//!                                    + "wireguard":{"public_key":..,"endpoint":"10.99.0.1:51820","address":"10.250.0.1"}
//!                                      when its overlay is encrypted
//! {prefix}containers/{node}/{name}   {"name":..,"ip":..,"mac":..,"port":..,"labels":{..},"network":..}
//! ```
//!
//! [`RemoteState`] mirrors every other node's keys (a full read, then watch events) and turns
//! them into registry entries. Values are JSON with a fixed field order, so a node can compare
//! what it wants published with what is there byte for byte.

use super::{Container, Health, Node, Origin, Snapshot, WgIdentity};
use crate::wire::ethernet::MacAddr;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Key names under the prefix.
#[derive(Debug, Clone)]
pub struct Layout {
    prefix: String,
}

/// What a key under the prefix names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Node(String),
    Container { node: String, name: String },
}

impl Key {
    /// The node that owns (writes) this key.
    pub fn node(&self) -> &str {
        match self {
            Key::Node(n) | Key::Container { node: n, .. } => n,
        }
    }
}

impl Layout {
    /// `prefix` gets a trailing `/` if it has none.
    pub fn new(prefix: &str) -> Layout {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Layout { prefix }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn node_key(&self, node: &str) -> String {
        format!("{}nodes/{node}", self.prefix)
    }

    pub fn container_key(&self, node: &str, name: &str) -> String {
        format!("{}containers/{node}/{name}", self.prefix)
    }

    /// Names a key, or `None` for keys that are not ours to read (unknown layout).
    pub fn parse(&self, key: &[u8]) -> Option<Key> {
        let key = std::str::from_utf8(key).ok()?.strip_prefix(&self.prefix)?;
        if let Some(node) = key.strip_prefix("nodes/") {
            return (!node.is_empty() && !node.contains('/')).then(|| Key::Node(node.to_owned()));
        }
        let (node, name) = key.strip_prefix("containers/")?.split_once('/')?;
        (!node.is_empty() && !name.is_empty() && !name.contains('/')).then(|| Key::Container {
            node: node.to_owned(),
            name: name.to_owned(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeRecord {
    vtep: Option<SocketAddr>,
    /// Only with encryption, so a plain node's record stays what older nodes read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wireguard: Option<WgRecord>,
    /// Only when known, for the same reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    gateways: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WgRecord {
    /// base64, as `wg pubkey` prints it.
    public_key: String,
    endpoint: SocketAddr,
    address: std::net::Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContainerRecord {
    name: String,
    ip: IpAddr,
    mac: Option<String>,
    port: u16,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    network: String,
    /// Written only when false (a Docker container whose HEALTHCHECK is not healthy yet), so
    /// the records of ready containers stay what older nodes read.
    #[serde(default = "ready_default", skip_serializing_if = "is_ready")]
    ready: bool,
}

fn ready_default() -> bool {
    true
}

fn is_ready(ready: &bool) -> bool {
    *ready
}

/// The keys and values this node wants in etcd for the local part of `snapshot`: its node
/// record and every container it owns (config, API or Docker, `node` = this node).
pub fn local_records(
    layout: &Layout,
    me: &str,
    node: &Node,
    snapshot: &Snapshot,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let record = NodeRecord {
        vtep: node.vtep,
        wireguard: node.wireguard.as_ref().map(|w| WgRecord {
            public_key: crate::crypto::encode_key(&w.public_key),
            endpoint: w.endpoint,
            address: w.address,
        }),
        gateways: node.gateways.clone(),
    };
    out.insert(layout.node_key(me), json(&record));
    for c in snapshot.containers() {
        if c.origin == Origin::Remote || c.node != me {
            continue;
        }
        let record = ContainerRecord {
            name: c.name.clone(),
            ip: c.ip,
            mac: c.mac.map(|m| m.to_string()),
            port: c.port,
            labels: c.labels.clone(),
            network: c.network.clone(),
            ready: c.ready,
        };
        out.insert(layout.container_key(me, &c.name), json(&record));
    }
    out
}

fn json<T: Serialize>(v: &T) -> String {
    // Serialising these plain structs cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq)]
enum Entry {
    Node(Node),
    /// Shared with the registry, which keeps this very entry while it is unchanged (a
    /// republish of the remote set then compares pointers, not containers).
    Container(Arc<Container>),
}

/// Every other node's records, as last read from etcd.
#[derive(Debug)]
pub struct RemoteState {
    me: String,
    layout: Layout,
    /// Container records by key: a persistent map, handed to the registry whole at no cost
    /// and compared with the last one in the size of the change
    /// ([`super::Registry::sync_remote`]).
    containers: RemoteContainers,
    /// Node records by key.
    nodes: BTreeMap<Vec<u8>, Node>,
    /// Whether a node record changed since [`RemoteState::take_nodes_changed`].
    nodes_changed: bool,
}

/// Other nodes' containers by their etcd key.
pub type RemoteContainers = imbl::OrdMap<Vec<u8>, Arc<Container>>;

/// Why a value was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {why}")]
pub struct BadRecord {
    pub key: String,
    pub why: String,
}

impl RemoteState {
    pub fn new(me: &str, layout: Layout) -> RemoteState {
        RemoteState {
            me: me.to_owned(),
            layout,
            containers: RemoteContainers::new(),
            nodes: BTreeMap::new(),
            nodes_changed: true,
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Forgets everything (before a full read).
    pub fn clear(&mut self) {
        self.containers = RemoteContainers::new();
        self.nodes.clear();
        self.nodes_changed = true;
    }

    /// Whether this key belongs to this node (so it is not mirrored).
    pub fn is_own(&self, key: &[u8]) -> bool {
        self.layout.parse(key).is_some_and(|k| k.node() == self.me)
    }

    /// Takes a put. Returns whether the remote view changed. Own keys and foreign keys are
    /// ignored; a malformed value removes any earlier value of that key and is reported.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<bool, BadRecord> {
        let Some(parsed) = self.layout.parse(key) else {
            return Ok(false);
        };
        if parsed.node() == self.me {
            return Ok(false);
        }
        match decode(&parsed, value) {
            Ok(Entry::Container(c)) => {
                Ok(self.containers.insert(key.to_vec(), c.clone()).as_ref() != Some(&c))
            }
            Ok(Entry::Node(n)) => {
                let changed = self.nodes.insert(key.to_vec(), n.clone()).as_ref() != Some(&n);
                self.nodes_changed |= changed;
                Ok(changed)
            }
            Err(why) => {
                self.delete(key);
                Err(BadRecord {
                    key: String::from_utf8_lossy(key).into_owned(),
                    why: why.to_string(),
                })
            }
        }
    }

    /// Takes a delete. Returns whether the remote view changed.
    pub fn delete(&mut self, key: &[u8]) -> bool {
        let node = self.nodes.remove(key).is_some();
        self.nodes_changed |= node;
        self.containers.remove(key).is_some() || node
    }

    /// Remote containers, to be published as [`Origin::Remote`] registry entries.
    pub fn containers(&self) -> Vec<Arc<Container>> {
        self.containers.values().cloned().collect()
    }

    /// The same by key, shared (no copy).
    pub fn container_map(&self) -> &RemoteContainers {
        &self.containers
    }

    /// Whether a node record changed since the last call (true at first and after
    /// [`RemoteState::clear`]).
    pub fn take_nodes_changed(&mut self) -> bool {
        std::mem::take(&mut self.nodes_changed)
    }

    /// Remote nodes, their VTEPs and WireGuard identities.
    pub fn nodes(&self) -> BTreeMap<String, Node> {
        self.nodes
            .iter()
            .filter_map(|(k, node)| match self.layout.parse(k) {
                Some(Key::Node(n)) => Some((n, node.clone())),
                _ => None,
            })
            .collect()
    }
}

/// Why another node's record is ignored (logged, counted).
#[derive(Debug, thiserror::Error)]
enum RecordError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("vtep {0} is not a unicast address and port")]
    Vtep(SocketAddr),
    #[error("wireguard: {0}")]
    Wireguard(&'static str),
    #[error("name {record:?} differs from the key's {key:?}")]
    Name { record: String, key: String },
    #[error("port 0")]
    Port,
    #[error("mac: {0}")]
    Mac(#[from] crate::wire::ethernet::MacParseError),
}

fn decode(key: &Key, value: &[u8]) -> Result<Entry, RecordError> {
    match key {
        Key::Node(_) => {
            let r: NodeRecord = serde_json::from_slice(value)?;
            if let Some(v) = r.vtep
                && (v.port() == 0 || v.ip().is_unspecified() || v.ip().is_multicast())
            {
                return Err(RecordError::Vtep(v));
            }
            let wireguard = match r.wireguard {
                None => None,
                Some(w) => {
                    let public_key = crate::crypto::parse_key(&w.public_key).ok_or(
                        RecordError::Wireguard("public_key is not 32 bytes of base64"),
                    )?;
                    let e = w.endpoint;
                    if e.port() == 0 || e.ip().is_unspecified() || e.ip().is_multicast() {
                        return Err(RecordError::Wireguard(
                            "endpoint is not a unicast address and port",
                        ));
                    }
                    let a = w.address;
                    if a.is_unspecified() || a.is_multicast() || a.is_broadcast() {
                        return Err(RecordError::Wireguard("address is not a unicast address"));
                    }
                    Some(WgIdentity {
                        public_key,
                        endpoint: e,
                        address: a,
                    })
                }
            };
            let gateways = r
                .gateways
                .into_iter()
                .filter(|g| !g.is_unspecified() && !g.is_multicast() && !g.is_loopback())
                .collect();
            Ok(Entry::Node(Node {
                vtep: r.vtep,
                wireguard,
                gateways,
            }))
        }
        Key::Container { node, name } => {
            let r: ContainerRecord = serde_json::from_slice(value)?;
            if r.name != *name {
                return Err(RecordError::Name {
                    record: r.name,
                    key: name.clone(),
                });
            }
            if r.port == 0 {
                return Err(RecordError::Port);
            }
            let mac = match r.mac {
                Some(m) => Some(m.parse::<MacAddr>()?),
                None => None,
            };
            Ok(Entry::Container(Arc::new(Container {
                name: r.name,
                ip: r.ip,
                mac,
                port: r.port,
                labels: r.labels,
                network: r.network,
                node: node.clone(),
                health: Health::Unknown,
                ready: r.ready,
                origin: Origin::Remote,
            })))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn container(name: &str, ip: &str, node: &str, origin: Origin) -> Container {
        Container {
            name: name.into(),
            ip: ip.parse().expect("ip"),
            mac: Some("02:00:00:00:00:01".parse().expect("mac")),
            port: 80,
            labels: [("app".to_string(), "web".to_string())].into(),
            network: "default".into(),
            node: node.into(),
            health: Health::Unknown,
            ready: true,
            origin,
        }
    }

    #[test]
    fn keys_round_trip_and_foreign_keys_are_ignored() {
        let l = Layout::new("/vx");
        assert_eq!(l.node_key("h1"), "/vx/nodes/h1");
        assert_eq!(
            l.parse(l.container_key("h2", "web-1").as_bytes()),
            Some(Key::Container {
                node: "h2".into(),
                name: "web-1".into()
            })
        );
        assert_eq!(l.parse(b"/vx/nodes/h3"), Some(Key::Node("h3".into())));
        for bad in [
            &b"/other/nodes/h1"[..],
            b"/vx/nodes/",
            b"/vx/nodes/a/b",
            b"/vx/containers/h1",
            b"/vx/containers//x",
            b"/vx/containers/h1/a/b",
            b"/vx/what/h1",
            b"/vx/nodes/\xff",
        ] {
            assert_eq!(l.parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn what_one_node_publishes_another_reads_back() {
        let l = Layout::new("/vxgate/");
        let r = Registry::new("app");
        r.add(container("web-1", "10.200.1.11", "h1", Origin::Config))
            .expect("add");
        r.add(container("api-1", "10.200.1.12", "h1", Origin::Api))
            .expect("add");
        // declared here for another node, or learnt from it: not h1's to publish
        r.add(container("web-9", "10.200.2.11", "h2", Origin::Config))
            .expect("add");
        let vtep: SocketAddr = "10.99.0.1:4789".parse().expect("addr");
        let node = Node {
            vtep: Some(vtep),
            wireguard: Some(WgIdentity {
                public_key: [7; 32],
                endpoint: "10.99.0.1:51820".parse().expect("addr"),
                address: [10, 250, 0, 1].into(),
            }),
            gateways: vec!["10.200.1.1".parse().expect("ip")],
        };
        let records = local_records(&l, "h1", &node, &r.snapshot());
        assert_eq!(records.len(), 3, "{records:?}");

        let mut h2 = RemoteState::new("h2", l.clone());
        for (k, v) in &records {
            assert_eq!(h2.put(k.as_bytes(), v.as_bytes()), Ok(true));
            assert_eq!(h2.put(k.as_bytes(), v.as_bytes()), Ok(false), "same value");
        }
        assert_eq!(h2.nodes(), [("h1".to_string(), node)].into());
        let got = h2.containers();
        let want: Vec<Arc<Container>> = ["api-1", "web-1"]
            .iter()
            .map(|n| {
                let mut c = (**r.snapshot().container(n).expect("c")).clone();
                c.origin = Origin::Remote;
                Arc::new(c)
            })
            .collect();
        assert_eq!(got, want);

        // h1 ignores its own keys
        let mut h1 = RemoteState::new("h1", l.clone());
        for (k, v) in &records {
            assert!(h1.is_own(k.as_bytes()));
            assert_eq!(h1.put(k.as_bytes(), v.as_bytes()), Ok(false));
        }
        assert!(h1.containers().is_empty() && h1.nodes().is_empty());

        assert!(h2.delete(l.container_key("h1", "web-1").as_bytes()));
        assert!(!h2.delete(l.container_key("h1", "web-1").as_bytes()));
        assert_eq!(h2.containers().len(), 1);
    }

    #[test]
    fn docker_containers_are_published_with_their_readiness() {
        let l = Layout::new("/vxgate/");
        let r = Registry::new("app");
        let mut ready = container("web-1", "10.200.1.11", "h1", Origin::Docker);
        ready.mac = None;
        let mut starting = container("web-2", "10.200.1.12", "h1", Origin::Docker);
        starting.ready = false;
        r.add(ready).expect("add");
        r.add(starting).expect("add");
        let records = local_records(&l, "h1", &Node::default(), &r.snapshot());
        // a plain node's record, and a ready container's, are what older nodes read
        assert_eq!(
            records.get(&l.node_key("h1")).map(String::as_str),
            Some(r#"{"vtep":null}"#)
        );
        // a ready container's record is the format older nodes read, byte for byte
        assert_eq!(
            records
                .get(&l.container_key("h1", "web-1"))
                .map(String::as_str),
            Some(
                r#"{"name":"web-1","ip":"10.200.1.11","mac":null,"port":80,"labels":{"app":"web"},"network":"default"}"#
            )
        );
        let mut h2 = RemoteState::new("h2", l.clone());
        for (k, v) in &records {
            assert_eq!(h2.put(k.as_bytes(), v.as_bytes()), Ok(true));
        }
        let got: Vec<(String, bool)> = h2
            .containers()
            .into_iter()
            .map(|c| (c.name.clone(), c.ready))
            .collect();
        assert_eq!(
            got,
            [("web-1".to_string(), true), ("web-2".to_string(), false)]
        );
        let reg2 = Registry::new("app");
        reg2.set_remote(h2.containers(), BTreeMap::new());
        let serving: Vec<_> = reg2
            .snapshot()
            .serving("web")
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(
            serving,
            ["web-1"],
            "a container not ready on its node serves nowhere"
        );
    }

    #[test]
    fn malformed_values_are_reported_and_replace_the_old_value() {
        let l = Layout::new("/vxgate/");
        let mut s = RemoteState::new("h1", l.clone());
        let key = l.container_key("h2", "web-1");
        let good = r#"{"name":"web-1","ip":"10.200.2.11","mac":null,"port":80,"labels":{"app":"web"},"network":"default"}"#;
        assert_eq!(s.put(key.as_bytes(), good.as_bytes()), Ok(true));
        for bad in [
            "",
            "{",
            "[]",
            r#"{"name":"web-2","ip":"10.200.2.11","mac":null,"port":80,"network":"default"}"#,
            r#"{"name":"web-1","ip":"10.200.2.11","mac":null,"port":0,"network":"default"}"#,
            r#"{"name":"web-1","ip":"10.200.2.999","mac":null,"port":80,"network":"default"}"#,
            r#"{"name":"web-1","ip":"10.200.2.11","mac":"zz","port":80,"network":"default"}"#,
            r#"{"name":"web-1","ip":"10.200.2.11","mac":null,"port":80,"network":"default","x":1}"#,
        ] {
            assert!(s.put(key.as_bytes(), bad.as_bytes()).is_err(), "{bad}");
            assert!(s.containers().is_empty(), "{bad}");
            assert_eq!(s.put(key.as_bytes(), good.as_bytes()), Ok(true));
        }
        let node = l.node_key("h2");
        assert!(
            s.put(node.as_bytes(), br#"{"vtep":"0.0.0.0:4789"}"#)
                .is_err()
        );
        let key = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
        for bad in [
            r#"{"vtep":null,"wireguard":{"public_key":"c2hvcnQ=","endpoint":"10.99.0.2:51820","address":"10.250.0.2"}}"#.to_owned(),
            format!(
                r#"{{"vtep":null,"wireguard":{{"public_key":"{key}","endpoint":"0.0.0.0:51820","address":"10.250.0.2"}}}}"#
            ),
            format!(
                r#"{{"vtep":null,"wireguard":{{"public_key":"{key}","endpoint":"10.99.0.2:0","address":"10.250.0.2"}}}}"#
            ),
            format!(
                r#"{{"vtep":null,"wireguard":{{"public_key":"{key}","endpoint":"10.99.0.2:51820","address":"224.0.0.1"}}}}"#
            ),
            format!(
                r#"{{"vtep":null,"wireguard":{{"public_key":"{key}","endpoint":"10.99.0.2:51820"}}}}"#
            ),
        ] {
            assert!(s.put(node.as_bytes(), bad.as_bytes()).is_err(), "{bad}");
            assert!(s.nodes().is_empty(), "{bad}");
        }
        let good = format!(
            r#"{{"vtep":null,"wireguard":{{"public_key":"{key}","endpoint":"10.99.0.2:51820","address":"10.250.0.2"}}}}"#
        );
        assert_eq!(s.put(node.as_bytes(), good.as_bytes()), Ok(true));
        let w = s.nodes()["h2"].wireguard.clone().expect("wireguard");
        assert_eq!((w.public_key[0], w.public_key[31]), (1, 32));
        assert_eq!(s.put(node.as_bytes(), br#"{"vtep":null}"#), Ok(true));
        assert_eq!(s.nodes(), [("h2".to_string(), Node::default())].into());
    }

    #[test]
    fn set_remote_skips_clashes_and_keeps_health() {
        let r = Registry::new("app");
        r.add(container("web-1", "10.200.1.11", "h1", Origin::Config))
            .expect("add");
        let remote = vec![
            Arc::new(container("web-2", "10.200.2.11", "h2", Origin::Remote)),
            Arc::new(container("web-1", "10.200.2.12", "h2", Origin::Remote)), // name taken
            Arc::new(container("web-3", "10.200.1.11", "h2", Origin::Remote)), // ip taken
        ];
        let nodes: BTreeMap<_, _> = [("h2".to_string(), Node::default())].into();
        let skipped = r.set_remote(remote.clone(), nodes.clone());
        assert_eq!(skipped, ["web-1", "web-3"]);
        let s = r.snapshot();
        assert_eq!(s.len(), 2);
        assert_eq!(s.nodes(), &nodes);
        r.set_health("web-2", Health::Healthy).expect("health");
        let v = r.snapshot().version;
        r.set_remote(remote.clone(), nodes.clone());
        assert_eq!(
            r.snapshot().version,
            v,
            "nothing changed, nothing published"
        );
        assert_eq!(
            r.snapshot().container("web-2").map(|c| c.health),
            Some(Health::Healthy)
        );
        // a change in anything but health replaces it, health and all
        let mut relabelled = (*remote[0]).clone();
        relabelled.labels.insert("tier".into(), "front".into());
        r.set_remote(vec![Arc::new(relabelled)], nodes.clone());
        let web2 = r.snapshot().container("web-2").cloned().expect("web-2");
        assert_eq!(web2.labels.get("tier").map(String::as_str), Some("front"));
        assert_eq!(web2.health, Health::Unknown);
        assert!(r.snapshot().version > v);
        r.set_remote(Vec::new(), BTreeMap::new());
        let s = r.snapshot();
        assert_eq!(s.len(), 1);
        assert!(s.nodes().is_empty());
        assert_eq!(s.container("web-1").map(|c| c.origin), Some(Origin::Config));
    }
}
