//! Policy between services, from labels: `vxgate.allow_from = "web,api:8080,ingress"` on a
//! container says who may open connections to it; a container without the label is open,
//! unless its network is `isolated` (Docker's `icc=false`), which closes it.
//!
//! This module is pure: [`Matrix::build`] turns a registry snapshot into the effective
//! matrix (every protected container and what reaches it); `nft` renders this host's part as
//! one nftables transaction and applies it; `run` follows the registry.

pub mod nflog;
pub mod nft;
mod run;

pub use run::{
    Error, Policy, PolicySpec, apply, follow_gateways, gateway_addrs, interface_addrs, start,
};

use crate::registry::{Container, Snapshot};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// The label that closes a container to all but the sources it names.
pub const ALLOW_LABEL: &str = "vxgate.allow_from";

/// Who a rule lets in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The containers of a service (a value of `dns.service_label`).
    Service(String),
    /// This fleet's HTTPS ingress (and its health checks): the nodes' gateway addresses.
    Ingress,
    /// Anyone.
    Any,
}

/// One entry of `vxgate.allow_from`: a source, and the port it may reach (any without).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Allow {
    pub from: Source,
    pub port: Option<u16>,
}

/// An entry of `vxgate.allow_from` that is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadAllow {
    pub entry: String,
    pub why: &'static str,
}

impl std::fmt::Display for BadAllow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.entry, self.why)
    }
}

/// Parses a `vxgate.allow_from` value: `web,api:8080,ingress,*`. Every entry must parse, or
/// the whole value is refused (the container is then closed: a typo must not open it).
pub fn parse_allow(value: &str) -> Result<Vec<Allow>, BadAllow> {
    let bad = |entry: &str, why| BadAllow {
        entry: entry.to_owned(),
        why,
    };
    let mut out = Vec::new();
    for entry in value.split(',').map(str::trim) {
        if entry.is_empty() {
            continue;
        }
        let (name, port) = match entry.rsplit_once(':') {
            Some((n, p)) => match p.parse::<u16>() {
                Ok(p) if p > 0 => (n.trim(), Some(p)),
                _ => return Err(bad(entry, "the port must be 1-65535")),
            },
            None => (entry, None),
        };
        let from = match name {
            "*" => Source::Any,
            "ingress" => Source::Ingress,
            n if valid_service(n) => Source::Service(n.to_owned()),
            _ => return Err(bad(entry, "expected a service name, \"ingress\" or \"*\"")),
        };
        out.push(Allow { from, port });
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn valid_service(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Why a container is closed, or what opens it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "allow")]
pub enum Rule {
    /// `vxgate.allow_from` names these (possibly none: a value that did not parse).
    Allow(Vec<Allow>),
    /// No label, on an `isolated` network: nobody opens connections to it.
    Isolated,
}

/// A container that not everyone may reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Protected {
    pub container: String,
    pub service: Option<String>,
    pub node: String,
    pub network: String,
    pub ip: IpAddr,
    pub rule: Rule,
}

/// The effective policy of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Matrix {
    /// Protected containers, by name.
    pub protected: Vec<Protected>,
    /// Each service's addresses (every node's containers): what `Source::Service` matches.
    pub services: BTreeMap<String, BTreeSet<IpAddr>>,
    /// The gateway addresses of every node (this one's and those published through the
    /// shared registry): what `Source::Ingress` matches.
    pub ingress: BTreeSet<IpAddr>,
    /// Labels that did not parse (their containers are closed), as `container: why`.
    pub problems: Vec<String>,
}

impl Matrix {
    /// The policy of `snap`: `isolated` names the networks whose containers are closed
    /// without a label; `gateways` are this node's own gateway addresses.
    pub fn build(snap: &Snapshot, isolated: &BTreeSet<String>, gateways: &[IpAddr]) -> Matrix {
        let mut m = Matrix::default();
        for c in snap.containers() {
            if let Some(service) = c.labels.get(&snap.service_label) {
                m.services.entry(service.clone()).or_default().insert(c.ip);
            }
            if let Some(rule) = rule_of(c, isolated, &mut m.problems) {
                m.protected.push(Protected {
                    container: c.name.clone(),
                    service: c.labels.get(&snap.service_label).cloned(),
                    node: c.node.clone(),
                    network: c.network.clone(),
                    ip: c.ip,
                    rule,
                });
            }
        }
        m.ingress.extend(gateways.iter().copied());
        for node in snap.nodes().values() {
            m.ingress.extend(node.gateways.iter().copied());
        }
        m
    }

    /// Whether policy is in use at all (no label, no isolated network: no table, no cost).
    pub fn in_use(&self) -> bool {
        !self.protected.is_empty()
    }

    /// The protected containers of `node`: what this host enforces.
    pub fn on_node<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Protected> + 'a {
        self.protected.iter().filter(move |p| p.node == node)
    }
}

fn rule_of(c: &Container, isolated: &BTreeSet<String>, problems: &mut Vec<String>) -> Option<Rule> {
    match c.labels.get(ALLOW_LABEL) {
        Some(v) => Some(Rule::Allow(parse_allow(v).unwrap_or_else(|why| {
            problems.push(format!("{}: label {ALLOW_LABEL}: {why}", c.name));
            Vec::new()
        }))),
        None if isolated.contains(&c.network) => Some(Rule::Isolated),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Health, Origin, Registry};

    fn c(name: &str, ip: &str, node: &str, network: &str, labels: &[(&str, &str)]) -> Container {
        let mut l: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        l.insert(
            "app".into(),
            name.split('-').next().unwrap_or(name).to_owned(),
        );
        Container {
            name: name.into(),
            ip: ip.parse().expect("ip"),
            mac: None,
            port: 80,
            labels: l,
            network: network.into(),
            node: node.into(),
            health: Health::Unknown,
            ready: true,
            origin: Origin::Config,
        }
    }

    #[test]
    fn allow_from_parses_services_ports_ingress_and_any() {
        let a = parse_allow(" web:8080, api ,ingress,*,web:8080").expect("valid");
        assert_eq!(
            a,
            [
                Allow {
                    from: Source::Service("api".into()),
                    port: None
                },
                Allow {
                    from: Source::Service("web".into()),
                    port: Some(8080)
                },
                Allow {
                    from: Source::Ingress,
                    port: None
                },
                Allow {
                    from: Source::Any,
                    port: None
                },
            ]
        );
        assert_eq!(parse_allow("").expect("empty"), []);
        for bad in ["web:0", "web:70000", "web:x", "we b", "a/b", "web:"] {
            assert!(parse_allow(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_matrix_protects_labelled_and_isolated_containers_only() {
        let r = Registry::new("app");
        r.add(c("web-1", "10.200.1.11", "h1", "default", &[]))
            .expect("add");
        r.add(c("web-2", "10.200.2.11", "h2", "default", &[]))
            .expect("add");
        r.add(c(
            "api-1",
            "10.200.1.12",
            "h1",
            "default",
            &[(ALLOW_LABEL, "web:8080")],
        ))
        .expect("add");
        r.add(c(
            "db-1",
            "10.200.2.13",
            "h2",
            "default",
            &[(ALLOW_LABEL, "api,bogus entry")],
        ))
        .expect("add");
        r.add(c("lab-1", "10.201.1.14", "h1", "lab", &[]))
            .expect("add");
        let gw: IpAddr = "10.200.1.1".parse().expect("ip");
        let open = Matrix::build(&r.snapshot(), &BTreeSet::new(), &[gw]);
        let names: Vec<&str> = open
            .protected
            .iter()
            .map(|p| p.container.as_str())
            .collect();
        assert_eq!(names, ["api-1", "db-1"], "unlabelled containers stay open");
        assert_eq!(
            open.protected[0].rule,
            Rule::Allow(vec![Allow {
                from: Source::Service("web".into()),
                port: Some(8080)
            }])
        );
        assert_eq!(
            open.protected[1].rule,
            Rule::Allow(vec![]),
            "a bad label closes"
        );
        assert_eq!(open.problems.len(), 1, "{:?}", open.problems);
        assert_eq!(open.services["web"].len(), 2, "sources span the nodes");
        assert!(open.ingress.contains(&gw));
        let on_h1: Vec<&str> = open.on_node("h1").map(|p| p.container.as_str()).collect();
        assert_eq!(on_h1, ["api-1"]);
        let isolated = Matrix::build(&r.snapshot(), &BTreeSet::from(["lab".to_owned()]), &[]);
        assert!(
            isolated
                .protected
                .iter()
                .any(|p| p.container == "lab-1" && p.rule == Rule::Isolated)
        );
        let none = Registry::new("app");
        none.add(c("web-1", "10.200.1.11", "h1", "default", &[]))
            .expect("add");
        assert!(!Matrix::build(&none.snapshot(), &BTreeSet::new(), &[]).in_use());
    }
}
