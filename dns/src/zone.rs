//! The zone: names and records built once from a registry snapshot, kept in wire form so an
//! answer is mostly copying bytes.
//!
//! - `<service>.<zone>`: A/AAAA of the service's serving containers;
//! - `<container>.<zone>`: A/AAAA of that container, whatever its health;
//! - `_http._tcp.<service>.<zone>`: SRV to each serving container's name and port;
//! - the apex: SOA and NS (`ns.<zone>`, whose A/AAAA are the DNS listen addresses);
//! - PTR for container IPs under in-addr.arpa / ip6.arpa;
//! - every ancestor of a name down to the apex exists (an empty non-terminal answers NODATA).

use crate::message::name_from_text;
use std::collections::HashMap;
use std::net::IpAddr;

/// A service's name and its SRV name (None: too long for a DNS name), in wire form.
type ServiceNames = (Vec<u8>, Option<Vec<u8>>);

/// A container as the zone needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneContainer {
    pub name: String,
    pub ip: IpAddr,
    pub port: u16,
    /// Its service (the service label's value), if any.
    pub service: Option<String>,
    /// Whether the service name and SRV answer with it (not unhealthy).
    pub serving: bool,
}

/// The zone's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSettings {
    /// e.g. "example.com"
    pub zone: String,
    pub ttl: u32,
    /// Addresses of `ns.<zone>` (the DNS listeners).
    pub ns_addrs: Vec<IpAddr>,
    /// Records of one type in a UDP answer, at most (a random subset of a larger set, like
    /// Consul's `udp_answer_limit`): bounds the reflection a small query can cause. TCP
    /// answers carry every record.
    pub max_udp_records: usize,
}

/// The default of [`ZoneSettings::max_udp_records`].
pub const MAX_UDP_RECORDS: usize = 32;

#[derive(Debug, Default)]
pub struct Node {
    pub a: Vec<[u8; 4]>,
    pub aaaa: Vec<[u8; 16]>,
    /// SRV rdata, each complete.
    pub srv: Vec<Vec<u8>>,
    pub apex: bool,
}

#[derive(Debug)]
pub struct Zone {
    /// Lower-cased wire form of the apex.
    pub apex: Vec<u8>,
    pub ttl: u32,
    pub serial: u32,
    /// See [`ZoneSettings::max_udp_records`] (at least 1).
    pub max_udp_records: usize,
    nodes: HashMap<Vec<u8>, Node>,
    /// Reverse names (lower wire) → PTR rdata (container FQDNs).
    reverse: HashMap<Vec<u8>, Vec<Vec<u8>>>,
    pub soa_rdata: Vec<u8>,
    pub ns_rdata: Vec<u8>,
}

/// Where a question name falls.
pub enum Lookup<'a> {
    /// Not in the zone, and not a container's reverse name.
    Outside,
    /// In the zone; no such name.
    NxDomain,
    /// In the zone; `suffix_at` is where the apex starts inside the question name.
    Found { node: &'a Node, suffix_at: usize },
    /// A container's reverse name.
    Reverse(&'a [Vec<u8>]),
}

impl Zone {
    /// Builds the zone. `serial` is the registry version (SOA serial).
    pub fn build(
        settings: &ZoneSettings,
        serial: u64,
        containers: &[ZoneContainer],
    ) -> Option<Zone> {
        let zone = settings.zone.to_ascii_lowercase();
        let apex = name_from_text(&zone)?;
        let child = |label: &str| child_name(label, &apex);
        let mut nodes: HashMap<Vec<u8>, Node> = HashMap::with_capacity(2 * containers.len() + 8);
        let mut reverse: HashMap<Vec<u8>, Vec<Vec<u8>>> = HashMap::with_capacity(containers.len());
        // each service's name and SRV name, made once however many containers serve it
        let mut services: HashMap<&str, Option<ServiceNames>> = HashMap::new();
        let add_ip = |node: &mut Node, ip: IpAddr| match ip {
            IpAddr::V4(v4) => node.a.push(v4.octets()),
            IpAddr::V6(v6) => node.aaaa.push(v6.octets()),
        };
        for c in containers {
            // A name that is no DNS name (a Docker name of over 63 characters) gets no
            // records of its own, but the container still serves its service.
            let fqdn = child(&c.name);
            if let Some(fqdn) = &fqdn {
                add_ip(nodes.entry(fqdn.clone()).or_default(), c.ip);
                if let Some(rev) = reverse_name(c.ip) {
                    reverse.entry(rev).or_default().push(fqdn.clone());
                }
            }
            let Some(service) = c.service.as_deref() else {
                continue;
            };
            let names = services.entry(service).or_insert_with(|| {
                let sname = child(service)?;
                let mut srv = child_name("_http._tcp", &[]).map(|mut n| {
                    n.pop(); // the root label: the service's name follows
                    n
                });
                if let Some(n) = &mut srv {
                    n.extend_from_slice(&sname);
                    if n.len() > crate::message::MAX_NAME {
                        srv = None;
                    }
                }
                Some((sname, srv))
            });
            let Some((sname, srv_name)) = names.as_ref() else {
                continue;
            };
            let snode = match nodes.get_mut(sname) {
                Some(n) => n,
                None => nodes.entry(sname.clone()).or_default(),
            };
            if c.serving {
                add_ip(snode, c.ip);
                if let Some(fqdn) = &fqdn
                    && let Some(srv_name) = srv_name
                {
                    let mut rdata = Vec::with_capacity(6 + fqdn.len());
                    rdata.extend_from_slice(&0u16.to_be_bytes()); // priority
                    rdata.extend_from_slice(&10u16.to_be_bytes()); // weight: equal
                    rdata.extend_from_slice(&c.port.to_be_bytes());
                    rdata.extend_from_slice(fqdn);
                    match nodes.get_mut(srv_name) {
                        Some(n) => n.srv.push(rdata),
                        None => nodes.entry(srv_name.clone()).or_default().srv.push(rdata),
                    }
                }
            }
        }
        let ns = child("ns")?;
        if !nodes.contains_key(&ns) {
            let node = nodes.entry(ns.clone()).or_default();
            for ip in settings.ns_addrs.iter().filter(|ip| !ip.is_unspecified()) {
                add_ip(node, *ip);
            }
        }
        nodes.entry(apex.clone()).or_default().apex = true;
        // empty non-terminals: every ancestor between a name and the apex exists (only
        // names of two or more labels under the apex have one)
        let deep: Vec<Vec<u8>> = nodes
            .keys()
            .filter(|n| n.len() > apex.len() && n.len() - apex.len() > 1 + usize::from(n[0]))
            .cloned()
            .collect();
        for name in deep {
            let mut at = 0;
            while name.len() - at > apex.len() {
                at += 1 + usize::from(name[at]);
                if !nodes.contains_key(&name[at..]) {
                    nodes.insert(name[at..].to_vec(), Node::default());
                }
            }
        }
        let mut soa = ns.clone();
        soa.extend(child("hostmaster")?);
        for v in [serial as u32, 3600, 600, 86400, settings.ttl] {
            soa.extend_from_slice(&v.to_be_bytes());
        }
        Some(Zone {
            apex,
            ttl: settings.ttl,
            serial: serial as u32,
            max_udp_records: settings.max_udp_records.max(1),
            nodes,
            reverse,
            soa_rdata: soa,
            ns_rdata: ns,
        })
    }

    /// Finds a lower-cased question name.
    pub fn lookup(&self, lower: &[u8]) -> Lookup<'_> {
        if let Some(ptrs) = self.reverse.get(lower) {
            return Lookup::Reverse(ptrs);
        }
        let Some(suffix_at) = suffix_offset(lower, &self.apex) else {
            return Lookup::Outside;
        };
        match self.nodes.get(lower) {
            Some(node) => Lookup::Found { node, suffix_at },
            None => Lookup::NxDomain,
        }
    }

    /// Where the apex starts inside an in-zone name (for NXDOMAIN's SOA owner).
    pub fn suffix_offset(&self, lower: &[u8]) -> Option<usize> {
        suffix_offset(lower, &self.apex)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// The offset at which `name` ends with the labels of `apex`, on a label boundary.
fn suffix_offset(name: &[u8], apex: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let rest = name.get(at..)?;
        if rest.len() == apex.len() {
            return (rest == apex).then_some(at);
        }
        if rest.len() < apex.len() || rest[0] == 0 {
            return None;
        }
        at += 1 + usize::from(rest[0]);
    }
}

/// The lower-cased wire form of `label` (one or more dot-separated labels) under `apex` (a
/// wire name; empty: `label` alone, as a full name); None when it is no DNS name.
fn child_name(label: &str, apex: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(label.len() + 1 + apex.len().max(1));
    for part in label.split('.') {
        if part.is_empty() || part.len() > 63 {
            return None;
        }
        out.push(part.len() as u8);
        out.extend(part.bytes().map(|b| b.to_ascii_lowercase()));
    }
    if apex.is_empty() {
        out.push(0);
    } else {
        out.extend_from_slice(apex);
    }
    (out.len() <= crate::message::MAX_NAME).then_some(out)
}

/// in-addr.arpa / ip6.arpa name of an address, in lower wire form (RFC 1035 §3.5, RFC 3596).
pub fn reverse_name(ip: IpAddr) -> Option<Vec<u8>> {
    let text = match ip {
        IpAddr::V4(v4) => {
            // wire form straight away: four decimal labels, then in-addr.arpa
            let mut out = Vec::with_capacity(30);
            for o in v4.octets().into_iter().rev() {
                let digits = [b'0' + o / 100, b'0' + o / 10 % 10, b'0' + o % 10];
                let skip = if o >= 100 {
                    0
                } else if o >= 10 {
                    1
                } else {
                    2
                };
                out.push((3 - skip) as u8);
                out.extend_from_slice(&digits[skip..]);
            }
            out.extend_from_slice(b"\x07in-addr\x04arpa\x00");
            return Some(out);
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0x0f, b >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
    };
    name_from_text(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn settings() -> ZoneSettings {
        ZoneSettings {
            zone: "example.com".into(),
            ttl: 5,
            ns_addrs: vec!["10.200.1.1".parse().expect("ip")],
            max_udp_records: MAX_UDP_RECORDS,
        }
    }

    fn c(name: &str, ip: &str, service: &str, serving: bool) -> ZoneContainer {
        ZoneContainer {
            name: name.into(),
            ip: ip.parse().expect("ip"),
            port: 80,
            service: Some(service.into()),
            serving,
        }
    }

    fn n(text: &str) -> Vec<u8> {
        name_from_text(text).expect("name")
    }

    #[test]
    fn names_resolve_to_what_they_should() {
        let z = Zone::build(
            &settings(),
            7,
            &[
                c("web-1", "10.0.0.1", "web", true),
                c("web-2", "fd00::2", "web", true),
                c("web-3", "10.0.0.3", "web", false),
            ],
        )
        .expect("zone");
        let Lookup::Found { node, suffix_at } = z.lookup(&n("web.example.com")) else {
            panic!("web")
        };
        assert_eq!(node.a, vec![[10, 0, 0, 1]], "unhealthy web-3 left out");
        assert_eq!(node.aaaa.len(), 1);
        assert_eq!(suffix_at, 4);
        let Lookup::Found { node, .. } = z.lookup(&n("web-3.example.com")) else {
            panic!("web-3")
        };
        assert_eq!(
            node.a,
            vec![[10, 0, 0, 3]],
            "a container's own name answers whatever its health"
        );
        let Lookup::Found { node, .. } = z.lookup(&n("_http._tcp.web.example.com")) else {
            panic!("srv")
        };
        assert_eq!(node.srv.len(), 2);
        assert!(
            matches!(z.lookup(&n("_tcp.web.example.com")), Lookup::Found { .. }),
            "empty non-terminal"
        );
        assert!(matches!(z.lookup(&n("nope.example.com")), Lookup::NxDomain));
        assert!(matches!(z.lookup(&n("example.org")), Lookup::Outside));
        assert!(
            matches!(z.lookup(&n("badexample.com")), Lookup::Outside),
            "label boundary"
        );
        let Lookup::Found { node, .. } = z.lookup(&n("example.com")) else {
            panic!("apex")
        };
        assert!(node.apex);
        let Lookup::Found { node, .. } = z.lookup(&n("ns.example.com")) else {
            panic!("ns")
        };
        assert_eq!(node.a, vec![[10, 200, 1, 1]]);
        let Lookup::Reverse(ptrs) = z.lookup(&n("1.0.0.10.in-addr.arpa")) else {
            panic!("ptr")
        };
        assert_eq!(ptrs, &[n("web-1.example.com")]);
        assert!(matches!(
            z.lookup(&reverse_name("fd00::2".parse().expect("ip")).expect("rev")),
            Lookup::Reverse(_)
        ));
    }

    #[test]
    fn a_container_whose_name_is_no_dns_label_still_serves_its_service() {
        let long = "a".repeat(64); // Docker allows it; a DNS label does not
        let z = Zone::build(
            &settings(),
            1,
            &[
                c(&long, "10.0.0.9", "web", true),
                c("web-1", "10.0.0.1", "web", true),
            ],
        )
        .expect("zone");
        let Lookup::Found { node, .. } = z.lookup(&n("web.example.com")) else {
            panic!("web")
        };
        assert_eq!(node.a, vec![[10, 0, 0, 9], [10, 0, 0, 1]]);
        let Lookup::Found { node, .. } = z.lookup(&n("_http._tcp.web.example.com")) else {
            panic!("srv")
        };
        assert_eq!(node.srv.len(), 1, "no SRV target without a name");
    }

    #[test]
    fn reverse_names_of_every_octet_width_match_their_text() {
        for o in [0u8, 7, 9, 10, 42, 99, 100, 199, 255] {
            let ip = std::net::Ipv4Addr::new(o, 255 - o, 1, o / 2);
            let text = format!("{}.1.{}.{o}.in-addr.arpa", o / 2, 255 - o);
            assert_eq!(reverse_name(ip.into()), Some(n(&text)), "{ip}");
        }
    }

    #[test]
    fn reverse_names_follow_the_rfcs() {
        assert_eq!(
            reverse_name("10.200.1.11".parse().expect("ip")),
            Some(n("11.1.200.10.in-addr.arpa"))
        );
        let v6 = reverse_name("2001:db8::567:89ab".parse().expect("ip")).expect("v6");
        assert_eq!(
            crate::message::name_to_text(&v6),
            "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
        );
    }
}
