//! The overlay's receive path on arbitrary datagrams: VXLAN validation, VNI lookup, inner
//! frame checks and learning (decapsulate + switch decision), then the same bytes as a frame
//! from the TAP (ARP suppression, flow hash). Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use vxgate::overlay::switch::flow_hash;
use vxgate::overlay::{FromUdp, NetworkSpec, Switch};
use vxgate::registry::{Container, Health, Origin, Registry};
use vxgate::wire::{offload, partial};

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| {
        let r = Registry::new("app");
        let _ = r.add(Container {
            name: "c".into(),
            ip: "10.200.2.11".parse().expect("ip"),
            mac: "02:00:0a:c8:02:0b".parse().ok(),
            port: 80,
            labels: Default::default(),
            network: "default".into(),
            node: "h2".into(),
            health: Health::Unknown,
            ready: true,
            origin: Origin::Config,
        });
        r
    })
}

fuzz_target!(|data: &[u8]| {
    let peers: [SocketAddr; 2] = [
        "10.99.0.2:4789".parse().expect("a"),
        "10.99.0.3:4789".parse().expect("a"),
    ];
    let nets = [
        NetworkSpec {
            name: "default".into(),
            vni: 42,
            mtu: 1450,
        },
        NetworkSpec {
            name: "other".into(),
            vni: 43,
            mtu: 576,
        },
    ];
    let s = Switch::new("h1", &peers, &nets, 4, Duration::from_secs(1));
    s.sync_registry(
        &registry().snapshot(),
        &[("h2".to_string(), peers[0])].into(),
    );
    let now = Instant::now();
    let src = if data.first().is_some_and(|b| b & 1 == 1) {
        peers[1]
    } else {
        "10.9.9.9:4789".parse().expect("a")
    };
    match s.from_udp(src, data, now) {
        FromUdp::Deliver { network } => {
            assert!(network < 2);
            assert!(data.len() >= 8 + 14);
            // what the driver does before writing to the TAP
            let mut frame = data[8..].to_vec();
            let _ = partial::complete_partial(&mut frame);
        }
        FromUdp::Segment { network, mss } => {
            assert!(network < 2 && mss > 0);
            let mut scratch = vec![0u8; 65_536];
            let mut total = 0;
            offload::segment_each(&data[8..], None, mss, &mut scratch, |seg| {
                total += seg.len()
            })
            .expect("the switch only asks for segmentation of frames that pass the check");
        }
        FromUdp::Drop(_) => {}
    }
    let mut reply = [0u8; 64];
    let _ = s.from_tap(0, data, now, &mut reply);
    let _ = s.from_tap(1, data, now + Duration::from_secs(2), &mut reply);
    let _ = flow_hash(data);
    s.tick(now + Duration::from_secs(5));
});
