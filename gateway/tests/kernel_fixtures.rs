//! Datagrams captured from the Linux kernel's vxlan (VNI 42, dstport 4789) in the testbed
//! (`fixtures/kernel-vxlan-*.bin`, UDP payloads): vxgate parses each one, delivers it, and
//! re-encapsulating the inner frame gives back the kernel's bytes exactly.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use vxgate::overlay::{FromUdp, NetworkSpec, Switch};
use vxgate::wire::ethernet::{Frame, MacAddr, ethertype};
use vxgate::wire::{arp, ipv4, vxlan};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/kernel-vxlan-{name}.bin",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const NAMES: [&str; 5] = [
    "arp-request",
    "arp-reply",
    "icmp-echo-request",
    "icmp-echo-reply",
    "ipv6-nd",
];

#[test]
fn every_capture_is_delivered_and_re_encapsulates_identically() {
    let peer: SocketAddr = "10.99.0.1:4789".parse().expect("addr");
    let mut s = Switch::new(
        "h2",
        &[peer],
        &[NetworkSpec {
            name: "default".into(),
            vni: 42,
            mtu: 1450,
        }],
        64,
        Duration::from_secs(300),
    );
    for name in NAMES {
        let dgram = fixture(name);
        let p = vxlan::Packet::new_checked(&dgram[..]).expect(name);
        assert_eq!(p.vni(), 42, "{name}");
        let sender: SocketAddr = "10.99.0.1:41166".parse().expect("addr");
        assert_eq!(
            s.from_udp(sender, &dgram, Instant::now()),
            FromUdp::Deliver { network: 0 },
            "{name}"
        );
        let mut again = vec![0u8; dgram.len()];
        vxlan::emit_header((&mut again[..8]).try_into().expect("8"), 42);
        again[8..].copy_from_slice(p.payload());
        assert_eq!(
            again, dgram,
            "{name}: vxgate's header differs from the kernel's"
        );
    }
}

#[test]
fn arp_request_fields() {
    let dgram = fixture("arp-request");
    let f = Frame::new_checked(&dgram[8..]).expect("frame");
    assert!(f.dst().is_broadcast());
    assert_eq!(
        f.src(),
        "02:00:0a:c8:01:0b".parse::<MacAddr>().expect("mac")
    );
    assert_eq!(f.ethertype(), ethertype::ARP);
    let a = arp::Repr::parse(f.payload()).expect("arp");
    assert_eq!(a.operation, arp::Operation::Request);
    assert_eq!(a.sender_ip, Ipv4Addr::new(10, 200, 1, 11));
    assert_eq!(a.target_ip, Ipv4Addr::new(10, 200, 2, 11));
    let mut out = [0u8; arp::PACKET_LEN];
    a.emit(&mut out).expect("fits");
    assert_eq!(&out[..], &f.payload()[..arp::PACKET_LEN]);
}

#[test]
fn icmp_echo_request_fields() {
    let dgram = fixture("icmp-echo-request");
    let f = Frame::new_checked(&dgram[8..]).expect("frame");
    assert_eq!(f.ethertype(), ethertype::IPV4);
    let ip = ipv4::Packet::new_checked(f.payload()).expect("ipv4");
    assert_eq!(ip.protocol(), ipv4::protocol::ICMP);
    assert_eq!(
        (ip.src(), ip.dst()),
        (Ipv4Addr::new(10, 200, 1, 11), Ipv4Addr::new(10, 200, 2, 11))
    );
    assert_eq!(ip.payload()[0], 8, "echo request");
}
