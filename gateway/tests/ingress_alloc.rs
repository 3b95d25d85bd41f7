//! Allocations per proxied HTTPS request, reported: keep-alive GETs over TLS through the
//! in-process ingress to a backend on loopback. Every thread's allocations count except the
//! client's and the backend's (threads of their own that opt out), so the figure is the
//! ingress's: TLS, hyper on both sides, routing, balancing and the forwarding headers. The
//! bound is a guard against a regression (a clone or a format! too many per request).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};
use vxgate::registry::Registry;

mod common;

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The client's and the backend's threads do not count.
    static EXCLUDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn counted() -> bool {
    !EXCLUDED.try_with(|e| e.get()).unwrap_or(true)
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
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
        if counted() {
            ALLOCS.fetch_add(1, SeqCst);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BODY: &[u8] = &[b'x'; 1024];

/// A keep-alive backend on a thread of its own: 200 and 1 KiB to every request.
fn backend() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        EXCLUDED.with(|e| e.set(true));
        for s in l.incoming() {
            let Ok(s) = s else { return };
            std::thread::spawn(move || {
                EXCLUDED.with(|e| e.set(true));
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                let mut w = s;
                let mut line = String::new();
                loop {
                    // a request head (these GETs have no body)
                    loop {
                        line.clear();
                        match r.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => {}
                        }
                    }
                    // one write: a second one would wait for the ACK of the first (Nagle)
                    let mut resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n",
                        BODY.len()
                    )
                    .into_bytes();
                    resp.extend_from_slice(BODY);
                    if w.write_all(&resp).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// `n` keep-alive GETs over one TLS connection, on a thread that does not count.
fn client(addr: SocketAddr, ca: &Path, n: usize) -> std::thread::JoinHandle<usize> {
    let cfg = common::tls_client(ca);
    std::thread::spawn(move || {
        EXCLUDED.with(|e| e.set(true));
        let name = rustls::pki_types::ServerName::try_from("web.example.com").expect("name");
        let conn = rustls::ClientConnection::new(cfg, name).expect("client");
        let tcp = std::net::TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut tls = BufReader::new(rustls::StreamOwned::new(conn, tcp));
        let mut ok = 0;
        let mut line = String::new();
        let mut body = vec![0u8; BODY.len()];
        for _ in 0..n {
            tls.get_mut()
                .write_all(b"GET /x HTTP/1.1\r\nHost: web.example.com\r\n\r\n")
                .expect("write");
            let mut status = 0;
            let mut len = 0;
            loop {
                line.clear();
                tls.read_line(&mut line).expect("read");
                if line == "\r\n" {
                    break;
                }
                if let Some(s) = line.strip_prefix("HTTP/1.1 ") {
                    status = s[..3].parse().unwrap_or(0);
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            assert_eq!(len, BODY.len(), "status {status}");
            tls.read_exact(&mut body).expect("body");
            ok += usize::from(status == 200 && body == BODY);
        }
        ok
    })
}

/// Allocations per keep-alive HTTPS request through the ingress: 23.9 measured, plus a margin
/// below one allocation. (25.9 before; the proxy's future boxed: +1; the backends chosen as
/// indices and the service's name no longer copied to look it up: -3.)
const MAX_PER_REQUEST: f64 = 24.5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_per_proxied_request_are_few() {
    let state = tempfile::tempdir().expect("tmp");
    let registry = Arc::new(Registry::new("app"));
    let b = backend();
    registry
        .add(common::container("web-1", "web", b.ip(), b.port()))
        .expect("add");
    let (ingress, stop, mut tasks) = common::start_ingress(state.path(), &registry).await;
    let (addr, ca) = (ingress.listen[0], state.path().join("tls/self-signed.crt"));
    // warm: the TLS connection, the backend connection in the pool, lazy first-use setup
    let warm = client(addr, &ca, 200);
    assert_eq!(
        tokio::task::spawn_blocking(move || warm.join().expect("client"))
            .await
            .expect("join"),
        200
    );
    const N: usize = 2_000;
    let started = Instant::now();
    ALLOCS.store(0, SeqCst);
    let run = client(addr, &ca, N);
    let ok = tokio::task::spawn_blocking(move || run.join().expect("client"))
        .await
        .expect("join");
    let allocs = ALLOCS.load(SeqCst);
    assert_eq!(ok, N, "every request answered 200 with the backend's body");
    // a new TLS connection is part of the count: its share is small over N requests
    let per_request = allocs as f64 / N as f64;
    eprintln!(
        "ingress: {allocs} allocations for {N} keep-alive HTTPS requests = {per_request:.1} per request ({:?})",
        started.elapsed()
    );
    // measured 23.9 (debug and release, 2,000 requests); the bound is that plus a margin,
    // so a change that adds an allocation per request fails here
    assert!(
        per_request <= MAX_PER_REQUEST,
        "{per_request:.1} allocations per proxied request (at most {MAX_PER_REQUEST})"
    );
    stop.send(true).expect("stop");
    while tokio::time::timeout(Duration::from_secs(15), tasks.join_next())
        .await
        .ok()
        .flatten()
        .is_some()
    {}
}
