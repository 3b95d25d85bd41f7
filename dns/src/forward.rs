//! Forwarding names outside the zone to the upstream resolvers, with a cache.
//!
//! Each upstream in turn gets the client's query under a fresh random ID and `timeout` to
//! answer (the query is sent again every fifth of it, up to four times); a timeout, an
//! unreadable answer, SERVFAIL or REFUSED moves on to the next one. When all fail the client
//! gets SERVFAIL at once rather than waiting for its own timeout. A truncated UDP answer for a
//! TCP client is asked again over TCP.
//!
//! Queries go out over a small pool of connected UDP sockets per upstream ([`UdpPool`]: a
//! socket per query cost a bind, a connect, a close and a 64 KiB buffer each); each socket has
//! its own random source port and is replaced by a fresh one (a new random port) after
//! [`QUERIES_PER_SOCKET`] queries, so the port stays unpredictable as RFC 5452 asks, beside the
//! random ID.

use crate::cache::{Cache, Key};
use crate::message::{self, Query, rcode};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

#[derive(Debug)]
pub struct Forwarder {
    /// One pool per upstream, in the order they are asked.
    pools: Vec<UdpPool>,
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
            pools: upstreams.into_iter().map(UdpPool::new).collect(),
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
        !self.pools.is_empty()
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
        // retransmissions every fifth of the timeout (100 ms to 1 s)
        let retransmit =
            (self.timeout / 5).clamp(Duration::from_millis(100), Duration::from_secs(1));
        for pool in &self.pools {
            let upstream = pool.upstream;
            let got = tokio::time::timeout(self.timeout, ask(pool, msg, q, tcp, retransmit)).await;
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
async fn ask(
    pool: &UdpPool,
    msg: &[u8],
    q: &Query,
    tcp: bool,
    retransmit: Duration,
) -> io::Result<Vec<u8>> {
    let (resp, id) = pool.exchange(msg, q, retransmit).await?;
    if tcp && resp[2] & 0x02 != 0 {
        let mut query = msg.to_vec();
        query[..2].copy_from_slice(&id.to_be_bytes());
        return ask_tcp(pool.upstream, &query, id, q).await.map(|mut r| {
            r[..2].copy_from_slice(&q.id.to_be_bytes());
            r
        });
    }
    let mut resp = resp;
    resp[..2].copy_from_slice(&q.id.to_be_bytes());
    Ok(resp)
}

/// Sockets per upstream.
const SOCKETS: usize = 8;
/// Times a query unanswered after each retransmission interval is sent again.
const RETRANSMITS: u32 = 4;
/// Receive buffer of each (bytes; the kernel caps it at net.core.rmem_max).
const RECV_BUFFER: usize = 4 << 20;
/// Queries one socket carries before a fresh socket (a new random port) takes its place.
pub const QUERIES_PER_SOCKET: u32 = 2048;

/// Long-lived connected UDP sockets to one upstream. A query takes the next socket, an ID not
/// waiting on it, and a oneshot that the socket's reader task fills with the answer.
#[derive(Debug)]
pub struct UdpPool {
    upstream: SocketAddr,
    slots: Vec<Mutex<Option<Arc<Conn>>>>,
    next: AtomicUsize,
}

#[derive(Debug)]
struct Conn {
    sock: UdpSocket,
    waiting: Mutex<HashMap<u16, Waiter>>,
    /// Queries sent; at [`QUERIES_PER_SOCKET`] the socket is retired.
    used: AtomicU32,
    /// No new query takes it; its reader ends when nothing waits.
    retired: AtomicBool,
}

#[derive(Debug)]
struct Waiter {
    tx: tokio::sync::oneshot::Sender<Vec<u8>>,
    /// The question section sent (name, type, class): an answer must repeat it (the name in
    /// any case).
    question: Box<[u8]>,
}

impl UdpPool {
    fn new(upstream: SocketAddr) -> UdpPool {
        UdpPool {
            upstream,
            slots: (0..SOCKETS).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// A socket for one more query: the slot's, or a fresh one when it has none or it is
    /// worn out.
    async fn conn(&self) -> io::Result<Arc<Conn>> {
        let i = self.next.fetch_add(1, Relaxed) % self.slots.len();
        {
            let slot = self.slots[i].lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = slot.as_ref()
                && c.used.fetch_add(1, Relaxed) < QUERIES_PER_SOCKET
            {
                return Ok(c.clone());
            }
        }
        let local: SocketAddr = if self.upstream.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(local).await?;
        // answers to up to MAX_IN_FLIGHT queries may wait on few sockets while the reader
        // is not scheduled: room for them (the default 208 KiB overflowed under load)
        let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(RECV_BUFFER);
        sock.connect(self.upstream).await?;
        let fresh = Arc::new(Conn {
            sock,
            waiting: Mutex::new(HashMap::new()),
            used: AtomicU32::new(1),
            retired: AtomicBool::new(false),
        });
        tokio::spawn(read_answers(fresh.clone()));
        let old = self.slots[i]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(fresh.clone());
        if let Some(old) = old {
            old.retired.store(true, Relaxed);
        }
        Ok(fresh)
    }

    /// Sends `msg` under a fresh random ID and waits for the answer to it (the caller's
    /// timeout bounds the wait). Returns the answer and the ID it was asked under.
    async fn exchange(
        &self,
        msg: &[u8],
        q: &Query,
        retransmit: Duration,
    ) -> io::Result<(Vec<u8>, u16)> {
        let conn = self.conn().await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let question = question_of(q);
        let id = {
            let mut waiting = conn.waiting.lock().unwrap_or_else(|p| p.into_inner());
            let mut id = random_id();
            while waiting.contains_key(&id) {
                id = random_id();
            }
            waiting.insert(id, Waiter { tx, question });
            id
        };
        // forgets the ID if this query is dropped (timed out) before its answer came; once
        // the answer came, the reader has removed it, and the ID may already be another's
        let mut forget = Forget(&conn, id, true);
        let mut query = msg.to_vec();
        query[..2].copy_from_slice(&id.to_be_bytes());
        conn.sock.send(&query).await?;
        let mut rx = rx;
        let mut resent = 0;
        loop {
            tokio::select! {
                got = &mut rx => {
                    forget.2 = false;
                    return got.map(|resp| (resp, id)).map_err(|_| {
                        io::Error::new(io::ErrorKind::ConnectionAborted, "the upstream socket failed")
                    });
                }
                // a query or its answer lost on the way (a busy upstream's full socket):
                // sent again, as resolvers do, before the upstream's timeout gives up
                _ = tokio::time::sleep(retransmit), if resent < RETRANSMITS => {
                    resent += 1;
                    conn.sock.send(&query).await?;
                }
            }
        }
    }
}

/// Removes a query's waiter when the query ends without an answer (`.2`: still waiting).
struct Forget<'a>(&'a Conn, u16, bool);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if self.2 {
            self.0
                .waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.1);
        }
    }
}

/// The question section a query was sent with, as an answer must repeat it (name compared
/// case-insensitively).
fn question_of(q: &Query) -> Box<[u8]> {
    [q.name(), &type_class(q)].concat().into_boxed_slice()
}

/// A socket's reader: hands each answer to the query waiting under its ID when it repeats
/// that query's question (RFC 5452; spoofed, late and stray datagrams are dropped). Ends on
/// a socket error (the waiting queries fail over to the next upstream) or once the socket is
/// retired and nothing waits on it.
async fn read_answers(conn: Arc<Conn>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let got = tokio::time::timeout(Duration::from_secs(1), conn.sock.recv(&mut buf)).await;
        let n = match got {
            Err(_) => {
                let idle = conn
                    .waiting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_empty();
                if idle && conn.retired.load(Relaxed) {
                    return;
                }
                continue;
            }
            Ok(Err(e)) => {
                tracing::debug!("upstream socket: {e}");
                // an ICMP error (port unreachable) on a connected socket: the queries waiting
                // on it fail now rather than at their timeout
                conn.waiting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
                if conn.retired.load(Relaxed) {
                    return;
                }
                continue;
            }
            Ok(Ok(n)) => n,
        };
        let r = &buf[..n];
        let Some(id) = message::header_id(r) else {
            continue;
        };
        let mut waiting = conn.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let answers = waiting.get(&id).is_some_and(|w| {
            let (name, type_class) = w.question.split_at(w.question.len() - 4);
            is_response(r, id) && repeats_question(r, name, type_class)
        });
        if answers && let Some(w) = waiting.remove(&id) {
            let _ = w.tx.send(r.to_vec());
        }
    }
}

/// Whether a response's question section is `name` (in any case) then `type_class` (the
/// question's type and class, 4 bytes).
fn repeats_question(resp: &[u8], name: &[u8], type_class: &[u8]) -> bool {
    let at = message::HEADER_LEN;
    resp.get(at..at + name.len() + type_class.len())
        .is_some_and(|got| {
            let (n, tc) = got.split_at(name.len());
            n.eq_ignore_ascii_case(name) && tc == type_class
        })
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
    is_response(resp, id) && repeats_question(resp, q.name(), &type_class(q))
}

/// A response (QR set) under `id`.
fn is_response(resp: &[u8], id: u16) -> bool {
    resp.len() >= message::HEADER_LEN && message::header_id(resp) == Some(id) && resp[2] & 0x80 != 0
}

/// A question's type and class as they stand in the message.
fn type_class(q: &Query) -> [u8; 4] {
    let [t0, t1] = q.qtype.to_be_bytes();
    let [c0, c1] = q.qclass.to_be_bytes();
    [t0, t1, c0, c1]
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// A query for `name` A, as a client sends it.
    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        m.extend_from_slice(&message::name_from_text(name).expect("name"));
        m.extend_from_slice(&[0, 1, 0, 1]);
        m
    }

    /// The query turned into an answer (QR set) with another question name when `spoof`.
    fn answer(q: &[u8], id: u16, spoof: bool) -> Vec<u8> {
        let mut a = q.to_vec();
        a[..2].copy_from_slice(&id.to_be_bytes());
        a[2] |= 0x80;
        if spoof {
            a[message::HEADER_LEN + 1] ^= 0x01; // one letter of the name differs
        }
        a
    }

    /// A fake upstream on loopback: first a spoofed answer (right ID, other question) and a
    /// stray one (other ID), then the real answer; records each query's source port and ID.
    async fn upstream() -> (SocketAddr, Arc<Mutex<Vec<(u16, u16)>>>) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = sock.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let q = buf[..n].to_vec();
                let id = message::header_id(&q).expect("id");
                log.lock().expect("log").push((from.port(), id));
                let _ = sock.send_to(&answer(&q, id, true), from).await;
                let _ = sock
                    .send_to(&answer(&q, id.wrapping_add(1), false), from)
                    .await;
                let _ = sock.send_to(&answer(&q, id, false), from).await;
            }
        });
        (addr, seen)
    }

    #[tokio::test]
    async fn answers_are_matched_by_id_and_question_and_sockets_are_pooled_then_renewed() {
        let (addr, seen) = upstream().await;
        let fwd = Arc::new(Forwarder::new(vec![addr], Duration::from_secs(2), 0));
        // 200 at once: each gets its own answer (not the spoofed one, not another's)
        let mut tasks = Vec::new();
        for i in 0..200u16 {
            let fwd = fwd.clone();
            tasks.push(tokio::spawn(async move {
                let name = format!("n{i}.example.org");
                let msg = query(1000 + i, &name);
                let q = message::parse_query(&msg).expect("query");
                let resp = fwd.resolve(&q, &msg, false).await;
                (i, name, resp)
            }));
        }
        for t in tasks {
            let (i, name, resp) = t.await.expect("task");
            assert_eq!(
                message::header_id(&resp),
                Some(1000 + i),
                "the client's ID back"
            );
            assert_eq!(message::rcode_of(&resp), Some(0), "{name}: not SERVFAIL");
            let q = message::parse_query(&query(0, &name)).expect("q");
            assert!(
                repeats_question(&resp, q.name(), &type_class(&q)),
                "{name}: its own answer"
            );
        }
        let ports: HashSet<u16> = seen.lock().expect("seen").iter().map(|s| s.0).collect();
        assert!(
            ports.len() <= SOCKETS,
            "200 queries went out from {} ports, the pool has {SOCKETS}",
            ports.len()
        );
        // IDs are random, not the clients'
        let ids: HashSet<u16> = seen.lock().expect("seen").iter().map(|s| s.1).collect();
        assert!(ids.len() > 190, "only {} distinct upstream IDs", ids.len());
        assert!(!(1000..1200).all(|i| ids.contains(&i)));
        // past QUERIES_PER_SOCKET per socket, fresh sockets (new ports) take over
        let total = QUERIES_PER_SOCKET as usize * SOCKETS + 400;
        for i in 0..total {
            let msg = query(7, &format!("r{i}.example.org"));
            let q = message::parse_query(&msg).expect("query");
            let resp = fwd.resolve(&q, &msg, false).await;
            assert_eq!(message::rcode_of(&resp), Some(0));
        }
        let ports: HashSet<u16> = seen.lock().expect("seen").iter().map(|s| s.0).collect();
        assert!(
            ports.len() > SOCKETS,
            "{} queries from only {} ports: sockets are never renewed",
            total + 200,
            ports.len()
        );
    }

    #[tokio::test]
    async fn an_unreachable_upstream_fails_over_at_once() {
        // a port nobody listens on: the ICMP error ends the wait long before the timeout
        let dead = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = dead.local_addr().expect("addr");
        drop(dead);
        let fwd = Forwarder::new(vec![addr], Duration::from_secs(60), 0);
        let msg = query(9, "x.example.org");
        let q = message::parse_query(&msg).expect("query");
        let t = Instant::now();
        let resp = fwd.resolve(&q, &msg, false).await;
        assert_eq!(message::rcode_of(&resp), Some(rcode::SERVFAIL));
        println!("SERVFAIL after {:?}", t.elapsed());
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "SERVFAIL after {:?}: the upstream's timeout (60 s), not its ICMP error",
            t.elapsed()
        );
    }
}
