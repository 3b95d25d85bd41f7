//! Allocations per query, counted by a global allocator that wraps the system's: a forwarded
//! query's cache miss (the pooled upstream exchange) and cache hit, and a zone answer over
//! UDP and over TCP through the whole server. Only the test's thread is counted (the
//! forwarder, its socket readers and the server run there); the fake upstream and the
//! clients have threads of their own. The counts are printed, and bounded so that a change
//! that allocates more per query fails here.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use vxgate_dns::forward::Forwarder;
use vxgate_dns::message;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
thread_local! {
    // const-initialized: reading it never allocates
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Counting on this thread while another thread holds the flag up.
    static COUNTING_IF_ARMED: Cell<Option<&'static std::sync::atomic::AtomicBool>> =
        const { Cell::new(None) };
}

fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
        || COUNTING_IF_ARMED
            .try_with(|c| c.get().is_some_and(|a| a.load(Relaxed)))
            .unwrap_or(false)
}

// SAFETY: every call goes to the system allocator with its arguments unchanged; counting
// touches only atomics and never allocates
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counter is global: the tests take turns (the harness runs them on parallel threads).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(&message::name_from_text(name).expect("name"));
    m.extend_from_slice(&[0, 1, 0, 1]);
    m
}

/// An upstream answering every A query with one record (TTL 300), on a thread of its own.
fn upstream() -> SocketAddr {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = sock.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let mut a = buf[..n].to_vec();
            a[2] |= 0x80;
            a[7] = 1; // ANCOUNT
            a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 192, 0, 2, 1]);
            let _ = sock.send_to(&a, from);
        }
    });
    addr
}

/// Allocations made while `fwd` resolves each of `queries` in turn.
async fn allocations(fwd: &Forwarder, queries: &[Vec<u8>]) -> u64 {
    // the answer buffer is reused, as the server's TCP connections reuse theirs
    let mut resp = Vec::with_capacity(4096);
    COUNTING.with(|c| c.set(true));
    let before = ALLOCS.load(Relaxed);
    for msg in queries {
        let q = message::parse_query(msg).expect("query");
        fwd.resolve_into(&q, msg, false, &mut resp).await;
        assert_eq!(message::rcode_of(&resp), Some(0));
        assert_eq!(resp[..2], msg[..2], "the client's ID back");
    }
    COUNTING.with(|c| c.set(false));
    ALLOCS.load(Relaxed) - before
}

#[test]
fn allocations_per_forwarded_query() {
    let _turn = exclusive();
    // one thread for the forwarder and its socket readers
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let fwd = Forwarder::new(vec![upstream()], Duration::from_secs(2), 10_000);
        // warm up: the pool's sockets and reader tasks, the cache's first slots
        let warm: Vec<Vec<u8>> = (0..64)
            .map(|i| query(7, &format!("n{i}.example.org")))
            .collect();
        allocations(&fwd, &warm).await;
        const N: u32 = 1000;
        // misses: new names (the queries are made before counting starts), then hits: the
        // same names again
        let names: Vec<Vec<u8>> = (0..N)
            .map(|i| query(7, &format!("m{i}.example.org")))
            .collect();
        let misses = allocations(&fwd, &names).await;
        let hits = allocations(&fwd, &names).await;
        let per_miss = misses as f64 / f64::from(N);
        let per_hit = hits as f64 / f64::from(N);
        println!(
            "allocations per forwarded query: cache miss {per_miss:.1}, cache hit {per_hit:.1}"
        );
        // a miss allocates the query copy, the waiter's oneshot and question, the answer,
        // the cache entry (key, bytes, record offsets) and parse results; a hit nothing (the
        // key is borrowed from the query, the answer copied into the reused buffer)
        assert!(per_miss <= 12.0, "{per_miss:.1} allocations per cache miss");
        assert!(per_hit < 0.05, "{per_hit:.2} allocations per cache hit");
    });
}

/// Counted only while the client says so (after its warm-up), on the server's thread.
static ARMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Allocations made on the server's thread while `f` runs (on the client's).
fn armed<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = ALLOCS.load(Relaxed);
    ARMED.store(true, Relaxed);
    let out = f();
    ARMED.store(false, Relaxed);
    (out, ALLOCS.load(Relaxed) - before)
}

/// A server for `containers` (zone example.com) forwarding to `upstreams` for 127.0.0.0/8,
/// run on this thread with allocations counted while [`armed`]; `client` runs on a thread
/// of its own with the server's port. Returns the client's result and the server's stats.
fn with_server<T: Send + 'static>(
    containers: &[vxgate_dns::zone::ZoneContainer],
    forwarder: std::sync::Arc<Forwarder>,
    client: impl FnOnce(u16) -> T + Send + 'static,
) -> (T, std::sync::Arc<vxgate_dns::server::Stats>) {
    use std::sync::Arc;
    use vxgate_dns::server::{self, Context, Stats};
    use vxgate_dns::zone::{Zone, ZoneSettings};
    let settings = ZoneSettings {
        zone: "example.com".into(),
        ttl: 5,
        ns_addrs: vec![],
        max_udp_records: 32,
    };
    let zone = Zone::build(&settings, 1, containers).expect("zone");
    let (_zone_tx, zone_rx) = tokio::sync::watch::channel(Arc::new(zone));
    let stats = Arc::new(Stats::default());
    let ctx = Arc::new(Context {
        zone: zone_rx,
        forwarder,
        recursion_from: vec!["127.0.0.0/8".parse().expect("net")],
        stats: stats.clone(),
        rate_limit: None,
        tcp_clients: Default::default(),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let out = rt.block_on(async {
        let bound = server::bind(&["127.0.0.1:0".parse().expect("addr")], 1).expect("bind");
        let port = bound.udp[0].local_addr().expect("addr").port();
        tokio::spawn(server::serve(bound, ctx, std::future::pending()));
        let client = std::thread::spawn(move || client(port));
        // the server runs here, counted while armed
        COUNTING_IF_ARMED.with(|c| c.set(Some(&ARMED)));
        while !client.is_finished() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        COUNTING_IF_ARMED.with(|c| c.set(None));
        client.join().expect("client")
    });
    (out, stats)
}

/// Zone answers through the server (UDP batches, TCP pipelined) allocate nothing per query
/// once warm: the answer buffers are reused.
#[test]
fn zone_answers_allocate_nothing_per_query() {
    let _turn = exclusive();
    use std::io::{Read, Write};
    use vxgate_dns::zone::ZoneContainer;
    let containers: Vec<ZoneContainer> = (1..=3)
        .map(|i| ZoneContainer {
            name: format!("web-{i}"),
            ip: format!("10.0.0.{i}").parse().expect("ip"),
            port: 80,
            service: Some("web".into()),
            serving: true,
        })
        .collect();
    // no upstream: nothing is forwarded
    let forwarder = std::sync::Arc::new(Forwarder::new(vec![], Duration::from_secs(1), 100));
    const N: usize = 2000;
    let ((udp_allocs, tcp_allocs), stats) = with_server(&containers, forwarder, |port| {
        let names = ["web.example.com", "web-2.example.com", "nope.example.com"];
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        udp.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 4096];
        let mut ask_udp = |i: usize| {
            udp.send_to(&query(i as u16, names[i % 3]), ("127.0.0.1", port))
                .expect("send");
            let n = udp.recv(&mut buf).expect("an answer");
            assert_eq!(u16::from_be_bytes([buf[0], buf[1]]), i as u16);
            assert_eq!(
                message::rcode_of(&buf[..n]),
                Some(if i % 3 == 2 { 3 } else { 0 })
            );
        };
        (0..200).for_each(&mut ask_udp);
        let ((), udp_allocs) = armed(|| (0..N).for_each(&mut ask_udp));
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut ask_tcp = |i: usize| {
            let q = query(i as u16, names[i % 3]);
            let mut framed = (q.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&q);
            tcp.write_all(&framed).expect("write");
            let mut len = [0u8; 2];
            tcp.read_exact(&mut len).expect("length");
            let n = usize::from(u16::from_be_bytes(len));
            tcp.read_exact(&mut buf[..n]).expect("answer");
            assert_eq!(u16::from_be_bytes([buf[0], buf[1]]), i as u16);
        };
        (0..200).for_each(&mut ask_tcp);
        let ((), tcp_allocs) = armed(|| (0..N).for_each(&mut ask_tcp));
        (udp_allocs, tcp_allocs)
    });
    let (per_udp, per_tcp) = (udp_allocs as f64 / N as f64, tcp_allocs as f64 / N as f64);
    println!("allocations per zone answer: UDP {per_udp:.2}, TCP {per_tcp:.2} ({N} queries each)");
    assert!(stats.queries.load(Relaxed) >= 2 * N as u64 + 400);
    // the server's timers and the runtime's own bookkeeping may allocate now and then
    assert!(
        per_udp < 0.05,
        "{per_udp:.2} allocations per UDP zone answer"
    );
    assert!(
        per_tcp < 0.05,
        "{per_tcp:.2} allocations per TCP zone answer"
    );
}

/// Forwarded names asked over UDP through the whole server (the worker, the upstream socket's
/// reader carrying the query, the answer sent back): allocations per cache miss and hit.
#[test]
fn udp_forwarded_queries_through_the_server() {
    let _turn = exclusive();
    let forwarder = std::sync::Arc::new(Forwarder::new(
        vec![upstream()],
        Duration::from_secs(2),
        10_000,
    ));
    const N: usize = 1000;
    let ((misses, hits), stats) = with_server(&[], forwarder.clone(), |port| {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        udp.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 4096];
        let names: Vec<Vec<u8>> = (0..N)
            .map(|i| query(i as u16, &format!("m{i}.example.org")))
            .collect();
        let mut ask = |msg: &[u8]| {
            udp.send_to(msg, ("127.0.0.1", port)).expect("send");
            let n = udp.recv(&mut buf).expect("an answer");
            assert_eq!(buf[..2], msg[..2], "the client's ID back");
            assert_eq!(message::rcode_of(&buf[..n]), Some(0));
            assert_eq!(u16::from_be_bytes([buf[6], buf[7]]), 1, "one answer record");
        };
        // warm up: the upstream sockets and their readers, the cache's first slots
        for i in 0..64 {
            ask(&query(7, &format!("w{i}.example.org")));
        }
        let ((), misses) = armed(|| names.iter().for_each(|q| ask(q)));
        let ((), hits) = armed(|| names.iter().for_each(|q| ask(q)));
        (misses, hits)
    });
    let (per_miss, per_hit) = (misses as f64 / N as f64, hits as f64 / N as f64);
    println!(
        "allocations per forwarded UDP query through the server: cache miss {per_miss:.1}, cache hit {per_hit:.1}"
    );
    assert_eq!(
        forwarder.upstream_failures.load(Relaxed),
        0,
        "every miss answered upstream"
    );
    assert!(stats.queries.load(Relaxed) >= 2 * N as u64 + 64);
    // a miss: the boxed query, the query copy, the answer and the cache entry (key, bytes,
    // record offsets) and parse results; a hit nothing (the query is not boxed, the key is
    // borrowed from it, the answer is copied into the worker's buffer)
    assert!(per_miss <= 10.0, "{per_miss:.1} allocations per cache miss");
    assert!(per_hit < 0.05, "{per_hit:.2} allocations per cache hit");
}

/// Forwarded names asked over one TCP connection through the whole server (the connection's
/// task waits for the upstream's answer over the pooled UDP sockets): allocations per cache
/// miss and hit.
#[test]
fn tcp_forwarded_queries_through_the_server() {
    let _turn = exclusive();
    use std::io::{Read, Write};
    let forwarder = std::sync::Arc::new(Forwarder::new(
        vec![upstream()],
        Duration::from_secs(2),
        10_000,
    ));
    const N: usize = 1000;
    let ((misses, hits), stats) = with_server(&[], forwarder.clone(), |port| {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 4096];
        let framed: Vec<Vec<u8>> = (0..N + 64)
            .map(|i| {
                let q = query(i as u16, &format!("t{i}.example.org"));
                let mut f = (q.len() as u16).to_be_bytes().to_vec();
                f.extend_from_slice(&q);
                f
            })
            .collect();
        let mut ask = |f: &[u8]| {
            tcp.write_all(f).expect("write");
            let mut len = [0u8; 2];
            tcp.read_exact(&mut len).expect("length");
            let n = usize::from(u16::from_be_bytes(len));
            tcp.read_exact(&mut buf[..n]).expect("answer");
            assert_eq!(buf[..2], f[2..4], "the client's ID back");
            assert_eq!(message::rcode_of(&buf[..n]), Some(0));
            assert_eq!(u16::from_be_bytes([buf[6], buf[7]]), 1, "one answer record");
        };
        // warm up: the upstream sockets and their readers, the cache's first slots, the
        // connection's buffers
        framed[N..].iter().for_each(|f| ask(f));
        let ((), misses) = armed(|| framed[..N].iter().for_each(|f| ask(f)));
        let ((), hits) = armed(|| framed[..N].iter().for_each(|f| ask(f)));
        (misses, hits)
    });
    let (per_miss, per_hit) = (misses as f64 / N as f64, hits as f64 / N as f64);
    println!(
        "allocations per forwarded TCP query through the server: cache miss {per_miss:.1}, cache hit {per_hit:.2}"
    );
    assert_eq!(
        forwarder.upstream_failures.load(Relaxed),
        0,
        "every miss answered upstream"
    );
    assert!(stats.queries.load(Relaxed) >= 2 * N as u64 + 64);
    assert!(per_miss <= 12.0, "{per_miss:.1} allocations per cache miss");
    assert!(per_hit < 0.05, "{per_hit:.2} allocations per cache hit");
}
