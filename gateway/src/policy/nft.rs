//! This host's part of the policy as nftables rules: one table, `inet vxgate` (vxgate never
//! touches another), replaced whole in one transaction (`nft -f -` reads the script as one
//! batch: the old table and the new one never coexist, and no packet sees neither).
//!
//! ```text
//! table inet vxgate {
//!   set svc0_v4 { type ipv4_addr; elements = { ... } }     # a service's addresses
//!   set ingress_v4 { ... }                                  # every node's gateway addresses
//!   chain forward { hook forward        # bridged traffic, through br_netfilter
//!     ct state established,related accept                   # replies always pass
//!     icmpv6 type { nd-*, router-* } accept; udp dport { 67, 68 } accept
//!     ip daddr <protected> jump p<N> }
//!   chain output { hook output          # this host's own connections (ingress, checks)
//!     ct state established,related accept
//!     ip daddr <protected> jump o<N> }
//!   chain p<N> { ip saddr @svc0_v4 meta l4proto { tcp, udp } th dport 8080 accept; ...; counter drop }
//! }
//! ```

use super::{Allow, Matrix, Protected, Rule, Source};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

/// The table vxgate owns.
pub const TABLE: &str = "inet vxgate";

/// The script that removes the table (and does nothing when there is none).
pub fn remove_script() -> String {
    format!("table {TABLE}\ndelete table {TABLE}\n")
}

/// The script that replaces the table with the rules `node` enforces for its containers;
/// when it protects none, the script removes the table (policy unused costs nothing).
/// `chains` receives, for each protected container, the chain that holds its rules.
pub fn script(m: &Matrix, node: &str) -> (String, BTreeMap<String, String>) {
    let mine: Vec<&Protected> = m.on_node(node).collect();
    let mut chains = BTreeMap::new();
    if mine.is_empty() {
        return (remove_script(), chains);
    }
    let services: Vec<&String> = m.services.keys().collect();
    let mut out = remove_script();
    let _ = writeln!(out, "table {TABLE} {{");
    for (k, s) in services.iter().enumerate() {
        sets(&mut out, &format!("svc{k}"), &m.services[*s]);
    }
    sets(&mut out, "ingress", &m.ingress);
    let mut jumps = String::new();
    let mut local = String::new();
    let mut bodies = String::new();
    for (n, p) in mine.iter().enumerate() {
        let daddr = family(p.ip);
        let _ = writeln!(jumps, "    {daddr} daddr {} jump p{n}", p.ip);
        let _ = writeln!(local, "    {daddr} daddr {} jump o{n}", p.ip);
        chains.insert(p.container.clone(), format!("p{n}"));
        let allows: &[Allow] = match &p.rule {
            Rule::Allow(a) => a,
            Rule::Isolated => &[],
        };
        let _ = writeln!(bodies, "  chain p{n} {{");
        for a in allows {
            let set = match &a.from {
                Source::Service(s) => match services.iter().position(|x| *x == s) {
                    Some(k) => Some(format!("svc{k}")),
                    None => continue, // no container of that service anywhere: nobody
                },
                Source::Ingress => Some("ingress".to_owned()),
                Source::Any => None,
            };
            let _ = writeln!(
                bodies,
                "    {}accept",
                matcher(p.ip, set.as_deref(), a.port)
            );
        }
        // what is left is dropped, counted by the service it came from; a new flow's
        // first packets are also logged (rate-limited) for the one-line-per-flow log
        let to = p.service.as_deref().unwrap_or(&p.container);
        let log = log_rule(&p.container);
        let _ = writeln!(bodies, "    {log}");
        for (k, s) in services.iter().enumerate() {
            if m.services[*s].iter().any(|a| a.is_ipv4() == p.ip.is_ipv4()) {
                let _ = writeln!(
                    bodies,
                    "    {}counter drop comment \"{}\"",
                    matcher(p.ip, Some(&format!("svc{k}")), None),
                    drop_comment(s, to)
                );
            }
        }
        let _ = writeln!(
            bodies,
            "    counter drop comment \"{}\"\n  }}",
            drop_comment("?", to)
        );
        // from this host itself: its ingress and health checks, when the ingress may
        let _ = writeln!(bodies, "  chain o{n} {{");
        for a in allows
            .iter()
            .filter(|a| matches!(a.from, Source::Ingress | Source::Any))
        {
            let _ = writeln!(bodies, "    {}accept", matcher(p.ip, None, a.port));
        }
        let _ = writeln!(bodies, "    {log}\n    counter drop\n  }}");
    }
    let _ = writeln!(
        out,
        "  chain forward {{\n    type filter hook forward priority filter; policy accept;\n    ct state established,related accept\n    icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert }} accept\n    udp dport {{ 67, 68 }} accept\n{jumps}  }}"
    );
    let _ = writeln!(
        out,
        "  chain output {{\n    type filter hook output priority filter; policy accept;\n    ct state established,related accept\n{local}  }}"
    );
    out.push_str(&bodies);
    out.push_str("}\n");
    (out, chains)
}

/// The rule that sends a refused new flow's first packets to vxgate's NFLOG reader, the
/// prefix naming the container (at most 10 a second and container, 20 at once).
fn log_rule(container: &str) -> String {
    let mut name = container.replace(['"', '\\'], "_");
    name.truncate(100);
    format!(
        "ct state new limit rate 10/second burst 20 packets log prefix \"{name}\" group {}",
        super::nflog::GROUP
    )
}

/// What a drop rule's comment says: `vxgate-drop FROM>TO` (services; `?` an unknown source).
const DROP_TAG: &str = "vxgate-drop ";

fn drop_comment(from: &str, to: &str) -> String {
    let clean = |s: &str| s.replace(['"', '>', '\\'], "_");
    format!("{DROP_TAG}{}>{}", clean(from), clean(to))
}

/// The drop counters in `nft -j list table` output: packets by (from, to) service.
pub fn drop_counts(json: &[u8]) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else {
        return out;
    };
    let items = v["nftables"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    for rule in items.iter().filter_map(|i| i.get("rule")) {
        let Some((from, to)) = rule["comment"]
            .as_str()
            .and_then(|c| c.strip_prefix(DROP_TAG))
            .and_then(|c| c.split_once('>'))
        else {
            continue;
        };
        let packets: u64 = rule["expr"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["counter"]["packets"].as_u64())
            .sum();
        *out.entry((from.to_owned(), to.to_owned())).or_default() += packets;
    }
    out
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "ip" } else { "ip6" }
}

/// `ip saddr @set meta l4proto { tcp, udp } th dport P ` (the parts that apply).
fn matcher(dst: IpAddr, set: Option<&str>, port: Option<u16>) -> String {
    let mut m = String::new();
    if let Some(set) = set {
        let v = if dst.is_ipv4() { "v4" } else { "v6" };
        let _ = write!(m, "{} saddr @{set}_{v} ", family(dst));
    }
    if let Some(p) = port {
        let _ = write!(m, "meta l4proto {{ tcp, udp }} th dport {p} ");
    }
    m
}

/// The IPv4 and IPv6 sets `name_v4` and `name_v6` of `addrs`.
fn sets(out: &mut String, name: &str, addrs: &std::collections::BTreeSet<IpAddr>) {
    for (v, ty, is) in [
        ("v4", "ipv4_addr", IpAddr::is_ipv4 as fn(&IpAddr) -> bool),
        ("v6", "ipv6_addr", IpAddr::is_ipv6),
    ] {
        let elements: Vec<String> = addrs
            .iter()
            .filter(|a| is(a))
            .map(|a| a.to_string())
            .collect();
        let _ = write!(out, "  set {name}_{v} {{ type {ty};");
        if !elements.is_empty() {
            let _ = write!(out, " elements = {{ {} }}", elements.join(", "));
        }
        let _ = writeln!(out, " }}");
    }
}

/// Whether bridged traffic reaches the `inet` forward hook here
/// (`net.bridge.bridge-nf-call-iptables = 1`, with the `br_netfilter` module loaded).
pub fn bridged_traffic_filtered() -> Result<(), &'static str> {
    match std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables") {
        Ok(v) if v.trim() == "1" => Ok(()),
        Ok(_) => Err(
            "net.bridge.bridge-nf-call-iptables is 0: traffic between containers on a bridge is not filtered (sysctl -w net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1)",
        ),
        Err(_) => Err(
            "the br_netfilter module is not loaded: traffic between containers on a bridge is not filtered (modprobe br_netfilter)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Protected;
    use std::collections::BTreeSet;

    pub(super) fn matrix() -> Matrix {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let protected = |name: &str, addr: &str, node: &str, rule| Protected {
            container: name.into(),
            service: Some(name.split('-').next().unwrap_or(name).into()),
            node: node.into(),
            network: "default".into(),
            ip: ip(addr),
            rule,
        };
        Matrix {
            protected: vec![
                protected(
                    "api-1",
                    "10.200.1.12",
                    "h1",
                    Rule::Allow(vec![
                        Allow {
                            from: Source::Service("web".into()),
                            port: Some(8080),
                        },
                        Allow {
                            from: Source::Ingress,
                            port: None,
                        },
                        Allow {
                            from: Source::Service("ghost".into()),
                            port: None,
                        },
                    ]),
                ),
                protected("db-1", "10.200.2.13", "h2", Rule::Isolated),
                protected(
                    "v6-1",
                    "fd00::14",
                    "h1",
                    Rule::Allow(vec![Allow {
                        from: Source::Any,
                        port: Some(53),
                    }]),
                ),
            ],
            services: BTreeMap::from([
                ("api".into(), BTreeSet::from([ip("10.200.1.12")])),
                (
                    "web".into(),
                    BTreeSet::from([ip("10.200.1.11"), ip("10.200.2.11"), ip("fd00::11")]),
                ),
            ]),
            ingress: BTreeSet::from([ip("10.200.1.1"), ip("10.200.2.1")]),
            problems: vec![],
        }
    }

    #[test]
    fn a_hosts_script_replaces_the_table_with_its_containers_rules() {
        let (s, chains) = script(&matrix(), "h1");
        assert!(
            s.starts_with("table inet vxgate\ndelete table inet vxgate\ntable inet vxgate {\n"),
            "{s}"
        );
        assert!(
            s.contains("set svc1_v4 { type ipv4_addr; elements = { 10.200.1.11, 10.200.2.11 } }"),
            "{s}"
        );
        assert!(
            s.contains("set svc1_v6 { type ipv6_addr; elements = { fd00::11 } }"),
            "{s}"
        );
        assert!(
            s.contains("set ingress_v4 { type ipv4_addr; elements = { 10.200.1.1, 10.200.2.1 } }")
        );
        assert!(s.contains("ip daddr 10.200.1.12 jump p0"));
        assert!(s.contains("ip6 daddr fd00::14 jump p1"));
        assert!(
            !s.contains("10.200.2.13 jump"),
            "h2's container is h2's to enforce"
        );
        assert!(
            s.contains("ip saddr @svc1_v4 meta l4proto { tcp, udp } th dport 8080 accept"),
            "{s}"
        );
        assert!(s.contains("ip saddr @ingress_v4 accept"));
        assert!(
            !s.contains("ghost"),
            "a service with no container lets nobody in"
        );
        // from the host itself: only what lets the ingress in
        let o0 = &s[s.find("chain o0 {").expect("o0")..];
        let o0 = &o0[..o0.find('}').expect("end")];
        assert!(o0.contains("    accept") && !o0.contains("8080"), "{o0}");
        assert!(s.contains("chain p1 {\n    meta l4proto { tcp, udp } th dport 53 accept\n    ct state new limit rate 10/second burst 20 packets log prefix \"v6-1\" group 4789\n    ip6 saddr @svc1_v6 counter drop comment \"vxgate-drop web>v6\"\n    counter drop comment \"vxgate-drop ?>v6\""), "{s}");
        assert!(
            s.contains("ip saddr @svc0_v4 counter drop comment \"vxgate-drop api>api\""),
            "{s}"
        );
        assert!(
            s.find("ct state established,related accept") < s.find("jump p0"),
            "replies first"
        );
        assert_eq!(chains["api-1"], "p0");
        let (h3, none) = script(&matrix(), "h3");
        assert_eq!(h3, remove_script(), "nothing protected here: no table");
        assert!(none.is_empty());
        let (h2, _) = script(&matrix(), "h2");
        assert!(
            h2.contains("chain p0 {\n    ct state new limit rate 10/second burst 20 packets log prefix \"db-1\" group 4789\n    ip saddr @svc0_v4 counter drop comment \"vxgate-drop api>db\"\n    ip saddr @svc1_v4 counter drop comment \"vxgate-drop web>db\"\n    counter drop comment \"vxgate-drop ?>db\"\n  }"),
            "isolated: closed to all\n{h2}"
        );
    }

    #[test]
    fn drop_counters_are_read_by_from_and_to() {
        let json = br#"{"nftables": [{"metainfo": {}}, {"rule": {"chain": "p0", "comment": "vxgate-drop web>db", "expr": [{"match": {}}, {"counter": {"packets": 3, "bytes": 180}}, {"drop": null}]}}, {"rule": {"chain": "p1", "comment": "vxgate-drop web>db", "expr": [{"counter": {"packets": 2, "bytes": 1}}, {"drop": null}]}}, {"rule": {"chain": "p0", "comment": "vxgate-drop ?>db", "expr": [{"counter": {"packets": 0, "bytes": 0}}]}}, {"rule": {"chain": "forward", "expr": [{"accept": null}]}}]}"#;
        let d = drop_counts(json);
        assert_eq!(
            d[&("web".into(), "db".into())],
            5,
            "two containers of db, summed"
        );
        assert_eq!(d[&("?".into(), "db".into())], 0);
        assert_eq!(d.len(), 2);
        assert!(drop_counts(b"not json").is_empty());
    }
}

#[cfg(test)]
mod kernel_tests {
    /// The script as nft reads it: `nft -c` (check only, nothing changed) accepts it, and
    /// refuses a broken one (the positive control that the check checks).
    #[test]
    fn nft_accepts_the_script() {
        let run = |script: &str| {
            let mut child = match std::process::Command::new("nft")
                .args(["-c", "-f", "-"])
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
            {
                Ok(c) => c,
                Err(e) => {
                    assert!(std::env::var("CI").is_err(), "CI without nft: {e}");
                    eprintln!("skipped: no nft ({e})");
                    return None;
                }
            };
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(script.as_bytes())
                .expect("write");
            let out = child.wait_with_output().expect("nft");
            Some((
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ))
        };
        let (script, _) = super::script(&super::tests::matrix(), "h1");
        let Some((ok, err)) = run(&script) else {
            return;
        };
        if !ok && err.contains("Operation not permitted") {
            assert!(std::env::var("CI").is_err(), "CI not root: {err}");
            eprintln!("skipped: not allowed to talk to nftables");
            return;
        }
        assert!(ok, "nft refused:\n{err}\n{script}");
        let (ok, _) = run(&script.replace("counter drop", "counter dorp")).expect("nft ran");
        assert!(!ok, "a misspelt verdict is refused");
    }
}
