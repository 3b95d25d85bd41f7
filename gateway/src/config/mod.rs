//! The TOML config: the contract of DESIGN.md, parsed once at the edge.
//!
//! Parsing happens in two passes. serde (with `deny_unknown_fields`) turns the text into typed
//! values: socket addresses, CIDRs, MACs, durations. Then [`Config::validate`] checks what
//! types cannot: duplicates, ranges, references between sections, readable files. Every error
//! carries the key's path (`overlay.networks[1].vni`), and [`load`] turns it into
//! `FILE:LINE: key: what is wrong, what was expected` using the document's spans.

pub use crate::registry::docker::DockerEndpoint;
use crate::wire::ethernet::MacAddr;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole config file. Every section is optional; an absent `[overlay]`, `[dns]` or
/// `[ingress]` section disables that part.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeConfig,
    pub admin: AdminConfig,
    pub registry: RegistryConfig,
    pub overlay: Option<OverlayConfig>,
    pub dns: Option<DnsConfig>,
    pub ingress: Option<IngressConfig>,
    /// Containers found through the Docker Engine API; absent: Docker is not asked.
    pub docker: Option<DockerConfig>,
    pub containers: Vec<ContainerConfig>,
}

/// `[docker]`: running containers become registry entries of this node (origin `docker`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// The Engine API: `unix:///path` or `tcp://host:port` (plain HTTP, e.g. a read-only
    /// socket proxy). Default: `DOCKER_HOST`, else `unix:///var/run/docker.sock`.
    pub endpoint: Option<String>,
    /// The Docker network whose address (and MAC) is published. Default: a container's only
    /// network; containers on several networks are then skipped.
    pub network: Option<String>,
}

impl DockerConfig {
    /// The endpoint to use: the key, else `DOCKER_HOST` (given as `env`), else the default.
    pub fn endpoint_text(&self, env: Option<&str>) -> String {
        self.endpoint
            .clone()
            .or_else(|| env.filter(|e| !e.is_empty()).map(str::to_owned))
            .unwrap_or_else(|| DockerEndpoint::DEFAULT.to_owned())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Unique per host. Default: "vxgate".
    pub name: String,
    /// Generated state (self-signed certs). Default: /var/lib/vxgate.
    pub state_dir: PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: "vxgate".into(),
            state_dir: PathBuf::from("/var/lib/vxgate"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// REST API, /metrics and /healthz. Default: 127.0.0.1:9180.
    pub listen: SocketAddr,
    /// Bearer token; required when `listen` is not a loopback address.
    pub token_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9180)),
            token_file: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryBackend {
    /// Containers from the config and the admin API.
    #[default]
    Static,
    /// Shared through etcd.
    Etcd,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Default: "static".
    pub backend: RegistryBackend,
    /// etcd client URLs (etcd only).
    pub endpoints: Vec<String>,
    /// Lease on this node's keys (etcd only). Default: 10 s.
    #[serde(rename = "lease_ttl_s", deserialize_with = "seconds")]
    pub lease_ttl: Duration,
    /// Key prefix shared by every node of one fleet (etcd only). Default: "/vxgate/".
    pub prefix: String,
    /// TLS to etcd (`https://` endpoints): the CA that etcd's certificate must chain to
    /// (default: the system roots) and this node's client certificate, for etcd's
    /// `--client-cert-auth`.
    pub tls: Option<EtcdTlsConfig>,
    /// etcd's own authentication (`etcdctl auth enable`): the user, and a file holding its
    /// password (not readable by others).
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
}

/// `registry.tls`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTlsConfig {
    /// PEM roots for etcd's server certificate. Default: the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and its key (both or neither).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            backend: RegistryBackend::Static,
            endpoints: Vec::new(),
            lease_ttl: Duration::from_secs(10),
            prefix: "/vxgate/".into(),
            tls: None,
            username: None,
            password_file: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Offload {
    /// Use TAP and UDP offloads where the kernel allows them.
    #[default]
    Auto,
    Off,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlayConfig {
    /// The underlay UDP socket for plain VXLAN (RFC 7348 uses port 4789). May be omitted with
    /// `[overlay.encryption]` and no plain `peers`: then no plain VXLAN is sent or received.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Remote VTEPs: flood targets, and the only senders accepted. With the etcd registry,
    /// every other node's VTEP is added to these.
    #[serde(default)]
    pub peers: Vec<SocketAddr>,
    /// The address other nodes send to, as published in the shared registry. Default:
    /// `listen`, which must then be a specific address.
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// Which node each peer VTEP belongs to (`{ h2 = "10.99.0.2:4789" }`), so containers of
    /// those nodes with a known MAC get static FDB entries. Each address must be in `peers`.
    #[serde(default)]
    pub peer_nodes: BTreeMap<String, SocketAddr>,
    /// A static fleet's other nodes' gateway addresses (`{ h2 = ["10.200.2.1"] }`): where
    /// their ingress and health checks reach containers from. With etcd each node publishes
    /// its own; without, policy's `ingress` and source validation know them only from here.
    #[serde(default)]
    pub peer_gateways: BTreeMap<String, Vec<std::net::IpAddr>>,
    /// Learned FDB entries expire after this long. Default: 300 s.
    #[serde(
        rename = "fdb_aging_s",
        deserialize_with = "seconds",
        default = "default_fdb_aging"
    )]
    pub fdb_aging: Duration,
    /// Default: "auto".
    #[serde(default)]
    pub offload: Offload,
    /// Drop frames whose source address is not one the sender owns. Default: on whenever
    /// policy is in use (a `vxgate.allow_from` label or an isolated network), else off.
    #[serde(default)]
    pub source_check: Option<SourceCheck>,
    #[serde(default)]
    pub networks: Vec<NetworkConfig>,
    /// WireGuard between hosts (`[overlay.encryption]`). Default: off.
    #[serde(default)]
    pub encryption: Option<EncryptionConfig>,
}

/// `[overlay.encryption]`: VXLAN between tunnel addresses inside WireGuard.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// "off" (the default) or "wireguard".
    #[serde(default)]
    pub mode: EncryptionMode,
    /// WireGuard's UDP socket on the underlay.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// This host's tunnel address, unique in the fleet.
    #[serde(default)]
    pub address: Option<std::net::Ipv4Addr>,
    /// This host's private key (`wg genkey`'s format). Default: `<state_dir>/wireguard.key`,
    /// made on first start (mode 0600).
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// Also accept (and send to `overlay.peers`) plain VXLAN: a migration window.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// The other hosts (static fleets).
    #[serde(default)]
    pub peers: Vec<WgPeerConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionMode {
    #[default]
    Off,
    Wireguard,
}

/// `[[overlay.encryption.peers]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WgPeerConfig {
    /// Its public key (`wg pubkey`, `vxgate key show`).
    pub public_key: String,
    /// Its WireGuard endpoint on the underlay.
    pub endpoint: SocketAddr,
    /// Its tunnel address.
    pub address: std::net::Ipv4Addr,
}

impl OverlayConfig {
    /// `[overlay.encryption]` when it is on.
    pub fn wireguard(&self) -> Option<&EncryptionConfig> {
        self.encryption
            .as_ref()
            .filter(|e| e.mode == EncryptionMode::Wireguard)
    }
}

fn default_fdb_aging() -> Duration {
    Duration::from_secs(300)
}

/// Largest VNI: 24 bits (RFC 7348 §5).
pub const VNI_MAX: u32 = (1 << 24) - 1;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    pub name: String,
    /// 24-bit VXLAN network identifier.
    pub vni: u32,
    /// TAP device name; created if missing. Default: "vxg0".
    #[serde(default = "default_tap")]
    pub tap: String,
    /// Inner MTU. Default: 1450 (1500 underlay minus 50 bytes of VXLAN over IPv4).
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// A Linux bridge to attach the TAP to whenever it exists (e.g. the bridge of a Docker
    /// network created with `-o com.docker.network.bridge.name=vxbr0`). Default: none.
    #[serde(default)]
    pub bridge: Option<String>,
    /// `open` (default): a container without `vxgate.allow_from` takes connections from
    /// anyone, as Docker does; `isolated`: it takes none (Docker's `icc=false`).
    #[serde(default)]
    pub policy: NetworkPolicy,
}

/// `overlay.source_check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceCheck {
    On,
    Off,
}

/// `[[overlay.networks]] policy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkPolicy {
    #[default]
    Open,
    Isolated,
}

fn default_tap() -> String {
    "vxg0".into()
}

fn default_mtu() -> u16 {
    1450
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// UDP and TCP on each address.
    pub listen: Vec<SocketAddr>,
    /// The zone served, e.g. "example.com".
    pub zone: String,
    /// The label whose value names a container's service. Default: "app".
    #[serde(default = "default_service_label")]
    pub service_label: String,
    /// TTL of zone answers. Default: 5 s.
    #[serde(
        rename = "ttl_s",
        deserialize_with = "seconds",
        default = "default_ttl"
    )]
    pub ttl: Duration,
    /// Resolvers for names outside the zone.
    #[serde(default)]
    pub upstreams: Vec<SocketAddr>,
    /// Per-upstream timeout. Default: 2000 ms.
    #[serde(
        rename = "upstream_timeout_ms",
        deserialize_with = "millis",
        default = "default_upstream_timeout"
    )]
    pub upstream_timeout: Duration,
    /// Clients allowed recursion (others get REFUSED for outside names).
    /// Default: loopback only.
    #[serde(default = "default_recursion_from")]
    pub recursion_from: Vec<IpNet>,
    /// Records of one type in a UDP answer, at most (a random subset of larger sets; TCP
    /// answers carry all). Default: 32.
    #[serde(default = "default_max_udp_records")]
    pub max_udp_records: u32,
    /// UDP responses per second to one client network (/24, /56) outside `recursion_from`;
    /// beyond it every second answer is a TC, the rest dropped. Default: 0 (off).
    #[serde(default)]
    pub rate_limit: u32,
}

fn default_max_udp_records() -> u32 {
    vxgate_dns::zone::MAX_UDP_RECORDS as u32
}

fn default_service_label() -> String {
    "app".into()
}

fn default_ttl() -> Duration {
    Duration::from_secs(5)
}

fn default_upstream_timeout() -> Duration {
    Duration::from_millis(2000)
}

fn default_recursion_from() -> Vec<IpNet> {
    use ipnet::{Ipv4Net, Ipv6Net};
    vec![
        IpNet::V4(Ipv4Net::new_assert(std::net::Ipv4Addr::LOCALHOST, 8).trunc()),
        IpNet::V6(Ipv6Net::new_assert(std::net::Ipv6Addr::LOCALHOST, 128)),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    #[default]
    RoundRobin,
    /// Power of two choices on in-flight requests.
    LeastRequests,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressConfig {
    /// The zone whose `<service>.<zone>` names route to services. Default: `dns.zone`.
    #[serde(default)]
    pub zone: Option<String>,
    /// HTTPS listeners. Default: ["0.0.0.0:443"].
    #[serde(default = "default_ingress_listen")]
    pub listen: Vec<SocketAddr>,
    /// Plain-HTTP listeners that answer 308 to the https URL.
    #[serde(default)]
    pub http_redirect: Vec<SocketAddr>,
    /// TLS session tickets and cache. Default: true.
    #[serde(default = "yes")]
    pub session_resumption: bool,
    /// Default: "round_robin".
    #[serde(default)]
    pub load_balancing: LoadBalancing,
    /// Chosen by SNI among their names; none: a generated self-signed one.
    #[serde(default)]
    pub certs: Vec<CertConfig>,
    #[serde(default)]
    pub health: HealthConfig,
    /// Time a client gets to send a request's headers, and to start the next request on a
    /// kept-alive HTTP/1.1 connection (slowloris). Default: 30000 ms.
    #[serde(
        rename = "header_read_timeout_ms",
        deserialize_with = "millis",
        default = "default_header_timeout"
    )]
    pub header_read_timeout: Duration,
    /// Largest request head accepted (bytes, ≥ 8192). Default: 65536.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// A connection with no bytes either way for this long is closed. Default: 120000 ms.
    #[serde(
        rename = "idle_timeout_ms",
        deserialize_with = "millis",
        default = "default_idle_timeout"
    )]
    pub idle_timeout: Duration,
    /// Open client connections at most; more are accepted and closed at once. Default: 10000.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Time a backend gets to start its response (then 504). Default: 60000 ms.
    #[serde(
        rename = "backend_timeout_ms",
        deserialize_with = "millis",
        default = "default_backend_timeout"
    )]
    pub backend_timeout: Duration,
    /// An upgraded (WebSocket) connection with no bytes either way for this long is closed.
    /// Default: 600000 ms (10 minutes).
    #[serde(
        rename = "upgrade_idle_timeout_ms",
        deserialize_with = "millis",
        default = "default_upgrade_idle_timeout"
    )]
    pub upgrade_idle_timeout: Duration,
    /// Certificates from an ACME CA for every service (`[ingress.acme]`).
    #[serde(default)]
    pub acme: Option<AcmeConfig>,
    /// One JSON line per request: `"stderr"` or a file path (relative to the config file).
    /// Absent: no access log.
    #[serde(default)]
    pub access_log: Option<AccessLogConfig>,
    /// Log the query string with the path (off: it may carry tokens).
    #[serde(default)]
    pub access_log_query: bool,
    /// Roots (PEM) that the certificates of `vxgate.protocol = "h2"` backends are verified
    /// against, for `<service>.<zone>`. Absent: TLS to them is not verified.
    #[serde(default)]
    pub backend_ca_file: Option<PathBuf>,
    /// Names that `vxgate.host` labels may claim beside a service's own `<service>.<zone>`:
    /// exact names and `*.suffix` patterns. Default: none (labels claim nothing else).
    #[serde(default)]
    pub route_hosts: Vec<String>,
    /// Addresses that containers from the admin API, Docker and etcd may have when they are
    /// loopback, link-local, multicast, broadcast or unspecified (refused otherwise: such a
    /// backend would turn the ingress into a proxy to the host itself). Containers in the
    /// config file may use any address. Default: none.
    #[serde(default)]
    pub backend_networks: Vec<ipnet::IpNet>,
    /// A response that makes no progress towards the client for this long (a client that
    /// does not read, an HTTP/2 stream with a zero window) closes its connection, as nginx's
    /// `send_timeout`. Default: 30000 ms.
    #[serde(
        rename = "send_timeout_ms",
        deserialize_with = "millis",
        default = "default_send_timeout"
    )]
    pub send_timeout: Duration,
    /// Concurrent streams per HTTP/2 client connection (each can hold a backend
    /// connection). Default: 100.
    #[serde(default = "default_max_streams")]
    pub max_streams_per_connection: u32,
    /// Open HTTP/1.1 backend connections at most, over all backends; one backend may hold
    /// half of them, and one client address (or IPv6 prefix) a quarter (its requests in
    /// flight to backends), so another client still reaches a backend that one floods. Default: half the open-files
    /// limit (after vxgate raises it to the hard limit), at least 64.
    #[serde(default)]
    pub max_backend_connections: Option<usize>,
    /// IPv6 clients are one client per prefix of this length for `vxgate.rate` and the
    /// per-client shares (an IPv6 host has a /64 to itself). Default: 64.
    #[serde(default = "default_ipv6_client_prefix")]
    pub ipv6_client_prefix: u8,
}

fn default_send_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_streams() -> u32 {
    100
}
fn default_ipv6_client_prefix() -> u8 {
    64
}

/// `ingress.access_log`: where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogConfig {
    Stderr,
    File(PathBuf),
}

impl<'de> Deserialize<'de> for AccessLogConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(if s == "stderr" {
            AccessLogConfig::Stderr
        } else {
            AccessLogConfig::File(PathBuf::from(s))
        })
    }
}

/// `[ingress.acme]`: certificates from an ACME CA (RFC 8555), ordered and renewed by vxgate.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// The CA's directory URL (https).
    pub directory: String,
    /// The account's contact (mailto:).
    pub email: String,
    /// Default: "tls-alpn-01".
    #[serde(default)]
    pub challenge: AcmeChallenge,
    /// Extra root (PEM) that the directory's own HTTPS is verified against (a test CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Names to get certificates for. Default: `<service>.<zone>` of every service.
    #[serde(default)]
    pub domains: Option<Vec<String>>,
    /// The wait before retrying a failed order; it doubles per failure up to a day (an hour
    /// at least when the CA says rate limited). Default: 600 s.
    #[serde(
        rename = "retry_initial_s",
        deserialize_with = "seconds",
        default = "default_acme_retry"
    )]
    pub retry_initial: Duration,
}

fn default_acme_retry() -> Duration {
    Duration::from_secs(600)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum AcmeChallenge {
    /// RFC 8737, answered on the HTTPS listeners (port 443 must be reachable from the CA).
    #[default]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// RFC 8555 §8.3, answered on the `http_redirect` listeners (port 80).
    #[serde(rename = "http-01")]
    Http01,
}

fn default_header_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_header_bytes() -> usize {
    65536
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_max_connections() -> usize {
    10_000
}
fn default_backend_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_upgrade_idle_timeout() -> Duration {
    Duration::from_secs(600)
}

fn default_ingress_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([0, 0, 0, 0], 443))]
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertConfig {
    /// PEM chain; relative paths are relative to the config file.
    pub cert: PathBuf,
    /// PEM key (PKCS#8, SEC1 or RSA).
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Path of the active check. Default: "/".
    pub path: String,
    /// Default: 1000 ms.
    #[serde(rename = "interval_ms", deserialize_with = "millis")]
    pub interval: Duration,
    /// Time one check may take. Default: 1000 ms.
    #[serde(rename = "timeout_ms", deserialize_with = "millis")]
    pub timeout: Duration,
    /// Consecutive failures that eject a container. Default: 2.
    pub fall: u32,
    /// Consecutive successes that restore it. Default: 2.
    pub rise: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            path: "/".into(),
            interval: Duration::from_millis(1000),
            timeout: Duration::from_millis(1000),
            fall: 2,
            rise: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerConfig {
    /// Unique; also `<name>.<zone>` in DNS.
    pub name: String,
    pub ip: IpAddr,
    /// Where the ingress sends this container's traffic.
    pub port: u16,
    /// Known MAC (enables ARP suppression and a static FDB entry).
    #[serde(default, deserialize_with = "optional_mac")]
    pub mac: Option<MacAddr>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Overlay network. Default: the first configured network.
    #[serde(default)]
    pub network: Option<String>,
    /// Owning host. Default: this node.
    #[serde(default)]
    pub node: Option<String>,
}

fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}

fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

fn optional_mac<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MacAddr>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse()
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
}

mod load;
mod sections;
mod specs;
#[cfg(test)]
mod tests;
mod validate;

pub use load::{ConfigError, Problem, load, parse};
use sections::*;
