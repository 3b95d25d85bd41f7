//! Encapsulate and decapsulate 64- and 1450-byte frames: the switch decision plus the header
//! write (TAP → UDP), and validation plus learning (UDP → TAP). ns/packet. Each bench first
//! asserts the decision (or the segment count) it times.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use vxgate::overlay::switch::{RunCache, flow_hash};
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
        let s = switch(peer);
        let mut buf = vec![0u8; vxlan::HEADER_LEN + len];
        frame(&mut buf[vxlan::HEADER_LEN..]);
        let mut learned = buf.clone();
        learned[vxlan::HEADER_LEN..][..12].rotate_left(6); // dst <-> src
        vxlan::emit_header((&mut learned[..8]).try_into().expect("8"), 42);
        s.from_udp(peer, &learned, now);
        let mut header = [0u8; vxlan::HEADER_LEN];
        vxlan::emit_header(&mut header, 42);
        let mut reply = [0u8; 64];
        // what is timed is the known-unicast decision, not a flood or a drop
        let d = s.from_tap(0, &buf[vxlan::HEADER_LEN..], now, &mut reply);
        assert!(
            matches!(d, vxgate::overlay::switch::FromTap::Unicast(p) if p == peer),
            "encapsulate {len}: {d:?}"
        );
        g.bench_with_input(BenchmarkId::new("encapsulate", len), &len, |b, _| {
            b.iter(|| {
                let d = s.from_tap(0, black_box(&buf[vxlan::HEADER_LEN..]), now, &mut reply);
                buf[..vxlan::HEADER_LEN].copy_from_slice(&header);
                black_box((d, flow_hash(&buf[vxlan::HEADER_LEN..])))
            })
        });
        // UDP -> TAP: validate, pick the network, learn, hand out the payload slice
        let s = switch(peer);
        let src: SocketAddr = "10.99.0.2:51000".parse().expect("addr");
        let d = s.from_udp(src, &learned, now);
        assert!(
            matches!(d, vxgate::overlay::switch::FromUdp::Deliver { network: 0 }),
            "decapsulate {len}: {d:?}"
        );
        g.bench_with_input(BenchmarkId::new("decapsulate", len), &len, |b, _| {
            b.iter(|| black_box(s.from_udp(src, black_box(&learned), now)))
        });
        // the same, each datagram one of a GRO read of 44 (one sender, one inner source), as
        // the offload receive path decides them
        let mut cache = RunCache::default();
        let d = s.from_udp_in_run(src, &learned, now, &mut cache);
        assert!(
            matches!(d, vxgate::overlay::switch::FromUdp::Deliver { network: 0 }),
            "decapsulate in a run {len}: {d:?}"
        );
        g.throughput(Throughput::Elements(44));
        g.bench_with_input(BenchmarkId::new("decapsulate_in_run", len), &len, |b, _| {
            b.iter(|| {
                let mut cache = RunCache::default();
                for _ in 0..44 {
                    black_box(s.from_udp_in_run(src, black_box(&learned), now, &mut cache));
                }
            })
        });
    }
    g.finish();
    offload(c);
}

/// A 64 KiB TCP super-frame (as a TAP with TSO hands it over), cut into 1398-byte segments
/// behind VXLAN headers; and the receive side's per-segment parse and checksum check.
fn offload(c: &mut Criterion) {
    use vxgate::wire::checksum::{add, fold};
    use vxgate::wire::offload::{TcpSegment, segment};
    let payload = 64_000usize;
    let mut f = vec![0u8; 14 + 20 + 32];
    f[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((20 + 32 + payload) as u16).to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[10, 200, 1, 11]);
    f[30..34].copy_from_slice(&[10, 200, 2, 11]);
    f[46] = 0x80;
    f[47] = 0x18;
    f.extend((0..payload).map(|i| i as u8));
    let c16 = !fold(add(0, &f[14..34]));
    f[24..26].copy_from_slice(&c16.to_be_bytes());
    let mut g = c.benchmark_group("offload");
    g.throughput(Throughput::Bytes(payload as u64));
    let mut out = vec![0u8; 2 * 65_536];
    let mut vx = [0u8; vxlan::HEADER_LEN];
    vxlan::emit_header(&mut vx, 42);
    // the cut that is timed makes every segment: 64,000 bytes in 1398-byte pieces
    let cut = segment(&f, Some(34), 1398, &vx, &mut out).expect("segment");
    assert_eq!(
        cut.len.div_ceil(cut.stride),
        payload.div_ceil(1398),
        "segments"
    );
    g.bench_function("tso_segment_64k", |b| {
        b.iter(|| black_box(segment(black_box(&f), Some(34), 1398, &vx, &mut out)))
    });
    let s = segment(&f, Some(34), 1398, &vx, &mut out).expect("segment");
    let parsed = out[..s.len]
        .chunks(s.stride)
        .filter(|d| TcpSegment::parse(&d[8..]).is_some())
        .count();
    assert_eq!(parsed, payload.div_ceil(1398), "every segment parses");
    g.bench_function("gro_parse_64k", |b| {
        b.iter(|| {
            out[..s.len]
                .chunks(s.stride)
                .filter(|d| TcpSegment::parse(black_box(&d[8..])).is_some())
                .count()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
