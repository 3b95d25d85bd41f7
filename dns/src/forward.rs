//! Forwarding names outside the zone to the upstream resolvers, with a cache.
//!
//! Each upstream in turn gets the client's query under a fresh random ID, from a fresh
//! connected UDP socket (a random source port), and `timeout` to answer; a timeout, an
//! unreadable answer, SERVFAIL or REFUSED moves on to the next one. When all fail the client
//! gets SERVFAIL at once rather than waiting for its own timeout. A truncated UDP answer for a
//! TCP client is asked again over TCP.

use crate::cache::{Cache, Key};
use crate::message::{self, Query, rcode};
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

#[derive(Debug)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    cache: Mutex<Cache>,
    /// Upstream exchanges that timed out, failed, or answered SERVFAIL/REFUSED.
    pub upstream_failures: std::sync::atomic::AtomicU64,
    /// Queries being resolved upstream now (UDP clients; TCP is bounded by its connections).
    pub in_flight: std::sync::atomic::AtomicUsize,
    /// Queries answered SERVFAIL at once because [`MAX_IN_FLIGHT`] were already upstream.
    pub overflow: std::sync::atomic::AtomicU64,
}

/// Cache entries per forwarder.
pub const CACHE_ENTRIES: usize = 10_000;

/// Forwarded UDP queries in flight at most. Each holds a socket and a task until its upstreams
/// answer or time out; beyond this a slow upstream would cost a file descriptor and a buffer
/// per query without bound (3000 queries took 2900 fds and 200 MB before the cap).
pub const MAX_IN_FLIGHT: usize = 1024;

/// One of [`MAX_IN_FLIGHT`] places, given back when dropped; owned, so it can move into the
/// task that resolves the query.
pub struct Slot(std::sync::Arc<Forwarder>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration, cache_entries: usize) -> Forwarder {
        Forwarder {
            upstreams,
            timeout,
            cache: Mutex::new(Cache::new(cache_entries)),
            upstream_failures: Default::default(),
            in_flight: Default::default(),
            overflow: Default::default(),
        }
    }

    /// A place for one more query upstream, or None (counted) when all are taken.
    pub fn slot(this: &std::sync::Arc<Forwarder>) -> Option<Slot> {
        use std::sync::atomic::Ordering::Relaxed;
        if this.in_flight.fetch_add(1, Relaxed) >= MAX_IN_FLIGHT {
            this.in_flight.fetch_sub(1, Relaxed);
            this.overflow.fetch_add(1, Relaxed);
            return None;
        }
        Some(Slot(this.clone()))
    }

    pub fn has_upstreams(&self) -> bool {
        !self.upstreams.is_empty()
    }

    fn key(q: &Query) -> Key {
        Key {
            name: q.lower_name().to_vec(),
            qtype: q.qtype,
            qclass: q.qclass,
            dnssec_ok: q.edns.is_some_and(|e| e.dnssec_ok),
        }
    }

    /// A cached answer, if any (no I/O).
    pub fn cached(&self, q: &Query) -> Option<Vec<u8>> {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        c.get(&Self::key(q), q.id, Instant::now())
    }

    /// Resolves `q` (whose bytes are `msg`) upstream; always returns a response for the client.
    pub async fn resolve(&self, q: &Query, msg: &[u8], tcp: bool) -> Vec<u8> {
        if let Some(hit) = self.cached(q) {
            return hit;
        }
        for upstream in &self.upstreams {
            let got = tokio::time::timeout(self.timeout, ask(*upstream, msg, q, tcp)).await;
            let fail = || {
                self.upstream_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            };
            let resp = match got {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::debug!(%upstream, "upstream failed: {e}");
                    fail();
                    continue;
                }
                Err(_) => {
                    tracing::debug!(%upstream, "upstream timed out");
                    fail();
                    continue;
                }
            };
            if matches!(
                message::rcode_of(&resp),
                Some(rcode::SERVFAIL | rcode::REFUSED)
            ) {
                fail();
                continue;
            }
            let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            c.put(Self::key(q), &resp, Instant::now());
            return resp;
        }
        let mut out = Vec::new();
        message::error_response(&mut out, q.id, Some(q), rcode::SERVFAIL);
        out
    }
}

/// One exchange with one upstream; the answer comes back under the client's ID.
async fn ask(upstream: SocketAddr, msg: &[u8], q: &Query, tcp: bool) -> io::Result<Vec<u8>> {
    let id = random_id();
    let mut query = msg.to_vec();
    query[..2].copy_from_slice(&id.to_be_bytes());
    let local: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local).await?;
    sock.connect(upstream).await?;
    sock.send(&query).await?;
    let mut buf = vec![0u8; 65_535];
    let resp = loop {
        let n = sock.recv(&mut buf).await?;
        let r = &buf[..n];
        // only an answer to this question under this ID counts (spoofed or late ones don't)
        if is_answer_to(r, id, q) {
            break r.to_vec();
        }
    };
    if tcp && resp[2] & 0x02 != 0 {
        return ask_tcp(upstream, &query, id, q).await.map(|mut r| {
            r[..2].copy_from_slice(&q.id.to_be_bytes());
            r
        });
    }
    let mut resp = resp;
    resp[..2].copy_from_slice(&q.id.to_be_bytes());
    Ok(resp)
}

async fn ask_tcp(upstream: SocketAddr, query: &[u8], id: u16, q: &Query) -> io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(upstream).await?;
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    s.write_all(&framed).await?;
    let len = s.read_u16().await?;
    let mut resp = vec![0u8; usize::from(len)];
    s.read_exact(&mut resp).await?;
    // checked like a UDP answer before it is relayed or cached (RFC 5452)
    if !is_answer_to(&resp, id, q) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a TCP answer with another ID or question",
        ));
    }
    Ok(resp)
}

/// Whether `resp` answers the query `q` sent upstream under `id`: a response (QR), with that
/// ID and the same question (RFC 5452). Anything else is neither relayed nor cached.
pub fn is_answer_to(resp: &[u8], id: u16, q: &Query) -> bool {
    resp.len() >= message::HEADER_LEN
        && message::header_id(resp) == Some(id)
        && resp[2] & 0x80 != 0
        && same_question(resp, q)
}

/// Whether a response's question is the query's (name case-insensitively, type, class).
fn same_question(resp: &[u8], q: &Query) -> bool {
    let name = q.name();
    let at = message::HEADER_LEN;
    let Some(got) = resp.get(at..at + name.len() + 4) else {
        return false;
    };
    got[..name.len()].eq_ignore_ascii_case(name)
        && got[name.len()..name.len() + 2] == q.qtype.to_be_bytes()
        && got[name.len() + 2..] == q.qclass.to_be_bytes()
}

fn random_id() -> u16 {
    use std::hash::BuildHasher;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    // a counter hashed with keys the OS seeded once per process: distinct and unpredictable
    static KEYS: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let keys = KEYS.get_or_init(std::collections::hash_map::RandomState::new);
    keys.hash_one(NEXT.fetch_add(1, Relaxed)) as u16
}
