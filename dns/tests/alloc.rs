//! Allocations per forwarded query, counted by a global allocator that wraps the system's:
//! a cache miss (the pooled upstream exchange) and a cache hit. Only the test's thread is
//! counted (the forwarder and its socket readers run there); the fake upstream has a thread of
//! its own. The counts are printed, and
//! bounded so that a change that allocates more per query fails here.

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
}

fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
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
    COUNTING.with(|c| c.set(true));
    let before = ALLOCS.load(Relaxed);
    for msg in queries {
        let q = message::parse_query(msg).expect("query");
        let resp = fwd.resolve(&q, msg, false).await;
        assert_eq!(message::rcode_of(&resp), Some(0));
    }
    COUNTING.with(|c| c.set(false));
    ALLOCS.load(Relaxed) - before
}

#[test]
fn allocations_per_forwarded_query() {
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
        // today: a miss allocates the query copy, the waiter's oneshot and question, the
        // answer, the cache entry (key, bytes, record offsets) and parse results; a hit the
        // key and the answer copy
        assert!(per_miss <= 16.0, "{per_miss:.1} allocations per cache miss");
        assert!(per_hit <= 4.0, "{per_hit:.1} allocations per cache hit");
    });
}
