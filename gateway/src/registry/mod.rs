//! The registry: containers, their labels and health, and the services derived from them.
//!
//! Writers (config load and reload, the admin API, health checks, a remote backend) change it
//! through [`Registry`]'s methods, serialised by one mutex. Each change builds a new immutable
//! [`Snapshot`] and publishes it on a `tokio::sync::watch` channel, so readers (DNS, ingress,
//! overlay) never take a lock and always see a whole, consistent state; a reader that was busy
//! sees the newest snapshot next, which includes every change before it.
//!
//! With `registry.backend = "etcd"`, [`etcd`] shares this node's containers and reads every
//! other node's: those enter as [`Origin::Remote`] entries, and the other nodes' VTEPs as
//! [`Snapshot::nodes`], in one change per etcd update ([`Registry::set_remote`]).

pub mod docker;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod remote;

use remote::RemoteContainers;

/// Why the etcd backend cannot run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    #[error("registry.backend = \"etcd\": this vxgate was built without the \"etcd\" feature")]
    NotBuilt,
}

/// Where the fleet's registry lives in etcd (`registry.backend = "etcd"`), and this node's
/// lease.
#[derive(Debug, Clone)]
pub struct EtcdSpec {
    pub endpoints: Vec<String>,
    pub lease_ttl: std::time::Duration,
    /// Key prefix of this fleet's records.
    pub prefix: String,
    /// How to authenticate to etcd (TLS, user and password); files read at each connect.
    pub auth: EtcdAuth,
}

/// `registry.tls`, `registry.username` and `registry.password_file`, as paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdAuth {
    /// TLS: on when some endpoint is `https://` or any of these is set.
    pub tls: bool,
    pub ca_file: Option<std::path::PathBuf>,
    /// The client certificate chain and its key.
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// The user and the file holding its password.
    pub user: Option<(String, std::path::PathBuf)>,
}

use crate::wire::ethernet::MacAddr;
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// What the shared-registry backend reports (admin API and metrics).
#[derive(Debug, Default)]
pub struct BackendStatus {
    /// Registered, with a live lease and a running watch.
    pub connected: std::sync::atomic::AtomicBool,
    /// Full reads of the prefix (the first, and one after every reconnect or compaction).
    pub resyncs: std::sync::atomic::AtomicU64,
    /// Watches that found their revision compacted.
    pub compacted: std::sync::atomic::AtomicU64,
    /// Sessions that ended in an error (etcd unreachable, lease lost, stream broken).
    pub errors: std::sync::atomic::AtomicU64,
    /// Remote values that could not be parsed.
    pub bad_records: std::sync::atomic::AtomicU64,
    /// Remote containers left out because their name or IP clashed with another.
    pub clashes: std::sync::atomic::AtomicU64,
}

/// A container's health as the ingress's checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Health {
    /// Not checked yet: served, as a new backend in nginx or Traefik is.
    #[default]
    Unknown,
    Healthy,
    Unhealthy,
}

impl Health {
    /// Whether DNS answers and the ingress routes to a container in this state.
    pub fn is_serving(self) -> bool {
        self != Health::Unhealthy
    }
}

/// Where a container entry came from; a config reload replaces only `Config` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    Config,
    Api,
    /// Found through the Docker Engine API (`[docker]`); Docker's state replaces these.
    Docker,
    Remote,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    pub ip: IpAddr,
    pub mac: Option<MacAddr>,
    pub port: u16,
    pub labels: BTreeMap<String, String>,
    /// Overlay network name.
    pub network: String,
    /// Owning host's node name.
    pub node: String,
    pub health: Health,
    /// What the container's own runtime says of it: `false` while Docker reports its
    /// HEALTHCHECK as `starting` or `unhealthy`. Such a container is kept out of service
    /// answers and the ingress whatever the active checks say. Always `true` for containers
    /// of the config and the admin API.
    pub ready: bool,
    pub origin: Origin,
}

impl Container {
    /// Whether DNS service answers and the ingress use this container: its runtime reports it
    /// ready and the ingress's active checks have not found it unhealthy.
    pub fn is_serving(&self) -> bool {
        self.ready && self.health.is_serving()
    }
}

/// An immutable view of the whole registry at one moment.
/// Another node, as the shared registry shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    /// Its plain VXLAN VTEP, if it runs an overlay with a plain socket.
    pub vtep: Option<SocketAddr>,
    /// Its WireGuard identity, if its overlay is encrypted.
    pub wireguard: Option<WgIdentity>,
    /// Its addresses on the overlay's bridges: where its ingress and health checks reach
    /// containers from (what `vxgate.allow_from = "ingress"` lets in).
    pub gateways: Vec<IpAddr>,
}

/// A node's WireGuard identity: what a peer needs to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgIdentity {
    pub public_key: [u8; 32],
    /// Its WireGuard socket on the underlay.
    pub endpoint: SocketAddr,
    /// Its tunnel address (its VTEP inside WireGuard).
    pub address: std::net::Ipv4Addr,
}

/// The containers of a snapshot by name: a persistent map, so a snapshot shares everything a
/// change did not touch with the one before it, and two snapshots are compared in the size of
/// the change ([`Snapshot::changes`]), not of the registry.
pub type Containers = imbl::OrdMap<String, Arc<Container>>;

#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases by one with every published change.
    pub version: u64,
    /// The label whose value names a service.
    pub service_label: String,
    containers: Containers,
    /// Lower-cased service name -> its containers in name order.
    services: imbl::OrdMap<String, Arc<[Arc<Container>]>>,
    by_ip: imbl::OrdMap<IpAddr, Arc<Container>>,
    /// Every name lower-cased (names are unique without case).
    folded: imbl::OrdSet<String>,
    nodes: Arc<BTreeMap<String, Node>>,
}

/// One container's change between two snapshots.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    Added(&'a Arc<Container>),
    Removed(&'a Arc<Container>),
    Changed {
        old: &'a Arc<Container>,
        new: &'a Arc<Container>,
    },
}

impl Change<'_> {
    /// Whether only entries of other nodes (remote ones) are involved.
    pub fn is_remote(&self) -> bool {
        match self {
            Change::Added(c) | Change::Removed(c) => c.origin == Origin::Remote,
            Change::Changed { old, new } => {
                old.origin == Origin::Remote && new.origin == Origin::Remote
            }
        }
    }
}

impl Snapshot {
    /// Derives services and the address index from `containers`, all of them.
    fn build(
        version: u64,
        service_label: &str,
        containers: Containers,
        nodes: Arc<BTreeMap<String, Node>>,
    ) -> Self {
        let mut services: BTreeMap<String, Vec<Arc<Container>>> = BTreeMap::new();
        let mut by_ip = imbl::OrdMap::new();
        let mut folded = imbl::OrdSet::new();
        for c in containers.values() {
            folded.insert(c.name.to_ascii_lowercase());
            if let Some(service) = c.labels.get(service_label) {
                services
                    .entry(service.to_ascii_lowercase())
                    .or_default()
                    .push(c.clone());
            }
            by_ip.insert(c.ip, c.clone());
        }
        Snapshot {
            version,
            service_label: service_label.to_owned(),
            containers,
            services: services
                .into_iter()
                .map(|(k, v)| (k, Arc::<[_]>::from(v)))
                .collect(),
            by_ip,
            folded,
            nodes,
        }
    }

    /// The snapshot after `self` with `containers` (a changed copy of `self`'s): services
    /// and the address index are `self`'s with only the changed containers applied, so the
    /// cost is the change's, not the registry's. Equal to [`Snapshot::build`] of the same.
    fn next(&self, containers: Containers, nodes: Arc<BTreeMap<String, Node>>) -> Self {
        let mut services = self.services.clone();
        let mut by_ip = self.by_ip.clone();
        let mut folded = self.folded.clone();
        let label = self.service_label.as_str();
        type Services = imbl::OrdMap<String, Arc<[Arc<Container>]>>;
        let mut remove = |c: &Arc<Container>, services: &mut Services| {
            if by_ip.get(&c.ip).is_some_and(|o| o.name == c.name) {
                by_ip.remove(&c.ip);
            }
            folded.remove(&c.name.to_ascii_lowercase());
            if let Some(service) = c.labels.get(label) {
                let key = service.to_ascii_lowercase();
                if let Some(list) = services.get(&key) {
                    let rest: Vec<_> = list.iter().filter(|o| o.name != c.name).cloned().collect();
                    match rest.is_empty() {
                        true => services.remove(&key),
                        false => services.insert(key, rest.into()),
                    };
                }
            }
        };
        let mut added = Vec::new();
        for change in self.changes(&containers) {
            match change {
                Change::Added(c) => added.push(c.clone()),
                Change::Removed(c) => remove(c, &mut services),
                Change::Changed { old, new } => {
                    remove(old, &mut services);
                    added.push(new.clone());
                }
            }
        }
        // removals first: a container that takes over a removed one's address keeps it
        for c in added {
            by_ip.insert(c.ip, c.clone());
            folded.insert(c.name.to_ascii_lowercase());
            if let Some(service) = c.labels.get(label) {
                let key = service.to_ascii_lowercase();
                let mut list: Vec<_> = services.get(&key).map(|l| l.to_vec()).unwrap_or_default();
                let at = list.partition_point(|o| o.name < c.name);
                list.insert(at, c);
                services.insert(key, list.into());
            }
        }
        Snapshot {
            version: self.version + 1,
            service_label: self.service_label.clone(),
            containers,
            services,
            by_ip,
            folded,
            nodes,
        }
    }

    /// What changed from `self` to `newer`, container by container, in name order: in the
    /// size of the change when `newer` was made from `self` (the maps share the rest).
    pub fn changes<'a>(&'a self, newer: &'a Containers) -> impl Iterator<Item = Change<'a>> {
        use imbl::ordmap::DiffItem;
        self.containers.diff(newer).map(|d| match d {
            DiffItem::Add(_, c) => Change::Added(c),
            DiffItem::Remove(_, c) => Change::Removed(c),
            DiffItem::Update {
                old: (_, old),
                new: (_, new),
            } => Change::Changed { old, new },
        })
    }

    /// What changed from `self` to `newer` (see [`Snapshot::changes`]).
    pub fn changes_to<'a>(&'a self, newer: &'a Snapshot) -> impl Iterator<Item = Change<'a>> {
        self.changes(&newer.containers)
    }

    /// Other nodes known through the shared registry, with their overlay VTEP and WireGuard
    /// identity if they run them.
    pub fn nodes(&self) -> &BTreeMap<String, Node> {
        &self.nodes
    }

    /// Every container, by name.
    pub fn containers(&self) -> impl Iterator<Item = &Arc<Container>> {
        self.containers.values()
    }

    pub fn container(&self, name: &str) -> Option<&Arc<Container>> {
        self.containers.get(name)
    }

    pub fn by_ip(&self, ip: IpAddr) -> Option<&Arc<Container>> {
        self.by_ip.get(&ip)
    }

    /// Service names (lower-cased label values) with all their containers, any health.
    pub fn services(&self) -> impl Iterator<Item = (&str, &[Arc<Container>])> {
        self.services.iter().map(|(k, v)| (k.as_str(), v.as_ref()))
    }

    /// A service's containers that are not unhealthy. Names match case-insensitively.
    pub fn serving(&self, service: &str) -> impl Iterator<Item = &Arc<Container>> {
        // the keys are lower case, and so is nearly every name asked for (the ingress's are):
        // copied only when it has an upper-case letter
        let key = match service.bytes().any(|b| b.is_ascii_uppercase()) {
            true => std::borrow::Cow::Owned(service.to_ascii_lowercase()),
            false => std::borrow::Cow::Borrowed(service),
        };
        self.services
            .get(key.as_ref())
            .into_iter()
            .flat_map(|l| l.iter())
            .filter(|c| c.is_serving())
    }

    pub fn len(&self) -> usize {
        self.containers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.containers.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("a container named {0:?} already exists")]
    DuplicateName(String),
    #[error("{ip} is already used by container {owner:?}")]
    DuplicateIp { ip: IpAddr, owner: String },
    #[error("no container named {0:?}")]
    NotFound(String),
    #[error(
        "{0} is a loopback, link-local, broadcast, multicast or unspecified address: a backend there would make the ingress a proxy to this host; allow it in ingress.backend_networks if it is meant"
    )]
    SpecialAddress(IpAddr),
}

/// Whether `ip` is an address no container should have unless the operator says so:
/// loopback (127/8, ::1), link-local (169.254/16, fe80::/10), broadcast, multicast or
/// unspecified, also as an IPv4-mapped IPv6 address.
pub fn special_address(ip: IpAddr) -> bool {
    let v4 = |a: std::net::Ipv4Addr| {
        a.is_loopback()
            || a.is_link_local()
            || a.is_broadcast()
            || a.is_multicast()
            || a.is_unspecified()
    };
    match ip {
        IpAddr::V4(a) => v4(a),
        IpAddr::V6(a) => {
            a.to_ipv4_mapped().is_some_and(v4)
                || a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (a.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Whether a container of `origin` may have `ip`: the config file's may have any address;
/// others (admin API, Docker, etcd) no [`special_address`] outside `allowed`.
fn address_allowed(origin: Origin, ip: IpAddr, allowed: &[ipnet::IpNet]) -> bool {
    origin == Origin::Config || !special_address(ip) || allowed.iter().any(|n| n.contains(&ip))
}

/// The registry. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Registry {
    /// Serialises writers.
    write: Mutex<Writer>,
    /// The newest snapshot, for readers on a hot path ([`Registry::view`]).
    current: ArcSwap<Snapshot>,
    /// The same, for followers that wait for changes.
    tx: watch::Sender<Arc<Snapshot>>,
    /// `ingress.backend_networks`: special addresses that API, Docker and etcd containers
    /// may have.
    backend_networks: Mutex<Arc<Vec<ipnet::IpNet>>>,
    /// Containers refused or left out for a special address.
    pub refused_addresses: std::sync::atomic::AtomicU64,
    /// Remote updates applied as a change to the last one ([`Registry::sync_remote`]) and
    /// applied whole.
    pub remote_updates: RemoteUpdates,
}

/// How remote updates were applied (`vxgate_registry_remote_updates_total`).
#[derive(Debug, Default)]
pub struct RemoteUpdates {
    /// In the size of the change.
    pub changed: std::sync::atomic::AtomicU64,
    /// Every remote container compared (the first, after a clash, a full read).
    pub whole: std::sync::atomic::AtomicU64,
}

impl Registry {
    /// An empty registry whose services are named by `service_label`.
    pub fn new(service_label: &str) -> Registry {
        let first = Arc::new(Snapshot::build(
            0,
            service_label,
            Containers::new(),
            Arc::default(),
        ));
        let (tx, _) = watch::channel(first.clone());
        Registry {
            write: Mutex::new(Writer::default()),
            current: ArcSwap::new(first),
            tx,
            backend_networks: Mutex::new(Arc::default()),
            refused_addresses: Default::default(),
            remote_updates: Default::default(),
        }
    }

    /// Sets `ingress.backend_networks` (at start and on reload); applies to entries added
    /// from now on.
    pub fn set_backend_networks(&self, nets: Vec<ipnet::IpNet>) {
        *self
            .backend_networks
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(nets);
    }

    fn allowed(&self) -> Arc<Vec<ipnet::IpNet>> {
        self.backend_networks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `containers` without those whose address is refused (their names are added to
    /// `skipped`, and counted).
    fn without_special(
        &self,
        origin: Origin,
        containers: impl IntoIterator<Item = Arc<Container>>,
        skipped: &mut Vec<String>,
    ) -> Vec<Arc<Container>> {
        let allowed = self.allowed();
        containers
            .into_iter()
            .filter(|c| {
                let ok = address_allowed(origin, c.ip, &allowed);
                if !ok {
                    self.refused_addresses
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    skipped.push(c.name.clone());
                }
                ok
            })
            .collect()
    }

    /// The current state. Never blocks on writers.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The current state for a short look (a request choosing its backends): no lock and no
    /// reference count taken. Not to be held across an await.
    pub fn view(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// A receiver that wakes on every published change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// Applies `change` to a copy of the current containers and publishes the result, or
    /// publishes nothing when `change` fails or changes nothing.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut Containers) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        self.update_with_nodes(|map, _| change(map))
    }

    /// [`Registry::update`] that may also change the remote nodes.
    fn update_with_nodes<T>(
        &self,
        change: impl FnOnce(
            &mut Containers,
            &mut Arc<BTreeMap<String, Node>>,
        ) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let mut writer = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.snapshot();
        let mut containers = current.containers.clone();
        let mut nodes = current.nodes.clone();
        let out = change(&mut containers, &mut nodes)?;
        // a change to a remote entry other than its health (an API delete, a local source
        // displacing it) leaves the registry unlike the last remote input: the next remote
        // update is applied whole
        if writer.remote_input.is_some()
            && current.changes(&containers).any(|c| match c {
                Change::Added(c) | Change::Removed(c) => c.origin == Origin::Remote,
                Change::Changed { old, new } => {
                    (old.origin == Origin::Remote || new.origin == Origin::Remote)
                        && !same_but_health(old, new)
                }
            })
        {
            writer.remote_input = None;
        }
        self.publish(&current, containers, nodes);
        Ok(out)
    }

    /// Publishes `containers` and `nodes` as the snapshot after `current`, unless they are
    /// `current`'s. Called with the writer lock held.
    fn publish(
        &self,
        current: &Snapshot,
        containers: Containers,
        nodes: Arc<BTreeMap<String, Node>>,
    ) {
        // both compared in the size of the change (the maps share what it did not touch)
        if !containers.ptr_eq(&current.containers) && containers != current.containers
            || nodes != current.nodes
        {
            let next = Arc::new(current.next(containers, nodes));
            // readers see it first, then followers are woken
            self.current.store(next.clone());
            self.tx.send_replace(next);
        }
    }

    /// Replaces everything learnt from other nodes in one change: their containers (as
    /// [`Origin::Remote`]) and their VTEPs. A remote container whose name or IP is already
    /// taken by a local one (or an earlier remote one) is left out; the names left out are
    /// returned so the caller can report them. Unchanged entries keep their health.
    pub fn set_remote(
        &self,
        containers: Vec<Arc<Container>>,
        nodes: BTreeMap<String, Node>,
    ) -> Vec<String> {
        self.set_remote_whole(containers, Arc::new(nodes), None)
    }

    fn set_remote_whole(
        &self,
        containers: Vec<Arc<Container>>,
        nodes: Arc<BTreeMap<String, Node>>,
        input: Option<&RemoteContainers>,
    ) -> Vec<String> {
        let mut refused = Vec::new();
        let containers = self.without_special(Origin::Remote, containers, &mut refused);
        let mut writer = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.snapshot();
        let mut map = current.containers.clone();
        let Ok(mut skipped) = swap_origin(&mut map, Origin::Remote, containers, OnClash::Skip)
        else {
            return Vec::new();
        };
        skipped.append(&mut refused);
        // what the next update is compared with: only when all of it is in the registry
        writer.remote_input = input.filter(|_| skipped.is_empty()).cloned();
        let nodes = if *current.nodes == *nodes {
            current.nodes.clone()
        } else {
            nodes
        };
        self.publish(&current, map, nodes);
        skipped
    }

    /// [`Registry::set_remote`] from a remote state's containers by key, applied as a
    /// change to the last ones given (in the size of the change, not of the fleet) when
    /// every container of the last ones is in the registry and no new one clashes or has a
    /// refused address; otherwise applied whole. `nodes`: `None` when they did not change
    /// since the last call. The same result as `set_remote` either way.
    pub fn sync_remote(
        &self,
        input: &RemoteContainers,
        nodes: Option<BTreeMap<String, Node>>,
    ) -> Vec<String> {
        let mut writer = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.snapshot();
        if let Some(last) = &writer.remote_input
            && let Some(map) = remote_changes(&current, last, input, &self.allowed())
        {
            writer.remote_input = Some(input.clone());
            self.remote_updates
                .changed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let nodes = match nodes {
                Some(n) if *current.nodes != n => Arc::new(n),
                _ => current.nodes.clone(),
            };
            self.publish(&current, map, nodes);
            return Vec::new();
        }
        drop(writer);
        self.remote_updates
            .whole
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nodes = match nodes {
            Some(n) => Arc::new(n),
            None => current.nodes.clone(),
        };
        self.set_remote_whole(input.values().cloned().collect(), nodes, Some(input))
    }

    /// Replaces every entry of a local source that owns its entries (Docker) in one change.
    /// An entry whose name or IP is taken by another local entry (config, API) is left out,
    /// and the names left out are returned so the caller can report them. A remote entry in
    /// its way gives way: on its own host, a host's containers win (the next remote update
    /// leaves the remote one out and counts it). Unchanged entries keep their health.
    pub fn set_local_source(&self, origin: Origin, containers: Vec<Container>) -> Vec<String> {
        let mut refused = Vec::new();
        let containers = containers.into_iter().map(Arc::new);
        let containers = self.without_special(origin, containers, &mut refused);
        let result = self.update(|map| {
            // names compare without case, as check_unique does
            let names: HashSet<String> = containers
                .iter()
                .map(|c| c.name.to_ascii_lowercase())
                .collect();
            let ips: HashSet<IpAddr> = containers.iter().map(|c| c.ip).collect();
            let displaced: Vec<String> = map
                .iter()
                .filter(|(name, o)| {
                    o.origin == Origin::Remote
                        && (names.contains(&name.to_ascii_lowercase()) || ips.contains(&o.ip))
                })
                .map(|(name, _)| name.clone())
                .collect();
            for name in displaced {
                map.remove(&name);
            }
            swap_origin(map, origin, containers, OnClash::Skip).map(|mut skipped| {
                skipped.append(&mut refused);
                skipped
            })
        });
        result.unwrap_or_default()
    }

    /// Adds a container; its name and IP must be unused.
    pub fn add(&self, container: Container) -> Result<(), RegistryError> {
        if !address_allowed(container.origin, container.ip, &self.allowed()) {
            self.refused_addresses
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(RegistryError::SpecialAddress(container.ip));
        }
        self.update(|map| {
            check_unique(map, &container)?;
            map.insert(container.name.clone(), Arc::new(container));
            Ok(())
        })
    }

    /// Removes a container by name and returns it.
    pub fn remove(&self, name: &str) -> Result<Arc<Container>, RegistryError> {
        self.update(|map| {
            map.remove(name)
                .ok_or_else(|| RegistryError::NotFound(name.into()))
        })
    }

    /// Records a health change. Returns whether it changed anything.
    pub fn set_health(&self, name: &str, health: Health) -> Result<bool, RegistryError> {
        self.update(|map| {
            let c = map
                .get_mut(name)
                .ok_or_else(|| RegistryError::NotFound(name.into()))?;
            if c.health == health {
                return Ok(false);
            }
            Arc::make_mut(c).health = health;
            Ok(true)
        })
    }

    /// Replaces every container of `origin` with `containers` in one change (a config
    /// reload, a remote resync). Entries that are unchanged keep their health. Fails, changing
    /// nothing, when a new entry clashes with another or with one of another origin.
    pub fn replace_origin(
        &self,
        origin: Origin,
        containers: Vec<Container>,
    ) -> Result<(), RegistryError> {
        let containers = containers.into_iter().map(Arc::new).collect();
        self.update(|map| swap_origin(map, origin, containers, OnClash::Fail).map(|_| ()))
    }
}

/// What writers keep between changes (under the writer lock).
#[derive(Debug, Default)]
struct Writer {
    /// The last remote containers given to [`Registry::sync_remote`], while every one of
    /// them is in the registry as it was given (but for health).
    remote_input: Option<RemoteContainers>,
}

/// `current`'s containers with the change from `last` to `input` (remote containers by key)
/// applied, or `None` when that cannot be done entry by entry with the result
/// [`swap_origin`] would give: an entry of `last` not in the registry as given, a new one
/// whose name or address is taken, or whose address is refused.
fn remote_changes(
    current: &Snapshot,
    last: &RemoteContainers,
    input: &RemoteContainers,
    allowed: &[ipnet::IpNet],
) -> Option<Containers> {
    use imbl::ordmap::DiffItem;
    let (mut gone, mut come) = (Vec::new(), Vec::new());
    for d in last.diff(input) {
        match d {
            DiffItem::Add(_, c) => come.push(c),
            DiffItem::Remove(_, c) => gone.push(c),
            DiffItem::Update { old, new } => {
                gone.push(old.1);
                come.push(new.1);
            }
        }
    }
    let mut map = current.containers.clone();
    let (mut names_gone, mut ips_gone) = (HashSet::new(), HashSet::new());
    let mut kept = BTreeMap::new();
    for c in gone {
        // as given (a health check may have replaced it with a copy of another health)
        match map.get(&c.name) {
            Some(o) if o.origin == Origin::Remote && same_but_health(o, c) => {
                kept.insert(c.name.as_str(), o.clone());
            }
            _ => return None,
        }
        map.remove(&c.name);
        names_gone.insert(c.name.to_ascii_lowercase());
        ips_gone.insert(c.ip);
    }
    let (mut names_new, mut ips_new) = (HashSet::new(), HashSet::new());
    for c in come {
        let name = c.name.to_ascii_lowercase();
        let name_taken = current.folded.contains(&name) && !names_gone.contains(&name);
        let ip_taken = current.by_ip.contains_key(&c.ip) && !ips_gone.contains(&c.ip);
        if c.origin != Origin::Remote
            || name_taken
            || ip_taken
            || !names_new.insert(name)
            || !ips_new.insert(c.ip)
            || !address_allowed(Origin::Remote, c.ip, allowed)
        {
            return None;
        }
        // an entry unchanged but for health keeps the one in the registry (its health)
        let c = match kept.get(c.name.as_str()) {
            Some(o) if same_but_health(o, c) => o.clone(),
            _ => c.clone(),
        };
        map.insert(c.name.clone(), c);
    }
    Some(map)
}

/// What [`swap_origin`] does with an entry whose name or IP is taken.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnClash {
    /// Fail the whole change.
    Fail,
    /// Leave that entry out (its name is returned).
    Skip,
}

/// Replaces every entry of `origin` in `map` with `containers`. An entry equal to the one it
/// replaces but for health keeps the old one (and so its health). Returns the names left out.
fn swap_origin(
    map: &mut Containers,
    origin: Origin,
    containers: Vec<Arc<Container>>,
    on_clash: OnClash,
) -> Result<Vec<String>, RegistryError> {
    // taken out of the map, which keeps sharing the other origins' entries with the last
    // snapshot
    let old: BTreeMap<String, Arc<Container>> = map
        .iter()
        .filter(|(_, c)| c.origin == origin)
        .map(|(k, c)| (k.clone(), c.clone()))
        .collect();
    for name in old.keys() {
        map.remove(name);
    }
    // what the others hold, indexed once: a check per container is then O(1), not a scan of
    // the map (a fleet's whole remote set comes through here on every etcd change)
    let mut taken = Taken::of(map);
    let mut skipped = Vec::new();
    for mut c in containers {
        if c.origin != origin {
            Arc::make_mut(&mut c).origin = origin;
        }
        if let Err(e) = taken.claim(map, &c) {
            match on_clash {
                OnClash::Fail => return Err(e),
                OnClash::Skip => {
                    skipped.push(c.name.clone());
                    continue;
                }
            }
        }
        if let Some(prev) = old.get(&c.name)
            && (Arc::ptr_eq(prev, &c) || same_but_health(prev, &c))
        {
            map.insert(c.name.clone(), prev.clone());
            continue;
        }
        map.insert(c.name.clone(), c);
    }
    Ok(skipped)
}

/// Whether `a` and `b` differ at most in health (checked here, not carried in records).
fn same_but_health(a: &Container, b: &Container) -> bool {
    let Container {
        name,
        ip,
        mac,
        port,
        labels,
        network,
        node,
        health: _,
        ready,
        origin,
    } = a;
    *name == b.name
        && *ip == b.ip
        && *mac == b.mac
        && *port == b.port
        && *network == b.network
        && *node == b.node
        && *ready == b.ready
        && *origin == b.origin
        && *labels == b.labels
}

/// The names (without case) and addresses a map's containers hold, for many checks in a row:
/// hashes only (no copy of a name), a hit confirmed against the map (only a clash hits).
struct Taken {
    hasher: std::hash::RandomState,
    names: HashSet<u64>,
    ips: HashSet<IpAddr>,
}

impl Taken {
    fn of(map: &Containers) -> Taken {
        let hasher = std::hash::RandomState::new();
        let names = map.keys().map(|k| Self::hash(&hasher, k)).collect();
        Taken {
            hasher,
            names,
            ips: map.values().map(|c| c.ip).collect(),
        }
    }

    /// A name's hash without case (`WEB-1` and `web-1` alike).
    fn hash(hasher: &std::hash::RandomState, name: &str) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = hasher.build_hasher();
        for b in name.bytes() {
            h.write_u8(b.to_ascii_lowercase());
        }
        h.finish()
    }

    /// [`check_unique`]'s answer for `c` in `map` (which holds every container claimed
    /// so far); when it is free, `c`'s name and address are taken.
    fn claim(&mut self, map: &Containers, c: &Container) -> Result<(), RegistryError> {
        let name = Self::hash(&self.hasher, &c.name);
        if (self.names.contains(&name) || self.ips.contains(&c.ip))
            && let Err(e) = check_unique(map, c)
        {
            return Err(e);
        }
        self.names.insert(name);
        self.ips.insert(c.ip);
        Ok(())
    }
}

fn check_unique(map: &Containers, c: &Container) -> Result<(), RegistryError> {
    // names are DNS names: case-insensitive, so `WEB-1` clashes with `web-1`
    if map.contains_key(&c.name) || map.keys().any(|k| k.eq_ignore_ascii_case(&c.name)) {
        return Err(RegistryError::DuplicateName(c.name.clone()));
    }
    if let Some(owner) = map.values().find(|o| o.ip == c.ip) {
        return Err(RegistryError::DuplicateIp {
            ip: c.ip,
            owner: owner.name.clone(),
        });
    }
    Ok(())
}

impl Snapshot {
    /// Appends `vxgate_backend_healthy` and `vxgate_registry_*` (this snapshot's) to `out`.
    pub fn render_metrics(&self, out: &mut String) {
        use vxgate_metrics::text::{escape, family};
        family(
            out,
            "vxgate_backend_healthy",
            "gauge",
            "1 when a service container is serving (ready in Docker, not unhealthy in checks).",
        );
        let snap = self;
        for (service, cs) in snap.services() {
            for c in cs {
                let _ = writeln!(
                    out,
                    "vxgate_backend_healthy{{service=\"{}\",container=\"{}\"}} {}",
                    escape(service),
                    escape(&c.name),
                    u8::from(c.is_serving())
                );
            }
        }
        family(
            out,
            "vxgate_registry_containers",
            "gauge",
            "Containers in the registry.",
        );
        let _ = writeln!(out, "vxgate_registry_containers {}", snap.len());
        family(
            out,
            "vxgate_registry_remote_nodes",
            "gauge",
            "Other nodes known through the shared registry.",
        );
        let _ = writeln!(out, "vxgate_registry_remote_nodes {}", snap.nodes().len());
    }
}

impl BackendStatus {
    /// Appends `vxgate_registry_etcd_*` to `out`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::sync::atomic::Ordering::Relaxed;
        let b = self;
        for (name, kind, help, value) in [
            (
                "vxgate_registry_etcd_connected",
                "gauge",
                "1 while registered in etcd with a live lease and watch.",
                u64::from(b.connected.load(Relaxed)),
            ),
            (
                "vxgate_registry_etcd_resyncs_total",
                "counter",
                "Full reads of the etcd prefix.",
                b.resyncs.load(Relaxed),
            ),
            (
                "vxgate_registry_etcd_compactions_total",
                "counter",
                "Watches restarted because their revision was compacted.",
                b.compacted.load(Relaxed),
            ),
            (
                "vxgate_registry_etcd_errors_total",
                "counter",
                "etcd sessions that ended in an error.",
                b.errors.load(Relaxed),
            ),
            (
                "vxgate_registry_etcd_bad_records_total",
                "counter",
                "Remote records that could not be parsed.",
                b.bad_records.load(Relaxed),
            ),
            (
                "vxgate_registry_etcd_clashes",
                "gauge",
                "Remote containers left out because their name or IP is taken.",
                b.clashes.load(Relaxed),
            ),
        ] {
            vxgate_metrics::text::single(out, name, kind, help, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    fn c(name: &str, ip: &str, app: &str) -> Container {
        Container {
            name: name.into(),
            ip: ip.parse().expect("ip"),
            mac: None,
            port: 80,
            labels: [("app".to_string(), app.to_string())].into(),
            network: "default".into(),
            node: "h1".into(),
            health: Health::Unknown,
            ready: true,
            origin: Origin::Api,
        }
    }

    /// A deterministic sequence (xorshift): `next(n)` is in `0..n`.
    fn numbers(mut state: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        }
    }

    /// Services and the address index of `s` as a whole rebuild makes them.
    fn assert_derived_as_built(s: &Snapshot) {
        let built = Snapshot::build(0, &s.service_label, s.containers.clone(), Arc::default());
        let names = |x: &Snapshot| -> Vec<(String, Vec<String>)> {
            x.services()
                .map(|(k, v)| (k.to_owned(), v.iter().map(|c| c.name.clone()).collect()))
                .collect()
        };
        assert_eq!(names(s), names(&built), "services at version {}", s.version);
        let ips = |x: &Snapshot| -> Vec<(IpAddr, String)> {
            x.by_ip
                .iter()
                .map(|(ip, c)| (*ip, c.name.clone()))
                .collect()
        };
        assert_eq!(
            ips(s),
            ips(&built),
            "address index at version {}",
            s.version
        );
        for (_, list) in s.services() {
            for c in list {
                let now = s
                    .container(&c.name)
                    .expect("a service's container is in the map");
                assert!(Arc::ptr_eq(c, now), "{} is the current entry", c.name);
            }
        }
    }

    #[test]
    fn snapshots_derived_from_the_last_one_equal_a_rebuild() {
        // a deterministic mix of every kind of change, over few names, addresses and services
        // so that they collide: each published snapshot's services and address index, made
        // from the last snapshot's and the change, must be what a rebuild makes
        let r = Registry::new("app");
        let mut next = numbers(0x9e37_79b9_7f4a_7c15_u64);
        let mut published = 0;
        for _ in 0..3000 {
            let i = next(24);
            let mut x = c(
                &format!("c{i}"),
                &format!("10.0.0.{}", next(30) + 1),
                ["web", "Web", "db", "api"][next(4) as usize],
            );
            match next(7) {
                0 | 1 => {
                    let _ = r.add(x);
                }
                2 => {
                    let _ = r.remove(&format!("c{i}"));
                }
                3 => {
                    let h = [Health::Healthy, Health::Unhealthy, Health::Unknown][next(3) as usize];
                    let _ = r.set_health(&format!("c{i}"), h);
                }
                4 => {
                    let remote: Vec<Arc<Container>> = (0..next(6))
                        .map(|k| {
                            let mut y = c(
                                &format!("c{}", next(24)),
                                &format!("10.0.0.{}", next(30) + 1),
                                if k % 2 == 0 { "web" } else { "db" },
                            );
                            y.node = "h2".into();
                            Arc::new(y)
                        })
                        .collect();
                    r.set_remote(remote, BTreeMap::new());
                }
                5 => {
                    x.origin = Origin::Docker;
                    let mut y = x.clone();
                    y.name = format!("d{}", next(5));
                    y.ip = format!("10.0.0.{}", next(30) + 1).parse().expect("ip");
                    r.set_local_source(Origin::Docker, vec![x, y]);
                }
                _ => {
                    x.origin = Origin::Config;
                    let _ = r.replace_origin(Origin::Config, vec![x]);
                }
            }
            let s = r.snapshot();
            if s.version != published {
                published = s.version;
                assert_derived_as_built(&s);
            }
        }
        assert!(published > 1000, "only {published} changes published");
    }

    #[test]
    fn remote_updates_applied_as_changes_equal_whole_ones() {
        // one registry takes each remote state through sync_remote (changes when it can),
        // its twin through set_remote (always whole); with local entries clashing, remote
        // entries deleted through the API and health set in between, both must publish the
        // same containers (health included) and leave out the same names
        let (a, b) = (Registry::new("app"), Registry::new("app"));
        let mut next = numbers(0x2545_f491_4f6c_dd1d_u64);
        let mut input = RemoteContainers::new();
        let mut nodes = BTreeMap::new();
        for step in 0..4000 {
            let name = match next(20) {
                0 => format!("C{}", next(40)),
                1..=8 => format!("h{}c{}", next(3) + 2, next(15)),
                _ => format!("c{}", next(40)),
            };
            let ip = format!("10.0.1.{}", next(60) + 1);
            let mut nodes_changed = false;
            match next(12) {
                0..=5 => {
                    // mostly a name and address of the node's own; now and then one that
                    // clashes with another node's or a local one
                    let n = next(3) + 2;
                    let node = format!("h{n}");
                    let (name, ip) = match next(150) {
                        0 => (name, ip),
                        1 => (format!("h{}c{}", next(3) + 2, next(15)), ip),
                        _ => {
                            let i = next(15);
                            (format!("h{n}c{i}"), format!("10.0.{n}.{}", i + 1))
                        }
                    };
                    let mut x = c(&name, &ip, ["web", "db"][next(2) as usize]);
                    x.node = node.clone();
                    x.origin = Origin::Remote;
                    x.ready = next(5) > 0;
                    input.insert(format!("{node}/{name}").into_bytes(), Arc::new(x));
                }
                6 | 7 => {
                    if let Some(k) = input.keys().nth(next(input.len().max(1) as u64) as usize) {
                        let k = k.clone();
                        match next(4) {
                            // the same record with another health (the registry keeps its own)
                            0 => {
                                let mut x = (*input[&k]).clone();
                                x.health = [Health::Healthy, Health::Unknown][next(2) as usize];
                                input.insert(k, Arc::new(x));
                            }
                            _ => {
                                input.remove(&k);
                            }
                        }
                    }
                }
                8 => {
                    // a local container: now and then with a remote one's name or address
                    let (name, ip) = match next(10) {
                        0 => (name, format!("10.0.{}.{}", next(3) + 2, next(15) + 1)),
                        _ => (format!("c{}", next(40)), ip),
                    };
                    for r in [&a, &b] {
                        let _ = r.add(c(&name, &ip, "web"));
                    }
                }
                9 => {
                    for r in [&a, &b] {
                        let _ = r.remove(&name);
                    }
                }
                10 => {
                    let h = [Health::Healthy, Health::Unhealthy][next(2) as usize];
                    for r in [&a, &b] {
                        let _ = r.set_health(&name, h);
                    }
                }
                _ => {
                    nodes.insert(
                        format!("h{}", next(3) + 2),
                        Node {
                            vtep: Some(
                                format!("10.99.0.{}:4789", next(9) + 1)
                                    .parse()
                                    .expect("vtep"),
                            ),
                            ..Node::default()
                        },
                    );
                    nodes_changed = true;
                }
            }
            let from_a = a.sync_remote(&input, nodes_changed.then(|| nodes.clone()));
            let from_b = b.set_remote(input.values().cloned().collect(), nodes.clone());
            assert_eq!(from_a, from_b, "left out at step {step}");
            let (sa, sb) = (a.snapshot(), b.snapshot());
            assert!(sa.containers == sb.containers, "containers at step {step}");
            assert_eq!(sa.nodes(), sb.nodes(), "nodes at step {step}");
            assert_derived_as_built(&sa);
        }
        let u = &a.remote_updates;
        let (changed, whole) = (u.changed.load(Relaxed), u.whole.load(Relaxed));
        assert!(
            changed > 1000 && whole > 50,
            "changes {changed}, whole {whole}"
        );
    }

    #[test]
    fn services_are_derived_from_the_label() {
        let r = Registry::new("app");
        r.add(c("web-1", "10.0.0.1", "web")).expect("add");
        r.add(c("web-2", "10.0.0.2", "Web")).expect("add");
        r.add(c("api-1", "10.0.0.3", "api")).expect("add");
        let s = r.snapshot();
        let names: Vec<_> = s.serving("WEB").map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["web-1", "web-2"]);
        assert_eq!(s.services().count(), 2);
        assert_eq!(
            s.by_ip("10.0.0.3".parse().expect("ip"))
                .map(|c| c.name.as_str()),
            Some("api-1")
        );
    }

    #[test]
    fn duplicates_are_refused_and_publish_nothing() {
        let r = Registry::new("app");
        r.add(c("web-1", "10.0.0.1", "web")).expect("add");
        let v = r.snapshot().version;
        assert_eq!(
            r.add(c("web-1", "10.0.0.9", "web")),
            Err(RegistryError::DuplicateName("web-1".into()))
        );
        assert_eq!(
            r.add(c("WEB-1", "10.0.0.9", "web")),
            Err(RegistryError::DuplicateName("WEB-1".into())),
            "names are case-insensitive, as in DNS"
        );
        assert!(matches!(
            r.add(c("web-2", "10.0.0.1", "web")),
            Err(RegistryError::DuplicateIp { .. })
        ));
        assert_eq!(r.snapshot().version, v);
        assert_eq!(
            r.remove("nope"),
            Err(RegistryError::NotFound("nope".into()))
        );
    }

    #[test]
    fn unhealthy_containers_stop_serving() {
        let r = Registry::new("app");
        r.add(c("web-1", "10.0.0.1", "web")).expect("add");
        r.add(c("web-2", "10.0.0.2", "web")).expect("add");
        assert_eq!(r.set_health("web-1", Health::Unhealthy), Ok(true));
        assert_eq!(r.set_health("web-1", Health::Unhealthy), Ok(false));
        let s = r.snapshot();
        let names: Vec<_> = s.serving("web").map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["web-2"]);
        // still listed, with its health
        assert_eq!(
            s.container("web-1").map(|c| c.health),
            Some(Health::Unhealthy)
        );
    }

    #[tokio::test]
    async fn every_change_is_published_and_old_snapshots_stay_intact() {
        let r = Registry::new("app");
        let mut rx = r.subscribe();
        let before = r.snapshot();
        r.add(c("web-1", "10.0.0.1", "web")).expect("add");
        rx.changed().await.expect("published");
        assert_eq!(rx.borrow_and_update().len(), 1);
        assert!(before.is_empty(), "a snapshot never changes once taken");
        r.remove("web-1").expect("remove");
        rx.changed().await.expect("published");
        assert!(rx.borrow_and_update().is_empty());
        assert_eq!(r.snapshot().version, 2);
    }

    #[test]
    fn a_local_source_skips_local_clashes_and_displaces_remote_ones() {
        let r = Registry::new("app");
        r.add(c("api-1", "10.0.0.3", "api")).expect("add"); // Api origin
        let mut remote = c("web-9", "10.0.0.9", "web");
        remote.origin = Origin::Remote;
        r.set_remote(vec![Arc::new(remote)], BTreeMap::new());
        let docker = |name: &str, ip: &str| {
            let mut d = c(name, ip, "web");
            d.origin = Origin::Docker;
            d
        };
        let skipped = r.set_local_source(
            Origin::Docker,
            vec![
                docker("web-1", "10.0.0.1"),
                docker("api-1", "10.0.0.7"), // name of an API container
                docker("web-2", "10.0.0.3"), // IP of an API container
                docker("web-3", "10.0.0.9"), // IP of a remote container
            ],
        );
        assert_eq!(skipped, ["api-1", "web-2"]);
        let s = r.snapshot();
        let names: Vec<_> = s
            .containers()
            .map(|c| (c.name.as_str(), c.origin))
            .collect();
        assert_eq!(
            names,
            [
                ("api-1", Origin::Api),
                ("web-1", Origin::Docker),
                ("web-3", Origin::Docker)
            ]
        );
        // the next source update replaces the whole origin; an empty one removes them all
        assert!(r.set_local_source(Origin::Docker, Vec::new()).is_empty());
        assert_eq!(r.snapshot().len(), 1);
        // not ready: listed, not serving
        let mut starting = docker("web-4", "10.0.0.4");
        starting.ready = false;
        r.set_local_source(Origin::Docker, vec![starting]);
        assert_eq!(r.snapshot().serving("web").count(), 0);
        assert_eq!(r.snapshot().len(), 2);
    }

    #[test]
    fn a_local_source_displaces_a_remote_name_that_differs_only_in_case() {
        let r = Registry::new("app");
        let mut remote = c("WEB-1", "10.0.0.9", "web");
        remote.origin = Origin::Remote;
        r.set_remote(vec![Arc::new(remote)], BTreeMap::new());
        let mut docker = c("web-1", "10.0.0.1", "web");
        docker.origin = Origin::Docker;
        assert!(r.set_local_source(Origin::Docker, vec![docker]).is_empty());
        let s = r.snapshot();
        let names: Vec<_> = s
            .containers()
            .map(|c| (c.name.as_str(), c.origin))
            .collect();
        assert_eq!(names, [("web-1", Origin::Docker)]);
    }

    #[test]
    fn replace_origin_keeps_other_origins_and_unchanged_health() {
        let r = Registry::new("app");
        let mut cfg = c("web-1", "10.0.0.1", "web");
        cfg.origin = Origin::Config;
        r.replace_origin(
            Origin::Config,
            vec![cfg.clone(), c("web-2", "10.0.0.2", "web")],
        )
        .expect("replace");
        r.add(c("api-1", "10.0.0.3", "api")).expect("api add");
        r.set_health("web-1", Health::Healthy).expect("health");
        // reload: web-2 gone, web-1 unchanged, web-3 new
        r.replace_origin(Origin::Config, vec![cfg, c("web-3", "10.0.0.4", "web")])
            .expect("reload");
        let s = r.snapshot();
        let names: Vec<_> = s.containers().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["api-1", "web-1", "web-3"]);
        assert_eq!(
            s.container("web-1").map(|c| c.health),
            Some(Health::Healthy)
        );
        assert_eq!(s.container("api-1").map(|c| c.origin), Some(Origin::Api));
        // a reload that clashes with an API container changes nothing
        let v = s.version;
        assert!(
            r.replace_origin(Origin::Config, vec![c("x", "10.0.0.3", "web")])
                .is_err()
        );
        assert_eq!(r.snapshot().version, v);
    }

    #[test]
    fn special_addresses_are_refused_unless_configured_or_allowed() {
        for ip in [
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "::ffff:127.0.0.1",
            "169.254.169.254",
            "fe80::1",
            "255.255.255.255",
            "224.0.0.1",
            "ff02::1",
            "0.0.0.0",
            "::",
            "::ffff:169.254.1.1",
        ] {
            assert!(special_address(ip.parse().expect("ip")), "{ip}");
        }
        for ip in [
            "10.200.1.11",
            "192.0.2.1",
            "2001:db8::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!special_address(ip.parse().expect("ip")), "{ip}");
        }
        let r = Registry::new("app");
        let mut api = c("evil-1", "127.0.0.1", "evil");
        api.origin = Origin::Api;
        assert_eq!(
            r.add(api.clone()),
            Err(RegistryError::SpecialAddress(
                "127.0.0.1".parse().expect("ip")
            ))
        );
        let mut meta = c("meta-1", "169.254.169.254", "meta");
        meta.origin = Origin::Docker;
        let left_out = r.set_local_source(Origin::Docker, vec![meta.clone()]);
        assert_eq!(left_out, ["meta-1"]);
        let mut remote = c("r-1", "::1", "r");
        remote.origin = Origin::Remote;
        assert_eq!(
            r.set_remote(vec![Arc::new(remote)], BTreeMap::new()),
            ["r-1"]
        );
        assert_eq!(
            r.refused_addresses
                .load(std::sync::atomic::Ordering::Relaxed),
            3
        );
        assert!(r.snapshot().is_empty());
        // the operator's own config entries may use any address
        let mut own = c("own-1", "127.0.0.1", "own");
        own.origin = Origin::Config;
        r.replace_origin(Origin::Config, vec![own])
            .expect("config entries");
        // and ingress.backend_networks opens what it names
        r.set_backend_networks(vec!["169.254.0.0/16".parse().expect("net")]);
        assert!(r.set_local_source(Origin::Docker, vec![meta]).is_empty());
        api.ip = "127.0.0.2".parse().expect("ip");
        assert!(r.add(api).is_err(), "loopback is still refused");
        assert_eq!(r.snapshot().len(), 2);
    }
}
