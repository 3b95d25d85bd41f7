//! Encapsulate and decapsulate 64- and 1450-byte frames: the switch decision plus the header
//! write (TAP → UDP), and validation plus learning (UDP → TAP). ns/packet.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use vxgate::overlay::switch::flow_hash;
use vxgate::overlay::{NetworkSpec, Switch};
use vxgate::wire::ethernet::{Frame, MacAddr, ethertype};
use vxgate::wire::vxlan;

fn switch(peer: SocketAddr) -> Switch {
    Switch::new(
        "h1",
        &[peer],
        &[NetworkSpec {
            name: "default".into(),
            vni: 42,
            mtu: 1450,
        }],
        16 * 1024,
        Duration::from_secs(300),
    )
}

fn frame(buf: &mut [u8]) {
    let mut f = Frame::new_checked(buf).expect("fits");
    f.set_dst(MacAddr([2, 0, 0, 0, 0, 2]));
    f.set_src(MacAddr([2, 0, 0, 0, 0, 1]));
    f.set_ethertype(ethertype::IPV4);
    let p = f.payload_mut();
    p[0] = 0x45;
    p[9] = 6;
}

fn bench(c: &mut Criterion) {
    let peer: SocketAddr = "10.99.0.2:4789".parse().expect("addr");
    let now = Instant::now();
    let mut g = c.benchmark_group("overlay");
    for len in [64usize, 1450] {
        g.throughput(Throughput::Elements(1));
        // TAP -> UDP: decision (known unicast), header into the headroom, source-port hash
        let mut s = switch(peer);
        let mut buf = vec![0u8; vxlan::HEADER_LEN + len];
        frame(&mut buf[vxlan::HEADER_LEN..]);
        let mut learned = buf.clone();
        learned[vxlan::HEADER_LEN..][..12].rotate_left(6); // dst <-> src
        vxlan::emit_header((&mut learned[..8]).try_into().expect("8"), 42);
        s.from_udp(peer, &learned, now);
        let mut header = [0u8; vxlan::HEADER_LEN];
        vxlan::emit_header(&mut header, 42);
        let mut reply = [0u8; 64];
        g.bench_with_input(BenchmarkId::new("encapsulate", len), &len, |b, _| {
            b.iter(|| {
                let d = s.from_tap(0, black_box(&buf[vxlan::HEADER_LEN..]), now, &mut reply);
                buf[..vxlan::HEADER_LEN].copy_from_slice(&header);
                black_box((d, flow_hash(&buf[vxlan::HEADER_LEN..])))
            })
        });
        // UDP -> TAP: validate, pick the network, learn, hand out the payload slice
        let mut s = switch(peer);
        let src: SocketAddr = "10.99.0.2:51000".parse().expect("addr");
        g.bench_with_input(BenchmarkId::new("decapsulate", len), &len, |b, _| {
            b.iter(|| black_box(s.from_udp(src, black_box(&learned), now)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
