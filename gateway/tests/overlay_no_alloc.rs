//! The overlay's per-packet path allocates nothing: reading a frame's decision, writing the
//! VXLAN header into the headroom, hashing the flow, validating and learning a received
//! datagram, answering an ARP request; and the whole worker loop over a real TAP (as root).
//! Counted with a global allocator that counts while armed, on the armed thread only.
//! The same TAP setup also checks that a merge goes on across two GRO reads.

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

/// Runs `cmd` (an `ip` command) in the calling thread's network namespace.
fn ip(args: &str) {
    let st = std::process::Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .expect("run ip");
    assert!(st.success(), "ip {args}");
}

/// A VXLAN datagram (VNI 42) carrying IPv4/UDP from `src_mac` 10.77.0.2:7000 to `dst_mac`
/// 10.77.0.1:`port`, `len` bytes of payload.
fn vxlan_udp(dst_mac: MacAddr, src_mac: MacAddr, port: u16, len: usize) -> Vec<u8> {
    let mut d = vec![0u8; vxlan::HEADER_LEN + 14 + 20 + 8 + len];
    vxlan::emit_header((&mut d[..8]).try_into().expect("8"), 42);
    {
        let mut f = Frame::new_checked(&mut d[8..]).expect("fits");
        f.set_dst(dst_mac);
        f.set_src(src_mac);
        f.set_ethertype(ethertype::IPV4);
    }
    let ip = &mut d[8 + 14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + 8 + len) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 77, 0, 2]);
    ip[16..20].copy_from_slice(&[10, 77, 0, 1]);
    let c = vxgate::wire::checksum::internet(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let udp = &mut ip[20..];
    udp[0..2].copy_from_slice(&7000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&port.to_be_bytes());
    udp[4..6].copy_from_slice(&((8 + len) as u16).to_be_bytes());
    // checksum 0: none (IPv4)
    d
}

/// The whole datapath loop allocates nothing once warm: a turn of the offload worker (UDP
/// receive, the switch, TAP writes; TAP reads, the switch, encapsulation, GSO or sendmmsg
/// sends) over a real TAP in a network namespace of its own, the kernel on one side and a
/// socket playing the remote VTEP on the other. Needs root (the namespace and the TAP).
#[test]
fn the_datapath_loop_allocates_nothing() {
    on_tap_thread(datapath_loop);
}

/// Runs `body` (which builds a [`TapBed`]) on a thread of its own, as root, and prints its
/// report: the namespace is the thread's, and so are the counted allocations.
fn on_tap_thread(body: fn() -> String) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // under CI (root, as the e2e tests are) a skip would pass without testing anything
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but not root: the datapath's allocation test cannot run"
        );
        eprintln!("skipped: needs root for a network namespace and a TAP");
        return;
    }
    let _turn = exclusive();
    let report = std::thread::spawn(body)
        .join()
        .expect("the datapath thread");
    eprintln!("{report}");
}

/// A TAP datapath in a network namespace of its own: the harness (one worker, as vxgate's
/// first) on TAP `vxt0` at 10.77.0.1/24 with 10.77.0.2 behind MAC 02:..:02 (the remote
/// container), and a socket playing the remote VTEP, the switch's only peer.
struct TapBed {
    rt: tokio::runtime::Runtime,
    h: vxgate::overlay::offload::Harness,
    peer: std::net::UdpSocket,
    /// Where the harness listens.
    listen: SocketAddr,
    tap_mac: MacAddr,
}

/// Builds a [`TapBed`]; call it on a thread of its own (it unshares that thread's network
/// namespace).
fn tap_bed() -> TapBed {
    use vxgate::overlay::TapNetwork;
    use vxgate::overlay::offload::Harness;
    // SAFETY: unshare(2) on this thread only; no pointers.
    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
    ip("link set lo up");
    // no IPv6 on the TAP: its router solicitations would be flooded to the peer too
    for conf in ["all", "default"] {
        std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), "1")
            .expect("disable IPv6 in the namespace");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("peer");
    peer.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    let peer_addr = peer.local_addr().expect("addr");
    let spec = NetworkSpec {
        name: "default".into(),
        vni: 42,
        mtu: 1450,
    };
    let switch = std::sync::Arc::new(Switch::new(
        "h1",
        &[peer_addr],
        std::slice::from_ref(&spec),
        1024,
        Duration::from_secs(300),
    ));
    let net = TapNetwork {
        spec,
        tap: "vxt0".into(),
        bridge: None,
    };
    let h = rt
        .block_on(async { Harness::open(&[net], "127.0.0.1:0".parse().expect("addr"), switch) })
        .expect("open the datapath");
    let listen = h.listen().expect("listen");
    ip("addr add 10.77.0.1/24 dev vxt0");
    ip("neigh replace 10.77.0.2 lladdr 02:00:00:00:00:02 dev vxt0 nud permanent");
    let out = std::process::Command::new("ip")
        .args(["-br", "link", "show", "vxt0"])
        .output()
        .expect("ip link");
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let tap_mac: MacAddr = line
        .split_whitespace()
        .nth(2)
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no MAC in {line:?}"));
    TapBed {
        rt,
        h,
        peer,
        listen,
        tap_mac,
    }
}

fn datapath_loop() -> String {
    let TapBed {
        rt,
        mut h,
        peer,
        listen,
        tap_mac,
    } = tap_bed();
    // the count is live on this thread (a positive control for the zero below)
    ALLOCS.store(0, SeqCst);
    arm(true);
    drop(std::hint::black_box(Box::new(1u64)));
    arm(false);
    assert_eq!(
        ALLOCS.load(SeqCst),
        1,
        "the counting allocator counts this thread"
    );
    rt.block_on(async {
        let remote = MacAddr([2, 0, 0, 0, 0, 2]);
        let kernel_tx = std::net::UdpSocket::bind("10.77.0.1:0").expect("bind in the overlay");
        let kernel_rx = std::net::UdpSocket::bind("10.77.0.1:0").expect("bind in the overlay");
        kernel_rx.set_nonblocking(true).expect("nonblocking");
        let rx_port = kernel_rx.local_addr().expect("addr").port();

        // the datagrams of one round: received from the remote VTEP and sent by the kernel
        let inbound: Vec<Vec<u8>> = [64usize, 1000, 1000, 1000, 1400, 200]
            .iter()
            .map(|&n| vxlan_udp(tap_mac, remote, rx_port, n))
            .collect();
        let outbound = [64usize, 1000, 1000, 1000, 1400, 200];
        let (mut got_in, mut got_out, mut allocs, mut turns) = (0usize, 0usize, 0usize, 0usize);
        let mut buf = vec![0u8; 65_536];
        for round in 0..40 {
            let counting = round >= 10; // the first rounds warm up (lazy first-use setup)
            for d in &inbound {
                peer.send_to(d, listen).expect("send to the datapath");
            }
            for &n in &outbound {
                kernel_tx
                    .send_to(&buf[..n], "10.77.0.2:9")
                    .expect("send into the TAP");
            }
            let (want_in, want_out) = (got_in + inbound.len(), got_out + outbound.len());
            let deadline = Instant::now() + Duration::from_secs(10);
            while (got_in < want_in || got_out < want_out) && Instant::now() < deadline {
                ALLOCS.store(0, SeqCst);
                arm(counting);
                let work = h.turn().await.expect("a turn");
                arm(false);
                if counting {
                    allocs += ALLOCS.load(SeqCst);
                    turns += usize::from(work > 0);
                }
                while kernel_rx.recv(&mut buf).is_ok() {
                    got_in += 1;
                }
                // what reached the remote VTEP: one datagram each, or a GSO run read whole
                if let Ok((n, _)) = peer.recv_from(&mut buf) {
                    let f = Frame::new_checked(&buf[vxlan::HEADER_LEN..n]).expect("a frame");
                    got_out += usize::from(f.dst() == remote);
                }
                tokio::task::yield_now().await;
            }
            assert!(
                got_in >= want_in && got_out >= want_out,
                "round {round}: the kernel got {got_in} of {want_in}, the peer {got_out} of {want_out}"
            );
        }
        assert!(turns >= 30, "only {turns} turns did work");
        assert_eq!(
            allocs, 0,
            "allocations in {turns} datapath turns ({} frames each way)",
            30 * inbound.len()
        );
        format!(
            "datapath loop: 0 allocations in {turns} turns, {} frames in and {} out ({})",
            got_in,
            got_out,
            h.features().describe()
        )
    })
}

/// Asserts that the harness's datapath has each of `features` on.
fn require(h: &vxgate::overlay::offload::Harness, features: &[&str]) {
    let on = h.features().list();
    assert!(
        features.iter().all(|f| on.contains(&(*f, true))),
        "the offload datapath with {features:?}: {}",
        h.features().describe()
    );
}

/// One turn of the worker loop, after a yield that lets the runtime poll its I/O driver
/// (which marks the socket readable). Returns the reads done.
fn turn(rt: &tokio::runtime::Runtime, h: &mut vxgate::overlay::offload::Harness) -> usize {
    rt.block_on(async {
        tokio::task::yield_now().await;
        h.turn().await
    })
    .expect("a turn")
}

/// The TAP's receive counters (frames the datapath wrote to it): (packets, bytes).
fn tap_rx(name: &str) -> (u64, u64) {
    let out = std::process::Command::new("ip")
        .args(["-s", "-j", "link", "show", name])
        .output()
        .expect("ip -s link");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip's JSON");
    let rx = &v[0]["stats64"]["rx"];
    match (rx["packets"].as_u64(), rx["bytes"].as_u64()) {
        (Some(p), Some(b)) => (p, b),
        _ => panic!("no receive counters for {name}: {v}"),
    }
}

/// A 64 KiB TSO frame does not fit one UDP GSO send once encapsulated, so a sender (vxgate's
/// TX path, `gso_runs`) sends it as two runs, 44 datagrams and 2; the receiving worker reads
/// them in two GRO reads and still writes them to the TAP as one frame: the merge goes on
/// from one read into the next. Real TAP, real GSO sends over loopback. Needs root.
#[test]
fn a_tso_frame_sent_as_two_gso_runs_reaches_the_tap_as_one_frame() {
    on_tap_thread(two_runs_one_frame);
}

fn two_runs_one_frame() -> String {
    use vxgate::overlay::{batch, udp};
    use vxgate::wire::checksum::internet;
    use vxgate::wire::offload::segment;
    let TapBed {
        rt,
        mut h,
        peer,
        listen,
        tap_mac,
    } = tap_bed();
    require(&h, &["udp_gro", "tap_tso"]);
    // 10.77.0.2:7000 -> 10.77.0.1:5201, 46 segments of 1398 bytes, ACK set
    let (mss, segments) = (1398usize, 46usize);
    let payload = mss * segments;
    let mut f = vec![0u8; 14 + 20 + 20];
    {
        let mut e = Frame::new_checked(&mut f[..]).expect("fits");
        e.set_dst(tap_mac);
        e.set_src(MacAddr([2, 0, 0, 0, 0, 2]));
        e.set_ethertype(ethertype::IPV4);
    }
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[10, 77, 0, 2]);
    f[30..34].copy_from_slice(&[10, 77, 0, 1]);
    let c = internet(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f[34..36].copy_from_slice(&7000u16.to_be_bytes());
    f[36..38].copy_from_slice(&5201u16.to_be_bytes());
    f[38..42].copy_from_slice(&1u32.to_be_bytes());
    f[42..46].copy_from_slice(&1u32.to_be_bytes());
    f[46] = 0x50;
    f[47] = 0x10;
    f[48..50].copy_from_slice(&512u16.to_be_bytes());
    f.extend((0..payload).map(|i| (i * 7 % 251) as u8));
    let mut vx = [0u8; vxlan::HEADER_LEN];
    vxlan::emit_header(&mut vx, 42);
    let mut out = vec![0u8; 2 * 65_536];
    let s = segment(&f, Some(34), mss, &vx, &mut out).expect("segment");
    assert_eq!(s.count, segments);
    let runs: Vec<_> = batch::gso_runs(s.len, s.stride).collect();
    assert_eq!(
        runs.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
        [44, 2],
        "two GSO sends"
    );
    let before = tap_rx("vxt0");
    for (r, _) in &runs {
        udp::send_gso(&peer, &out[r.clone()], listen, s.stride).expect("GSO send");
    }
    let start = Instant::now();
    let mut got = (0, 0);
    while start.elapsed() < Duration::from_secs(10) {
        let work = turn(&rt, &mut h);
        let now = tap_rx("vxt0");
        got = (now.0 - before.0, now.1 - before.1);
        if work == 0 && got.1 >= f.len() as u64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        got,
        (1, f.len() as u64),
        "(frames, bytes) written to the TAP for one {}-byte TSO frame",
        f.len()
    );
    format!(
        "two GSO runs ({} datagrams) reached the TAP as one {}-byte frame in {:?}",
        s.count,
        f.len(),
        start.elapsed()
    )
}

/// UDP datagrams are merged into one USO frame only as one read brought them: three sent
/// one by one (three reads in one turn) reach the TAP as three frames, as the kernel's vxlan
/// forwards them; three sent as one GSO send reach it as one frame (the positive control).
/// Either way the socket behind the TAP receives three datagrams. Needs root.
#[test]
fn udp_datagrams_sent_one_by_one_are_not_merged() {
    on_tap_thread(udp_one_by_one);
}

fn udp_one_by_one() -> String {
    use vxgate::overlay::udp;
    let TapBed {
        rt,
        mut h,
        peer,
        listen,
        tap_mac,
    } = tap_bed();
    require(&h, &["udp_gro", "tap_uso"]);
    let rx = std::net::UdpSocket::bind("10.77.0.1:0").expect("bind in the overlay");
    rx.set_nonblocking(true).expect("nonblocking");
    let port = rx.local_addr().expect("addr").port();
    let d = vxlan_udp(tap_mac, MacAddr([2, 0, 0, 0, 0, 2]), port, 100);
    let frame = (d.len() - vxlan::HEADER_LEN) as u64;
    let mut report = Vec::new();
    for (how, gso, want_frames) in [("one by one", false, 3u64), ("one GSO send", true, 1)] {
        let before = tap_rx("vxt0");
        if gso {
            udp::send_gso(&peer, &d.repeat(3), listen, d.len()).expect("GSO send");
        } else {
            for _ in 0..3 {
                peer.send_to(&d, listen).expect("send");
            }
        }
        let (start, mut got, mut datagrams) = (Instant::now(), (0, 0), 0);
        let mut buf = [0u8; 2048];
        while start.elapsed() < Duration::from_secs(10) {
            let work = turn(&rt, &mut h);
            while let Ok(n) = rx.recv(&mut buf) {
                assert_eq!(n, 100, "a datagram as sent");
                datagrams += 1;
            }
            let now = tap_rx("vxt0");
            got = (now.0 - before.0, now.1 - before.1);
            if work == 0 && datagrams >= 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(datagrams, 3, "{how}: datagrams received behind the TAP");
        let headers = 14 + 20 + 8;
        let bytes = if gso {
            headers + 3 * (frame - headers)
        } else {
            3 * frame
        };
        assert_eq!(
            got,
            (want_frames, bytes),
            "{how}: (frames, bytes) written to the TAP for three datagrams"
        );
        report.push(format!("{how}: {want_frames} frame(s)"));
    }
    format!(
        "three 100-byte UDP datagrams reached the TAP as {}",
        report.join(", ")
    )
}
