//! The route table from hostile label sets (issue 30): containers of up to 8 services whose
//! `vxgate.host`, `vxgate.path` and `vxgate.strip_prefix` labels come from the input, and an
//! `ingress.route_hosts` list from it too. Whatever they say: a service's own name is never
//! answered by another service, every route's host is its service's own name or one the
//! allow list admits, and lookups of arbitrary hosts and paths do not panic.
//! Input: NUL-separated records; the first is the allow list (comma-separated), each other
//! is `service \x01 hosts \x01 path \x01 strip`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use vxgate::ingress::routes::{HostAllowList, RouteTable};
use vxgate::registry::{Container, Health, Origin, Registry};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut records = text.split('\0');
    let allow_text = records.next().unwrap_or_default();
    let allowed = HostAllowList::new(allow_text.split(','));
    let r = Registry::new("app");
    let mut services = Vec::new();
    for (i, rec) in records.take(16).enumerate() {
        let mut f = rec.split('\u{1}');
        let service = f.next().unwrap_or_default();
        if service.is_empty()
            || service.len() > 20
            || !service.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
        {
            continue;
        }
        let mut labels = BTreeMap::from([("app".to_owned(), service.to_owned())]);
        for (k, v) in ["vxgate.host", "vxgate.path", "vxgate.strip_prefix"]
            .iter()
            .zip(f)
        {
            labels.insert((*k).to_owned(), v.to_owned());
        }
        let c = Container {
            name: format!("{service}-{i}"),
            ip: std::net::IpAddr::from([10, 0, 0, i as u8 + 1]),
            mac: None,
            port: 80,
            labels,
            network: "default".into(),
            node: "h1".into(),
            health: Health::Unknown,
            ready: true,
            origin: Origin::Config,
        };
        if r.add(c).is_ok() {
            services.push(service.to_owned());
        }
    }
    let t1 = RouteTable::build(&r.snapshot(), "example.com", &allowed, None);
    let t = RouteTable::build(&r.snapshot(), "example.com", &allowed, Some(&t1));
    for s in &services {
        let own = format!("{s}.example.com");
        for path in ["/", "/login", "/api/x", "/a/b/c"] {
            if let Some(route) = t.lookup(&own, path) {
                assert_eq!(&*route.service, s.as_str(), "{own}{path} taken");
            }
        }
        for route in t.routes_of(s) {
            assert!(
                route.host == own || allowed.allows(&route.host),
                "{s} routes {} outside the allow list",
                route.host
            );
        }
    }
    for probe in text.split(['\0', '\u{1}', ',']).take(32) {
        let _ = t.lookup(probe, probe);
        let _ = t.knows_host(probe);
    }
});
