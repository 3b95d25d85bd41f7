//! Answering one query from a zone built from a registry snapshot (100 services of 3
//! containers): ns/query for a service name, a container name, and a name that does not exist.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use vxgate_dns::answer::{Rng, answer};
use vxgate_dns::message::name_from_text;
use vxgate_dns::zone::{Zone, ZoneContainer, ZoneSettings};

/// `services` services of `per` containers each, as the registry hands them to the zone.
fn containers(services: u32, per: u32) -> Vec<ZoneContainer> {
    let mut cs = Vec::new();
    for s in 0..services {
        for c in 0..per {
            cs.push(ZoneContainer {
                name: format!("svc{s}-{c}"),
                ip: std::net::IpAddr::from([
                    10,
                    200,
                    (s / 50) as u8 + 1,
                    (s % 50 * per + c + 10) as u8,
                ]),
                port: 80,
                service: Some(format!("svc{s}")),
                serving: true,
            });
        }
    }
    cs
}

fn settings() -> ZoneSettings {
    ZoneSettings {
        zone: "example.com".into(),
        ttl: 5,
        ns_addrs: vec![],
        max_udp_records: vxgate_dns::zone::MAX_UDP_RECORDS,
    }
}

fn zone() -> Zone {
    Zone::build(&settings(), 1, &containers(100, 3)).expect("zone")
}

/// The zone rebuilt on a registry change: 1000 containers (a fleet of 50 hosts with 20 each,
/// 250 services of 4), what every host does for every change in bench/fleet.sh.
fn zone_build(c: &mut Criterion) {
    let (s, cs) = (settings(), containers(250, 4));
    c.bench_function("dns_zone_build_1000_containers", |b| {
        b.iter(|| Zone::build(&s, 1, black_box(&cs)).expect("zone"))
    });
}

fn query(name: &str) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    m.extend(name_from_text(name).expect("name"));
    m.extend_from_slice(&[0, 1, 0, 1]);
    m.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    m
}

fn bench(c: &mut Criterion) {
    let z = zone();
    let mut rng = Rng::new(1);
    let mut out = Vec::with_capacity(4096);
    let mut g = c.benchmark_group("dns_answer");
    g.throughput(Throughput::Elements(1));
    for (label, name) in [
        ("service", "svc42.example.com"),
        ("container", "svc42-1.example.com"),
        ("nxdomain", "nope.example.com"),
    ] {
        let q = query(name);
        g.bench_function(label, |b| {
            b.iter(|| black_box(answer(&z, black_box(&q), false, &mut rng, &mut out)))
        });
    }
    g.finish();
}

/// The response-rate limiter with its table full of a spoofed flood's networks: a flood
/// packet (a new network each time) and a legitimate client's (a tracked one), each
/// `check` timed. Before sharding, each flood packet swept all 65,536 buckets under one lock.
fn rate_limit(c: &mut Criterion) {
    use std::net::{IpAddr, Ipv4Addr};
    use vxgate_dns::ratelimit::{MAX_NETWORKS, RateLimiter};
    let now = std::time::Instant::now();
    let rl = RateLimiter::new(1_000_000);
    let legit = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
    let _ = rl.check(legit, now);
    for i in 0..MAX_NETWORKS as u32 {
        let _ = rl.check(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i << 8))), now);
    }
    let mut g = c.benchmark_group("dns_rate_limit_full_table");
    g.throughput(Throughput::Elements(1));
    let mut n: u32 = 0;
    g.bench_function("flood_new_network", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let ip = IpAddr::V4(Ipv4Addr::from(0xc000_0000 | ((n & 0x3f_ffff) << 8)));
            black_box(rl.check(ip, now))
        })
    });
    g.bench_function("legitimate_client", |b| {
        b.iter(|| black_box(rl.check(black_box(legit), now)))
    });
    g.finish();
}

criterion_group!(benches, bench, rate_limit, zone_build);
criterion_main!(benches);
