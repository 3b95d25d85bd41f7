//! The overlay's per-packet path allocates nothing: reading a frame's decision, writing the
//! VXLAN header into the headroom, hashing the flow, validating and learning a received
//! datagram, answering an ARP request. Counted with a global allocator that counts while armed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};
use vxgate::overlay::switch::flow_hash;
use vxgate::overlay::{FromTap, FromUdp, NetworkSpec, Switch};
use vxgate::registry::{Container, Health, Origin, Registry};
use vxgate::wire::arp;
use vxgate::wire::ethernet::{Frame, MacAddr, ethertype};
use vxgate::wire::vxlan;

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Counting is on for this thread only: the test harness's other threads allocate
    /// (printing results) while a test runs.
    static ARMED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn armed() -> bool {
    ARMED.try_with(|a| a.get()).unwrap_or(false)
}

fn arm(on: bool) {
    ARMED.with(|a| a.set(on));
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if armed() {
            ALLOCS.fetch_add(1, SeqCst);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        if armed() {
            ALLOCS.fetch_add(1, SeqCst);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counter is global: tests take turns (the harness runs them on parallel threads).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    ALLOCS.store(0, SeqCst);
    guard
}

const H2: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(10, 99, 0, 2)), 4789);
const H3: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(10, 99, 0, 3)), 4789);

fn mac(n: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, n])
}

#[test]
fn encapsulate_and_decapsulate_allocate_nothing() {
    let _turn = exclusive();
    let switch = Switch::new(
        "h1",
        &[H2, H3],
        &[NetworkSpec {
            name: "default".into(),
            vni: 42,
            mtu: 1450,
        }],
        1024,
        Duration::from_secs(300),
    );
    let registry = Registry::new("app");
    registry
        .add(Container {
            name: "c".into(),
            ip: "10.200.2.11".parse().expect("ip"),
            mac: Some(mac(9)),
            port: 80,
            labels: Default::default(),
            network: "default".into(),
            node: "h2".into(),
            health: Health::Unknown,
            ready: true,
            origin: Origin::Config,
        })
        .expect("add");
    switch.sync_registry(&registry.snapshot(), &[("h2".to_string(), H2)].into());

    let headroom = vxlan::HEADER_LEN;
    let mut tx = vec![0u8; headroom + 2048];
    let mut rx = vec![0u8; 2048];
    let mut reply = [0u8; 64];
    let mut header = [0u8; vxlan::HEADER_LEN];
    vxlan::emit_header(&mut header, 42);
    let mut arp_req = [0u8; 42];
    {
        let mut f = Frame::new_checked(&mut arp_req[..]).expect("fits");
        f.set_dst(MacAddr::BROADCAST);
        f.set_src(mac(1));
        f.set_ethertype(ethertype::ARP);
        arp::Repr {
            operation: arp::Operation::Request,
            sender_mac: mac(1),
            sender_ip: Ipv4Addr::new(10, 200, 1, 11),
            target_mac: MacAddr::default(),
            target_ip: Ipv4Addr::new(10, 200, 2, 11),
        }
        .emit(f.payload_mut())
        .expect("fits");
    }

    let now = Instant::now();
    let mut decisions = 0;
    // first round learns (a new FDB entry may use the table's preallocated room only)
    for round in 0..2 {
        arm(round == 1);
        for len in [64usize, 1450 + 14] {
            for src in 1..=50u8 {
                // a frame from the TAP, read after the headroom
                let frame = &mut tx[headroom..headroom + len];
                frame.fill(0);
                let mut f = Frame::new_checked(&mut *frame).expect("fits");
                f.set_dst(mac(100 + src));
                f.set_src(mac(src));
                f.set_ethertype(ethertype::IPV4);
                let d = switch.from_tap(0, &tx[headroom..headroom + len], now, &mut reply);
                assert!(matches!(d, FromTap::Flood | FromTap::Unicast(_)));
                tx[..headroom].copy_from_slice(&header);
                let _port = flow_hash(&tx[headroom..headroom + len]);
                // the same bytes arrive at the peer, which learns mac(src) behind us
                rx[..headroom + len].copy_from_slice(&tx[..headroom + len]);
                let d = switch.from_udp(H3, &rx[..headroom + len], now);
                assert_eq!(d, FromUdp::Deliver { network: 0 });
                decisions += 2;
            }
        }
        let d = switch.from_tap(0, &arp_req, now, &mut reply);
        assert!(matches!(d, FromTap::Reply(42)), "{d:?}");
        let junk = switch.from_udp(SocketAddr::from(([10, 9, 9, 9], 4789)), &rx[..64], now);
        assert!(matches!(junk, FromUdp::Drop(_)));
        switch.tick(now + Duration::from_secs(2));
    }
    arm(false);
    assert_eq!(
        ALLOCS.load(SeqCst),
        0,
        "allocations on the packet path over {decisions} decisions"
    );
}

/// The offload path's pure parts allocate nothing either: cutting a 64 KiB TSO super-frame
/// into VXLAN datagrams, and checking, merging and writing the header of received segments.
#[test]
fn segmentation_and_merging_allocate_nothing() {
    let _turn = exclusive();
    use vxgate::wire::checksum::{add, fold};
    use vxgate::wire::offload::{TcpSegment, UdpSegment, merged_header, segment};
    let payload = 60_000usize;
    let mut f = vec![0u8; 14 + 20 + 20];
    f[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[10, 200, 1, 11]);
    f[30..34].copy_from_slice(&[10, 200, 2, 11]);
    f[46] = 0x50;
    f[47] = 0x10;
    f.extend((0..payload).map(|i| i as u8));
    let c = !fold(add(0, &f[14..34]));
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let mut out = vec![0u8; 2 * 65_536];
    let mut hdr = [0u8; 256];
    let vx = [8u8, 0, 0, 0, 0, 0, 42, 0];
    arm(true);
    let s = segment(&f, Some(34), 1398, &vx, &mut out).expect("segment");
    let mut merged = 0;
    {
        let mut it = out[..s.len].chunks(s.stride).map(|d| &d[8..]);
        let first_frame = it.next().expect("one");
        let first = TcpSegment::parse(first_frame).expect("verifies");
        let (mut last, mut total) = (first, first.payload);
        for d in it {
            let seg = TcpSegment::parse(d).expect("verifies");
            assert!(first.follows(first_frame, &last, total, d, &seg));
            total += seg.payload;
            last = seg;
            merged += 1;
        }
        merged_header(
            first_frame,
            &first,
            total,
            merged + 1,
            first_frame,
            &mut hdr,
        )
        .expect("header");
        assert!(UdpSegment::parse(first_frame).is_none());
    }
    arm(false);
    assert!(merged > 40);
    assert_eq!(
        ALLOCS.load(SeqCst),
        0,
        "allocations while segmenting and merging"
    );
}
