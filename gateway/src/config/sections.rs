//! Validation of each section (overlay, docker, dns, ingress, acme) with its ranges.

use super::validate::Validator;
use super::*;

pub(super) fn validate_overlay(o: &OverlayConfig, v: &mut Validator) {
    match o.listen {
        None if o.wireguard().is_none() => v.bad(
            "overlay.listen",
            "missing: the underlay address for VXLAN, like \"10.99.0.1:4789\" (it may be omitted only with [overlay.encryption])".into(),
        ),
        None if !o.peers.is_empty() => v.bad(
            "overlay.listen",
            "missing: plain overlay.peers need this host's plain VXLAN socket, like \"10.99.0.1:4789\"".into(),
        ),
        Some(l) if l.port() == 0 => v.bad(
            "overlay.listen",
            "port 0; expected the VXLAN port, usually 4789".into(),
        ),
        _ => {}
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
        } else if Some(*p) == o.listen {
            v.bad(&key, format!("{p} is this host's own overlay.listen"));
        } else if !seen.insert(*p) {
            v.bad(&key, format!("duplicate peer {p}"));
        }
    }
    for (node, gateways) in &o.peer_gateways {
        if !o.peer_nodes.contains_key(node) {
            v.bad(
                &format!("overlay.peer_gateways.{node}"),
                format!("{node:?} is not in overlay.peer_nodes (its VTEP must be known)"),
            );
        }
        for g in gateways {
            if g.is_unspecified() || g.is_multicast() || g.is_loopback() {
                v.bad(
                    &format!("overlay.peer_gateways.{node}"),
                    format!("{g} is not a unicast address"),
                );
            }
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
            v.bad(&at("tap"), why.to_string());
        } else if let Some(other) = taps.insert(n.tap.as_str(), i) {
            v.bad(
                &at("tap"),
                format!("TAP {:?} is already overlay.networks[{other}]", n.tap),
            );
        }
        if let Some(bridge) = &n.bridge {
            if let Err(why) = check_ifname(bridge) {
                v.bad(&at("bridge"), why.to_string());
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

pub(super) fn validate_docker(d: &DockerConfig, v: &mut Validator) {
    // the key is checked here; DOCKER_HOST when the daemon starts (it is not in the file)
    if let Some(e) = &d.endpoint
        && let Err(why) = DockerEndpoint::parse(e)
    {
        v.bad("docker.endpoint", why.to_string());
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

/// Why a name is no Linux interface name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum IfnameError {
    #[error("{0:?}: an interface name has 1-15 characters")]
    Length(String),
    #[error("{0:?} is not a valid interface name (no '/', ':' or spaces)")]
    Characters(String),
}

/// Linux interface names: 1–15 bytes, no '/', ':', whitespace (dev_valid_name()).
pub(super) fn check_ifname(name: &str) -> Result<(), IfnameError> {
    if name.is_empty() || name.len() > 15 {
        return Err(IfnameError::Length(name.to_owned()));
    }
    if name == "."
        || name == ".."
        || name.contains(['/', ':'])
        || name.contains(char::is_whitespace)
    {
        return Err(IfnameError::Characters(name.to_owned()));
    }
    Ok(())
}

pub(super) fn validate_dns(d: &DnsConfig, v: &mut Validator) {
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

pub(super) fn validate_acme(a: &AcmeConfig, i: &IngressConfig, v: &mut Validator) {
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
pub(super) fn in_range(v: &mut Validator, key: &str, value: u128, min: u128, max: u128, why: &str) {
    if !(min..=max).contains(&value) {
        v.bad(
            key,
            format!("{value} is out of range; expected {min}-{max} ({why})"),
        );
    }
}

pub(super) fn validate_ingress(i: &IngressConfig, v: &mut Validator) {
    if let Some(AccessLogConfig::File(p)) = &i.access_log {
        if p.as_os_str().is_empty() {
            v.bad(
                "ingress.access_log",
                "expected \"stderr\" or a file path like \"/var/log/vxgate/access.log\"".into(),
            );
        } else if p
            .parent()
            .is_some_and(|d| !d.as_os_str().is_empty() && !d.is_dir())
        {
            v.bad(
                "ingress.access_log",
                format!(
                    "{}: its directory does not exist; expected \"stderr\" or a file in an existing directory",
                    p.display()
                ),
            );
        }
    }
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
    if let Some(ca) = &i.backend_ca_file {
        pem_file(v, "ingress.backend_ca_file", ca, "CERTIFICATE");
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
    for (n, h) in i.route_hosts.iter().enumerate() {
        if crate::names::host_pattern(h).is_none() {
            v.bad(
                &format!("ingress.route_hosts[{n}]"),
                format!("{h:?}: expected a host name like \"shop.example.org\" or a pattern like \"*.shop.example.org\""),
            );
        }
    }
    if i.max_streams_per_connection == 0 || i.max_streams_per_connection > 1000 {
        v.bad(
            "ingress.max_streams_per_connection",
            format!(
                "{} is out of range; expected 1-1000 (each stream can hold a backend connection)",
                i.max_streams_per_connection
            ),
        );
    }
    if i.max_backend_connections == Some(0) {
        v.bad(
            "ingress.max_backend_connections",
            "0 would refuse every request; expected at least 1, or leave it out to size it from the open-files limit".into(),
        );
    }
    if !(32..=128).contains(&i.ipv6_client_prefix) {
        v.bad(
            "ingress.ipv6_client_prefix",
            format!(
                "{} is out of range; expected 32-128 (a client's share is counted per IPv6 prefix of this length)",
                i.ipv6_client_prefix
            ),
        );
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
            "ingress.send_timeout_ms",
            ms(i.send_timeout),
            1000,
            86_400_000,
            "a shorter one cuts off clients on a slow link in the middle of a response",
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
pub(super) fn pem_file(v: &mut Validator, key: &str, path: &Path, label: &str) {
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
