//! The route table: which service answers a request, by its host and path. Built once per
//! registry snapshot from the services' labels, so a request only looks it up (no
//! allocation, no lock held while it is used). Pure: no I/O, no clock (the snapshot's
//! version stands for "when").
//!
//! Every service answers `<service>.<zone>`. Labels on its containers add to that, the same
//! whether they come from Docker, the config or the admin API:
//!
//! - `vxgate.host = "shop.example.org,*.shop.example.org"`: more host names, exact or with a
//!   leading `*.` (any subdomain, not the name itself);
//! - `vxgate.path = "/api"`: the service takes only requests under that prefix, on every
//!   host it serves; segment-aware (`/api` and `/api/x`, not `/apix`); the longest prefix
//!   wins;
//! - `vxgate.strip_prefix = "true"`: the prefix is removed before the request is forwarded.
//!
//! Names are owned: a service always has `<service>.<zone>` to itself (another service's
//! `vxgate.host` naming it is refused while that service exists, whatever the age of the
//! claim), and a label may claim another name only when `ingress.route_hosts` lists it (an
//! exact name, or `*.suffix` for the names below it); by default, none. A refused claim is
//! reported (log, `GET /v1/services` as `refused`). A wildcard never takes a path of a name
//! that has routes of its own: that name's routes alone answer it.
//!
//! Two services claiming one host and prefix is a conflict: the claim seen first (in an
//! earlier snapshot; in the same one, the service whose name sorts first) wins, and the
//! conflict is reported (log, `GET /v1/services`).

use super::state::ServiceState;
use crate::registry::Snapshot;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub const HOST_LABEL: &str = "vxgate.host";
pub const PATH_LABEL: &str = "vxgate.path";
pub const STRIP_LABEL: &str = "vxgate.strip_prefix";
pub const MAX_IN_FLIGHT_LABEL: &str = "vxgate.max_in_flight";
pub const RATE_LABEL: &str = "vxgate.rate";
pub const PROTOCOL_LABEL: &str = "vxgate.protocol";
pub const STICKY_LABEL: &str = "vxgate.sticky";

/// How the ingress speaks to a service's containers (`vxgate.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/1.1 (the default).
    #[default]
    Http1,
    /// HTTP/2 over plain TCP with prior knowledge (gRPC servers).
    H2c,
    /// HTTP/2 over TLS (ALPN h2), the certificate verified against `ingress.backend_ca_file`.
    H2,
}

/// A per-client request rate: `per` requests every `every` (`vxgate.rate = "100/s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per: u32,
    pub every: std::time::Duration,
}

/// What a service's labels ask of the ingress beside its routes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Requests in flight to the service at most; beyond it 503 (`vxgate.max_in_flight`).
    pub max_in_flight: Option<usize>,
    /// Requests per client address (`vxgate.rate`); beyond it 429 with Retry-After.
    pub rate: Option<Rate>,
    pub protocol: Protocol,
    /// A cookie keeps each client on one backend (`vxgate.sticky = "cookie"`).
    pub sticky: bool,
}

/// One service's claim on a host and a path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// An exact host, or `*.suffix`.
    pub host: String,
    /// `/` or a prefix without a trailing `/`.
    pub prefix: String,
    pub service: Arc<str>,
    /// Remove `prefix` before forwarding.
    pub strip: bool,
    /// The service's limits and backend protocol.
    pub policy: Arc<Policy>,
    /// The service's request-path state (round-robin turn, requests in flight), shared by
    /// its routes and kept across table rebuilds.
    pub state: Arc<ServiceState>,
    /// The snapshot version in which this claim was first seen.
    since: u64,
}

/// Two services claimed one host and prefix; `winner` serves it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Conflict {
    pub host: String,
    pub prefix: String,
    pub winner: String,
    pub loser: String,
}

/// The route table in use, swapped whole when the registry changes: a request reads it
/// without a lock or a reference count taken.
pub type Routes = std::sync::Arc<arc_swap::ArcSwap<RouteTable>>;

/// A `vxgate.host` claim that was refused, with why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Refused {
    pub service: String,
    pub host: String,
    pub why: &'static str,
}

/// Which names `vxgate.host` labels may claim (`ingress.route_hosts`): exact names and
/// `*.suffix` patterns, lower case, without a trailing dot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostAllowList(Vec<String>);

impl HostAllowList {
    /// The list from the config's values (invalid ones are the config's to refuse).
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> HostAllowList {
        HostAllowList(
            patterns
                .into_iter()
                .filter_map(crate::names::host_pattern)
                .collect(),
        )
    }

    /// Whether a claim on `host` (a name or `*.suffix`) is allowed: listed as it is, or
    /// below a listed `*.suffix`.
    pub fn allows(&self, host: &str) -> bool {
        let name = host.strip_prefix("*.").unwrap_or(host);
        self.0.iter().any(|p| {
            p == host
                || p.strip_prefix('*').is_some_and(|dot_suffix| {
                    name.len() > dot_suffix.len() && name.ends_with(dot_suffix)
                })
        })
    }
}

/// Why a `vxgate.host` claim on `h` is refused: another service's own name, or outside
/// `ingress.route_hosts`.
fn claim_refusal(
    h: &str,
    zone: &str,
    owners: &std::collections::HashSet<String>,
    allowed: &HostAllowList,
) -> Option<&'static str> {
    match own_name_form(h, zone) {
        Some(owner) if owners.contains(owner) => Some("the own name of another service"),
        _ if !allowed.allows(h) => Some("not in ingress.route_hosts"),
        _ => None,
    }
}

/// What `service`'s containers claim: its own name and the `vxgate.host` names `refusal`
/// lets through, the `vxgate.path` prefix (the first container in name order that names
/// one decides it) and whether it is stripped.
fn claimed(
    service: &str,
    containers: &[std::sync::Arc<crate::registry::Container>],
    zone: &str,
    refusal: impl Fn(&str) -> Option<&'static str>,
    refused: &mut Vec<Refused>,
    problems: &mut Vec<String>,
) -> (Vec<String>, Option<String>, bool) {
    let mut hosts = vec![format!("{}.{zone}", service.to_ascii_lowercase())];
    let mut prefix: Option<String> = None;
    let mut strip = false;
    // containers in name order: the first one that names a path decides it
    let mut sorted: Vec<_> = containers.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for c in sorted {
        if let Some(v) = c.labels.get(HOST_LABEL) {
            for h in v.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                match crate::names::host_pattern(h) {
                    Some(h) if hosts.contains(&h) => {}
                    Some(h) => match refusal(&h) {
                        Some(why) => refused.push(Refused {
                            service: service.to_owned(),
                            host: h,
                            why,
                        }),
                        None => hosts.push(h),
                    },
                    None => problems.push(format!(
                        "{service}: label {HOST_LABEL} {h:?}: expected a host name, or *. and one"
                    )),
                }
            }
        }
        if prefix.is_none()
            && let Some(v) = c.labels.get(PATH_LABEL)
        {
            match path_prefix(v) {
                Some(p) => {
                    prefix = Some(p);
                    strip = c.labels.get(STRIP_LABEL).is_some_and(|s| s == "true");
                }
                None => problems.push(format!(
                    "{service}: label {PATH_LABEL} {v:?}: expected a path like /api"
                )),
            }
        }
    }
    (hosts, prefix, strip)
}

type Settled = (
    HashMap<String, Vec<Route>>,
    Vec<(String, Vec<Route>)>,
    Vec<Conflict>,
);

/// Each (host, prefix)'s oldest claim serves it (the others are conflicts); exact hosts and
/// wildcards apart, longest prefix first, longest wildcard suffix first.
fn settle(claims: BTreeMap<(String, String), Vec<Route>>) -> Settled {
    let mut exact: HashMap<String, Vec<Route>> = HashMap::new();
    let mut wildcard: BTreeMap<String, Vec<Route>> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for ((host, prefix), mut rs) in claims {
        rs.sort_by(|a, b| (a.since, &*a.service).cmp(&(b.since, &*b.service)));
        let winner = rs.remove(0);
        for loser in rs {
            conflicts.push(Conflict {
                host: host.clone(),
                prefix: prefix.clone(),
                winner: winner.service.to_string(),
                loser: loser.service.to_string(),
            });
        }
        match host.strip_prefix('*') {
            Some(suffix) => wildcard.entry(suffix.to_owned()).or_default().push(winner),
            None => exact.entry(host).or_default().push(winner),
        }
    }
    let by_prefix = |rs: &mut Vec<Route>| rs.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    exact.values_mut().for_each(by_prefix);
    let mut wildcard: Vec<(String, Vec<Route>)> = wildcard.into_iter().collect();
    wildcard.iter_mut().for_each(|(_, rs)| by_prefix(rs));
    wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
    (exact, wildcard, conflicts)
}

/// Whether `host` is one label under `zone` (`x.zone`): a name that is some service's own.
fn own_name_form<'a>(host: &'a str, zone: &str) -> Option<&'a str> {
    let label = host.strip_suffix(zone)?.strip_suffix('.')?;
    (!label.is_empty() && !label.contains('.')).then_some(label)
}

#[derive(Debug, Default)]
pub struct RouteTable {
    /// Claims refused (another service's own name, or not in `ingress.route_hosts`).
    refused: Vec<Refused>,
    /// Exact host → its routes, longest prefix first.
    exact: HashMap<String, Vec<Route>>,
    /// `suffix` (with its leading dot) → routes, longest suffix first.
    wildcard: Vec<(String, Vec<Route>)>,
    conflicts: Vec<Conflict>,
    /// Label values that were left out, with why: `service: label "value": problem`.
    problems: Vec<String>,
    /// Each service's round-robin position, handed on to the next table.
    states: HashMap<Arc<str>, Arc<ServiceState>>,
}

impl RouteTable {
    /// The table for `snapshot` (its version stands for the time of the claims): every
    /// service with at least one container, serving or not (a service whose containers are
    /// all unhealthy answers 503, not 404). `previous` keeps older claims first.
    pub fn build(
        snapshot: &Snapshot,
        zone: &str,
        allowed: &HostAllowList,
        previous: Option<&RouteTable>,
    ) -> RouteTable {
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        let mut problems = Vec::new();
        let mut refused = Vec::new();
        let owners: std::collections::HashSet<String> = snapshot
            .services()
            .map(|(s, _)| s.to_ascii_lowercase())
            .collect();
        // (host, prefix) → every claim on it
        let mut claims: BTreeMap<(String, String), Vec<Route>> = BTreeMap::new();
        let mut states: HashMap<Arc<str>, Arc<ServiceState>> = HashMap::new();
        for (service, containers) in snapshot.services() {
            let (hosts, prefix, strip) = claimed(
                service,
                containers,
                &zone,
                |h| claim_refusal(h, &zone, &owners, allowed),
                &mut refused,
                &mut problems,
            );
            let prefix = prefix.unwrap_or_else(|| "/".to_owned());
            let policy = Arc::new(policy_of(service, containers, &mut problems));
            let name: Arc<str> = Arc::from(service);
            let state: Arc<ServiceState> = previous
                .and_then(|p| p.states.get(&name).cloned())
                .unwrap_or_default();
            state.set_backends(containers.iter().map(|c| c.name.as_str()));
            states.insert(name.clone(), state.clone());
            for host in hosts {
                let since = previous
                    .and_then(|p| p.claim_since(&host, &prefix, service))
                    .unwrap_or(snapshot.version);
                claims
                    .entry((host.clone(), prefix.clone()))
                    .or_default()
                    .push(Route {
                        host,
                        prefix: prefix.clone(),
                        service: name.clone(),
                        strip,
                        policy: policy.clone(),
                        state: state.clone(),
                        since,
                    });
            }
        }
        let (exact, wildcard, mut conflicts) = settle(claims);
        conflicts.sort();
        refused.sort();
        refused.dedup();
        RouteTable {
            refused,
            exact,
            wildcard,
            conflicts,
            problems,
            states,
        }
    }

    fn claim_since(&self, host: &str, prefix: &str, service: &str) -> Option<u64> {
        let rs = match host.strip_prefix('*') {
            Some(suffix) => &self.wildcard.iter().find(|(s, _)| s == suffix)?.1,
            None => self.exact.get(host)?,
        };
        rs.iter()
            .find(|r| r.prefix == prefix && &*r.service == service)
            .map(|r| r.since)
    }

    /// The route for a request to `host` (any case, maybe with a port) and `path` (the
    /// request target's path, maybe with a query): the exact host first, then the longest
    /// wildcard; within a host, the longest matching prefix.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Route> {
        let host = host_only(host);
        let mut buf = [0u8; 256];
        let lower = ascii_lower(host, &mut buf)?;
        let path = path.split('?').next().unwrap_or("/");
        // a name with routes of its own is answered by them alone: a wildcard never takes
        // the paths they leave
        if let Some(rs) = self.exact.get(lower) {
            return best(rs, path);
        }
        self.wildcard
            .iter()
            .filter(|(suffix, _)| lower.len() > suffix.len() && lower.ends_with(suffix.as_str()))
            .find_map(|(_, rs)| best(rs, path))
    }

    /// Whether some route answers `host` (on any path).
    pub fn knows_host(&self, host: &str) -> bool {
        let host = host_only(host);
        let mut buf = [0u8; 256];
        let Some(lower) = ascii_lower(host, &mut buf) else {
            return false;
        };
        self.exact.contains_key(lower)
            || self
                .wildcard
                .iter()
                .any(|(s, _)| lower.len() > s.len() && lower.ends_with(s.as_str()))
    }

    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }

    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    pub fn refused(&self) -> &[Refused] {
        &self.refused
    }

    /// Every route `service` serves, as `host` + `prefix`, sorted.
    pub fn routes_of(&self, service: &str) -> Vec<&Route> {
        let mut out: Vec<&Route> = self
            .exact
            .values()
            .chain(self.wildcard.iter().map(|(_, rs)| rs))
            .flatten()
            .filter(|r| &*r.service == service)
            .collect();
        out.sort_by(|a, b| (&a.host, &a.prefix).cmp(&(&b.host, &b.prefix)));
        out
    }
}

/// How the ingress speaks to `service`'s containers (for the health checks, which see
/// containers, not routes).
pub fn protocol_of(service: &str, containers: &[Arc<crate::registry::Container>]) -> Protocol {
    policy_of(service, containers, &mut Vec::new()).protocol
}

/// A service's policy from its containers' labels: for each label, the first container (by
/// name) that carries it decides; a value that does not parse is left out and named.
fn policy_of(
    service: &str,
    containers: &[Arc<crate::registry::Container>],
    problems: &mut Vec<String>,
) -> Policy {
    let mut sorted: Vec<_> = containers.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let first = |label: &str| sorted.iter().find_map(|c| c.labels.get(label));
    let mut p = Policy::default();
    if let Some(v) = first(MAX_IN_FLIGHT_LABEL) {
        match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => p.max_in_flight = Some(n),
            _ => problems.push(format!(
                "{service}: label {MAX_IN_FLIGHT_LABEL} {v:?}: expected a number of requests, at least 1"
            )),
        }
    }
    if let Some(v) = first(RATE_LABEL) {
        match parse_rate(v) {
            Some(r) => p.rate = Some(r),
            None => problems.push(format!(
                "{service}: label {RATE_LABEL} {v:?}: expected requests per second or minute, like 100/s or 600/m"
            )),
        }
    }
    if let Some(v) = first(STICKY_LABEL) {
        match v.trim() {
            "cookie" => p.sticky = true,
            "" | "off" | "false" => {}
            _ => problems.push(format!(
                "{service}: label {STICKY_LABEL} {v:?}: expected \"cookie\""
            )),
        }
    }
    if let Some(v) = first(PROTOCOL_LABEL) {
        match v.trim() {
            "http" | "http1" | "h1" => p.protocol = Protocol::Http1,
            "h2c" => p.protocol = Protocol::H2c,
            "h2" => p.protocol = Protocol::H2,
            _ => problems.push(format!(
                "{service}: label {PROTOCOL_LABEL} {v:?}: expected \"http\", \"h2c\" or \"h2\""
            )),
        }
    }
    p
}

/// `100/s`, `600/m` (also `/sec`, `/min`): at least one request per period.
pub fn parse_rate(v: &str) -> Option<Rate> {
    let (n, unit) = v.trim().split_once('/')?;
    let per = n.trim().parse::<u32>().ok().filter(|n| *n > 0)?;
    let every = match unit.trim() {
        "s" | "sec" | "second" => std::time::Duration::from_secs(1),
        "m" | "min" | "minute" => std::time::Duration::from_secs(60),
        _ => return None,
    };
    Some(Rate { per, every })
}

/// The longest prefix of `rs` (sorted longest first) that `path` is under.
fn best<'a>(rs: &'a [Route], path: &str) -> Option<&'a Route> {
    rs.iter().find(|r| under(path, &r.prefix))
}

/// Whether `path` is `prefix` or below it, by whole segments.
fn under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// What the backend gets as the request target: `path_and_query` with the route's prefix
/// removed when it strips (`/api/x?q` → `/x?q`, `/api` → `/`).
pub fn forwarded_target<'a>(route: &Route, path_and_query: &'a str) -> Cow<'a, str> {
    if !route.strip || route.prefix == "/" {
        return Cow::Borrowed(path_and_query);
    }
    match path_and_query.strip_prefix(route.prefix.as_str()) {
        Some("") => Cow::Borrowed("/"),
        Some(rest) if rest.starts_with('?') => Cow::Owned(format!("/{rest}")),
        Some(rest) => Cow::Borrowed(rest),
        None => Cow::Borrowed(path_and_query),
    }
}

/// `host` without a port (`[v6]:443`, `name:443`) and without a trailing dot.
fn host_only(host: &str) -> &str {
    let h = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    h.strip_suffix('.').unwrap_or(h)
}

/// `s` in lower case, in `buf` (None when longer than a host name can be).
fn ascii_lower<'b>(s: &str, buf: &'b mut [u8; 256]) -> Option<&'b str> {
    let out = buf.get_mut(..s.len())?;
    for (o, b) in out.iter_mut().zip(s.bytes()) {
        *o = b.to_ascii_lowercase();
    }
    std::str::from_utf8(out).ok()
}

/// A `vxgate.path` value: starts with `/`, no query, fragment or spaces; a trailing `/`
/// dropped (`/api/` is `/api`).
fn path_prefix(v: &str) -> Option<String> {
    let v = v.trim();
    if !v.starts_with('/')
        || v.contains(['?', '#', ' ', '\t', '\\', '%'])
        || v.contains("//")
        || v.split('/').any(|seg| seg == "." || seg == "..")
    {
        return None;
    }
    let p = v.trim_end_matches('/');
    Some(if p.is_empty() {
        "/".into()
    } else {
        p.to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Container, Health, Origin, Registry};
    use std::collections::BTreeMap;

    fn c(name: &str, ip: &str, labels: &[(&str, &str)]) -> Container {
        Container {
            name: name.into(),
            ip: ip.parse().expect("ip"),
            mac: None,
            port: 80,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            network: "default".into(),
            node: "h1".into(),
            health: Health::Unknown,
            ready: true,
            origin: Origin::Api,
        }
    }

    fn table(r: &Registry, previous: Option<&RouteTable>) -> RouteTable {
        RouteTable::build(
            &r.snapshot(),
            "example.com",
            &HostAllowList::new(["*.shop.example.org", "shop.example.org", "*.org"]),
            previous,
        )
    }

    #[test]
    fn a_service_always_owns_its_own_name_whatever_the_age_of_a_claim() {
        let r = Registry::new("app");
        // evil comes first and claims web's name, a path on it, and the whole zone
        let evil = [
            ("app", "evil"),
            ("vxgate.host", "web.example.com,*.example.com"),
            ("vxgate.path", "/login"),
        ];
        r.add(c("evil-1", "10.0.0.9", &evil)).expect("add");
        let allow_zone = HostAllowList::new(["*.example.com"]);
        let build =
            |r: &Registry, prev| RouteTable::build(&r.snapshot(), "example.com", &allow_zone, prev);
        let t1 = build(&r, None);
        // web does not exist yet, and the operator allowed *.example.com: evil may answer
        assert_eq!(
            served(&t1, "web.example.com", "/login"),
            Some("evil".into())
        );
        // web arrives later: its own name is its own, on every path, at once
        r.add(c("web-1", "10.0.0.1", &[("app", "web")]))
            .expect("add");
        let t2 = build(&r, Some(&t1));
        assert_eq!(served(&t2, "web.example.com", "/login"), Some("web".into()));
        assert_eq!(served(&t2, "web.example.com", "/"), Some("web".into()));
        assert!(
            t2.refused()
                .iter()
                .any(|x| x.service == "evil" && x.host == "web.example.com")
        );
        // web redeployed (gone, then back): still web's
        r.remove("web-1").expect("remove");
        r.add(c("web-2", "10.0.0.2", &[("app", "web")]))
            .expect("add");
        let t3 = build(&r, Some(&t2));
        assert_eq!(served(&t3, "web.example.com", "/login"), Some("web".into()));
        assert_eq!(served(&t3, "web.example.com", "/"), Some("web".into()));
        // the wildcard still answers names nobody owns
        assert_eq!(
            served(&t3, "other.example.com", "/login"),
            Some("evil".into())
        );
    }

    #[test]
    fn claims_outside_route_hosts_are_refused_and_reported() {
        let r = Registry::new("app");
        let evil = [
            ("app", "evil"),
            (
                "vxgate.host",
                "web.example.com,*.example.com,shop.example.org",
            ),
        ];
        r.add(c("evil-1", "10.0.0.9", &evil)).expect("add");
        // the default: route_hosts empty, so a label claims nothing beyond the own name
        let t = RouteTable::build(
            &r.snapshot(),
            "example.com",
            &HostAllowList::default(),
            None,
        );
        assert_eq!(
            served(&t, "web.example.com", "/"),
            None,
            "squatting a name before its owner exists"
        );
        assert_eq!(served(&t, "x.example.com", "/"), None);
        assert_eq!(served(&t, "shop.example.org", "/"), None);
        assert_eq!(
            served(&t, "evil.example.com", "/"),
            Some("evil".into()),
            "the own name"
        );
        let refused: Vec<(&str, &str)> = t
            .refused()
            .iter()
            .map(|x| (x.host.as_str(), x.why))
            .collect();
        assert_eq!(
            refused,
            [
                ("*.example.com", "not in ingress.route_hosts"),
                ("shop.example.org", "not in ingress.route_hosts"),
                ("web.example.com", "not in ingress.route_hosts"),
            ]
        );
        // an allow list admits exactly what it names
        let allow = HostAllowList::new(["shop.example.org", "*.apps.example.org"]);
        assert!(allow.allows("shop.example.org") && allow.allows("a.apps.example.org"));
        assert!(allow.allows("*.x.apps.example.org") && allow.allows("*.apps.example.org"));
        assert!(!allow.allows("apps.example.org") && !allow.allows("x.shop.example.org"));
        assert!(!allow.allows("*.example.org") && !allow.allows("evilapps.example.org"));
    }

    #[test]
    fn a_wildcard_never_takes_a_path_a_named_host_leaves() {
        let r = Registry::new("app");
        r.add(c(
            "api-1",
            "10.0.0.2",
            &[
                ("app", "api"),
                ("vxgate.host", "shop.example.org"),
                ("vxgate.path", "/api"),
            ],
        ))
        .expect("add");
        r.add(c(
            "any-1",
            "10.0.0.3",
            &[("app", "any"), ("vxgate.host", "*.example.org")],
        ))
        .expect("add");
        let t = table(&r, None);
        assert_eq!(served(&t, "shop.example.org", "/api/x"), Some("api".into()));
        assert_eq!(served(&t, "shop.example.org", "/other"), None);
        assert_eq!(served(&t, "api.example.com", "/other"), None);
        assert_eq!(served(&t, "x.example.org", "/other"), Some("any".into()));
    }

    fn served(t: &RouteTable, host: &str, path: &str) -> Option<String> {
        t.lookup(host, path).map(|r| r.service.to_string())
    }

    #[test]
    fn every_service_answers_its_own_name_on_every_path() {
        let r = Registry::new("app");
        r.add(c("web-1", "10.0.0.1", &[("app", "web")]))
            .expect("add");
        let t = table(&r, None);
        assert_eq!(served(&t, "web.example.com", "/"), Some("web".into()));
        assert_eq!(
            served(&t, "WEB.Example.COM:443", "/a/b?c=d"),
            Some("web".into())
        );
        assert_eq!(served(&t, "web.example.com.", "/"), Some("web".into()));
        assert_eq!(served(&t, "api.example.com", "/"), None);
        assert_eq!(served(&t, "example.com", "/"), None);
        assert!(t.knows_host("web.example.com") && !t.knows_host("nope.example.com"));
    }

    #[test]
    fn paths_split_a_host_by_segment_and_the_longest_prefix_wins() {
        let r = Registry::new("app");
        let shop = ("vxgate.host", "shop.example.org");
        r.add(c("web-1", "10.0.0.1", &[("app", "web"), shop]))
            .expect("add");
        r.add(c(
            "api-1",
            "10.0.0.2",
            &[("app", "api"), shop, ("vxgate.path", "/api/")],
        ))
        .expect("add");
        r.add(c(
            "v2-1",
            "10.0.0.3",
            &[("app", "v2"), shop, ("vxgate.path", "/api/v2")],
        ))
        .expect("add");
        let t = table(&r, None);
        let on_shop = |p| served(&t, "shop.example.org", p);
        assert_eq!(on_shop("/"), Some("web".into()));
        assert_eq!(on_shop("/index.html"), Some("web".into()));
        assert_eq!(on_shop("/api"), Some("api".into()));
        assert_eq!(on_shop("/api/"), Some("api".into()));
        assert_eq!(on_shop("/api/users?id=1"), Some("api".into()));
        assert_eq!(on_shop("/apix"), Some("web".into()), "segment-aware");
        assert_eq!(on_shop("/api/v2"), Some("v2".into()));
        assert_eq!(on_shop("/api/v2/x"), Some("v2".into()));
        assert_eq!(on_shop("/api/v20"), Some("api".into()));
        // a path-only service on its own name: only under its prefix
        assert_eq!(served(&t, "api.example.com", "/api/x"), Some("api".into()));
        assert_eq!(served(&t, "api.example.com", "/other"), None);
        assert!(t.knows_host("api.example.com"));
        assert!(t.conflicts().is_empty());
    }

    #[test]
    fn wildcards_match_subdomains_and_exact_names_win() {
        let r = Registry::new("app");
        r.add(c(
            "web-1",
            "10.0.0.1",
            &[("app", "web"), ("vxgate.host", "*.shop.example.org")],
        ))
        .expect("add");
        r.add(c(
            "www-1",
            "10.0.0.2",
            &[("app", "www"), ("vxgate.host", "www.shop.example.org")],
        ))
        .expect("add");
        r.add(c(
            "deep-1",
            "10.0.0.3",
            &[("app", "deep"), ("vxgate.host", "*.eu.shop.example.org")],
        ))
        .expect("add");
        let t = table(&r, None);
        assert_eq!(served(&t, "a.shop.example.org", "/"), Some("web".into()));
        assert_eq!(served(&t, "a.b.shop.example.org", "/"), Some("web".into()));
        assert_eq!(
            served(&t, "shop.example.org", "/"),
            None,
            "not the name itself"
        );
        assert_eq!(served(&t, "www.shop.example.org", "/"), Some("www".into()));
        assert_eq!(
            served(&t, "x.eu.shop.example.org", "/"),
            Some("deep".into()),
            "longest suffix"
        );
        assert_eq!(served(&t, "xshop.example.org", "/"), None);
    }

    #[test]
    fn strip_prefix_forwards_what_is_below_the_prefix() {
        let route = |strip| Route {
            host: "h".into(),
            prefix: "/api".into(),
            service: Arc::from("api"),
            strip,
            policy: Arc::default(),
            state: Arc::default(),
            since: 0,
        };
        assert_eq!(forwarded_target(&route(true), "/api/x?q=1"), "/x?q=1");
        assert_eq!(forwarded_target(&route(true), "/api"), "/");
        assert_eq!(forwarded_target(&route(true), "/api?q"), "/?q");
        assert_eq!(forwarded_target(&route(true), "/api/"), "/");
        assert_eq!(forwarded_target(&route(false), "/api/x"), "/api/x");
        let r = Registry::new("app");
        r.add(c(
            "api-1",
            "10.0.0.2",
            &[
                ("app", "api"),
                ("vxgate.path", "/api"),
                ("vxgate.strip_prefix", "true"),
            ],
        ))
        .expect("add");
        let t = table(&r, None);
        assert!(
            t.lookup("api.example.com", "/api/x")
                .is_some_and(|r| r.strip)
        );
    }

    #[test]
    fn the_older_claim_wins_a_conflict_and_it_is_reported() {
        let r = Registry::new("app");
        let shop = ("vxgate.host", "shop.example.org");
        // "zed" claims first
        r.add(c("zed-1", "10.0.0.1", &[("app", "zed"), shop]))
            .expect("add");
        let t1 = table(&r, None);
        r.add(c("abc-1", "10.0.0.2", &[("app", "abc"), shop]))
            .expect("add");
        let t2 = table(&r, Some(&t1));
        assert_eq!(served(&t2, "shop.example.org", "/"), Some("zed".into()));
        assert_eq!(
            t2.conflicts(),
            &[Conflict {
                host: "shop.example.org".into(),
                prefix: "/".into(),
                winner: "zed".into(),
                loser: "abc".into(),
            }]
        );
        // without history (one snapshot), the name decides: deterministic
        let t = table(&r, None);
        assert_eq!(served(&t, "shop.example.org", "/"), Some("abc".into()));
        // the winner leaves: the other takes over, no conflict
        r.remove("zed-1").expect("remove");
        let t3 = table(&r, Some(&t2));
        assert_eq!(served(&t3, "shop.example.org", "/"), Some("abc".into()));
        assert!(t3.conflicts().is_empty());
    }

    #[test]
    fn bad_label_values_are_left_out_and_named() {
        let r = Registry::new("app");
        r.add(c(
            "web-1",
            "10.0.0.1",
            &[
                ("app", "web"),
                ("vxgate.host", "ok.example.org, bad_host!, *."),
                ("vxgate.path", "api"),
            ],
        ))
        .expect("add");
        let t = table(&r, None);
        assert_eq!(served(&t, "ok.example.org", "/x"), Some("web".into()));
        assert_eq!(
            served(&t, "web.example.com", "/x"),
            Some("web".into()),
            "no path: /"
        );
        assert_eq!(t.problems().len(), 3, "{:?}", t.problems());
        assert!(t.problems().iter().any(|p| p.contains("bad_host!")));
        assert!(
            t.problems()
                .iter()
                .any(|p| p.contains("vxgate.path \"api\""))
        );
    }

    #[test]
    fn limits_and_protocol_come_from_the_first_container_that_names_them() {
        let r = Registry::new("app");
        r.add(c(
            "grpc-2",
            "10.0.0.2",
            &[
                ("app", "grpc"),
                ("vxgate.max_in_flight", "99"),
                ("vxgate.rate", "5/s"),
            ],
        ))
        .expect("add");
        r.add(c(
            "grpc-1",
            "10.0.0.1",
            &[
                ("app", "grpc"),
                ("vxgate.max_in_flight", "10"),
                ("vxgate.protocol", "h2c"),
                ("vxgate.sticky", "cookie"),
            ],
        ))
        .expect("add");
        r.add(c(
            "bad-1",
            "10.0.0.3",
            &[
                ("app", "bad"),
                ("vxgate.max_in_flight", "0"),
                ("vxgate.rate", "fast"),
                ("vxgate.protocol", "h3"),
            ],
        ))
        .expect("add");
        r.add(c(
            "tls-1",
            "10.0.0.4",
            &[("app", "tls"), ("vxgate.protocol", "h2")],
        ))
        .expect("add");
        let t = table(&r, None);
        let tls = &t.lookup("tls.example.com", "/").expect("route").policy;
        assert_eq!(tls.protocol, Protocol::H2);
        let p = &t.lookup("grpc.example.com", "/").expect("route").policy;
        assert_eq!(p.max_in_flight, Some(10), "grpc-1 sorts first");
        assert_eq!(
            p.rate,
            Some(Rate {
                per: 5,
                every: std::time::Duration::from_secs(1)
            })
        );
        assert_eq!(p.protocol, Protocol::H2c);
        assert!(p.sticky);
        assert_eq!(
            protocol_of(
                "grpc",
                r.snapshot()
                    .services()
                    .find(|s| s.0 == "grpc")
                    .expect("grpc")
                    .1
            ),
            Protocol::H2c,
            "the health checks see the same protocol"
        );
        let bad = &t.lookup("bad.example.com", "/").expect("route").policy;
        assert_eq!(**bad, Policy::default());
        assert_eq!(t.problems().len(), 3, "{:?}", t.problems());
        assert_eq!(parse_rate("600/m").map(|r| r.per), Some(600));
        assert_eq!(parse_rate("0/s"), None);
        assert_eq!(parse_rate("10/h"), None);
    }

    #[test]
    fn a_service_whose_containers_are_all_unhealthy_keeps_its_routes() {
        let r = Registry::new("app");
        let mut sick = c("web-1", "10.0.0.1", &[("app", "web")]);
        sick.ready = false;
        r.add(sick).expect("add");
        let t = table(&r, None);
        assert_eq!(served(&t, "web.example.com", "/"), Some("web".into()));
    }

    #[test]
    fn routes_of_lists_a_services_hosts_and_prefixes() {
        let r = Registry::new("app");
        r.add(c(
            "api-1",
            "10.0.0.2",
            &[
                ("app", "api"),
                ("vxgate.host", "b.org,a.org"),
                ("vxgate.path", "/api"),
            ],
        ))
        .expect("add");
        let t = table(&r, None);
        let got: Vec<(String, String)> = t
            .routes_of("api")
            .iter()
            .map(|r| (r.host.clone(), r.prefix.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("a.org".into(), "/api".into()),
                ("api.example.com".into(), "/api".into()),
                ("b.org".into(), "/api".into())
            ]
        );
    }
}
