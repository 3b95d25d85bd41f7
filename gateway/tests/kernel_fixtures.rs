//! Datagrams captured from the Linux kernel's vxlan (VNI 42, dstport 4789) in the testbed
//! (`fixtures/kernel-vxlan-*.bin`, UDP payloads): the conversation replayed through two vxgate
//! switches gives the kernel's datagrams byte for byte, with the same forwarding decisions
//! (VXLAN carries the frame unchanged, so the header and where it goes are what can differ).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use vxgate::overlay::{FromTap, FromUdp, NetworkSpec, Switch};
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

fn switch(node: &str, peer: SocketAddr) -> Switch {
    Switch::new(
        node,
        &[peer],
        &[NetworkSpec {
            name: "default".into(),
            vni: 42,
            mtu: 1450,
        }],
        64,
        Duration::from_secs(300),
    )
}

/// What vxgate's datapath sends for a frame read from the TAP: the VXLAN header written in
/// front of the frame (the headroom of the read buffer), as `overlay::offload` does.
fn encapsulate(vni: u32, frame: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; vxlan::HEADER_LEN + frame.len()];
    vxlan::emit_header((&mut out[..vxlan::HEADER_LEN]).try_into().expect("8"), vni);
    out[vxlan::HEADER_LEN..].copy_from_slice(frame);
    out
}

/// The captured conversation (h1c1 10.200.1.11 on host 1, h2c1 10.200.2.11 on host 2, both
/// hosts on the kernel's vxlan) replayed through two vxgate switches wired in memory: each
/// container frame goes in at its host's TAP, the switch decides where it goes (flood while
/// the MAC is unknown, then the learned VTEP), vxgate's datagram must be the kernel's byte for
/// byte, and the other switch must accept it and learn from it.
#[test]
fn the_captured_conversation_replayed_through_two_switches_gives_the_kernels_datagrams() {
    let (vtep1, vtep2): (SocketAddr, SocketAddr) = (
        "10.99.0.1:4789".parse().expect("addr"),
        "10.99.0.2:4789".parse().expect("addr"),
    );
    let mut h1 = switch("h1", vtep2);
    let mut h2 = switch("h2", vtep1);
    let (c1, c2) = (
        "02:00:0a:c8:01:0b".parse::<MacAddr>().expect("mac"),
        "02:00:0a:c8:02:0b".parse::<MacAddr>().expect("mac"),
    );
    // (capture, the host whose container sent it, where vxgate must send it)
    let steps = [
        ("arp-request", 1, FromTap::Flood),
        ("arp-reply", 2, FromTap::Unicast(vtep1)),
        ("icmp-echo-request", 1, FromTap::Unicast(vtep2)),
        ("icmp-echo-reply", 2, FromTap::Unicast(vtep1)),
        ("ipv6-nd", 1, FromTap::Flood),
    ];
    assert_eq!(steps.map(|s| s.0), NAMES, "every capture is replayed");
    let now = Instant::now();
    let mut reply = [0u8; 64];
    for (name, from, expected) in steps {
        let kernel = fixture(name);
        let frame = &kernel[vxlan::HEADER_LEN..]; // what the container put on its TAP
        let (tx, rx, src) = if from == 1 {
            (&mut h1, &mut h2, vtep1)
        } else {
            (&mut h2, &mut h1, vtep2)
        };
        let decision = tx.from_tap(0, frame, now, &mut reply);
        assert_eq!(decision, expected, "{name}: where vxgate sends it");
        let ours = encapsulate(tx.vni(0), frame);
        assert_eq!(
            ours, kernel,
            "{name}: vxgate's datagram differs from the kernel's"
        );
        let sender = SocketAddr::new(src.ip(), 41166);
        assert_eq!(
            rx.from_udp(sender, &ours, now),
            FromUdp::Deliver { network: 0 },
            "{name}: the other switch delivers it"
        );
    }
    // each side learned the other container behind the other VTEP
    assert_eq!(h1.fdb(0).lookup(c2, now), Some(vtep2));
    assert_eq!(h2.fdb(0).lookup(c1, now), Some(vtep1));
}

#[test]
fn a_capture_with_another_vni_or_from_a_stranger_is_not_delivered() {
    let vtep1: SocketAddr = "10.99.0.1:4789".parse().expect("addr");
    let h2 = switch("h2", vtep1);
    let mut dgram = fixture("icmp-echo-request");
    let stranger: SocketAddr = "10.99.0.9:4789".parse().expect("addr");
    assert!(matches!(
        h2.from_udp(stranger, &dgram, Instant::now()),
        FromUdp::Drop(_)
    ));
    assert_eq!(
        h2.from_udp(vtep1, &dgram, Instant::now()),
        FromUdp::Deliver { network: 0 },
        "the control: the capture itself is delivered"
    );
    dgram[6] = 43; // VNI 43
    assert!(matches!(
        h2.from_udp(vtep1, &dgram, Instant::now()),
        FromUdp::Drop(_)
    ));
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
