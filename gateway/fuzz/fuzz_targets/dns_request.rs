//! The DNS request handler on arbitrary messages, over UDP and TCP limits, plus the record
//! walker and the cache that read upstream answers. Must never panic; a reply must be a
//! well-formed response to the same ID that fits the transport.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::Instant;
use vxgate_dns::answer::{Action, Rng, answer};
use vxgate_dns::cache::{Cache, Key};
use vxgate_dns::message;
use vxgate_dns::zone::{Zone, ZoneContainer, ZoneSettings};

fn zone() -> &'static Zone {
    static Z: OnceLock<Zone> = OnceLock::new();
    Z.get_or_init(|| {
        let mut cs = Vec::new();
        for i in 0..60u8 {
            cs.push(ZoneContainer {
                name: format!("web-{i}"),
                ip: std::net::IpAddr::from([10, 0, 0, i]),
                port: 80,
                service: Some("web".into()),
                serving: i % 7 != 0,
            });
        }
        cs.push(ZoneContainer {
            name: "v6".into(),
            ip: "fd00::1".parse().expect("ip"),
            port: 1,
            service: Some("api".into()),
            serving: true,
        });
        let s = ZoneSettings {
            zone: "example.com".into(),
            ttl: 5,
            ns_addrs: vec!["10.200.1.1".parse().expect("ip")],
            max_udp_records: vxgate_dns::zone::MAX_UDP_RECORDS,
        };
        Zone::build(&s, 1, &cs).expect("zone")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut rng = Rng::new(1);
    let mut out = Vec::new();
    for tcp in [false, true] {
        match answer(zone(), data, tcp, &mut rng, &mut out) {
            Action::Reply => {
                assert!(out.len() >= message::HEADER_LEN);
                assert_eq!(&out[..2], &data[..2], "reply carries the query's ID");
                assert!(out[2] & 0x80 != 0, "QR set");
                if let Ok(q) = message::parse_query(data) {
                    assert!(tcp || out.len() <= q.max_udp(), "fits UDP");
                }
                assert!(message::records(&out).is_some(), "our reply parses");
            }
            Action::Forward(q) => assert!(matches!(
                zone().lookup(q.lower_name()),
                vxgate_dns::zone::Lookup::Outside
            )),
            Action::Drop => {}
        }
    }
    // the same bytes as an upstream answer
    let mut c = Cache::new(4);
    let key = Key {
        name: vec![0],
        qtype: 1,
        qclass: 1,
        dnssec_ok: false,
    };
    if c.put(key.clone(), data, Instant::now()) {
        let _ = c.get(&key, 7, Instant::now());
    }
});
