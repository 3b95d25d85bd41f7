//! The TOML config: the contract of DESIGN.md, parsed once at the edge.
//!
//! Parsing happens in two passes. serde (with `deny_unknown_fields`) turns the text into typed
//! values: socket addresses, CIDRs, MACs, durations. Then [`Config::validate`] checks what
//! types cannot: duplicates, ranges, references between sections, readable files. Every error
//! carries the key's path (`overlay.networks[1].vni`), and [`load`] turns it into
//! `FILE:LINE: key: what is wrong, what was expected` using the document's spans.

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

/// Where the Docker Engine API is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerEndpoint {
    /// A unix socket path.
    Unix(PathBuf),
    /// `host:port`, plain HTTP.
    Tcp(String),
}

impl fmt::Display for DockerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DockerEndpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            DockerEndpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

impl DockerEndpoint {
    /// The Docker CLI's default socket.
    pub const DEFAULT: &str = "unix:///var/run/docker.sock";

    /// Parses `unix:///path` or `tcp://host:port` (also `http://host:port`).
    pub fn parse(text: &str) -> Result<DockerEndpoint, String> {
        if let Some(path) = text.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "{text:?}: expected an absolute socket path like \"unix:///var/run/docker.sock\""
                ));
            }
            return Ok(DockerEndpoint::Unix(PathBuf::from(path)));
        }
        let addr = text
            .strip_prefix("tcp://")
            .or_else(|| text.strip_prefix("http://"))
            .ok_or_else(|| {
                format!(
                    "{text:?}: expected \"unix:///path/to/docker.sock\" or \"tcp://host:port\" (https is not supported)"
                )
            })?;
        let addr = addr.trim_end_matches('/');
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                Ok(DockerEndpoint::Tcp(addr.to_owned()))
            }
            _ => Err(format!("{text:?}: expected tcp://host:port")),
        }
    }
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
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            backend: RegistryBackend::Static,
            endpoints: Vec::new(),
            lease_ttl: Duration::from_secs(10),
            prefix: "/vxgate/".into(),
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
    /// The underlay UDP socket (VXLAN, RFC 7348 uses port 4789).
    pub listen: SocketAddr,
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
    #[serde(default)]
    pub networks: Vec<NetworkConfig>,
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

/// One thing wrong with a config, located by its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path with array indices: `containers[2].ip`.
    pub key: String,
    /// What is wrong, and what was expected.
    pub message: String,
}

/// Why a config file was refused: every problem found, each located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// `(line, problem)`; line 0 when the file could not be read at all.
    pub problems: Vec<(usize, Problem)>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (line, p)) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}: {}: {}",
                self.file.display(),
                line,
                p.key,
                p.message
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads, parses and validates a config file. Relative paths inside it (certs, token file)
/// are resolved against the file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        problems: vec![(
            0,
            Problem {
                key: "(file)".into(),
                message: format!("cannot read the config file: {e}"),
            },
        )],
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base).map_err(|problems| ConfigError {
        file: path.to_owned(),
        problems,
    })
}

/// Parses and validates config text; paths in it are relative to `base`.
/// Errors are `(line, problem)` pairs.
pub fn parse(text: &str, base: &Path) -> Result<Config, Vec<(usize, Problem)>> {
    let mut config: Config = match toml::from_str(text) {
        Ok(c) => c,
        Err(e) => {
            let (line, key) = match e.span() {
                Some(span) => (line_of(text, span.start), key_at(text, span.start)),
                None => (1, "(document)".to_owned()),
            };
            let message = e.message().trim().replace('\n', " ");
            return Err(vec![(line, Problem { key, message })]);
        }
    };
    config.resolve_paths(base);
    let problems = config.validate();
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems
            .into_iter()
            .map(|p| (line_of_key(text, &p.key), p))
            .collect())
    }
}

impl Config {
    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(t) = self.admin.token_file.as_mut() {
            fix(t);
        }
        if let Some(ingress) = self.ingress.as_mut() {
            for c in &mut ingress.certs {
                fix(&mut c.cert);
                fix(&mut c.key);
            }
            if let Some(ca) = ingress.acme.as_mut().and_then(|a| a.ca_file.as_mut()) {
                fix(ca);
            }
        }
    }

    /// The label that names a container's service (`dns.service_label`, default "app").
    pub fn service_label(&self) -> &str {
        self.dns
            .as_ref()
            .map(|d| d.service_label.as_str())
            .unwrap_or("app")
    }

    /// The zone the ingress routes (`ingress.zone`, else `dns.zone`), lower-cased.
    pub fn ingress_zone(&self) -> Option<String> {
        let i = self.ingress.as_ref()?;
        i.zone
            .as_deref()
            .or(self.dns.as_ref().map(|d| d.zone.as_str()))
            .and_then(|z| vxgate_dns::name::parse_zone(z).ok())
    }

    /// The overlay network a container belongs to when it names none.
    pub fn default_network(&self) -> &str {
        self.overlay
            .as_ref()
            .and_then(|o| o.networks.first())
            .map(|n| n.name.as_str())
            .unwrap_or("default")
    }

    /// Semantic checks that serde's types cannot express. Returns every problem found.
    pub fn validate(&self) -> Vec<Problem> {
        let mut v = Validator::default();
        self.validate_node(&mut v);
        self.validate_admin(&mut v);
        self.validate_registry(&mut v);
        if let Some(o) = &self.overlay {
            validate_overlay(o, &mut v);
        }
        if let Some(d) = &self.dns {
            validate_dns(d, &mut v);
        }
        if let Some(i) = &self.ingress {
            validate_ingress(i, &mut v);
            match (&i.zone, &self.dns) {
                (Some(z), _) => {
                    if let Err(e) = vxgate_dns::name::parse_zone(z) {
                        v.bad(
                            "ingress.zone",
                            format!("{z:?}: {e}; expected a domain like \"example.com\""),
                        );
                    }
                }
                (None, None) => v.bad(
                    "ingress",
                    "the ingress routes <service>.<zone>: set ingress.zone or dns.zone".into(),
                ),
                (None, Some(_)) => {}
            }
        }
        self.validate_containers(&mut v);
        if let Some(d) = &self.docker {
            validate_docker(d, &mut v);
        }
        v.problems
    }

    fn validate_node(&self, v: &mut Validator) {
        if let Err(e) = vxgate_dns::name::check_label(&self.node.name) {
            v.bad(
                "node.name",
                format!("{e}; expected a host-name label like \"h1\""),
            );
        }
    }

    fn validate_admin(&self, v: &mut Validator) {
        let a = &self.admin;
        if a.listen.port() == 0 {
            v.bad(
                "admin.listen",
                format!(
                    "{}: port 0 picks a random port no client knows; expected e.g. 9180",
                    a.listen
                ),
            );
        }
        match &a.token_file {
            None if !a.listen.ip().is_loopback() => v.bad(
                "admin.listen",
                format!(
                    "{} is not a loopback address, so admin.token_file is required",
                    a.listen
                ),
            ),
            Some(path) => match std::fs::read_to_string(path) {
                Err(e) => v.bad(
                    "admin.token_file",
                    format!("cannot read {}: {e}", path.display()),
                ),
                // an empty token would lock every client out of the admin API
                Ok(t) if t.trim().is_empty() => v.bad(
                    "admin.token_file",
                    format!(
                        "{} is empty; expected a bearer token (e.g. openssl rand -hex 32)",
                        path.display()
                    ),
                ),
                Ok(_) => {}
            },
            None => {}
        }
    }

    fn validate_registry(&self, v: &mut Validator) {
        let r = &self.registry;
        match r.backend {
            RegistryBackend::Static => {
                if !r.endpoints.is_empty() {
                    v.bad(
                        "registry.endpoints",
                        "only used with backend = \"etcd\"; remove it or set the backend".into(),
                    );
                }
            }
            RegistryBackend::Etcd => {
                if !cfg!(feature = "etcd") {
                    v.bad(
                        "registry.backend",
                        "this vxgate was built without the \"etcd\" feature; rebuild with the default features".into(),
                    );
                }
                if !r.prefix.starts_with('/') || r.prefix.contains(char::is_whitespace) {
                    v.bad(
                        "registry.prefix",
                        format!("{:?}: expected a key prefix like \"/vxgate/\"", r.prefix),
                    );
                }
                if let Some(o) = &self.overlay {
                    let vtep = o.advertise.unwrap_or(o.listen);
                    if vtep.ip().is_unspecified() {
                        v.bad(
                            "overlay.advertise",
                            format!("overlay.listen is {}; other nodes need this node's VTEP address, like \"10.99.0.1:4789\"", o.listen),
                        );
                    }
                }
                if r.endpoints.is_empty() {
                    v.bad(
                        "registry.endpoints",
                        "backend \"etcd\" needs at least one endpoint, like \"http://127.0.0.1:2379\"".into(),
                    );
                }
                for (i, e) in r.endpoints.iter().enumerate() {
                    if !(e.starts_with("http://") || e.starts_with("https://")) {
                        v.bad(
                            &format!("registry.endpoints[{i}]"),
                            format!("{e:?} is not a URL; expected \"http://HOST:PORT\""),
                        );
                    }
                }
            }
        }
        in_range(
            v,
            "registry.lease_ttl_s",
            u128::from(r.lease_ttl.as_secs()),
            2,
            3600,
            "the lease is renewed at a third of it; a dead node's entries live this long",
        );
    }

    fn validate_containers(&self, v: &mut Validator) {
        let label = self.service_label();
        let networks: Vec<&str> = self
            .overlay
            .as_ref()
            .map(|o| o.networks.iter().map(|n| n.name.as_str()).collect())
            .unwrap_or_default();
        let mut names = HashSet::new();
        let mut ips = HashMap::new();
        let mut macs = HashMap::new();
        for (i, c) in self.containers.iter().enumerate() {
            let at = |k: &str| format!("containers[{i}].{k}");
            if let Err(e) = vxgate_dns::name::check_label(&c.name) {
                v.bad(
                    &at("name"),
                    format!("{e}; expected a host-name label like \"web-1\""),
                );
            } else if !names.insert(c.name.to_ascii_lowercase()) {
                v.bad(
                    &at("name"),
                    format!("duplicate container name {:?}", c.name),
                );
            }
            if c.ip.is_unspecified() || c.ip.is_multicast() {
                v.bad(&at("ip"), format!("{} is not a unicast address", c.ip));
            } else if let Some(other) = ips.insert(c.ip, i) {
                v.bad(
                    &at("ip"),
                    format!("{} is already used by containers[{other}]", c.ip),
                );
            }
            if c.port == 0 {
                v.bad(&at("port"), "port 0 is not a port; expected 1-65535".into());
            }
            if let Some(mac) = c.mac {
                if !mac.is_unicast() {
                    v.bad(&at("mac"), format!("{mac} is not a unicast MAC address"));
                } else if let Some(other) = macs.insert(mac, i) {
                    v.bad(
                        &at("mac"),
                        format!("{mac} is already used by containers[{other}]"),
                    );
                }
            }
            if let Some(service) = c.labels.get(label)
                && let Err(e) = vxgate_dns::name::check_label(service)
            {
                v.bad(
                    &format!("containers[{i}].labels.{label}"),
                    format!("{e}; the service name becomes a DNS label"),
                );
            }
            if let Some(net) = &c.network
                && !networks.contains(&net.as_str())
            {
                v.bad(
                    &at("network"),
                    format!(
                        "no overlay network named {net:?}; expected one of {:?}",
                        networks
                    ),
                );
            }
            if let Some(node) = &c.node
                && let Err(e) = vxgate_dns::name::check_label(node)
            {
                v.bad(
                    &at("node"),
                    format!("{e}; expected a node name like \"h2\""),
                );
            }
        }
    }
}

fn validate_overlay(o: &OverlayConfig, v: &mut Validator) {
    if o.listen.port() == 0 {
        v.bad(
            "overlay.listen",
            "port 0; expected the VXLAN port, usually 4789".into(),
        );
    }
    if let Some(a) = o.advertise
        && (a.port() == 0 || a.ip().is_unspecified() || a.ip().is_multicast())
    {
        v.bad(
            "overlay.advertise",
            format!("{a} is not a unicast address and port"),
        );
    }
    let mut seen = HashSet::new();
    for (i, p) in o.peers.iter().enumerate() {
        let key = format!("overlay.peers[{i}]");
        if p.port() == 0 {
            v.bad(&key, format!("{p}: port 0; expected the peer's VXLAN port"));
        } else if p.ip().is_unspecified() || p.ip().is_multicast() {
            v.bad(&key, format!("{p} is not a unicast address"));
        } else if *p == o.listen {
            v.bad(&key, format!("{p} is this host's own overlay.listen"));
        } else if !seen.insert(*p) {
            v.bad(&key, format!("duplicate peer {p}"));
        }
    }
    for (node, addr) in &o.peer_nodes {
        if !o.peers.contains(addr) {
            v.bad(
                &format!("overlay.peer_nodes.{node}"),
                format!(
                    "{addr} is not in overlay.peers; expected one of {:?}",
                    o.peers
                ),
            );
        }
    }
    in_range(
        v,
        "overlay.fdb_aging_s",
        u128::from(o.fdb_aging.as_secs()),
        1,
        1_000_000,
        "a learned MAC is forgotten this long after its last frame",
    );
    if o.networks.is_empty() {
        v.bad(
            "overlay.networks",
            "the overlay needs at least one [[overlay.networks]] entry".into(),
        );
    }
    let (mut names, mut vnis, mut taps) = (HashMap::new(), HashMap::new(), HashMap::new());
    for (i, n) in o.networks.iter().enumerate() {
        let at = |k: &str| format!("overlay.networks[{i}].{k}");
        if let Err(e) = vxgate_dns::name::check_label(&n.name) {
            v.bad(
                &at("name"),
                format!("{e}; expected a short name like \"default\""),
            );
        } else if let Some(other) = names.insert(n.name.as_str(), i) {
            v.bad(
                &at("name"),
                format!("{:?} is already overlay.networks[{other}]", n.name),
            );
        }
        if n.vni > VNI_MAX {
            v.bad(
                &at("vni"),
                format!("{} does not fit in 24 bits; expected 0-{VNI_MAX}", n.vni),
            );
        } else if let Some(other) = vnis.insert(n.vni, i) {
            v.bad(
                &at("vni"),
                format!("VNI {} is already overlay.networks[{other}]", n.vni),
            );
        }
        if let Err(why) = check_ifname(&n.tap) {
            v.bad(&at("tap"), why);
        } else if let Some(other) = taps.insert(n.tap.as_str(), i) {
            v.bad(
                &at("tap"),
                format!("TAP {:?} is already overlay.networks[{other}]", n.tap),
            );
        }
        if let Some(bridge) = &n.bridge {
            if let Err(why) = check_ifname(bridge) {
                v.bad(&at("bridge"), why);
            } else if *bridge == n.tap {
                v.bad(
                    &at("bridge"),
                    format!("{bridge:?} is the TAP itself; expected the bridge to attach it to"),
                );
            }
        }
        if !(576..=9000).contains(&n.mtu) {
            v.bad(
                &at("mtu"),
                format!("{} is out of range; expected 576-9000", n.mtu),
            );
        }
    }
}

fn validate_docker(d: &DockerConfig, v: &mut Validator) {
    // the key is checked here; DOCKER_HOST when the daemon starts (it is not in the file)
    if let Some(e) = &d.endpoint
        && let Err(why) = DockerEndpoint::parse(e)
    {
        v.bad("docker.endpoint", why);
    }
    if let Some(n) = &d.network
        && (n.is_empty() || n.contains(char::is_whitespace))
    {
        v.bad(
            "docker.network",
            format!("{n:?}: expected a Docker network name like \"vxnet\""),
        );
    }
}

/// Linux interface names: 1–15 bytes, no '/', ':', whitespace (dev_valid_name()).
fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("{name:?}: an interface name has 1-15 characters"));
    }
    if name == "."
        || name == ".."
        || name.contains(['/', ':'])
        || name.contains(char::is_whitespace)
    {
        return Err(format!(
            "{name:?} is not a valid interface name (no '/', ':' or spaces)"
        ));
    }
    Ok(())
}

fn validate_dns(d: &DnsConfig, v: &mut Validator) {
    if d.listen.is_empty() {
        v.bad(
            "dns.listen",
            "at least one address is needed, like \"10.200.1.1:53\"".into(),
        );
    }
    let mut seen = HashSet::new();
    for (i, a) in d.listen.iter().enumerate() {
        if a.port() == 0 {
            v.bad(
                &format!("dns.listen[{i}]"),
                format!("{a}: port 0 picks a random port no client knows; expected 53"),
            );
        } else if !seen.insert(*a) {
            v.bad(
                &format!("dns.listen[{i}]"),
                format!("duplicate address {a}"),
            );
        }
    }
    if let Err(e) = vxgate_dns::name::parse_zone(&d.zone) {
        v.bad(
            "dns.zone",
            format!("{:?}: {e}; expected a domain like \"example.com\"", d.zone),
        );
    }
    if d.service_label.is_empty() {
        v.bad(
            "dns.service_label",
            "must not be empty; expected a label key like \"app\"".into(),
        );
    }
    for (i, u) in d.upstreams.iter().enumerate() {
        if u.port() == 0 || u.ip().is_unspecified() {
            v.bad(
                &format!("dns.upstreams[{i}]"),
                format!("{u} is not a reachable resolver address; expected IP:PORT"),
            );
        }
    }
    for (key, value, min, max, why) in [
        (
            "dns.ttl_s",
            u128::from(d.ttl.as_secs()),
            0,
            86_400,
            "container addresses change; caches would keep stale answers longer",
        ),
        (
            "dns.upstream_timeout_ms",
            d.upstream_timeout.as_millis(),
            10,
            60_000,
            "a shorter one fails every forwarded name; clients give up long before the maximum",
        ),
        (
            "dns.max_udp_records",
            u128::from(d.max_udp_records),
            1,
            1000,
            "0 would answer nothing; TCP answers carry every record anyway",
        ),
    ] {
        in_range(v, key, value, min, max, why);
    }
    if d.rate_limit != 0 {
        in_range(
            v,
            "dns.rate_limit",
            u128::from(d.rate_limit),
            1,
            1_000_000,
            "responses per second per client network; 0 turns the limit off",
        );
    }
}

fn validate_acme(a: &AcmeConfig, i: &IngressConfig, v: &mut Validator) {
    if !a.directory.starts_with("https://") || a.directory.contains(char::is_whitespace) {
        v.bad(
            "ingress.acme.directory",
            format!(
                "{:?}: expected the CA's https directory URL, like \"https://acme-staging-v02.api.letsencrypt.org/directory\"",
                a.directory
            ),
        );
    }
    let at = a.email.find('@');
    if at.is_none_or(|n| n == 0 || n + 1 == a.email.len()) || a.email.contains(char::is_whitespace)
    {
        v.bad(
            "ingress.acme.email",
            format!(
                "{:?}: expected an address like \"ops@example.com\"",
                a.email
            ),
        );
    }
    if a.challenge == AcmeChallenge::Http01 && i.http_redirect.is_empty() {
        v.bad(
            "ingress.acme.challenge",
            "http-01 is answered on the plain-HTTP listeners: set ingress.http_redirect (port 80), or use \"tls-alpn-01\"".into(),
        );
    }
    if let Some(ca) = &a.ca_file {
        pem_file(v, "ingress.acme.ca_file", ca, "CERTIFICATE");
    }
    for (n, d) in a.domains.iter().flatten().enumerate() {
        if let Err(e) = vxgate_dns::name::parse_zone(d) {
            v.bad(
                &format!("ingress.acme.domains[{n}]"),
                format!("{d:?}: {e}; expected a host name like \"web.example.com\""),
            );
        }
    }
    in_range(
        v,
        "ingress.acme.retry_initial_s",
        u128::from(a.retry_initial.as_secs()),
        1,
        86_400,
        "the first wait after a failed order",
    );
}

/// `value` must be in `min..=max`; `why` says what lies outside.
fn in_range(v: &mut Validator, key: &str, value: u128, min: u128, max: u128, why: &str) {
    if !(min..=max).contains(&value) {
        v.bad(
            key,
            format!("{value} is out of range; expected {min}-{max} ({why})"),
        );
    }
}

fn validate_ingress(i: &IngressConfig, v: &mut Validator) {
    if i.listen.is_empty() {
        v.bad(
            "ingress.listen",
            "at least one address is needed, like \"0.0.0.0:443\"".into(),
        );
    }
    let mut seen = HashSet::new();
    for (key, addrs) in [
        ("ingress.listen", &i.listen),
        ("ingress.http_redirect", &i.http_redirect),
    ] {
        for (n, a) in addrs.iter().enumerate() {
            if a.port() == 0 {
                v.bad(
                    &format!("{key}[{n}]"),
                    format!("{a}: port 0 picks a random port no client knows; expected 443 or 80"),
                );
            } else if !seen.insert(*a) {
                v.bad(&format!("{key}[{n}]"), format!("{a} is already a listener"));
            }
        }
    }
    for (n, c) in i.certs.iter().enumerate() {
        pem_file(
            v,
            &format!("ingress.certs[{n}].cert"),
            &c.cert,
            "CERTIFICATE",
        );
        pem_file(v, &format!("ingress.certs[{n}].key"), &c.key, "PRIVATE KEY");
    }
    if !i.health.path.starts_with('/') {
        v.bad(
            "ingress.health.path",
            format!("{:?} must start with '/', like \"/healthz\"", i.health.path),
        );
    }
    if let Some(a) = &i.acme {
        validate_acme(a, i, v);
    }
    // Ranges where a value outside would stop traffic or panic at run time.
    let ms = |d: Duration| d.as_millis();
    for (key, value, min, max, why) in [
        (
            "ingress.header_read_timeout_ms",
            ms(i.header_read_timeout),
            100,
            3_600_000,
            "a shorter wait closes connections before a request can arrive",
        ),
        (
            "ingress.idle_timeout_ms",
            ms(i.idle_timeout),
            1000,
            86_400_000,
            "a shorter one closes connections between two requests",
        ),
        (
            "ingress.backend_timeout_ms",
            ms(i.backend_timeout),
            100,
            86_400_000,
            "a shorter one answers 504 before a backend can",
        ),
        (
            "ingress.upgrade_idle_timeout_ms",
            ms(i.upgrade_idle_timeout),
            1000,
            86_400_000,
            "a shorter one closes WebSockets between two messages",
        ),
        (
            "ingress.health.interval_ms",
            ms(i.health.interval),
            10,
            3_600_000,
            "checks more often than every 10 ms load the backends",
        ),
        (
            "ingress.health.timeout_ms",
            ms(i.health.timeout),
            10,
            60_000,
            "a shorter check fails every backend",
        ),
        (
            "ingress.max_header_bytes",
            i.max_header_bytes as u128,
            8192,
            1 << 20,
            "hyper needs at least 8192 bytes for a request head",
        ),
        (
            "ingress.max_connections",
            i.max_connections as u128,
            1,
            1_000_000,
            "0 refuses every client",
        ),
        (
            "ingress.health.fall",
            u128::from(i.health.fall),
            1,
            100,
            "0 would never eject",
        ),
        (
            "ingress.health.rise",
            u128::from(i.health.rise),
            1,
            100,
            "0 would never restore",
        ),
    ] {
        in_range(v, key, value, min, max, why);
    }
}

/// The file must be readable and hold a PEM block whose label ends with `label`
/// ("PRIVATE KEY" matches PKCS#8, "EC PRIVATE KEY" (SEC1) and "RSA PRIVATE KEY").
fn pem_file(v: &mut Validator, key: &str, path: &Path, label: &str) {
    match std::fs::read_to_string(path) {
        Err(e) => v.bad(key, format!("cannot read {}: {e}", path.display())),
        Ok(text) => {
            let found = text.lines().any(|l| {
                l.strip_prefix("-----BEGIN ")
                    .and_then(|l| l.strip_suffix("-----"))
                    .is_some_and(|l| l.ends_with(label))
            });
            if !found {
                v.bad(
                    key,
                    format!("{} holds no PEM {label} block", path.display()),
                );
            }
        }
    }
}

#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
}

impl Validator {
    fn bad(&mut self, key: &str, message: String) {
        self.problems.push(Problem {
            key: key.to_owned(),
            message,
        });
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// One step of a key path.
#[derive(Debug, PartialEq)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn steps(path: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, rest) = part.split_once('[').unwrap_or((part, ""));
        if !key.is_empty() {
            out.push(Step::Key(key));
        }
        for idx in rest.split('[') {
            if let Ok(n) = idx.trim_end_matches(']').parse() {
                out.push(Step::Index(n));
            }
        }
    }
    out
}

type Spanned<T> = toml::Spanned<T>;
type DeTable<'i> = toml::de::DeTable<'i>;
type DeValue<'i> = toml::de::DeValue<'i>;

/// The line where the deepest existing part of `path` is written (the key where it has one),
/// so a problem with a defaulted key points at its section.
fn line_of_key(text: &str, path: &str) -> usize {
    let Ok(doc) = toml::de::DeTable::parse(text) else {
        return 1;
    };
    let mut offset = 0;
    let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    for step in steps(path) {
        let next = match (step, table, value) {
            (Step::Key(k), Some(t), _) => t.get_key_value(k).map(|(key, val)| {
                offset = key.span().start;
                val
            }),
            (Step::Index(n), _, Some(val)) => val.get_ref().as_array().and_then(|a| {
                let item = a.get(n)?;
                offset = item.span().start;
                Some(item)
            }),
            _ => None,
        };
        let Some(next) = next else { break };
        value = Some(next);
        table = next.get_ref().as_table();
    }
    line_of(text, offset)
}

/// The key path of the innermost value or key whose span holds `offset`.
fn key_at(text: &str, offset: usize) -> String {
    let Ok(doc) = toml::de::DeTable::parse(text) else {
        return "(document)".into();
    };
    let mut path = String::new();
    let mut table: &DeTable<'_> = doc.get_ref();
    'outer: loop {
        for (k, val) in table.iter() {
            let in_key = k.span().contains(&offset);
            let in_val = val.span().contains(&offset);
            // Tables from `[section]` headers have spans that cover only the header; follow
            // a table whose children hold the offset too.
            let in_children = val.get_ref().as_table().is_some_and(|t| holds(t, offset));
            let in_items = val.get_ref().as_array().is_some_and(|a| {
                a.iter().any(|i| {
                    i.span().contains(&offset)
                        || i.get_ref().as_table().is_some_and(|t| holds(t, offset))
                })
            });
            if !(in_key || in_val || in_children || in_items) {
                continue;
            }
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(k.get_ref());
            if in_key {
                break 'outer;
            }
            match val.get_ref() {
                DeValue::Table(t) => {
                    table = t;
                    continue 'outer;
                }
                DeValue::Array(a) => {
                    for (n, item) in a.iter().enumerate() {
                        let t = item.get_ref().as_table();
                        if item.span().contains(&offset) || t.is_some_and(|t| holds(t, offset)) {
                            path.push_str(&format!("[{n}]"));
                            match t {
                                Some(t) => {
                                    table = t;
                                    continue 'outer;
                                }
                                None => break 'outer,
                            }
                        }
                    }
                    break 'outer;
                }
                _ => break 'outer,
            }
        }
        break;
    }
    if path.is_empty() {
        "(document)".into()
    } else {
        path
    }
}

/// Whether any key or value inside `table` (at any depth) spans `offset`.
fn holds(table: &DeTable<'_>, offset: usize) -> bool {
    table.iter().any(|(k, val)| {
        k.span().contains(&offset)
            || val.span().contains(&offset)
            || match val.get_ref() {
                DeValue::Table(t) => holds(t, offset),
                DeValue::Array(a) => a.iter().any(|i| {
                    i.span().contains(&offset)
                        || i.get_ref().as_table().is_some_and(|t| holds(t, offset))
                }),
                _ => false,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_takes_documented_defaults() {
        let c = parse("", Path::new(".")).expect("empty config is valid");
        assert_eq!(c.node.name, "vxgate");
        assert_eq!(c.admin.listen, "127.0.0.1:9180".parse().expect("addr"));
        assert_eq!(c.registry.backend, RegistryBackend::Static);
        assert!(c.overlay.is_none() && c.dns.is_none() && c.ingress.is_none());
        assert_eq!(c.service_label(), "app");
    }

    #[test]
    fn typed_values_and_defaults_in_sections() {
        let c = parse(
            r#"
[overlay]
listen = "10.99.0.1:4789"
[[overlay.networks]]
name = "default"
vni = 42
[dns]
listen = ["10.200.1.1:53"]
zone = "Example.com"
recursion_from = ["10.200.0.0/16"]
[[containers]]
name = "web-1"
ip = "10.200.1.11"
port = 80
mac = "02:00:0a:c8:01:0b"
labels = { app = "web" }
"#,
            Path::new("."),
        )
        .expect("valid");
        let o = c.overlay.as_ref().expect("overlay");
        assert_eq!(o.fdb_aging, Duration::from_secs(300));
        assert_eq!(o.networks[0].tap, "vxg0");
        assert_eq!(o.networks[0].mtu, 1450);
        let d = c.dns.as_ref().expect("dns");
        assert_eq!(d.ttl, Duration::from_secs(5));
        assert_eq!(d.upstream_timeout, Duration::from_millis(2000));
        assert_eq!(
            d.recursion_from[0],
            "10.200.0.0/16".parse::<IpNet>().expect("net")
        );
        assert_eq!(
            c.containers[0].mac,
            Some("02:00:0a:c8:01:0b".parse().expect("mac"))
        );
    }

    #[test]
    fn docker_endpoint_comes_from_the_key_then_docker_host_then_the_default() {
        let c = parse("[docker]\nnetwork = \"vxnet\"\n", Path::new(".")).expect("valid");
        let d = c.docker.as_ref().expect("docker");
        assert_eq!(d.network.as_deref(), Some("vxnet"));
        assert_eq!(d.endpoint_text(None), "unix:///var/run/docker.sock");
        assert_eq!(
            d.endpoint_text(Some("unix:///run/user/1000/docker.sock")),
            "unix:///run/user/1000/docker.sock"
        );
        assert_eq!(d.endpoint_text(Some("")), "unix:///var/run/docker.sock");
        let keyed = DockerConfig {
            endpoint: Some("tcp://127.0.0.1:2375".into()),
            network: None,
        };
        assert_eq!(
            keyed.endpoint_text(Some("unix:///x")),
            "tcp://127.0.0.1:2375"
        );
        assert_eq!(
            DockerEndpoint::parse("tcp://127.0.0.1:2375"),
            Ok(DockerEndpoint::Tcp("127.0.0.1:2375".into()))
        );
        assert_eq!(
            DockerEndpoint::parse("unix:///var/run/docker.sock"),
            Ok(DockerEndpoint::Unix("/var/run/docker.sock".into()))
        );
        for bad in [
            "",
            "unix://relative.sock",
            "tcp://:2375",
            "tcp://h:0",
            "ssh://h",
        ] {
            assert!(DockerEndpoint::parse(bad).is_err(), "{bad}");
        }
        assert!(parse("", Path::new(".")).expect("valid").docker.is_none());
    }

    #[test]
    fn key_paths_map_to_lines() {
        let text = "[node]\nname = \"h1\"\n\n[[containers]]\nname = \"a\"\n\n[[containers]]\nname = \"b\"\nip = \"1.2.3.4\"\n";
        assert_eq!(line_of_key(text, "node.name"), 2);
        assert_eq!(line_of_key(text, "containers[1].ip"), 9);
        // a key that is absent points at its nearest written ancestor
        assert_eq!(line_of_key(text, "containers[1].port"), 7);
        assert_eq!(
            key_at(text, text.find("1.2.3.4").expect("in text")),
            "containers[1].ip"
        );
    }

    #[test]
    fn step_parsing() {
        assert_eq!(
            steps("overlay.networks[1].vni"),
            vec![
                Step::Key("overlay"),
                Step::Key("networks"),
                Step::Index(1),
                Step::Key("vni")
            ]
        );
    }
}
