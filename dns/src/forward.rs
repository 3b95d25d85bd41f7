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
//!
//! A UDP client's query takes no task of its own ([`Forwarder::forward`]): it waits as a
//! [`Pending`] in the upstream socket's table, and that socket's reader, which already reads
//! the answers, also resends it, moves it to the next upstream on a timeout, SERVFAIL or
//! REFUSED, and hands the answer (or the final SERVFAIL) to the client's [`Deliver`]. Its
//! timers are checked every [`TICK`] while anything waits. TCP clients, whose connection
//! task waits anyway, go through [`Forwarder::resolve`].

use crate::cache::{Key, KeyRef, Sharded};
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
    cache: Sharded,
    /// Upstream exchanges that timed out, failed, or answered SERVFAIL/REFUSED.
    pub upstream_failures: std::sync::atomic::AtomicU64,
    /// Queries being resolved upstream now (UDP clients; TCP is bounded by its connections).
    pub in_flight: std::sync::atomic::AtomicUsize,
    /// Queries answered SERVFAIL at once because [`MAX_IN_FLIGHT`] were already upstream.
    pub overflow: std::sync::atomic::AtomicU64,
    /// Forwarded queries answered from the cache, and those that had to go upstream.
    pub cache_hits: std::sync::atomic::AtomicU64,
    pub cache_misses: std::sync::atomic::AtomicU64,
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

/// Where a UDP client's forwarded answer goes. Called once per query, by the task that read
/// the answer upstream (or found the last upstream failing), with the response under the
/// client's ID; `query` is the query as it was sent upstream.
pub trait Deliver: Send + Sync {
    fn deliver(&self, to: SocketAddr, q: &Query, query: &[u8], resp: Vec<u8>, since: Instant);
}

/// A UDP client's query upstream, carried by the reader of the socket it was sent on.
struct Pending {
    q: Box<Query>,
    /// The client's query under the upstream ID.
    wire: Vec<u8>,
    to: SocketAddr,
    reply: Arc<dyn Deliver>,
    /// When the client's query came.
    since: Instant,
    /// The upstream being asked (an index into the pools).
    upstream: usize,
    /// When this upstream is given up on.
    deadline: Instant,
    /// When the query is sent again.
    resend: Instant,
    resent: u32,
    /// Its place among [`MAX_IN_FLIGHT`]; the forwarder it goes through.
    slot: Slot,
}

/// How often a socket's reader checks the timers of the queries waiting on it.
pub const TICK: Duration = Duration::from_millis(10);

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration, cache_entries: usize) -> Forwarder {
        Forwarder {
            pools: upstreams.into_iter().map(UdpPool::new).collect(),
            timeout,
            cache: Sharded::new(cache_entries),
            upstream_failures: Default::default(),
            in_flight: Default::default(),
            overflow: Default::default(),
            cache_hits: Default::default(),
            cache_misses: Default::default(),
        }
    }

    /// Each upstream, in order, with the time its answers took.
    pub fn upstreams(&self) -> impl Iterator<Item = (SocketAddr, &vxgate_metrics::Histogram)> {
        self.pools.iter().map(|p| (p.upstream, &p.latency))
    }

    /// A place for one more query upstream, or None (counted) when all are taken.
    pub fn slot(this: &std::sync::Arc<Forwarder>) -> Option<Slot> {
        use std::sync::atomic::Ordering::Relaxed;
        // never above the cap, not even for an instant (an add then a take-back let another
        // thread see MAX_IN_FLIGHT + 1)
        let taken = this
            .in_flight
            .fetch_update(Relaxed, Relaxed, |n| (n < MAX_IN_FLIGHT).then_some(n + 1));
        if taken.is_err() {
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

    /// The key of `q`, borrowed from it: what a lookup takes.
    fn key_ref(q: &Query) -> KeyRef<'_> {
        KeyRef {
            name: q.lower_name(),
            qtype: q.qtype,
            qclass: q.qclass,
            dnssec_ok: q.edns.is_some_and(|e| e.dnssec_ok),
        }
    }

    /// A cached answer, if any (no I/O).
    pub fn cached(&self, q: &Query) -> Option<Vec<u8>> {
        self.cache.get(&Self::key_ref(q), q.id, Instant::now())
    }

    /// A cached answer written into `out` (a reused buffer), if there is one (no I/O, and no
    /// allocation once `out` is big enough).
    /// Counted as a cache hit or miss.
    pub fn cached_into(&self, q: &Query, out: &mut Vec<u8>) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let hit = self
            .cache
            .get_into(&Self::key_ref(q), q.id, Instant::now(), out);
        if hit {
            self.cache_hits.fetch_add(1, Relaxed);
        } else {
            self.cache_misses.fetch_add(1, Relaxed);
        }
        hit
    }

    /// Retransmissions every fifth of the timeout (100 ms to 1 s).
    fn retransmit(&self) -> Duration {
        (self.timeout / 5).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// Sends a UDP client's query `msg` (parsed: `q`, not in the cache) upstream, holding
    /// `slot`; the answer or the final SERVFAIL goes to `reply` for `to`. Spawns nothing:
    /// the query waits in the upstream socket's table.
    pub fn forward(
        slot: Slot,
        q: Box<Query>,
        msg: &[u8],
        to: SocketAddr,
        reply: Arc<dyn Deliver>,
        since: Instant,
    ) {
        // the timers are set when it is sent
        let now = Instant::now();
        send_pending(Pending {
            q,
            wire: msg.to_vec(),
            to,
            reply,
            since,
            upstream: 0,
            deadline: now,
            resend: now,
            resent: 0,
            slot,
        });
    }

    /// Resolves `q` (whose bytes are `msg`) upstream; always returns a response for the client.
    pub async fn resolve(&self, q: &Query, msg: &[u8], tcp: bool) -> Vec<u8> {
        let mut out = Vec::new();
        self.resolve_into(q, msg, tcp, &mut out).await;
        out
    }

    /// [`Forwarder::resolve`] into `out` (a reused buffer): a cache hit allocates nothing.
    /// (The cache is looked at again, uncounted: the caller's look was counted.)
    pub async fn resolve_into(&self, q: &Query, msg: &[u8], tcp: bool, out: &mut Vec<u8>) {
        if self
            .cache
            .get_into(&Self::key_ref(q), q.id, Instant::now(), out)
        {
            return;
        }
        let retransmit = self.retransmit();
        for pool in &self.pools {
            let upstream = pool.upstream;
            let asked = Instant::now();
            let got = tokio::time::timeout(self.timeout, ask(pool, msg, q, tcp, retransmit)).await;
            if let Ok(Ok(_)) = &got {
                pool.latency.observe(asked.elapsed());
            }
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
            self.cache.put(Self::key(q), &resp, Instant::now());
            *out = resp;
            return;
        }
        message::error_response(out, q.id, Some(q), rcode::SERVFAIL);
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
    /// Time from sending a query to its answer (the last send, with retransmissions).
    latency: vxgate_metrics::Histogram,
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
    /// The reader has ended (retired, nothing waiting): a query must take another socket.
    /// Set and read under `waiting`'s lock, so that no query enters a table nobody reads.
    ended: AtomicBool,
    /// Tells the reader that a [`Pending`] came into an empty table: its timers need ticks.
    wake: tokio::sync::Notify,
}

enum Waiter {
    /// A task waits ([`Forwarder::resolve`]).
    Task {
        tx: tokio::sync::oneshot::Sender<Vec<u8>>,
        /// The question section sent (name, type, class): an answer must repeat it (the name
        /// in any case).
        question: Box<[u8]>,
    },
    /// A UDP client's query, carried by the reader ([`Forwarder::forward`]).
    Reply(Pending),
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Waiter::Task { .. } => "Task",
            Waiter::Reply(_) => "Reply",
        })
    }
}

impl Waiter {
    /// Whether `r` answers this query, sent under `id` (RFC 5452).
    fn answered_by(&self, r: &[u8], id: u16) -> bool {
        is_response(r, id)
            && match self {
                Waiter::Task { question, .. } => {
                    let (name, type_class) = question.split_at(question.len() - 4);
                    repeats_question(r, name, type_class)
                }
                Waiter::Reply(p) => repeats_question(r, p.q.name(), &type_class(&p.q)),
            }
    }
}

impl Conn {
    /// The table of waiting queries, unless the reader has ended (then the caller takes
    /// another socket).
    fn table(&self) -> Option<std::sync::MutexGuard<'_, HashMap<u16, Waiter>>> {
        let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        (!self.ended.load(Relaxed)).then_some(waiting)
    }

    /// Sends a datagram now, without waiting: straight to the socket (tokio's `try_send`
    /// refuses on a fresh socket whose readiness the reactor has not reported yet, which lost
    /// every first query on a new socket to a retransmission). A full buffer drops it.
    fn send_now(&self, datagram: &[u8]) {
        let _ = socket2::SockRef::from(&self.sock).send(datagram);
    }
}

/// A fresh random ID not waiting in `waiting`.
fn free_id(waiting: &HashMap<u16, Waiter>) -> u16 {
    let mut id = random_id();
    while waiting.contains_key(&id) {
        id = random_id();
    }
    id
}

/// Sends a pending query to its upstream (or the next one that takes it), or gives the
/// client SERVFAIL when there is none left.
fn send_pending(mut p: Pending) {
    let fwd = p.slot.0.clone();
    while let Some(pool) = fwd.pools.get(p.upstream) {
        let conn = match pool.conn() {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(upstream = %pool.upstream, "no socket to the upstream: {e}");
                fwd.upstream_failures.fetch_add(1, Relaxed);
                p.upstream += 1;
                continue;
            }
        };
        let Some(mut waiting) = conn.table() else {
            continue; // retired and its reader gone since the pool handed it out
        };
        let now = Instant::now();
        p.deadline = now + fwd.timeout;
        p.resend = now + fwd.retransmit();
        p.resent = 0;
        let id = free_id(&waiting);
        p.wire[..2].copy_from_slice(&id.to_be_bytes());
        // a full socket buffer loses it like the network would: the resend covers it
        conn.send_now(&p.wire);
        let was_idle = waiting.is_empty();
        waiting.insert(id, Waiter::Reply(p));
        drop(waiting);
        if was_idle {
            conn.wake.notify_one();
        }
        return;
    }
    let mut out = Vec::new();
    message::error_response(&mut out, p.q.id, Some(&p.q), rcode::SERVFAIL);
    p.reply.deliver(p.to, &p.q, &p.wire, out, p.since);
}

/// The upstream's answer `resp` to a pending query: to the client (and the cache), or on
/// to the next upstream when it is SERVFAIL or REFUSED.
fn answer_pending(p: Pending, mut resp: Vec<u8>) {
    let fwd = &p.slot.0;
    if let Some(pool) = fwd.pools.get(p.upstream) {
        // sent at the deadline less the timeout (retransmissions keep the deadline)
        let sent = p.deadline.checked_sub(fwd.timeout).unwrap_or(p.since);
        pool.latency.observe(sent.elapsed());
    }
    if matches!(
        message::rcode_of(&resp),
        Some(rcode::SERVFAIL | rcode::REFUSED)
    ) {
        fwd.upstream_failures.fetch_add(1, Relaxed);
        return fail_over(p);
    }
    fwd.cache.put(Forwarder::key(&p.q), &resp, Instant::now());
    resp[..2].copy_from_slice(&p.q.id.to_be_bytes());
    p.reply.deliver(p.to, &p.q, &p.wire, resp, p.since);
}

/// A pending query's upstream failed it: on to the next.
fn fail_over(mut p: Pending) {
    p.upstream += 1;
    send_pending(p);
}

impl UdpPool {
    fn new(upstream: SocketAddr) -> UdpPool {
        UdpPool {
            upstream,
            latency: Default::default(),
            slots: (0..SOCKETS).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// A socket for one more query: the slot's, or a fresh one when it has none or it is
    /// worn out.
    fn conn(&self) -> io::Result<Arc<Conn>> {
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
        // bound and connected at once (no I/O waits on either): the reader that carries
        // pending queries can open a socket to the next upstream without awaiting
        let sock = std::net::UdpSocket::bind(local)?;
        // answers to up to MAX_IN_FLIGHT queries may wait on few sockets while the reader
        // is not scheduled: room for them (the default 208 KiB overflowed under load)
        let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(RECV_BUFFER);
        sock.connect(self.upstream)?;
        sock.set_nonblocking(true)?;
        let fresh = Arc::new(Conn {
            sock: UdpSocket::from_std(sock)?,
            waiting: Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
            used: AtomicU32::new(1),
            retired: AtomicBool::new(false),
            ended: AtomicBool::new(false),
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
        let (tx, rx) = tokio::sync::oneshot::channel();
        let question = question_of(q);
        let (conn, id) = loop {
            let conn = self.conn()?;
            // a socket retired, its reader gone, since the pool handed it out: another
            let Some(mut waiting) = conn.table() else {
                continue;
            };
            let id = free_id(&waiting);
            waiting.insert(id, Waiter::Task { tx, question });
            drop(waiting);
            break (conn, id);
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
/// that query's question (RFC 5452; spoofed, late and stray datagrams are dropped), and every
/// [`TICK`] while client queries wait, resends those due and fails over those past their
/// deadline. On a socket error (an ICMP error: the upstream is not there) every query waiting
/// fails over to the next upstream. Ends once the socket is retired and nothing waits on it.
async fn read_answers(conn: Arc<Conn>) {
    let mut buf = vec![0u8; 65_535];
    let mut next_tick = Instant::now() + TICK;
    // whether the table was empty when last looked at (a query entering an empty table wakes
    // the reader, so a stale `true` costs one wake-up, never a missed timer); the first look
    // is the first tick's
    let mut idle = false;
    loop {
        if idle && conn.retired.load(Relaxed) {
            let waiting = conn.waiting.lock().unwrap_or_else(|p| p.into_inner());
            if waiting.is_empty() {
                conn.ended.store(true, Relaxed);
                return;
            }
        }
        let wait = if idle {
            Duration::from_secs(1)
        } else {
            next_tick.saturating_duration_since(Instant::now())
        };
        let got = tokio::select! {
            got = conn.sock.recv(&mut buf) => Some(got),
            _ = tokio::time::sleep(wait) => None,
            _ = conn.wake.notified(), if idle => None,
        };
        idle = match got {
            None => conn
                .waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty(),
            Some(Err(e)) => {
                tracing::debug!("upstream socket: {e}");
                // an ICMP error (port unreachable) on a connected socket: the queries waiting
                // on it fail now rather than at their timeout
                let failed: Vec<Waiter> = conn
                    .waiting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .drain()
                    .map(|(_, w)| w)
                    .collect();
                for w in failed {
                    if let Waiter::Reply(p) = w {
                        p.slot.0.upstream_failures.fetch_add(1, Relaxed);
                        fail_over(p);
                    }
                }
                true
            }
            Some(Ok(n)) => {
                let r = &buf[..n];
                let mut waiting = conn.waiting.lock().unwrap_or_else(|p| p.into_inner());
                let w = message::header_id(r)
                    .filter(|id| waiting.get(id).is_some_and(|w| w.answered_by(r, *id)))
                    .and_then(|id| waiting.remove(&id));
                let empty = waiting.is_empty();
                drop(waiting);
                match w {
                    Some(Waiter::Task { tx, .. }) => {
                        let _ = tx.send(r.to_vec());
                    }
                    Some(Waiter::Reply(p)) => answer_pending(p, r.to_vec()),
                    None => {}
                }
                empty
            }
        };
        let now = Instant::now();
        if now >= next_tick {
            next_tick = now + TICK;
            idle = tick(&conn, now);
        }
    }
}

/// Resends the client queries waiting on `conn` that are due, and fails over those past
/// their deadline. Returns whether nothing waits now.
fn tick(conn: &Conn, now: Instant) -> bool {
    let mut waiting = conn.waiting.lock().unwrap_or_else(|p| p.into_inner());
    let ids: Vec<u16> = waiting
        .iter()
        .filter(|(_, w)| matches!(w, Waiter::Reply(p) if now >= p.deadline))
        .map(|(id, _)| *id)
        .collect();
    let expired: Vec<Waiter> = ids.iter().filter_map(|id| waiting.remove(id)).collect();
    for w in waiting.values_mut() {
        // a task keeps its own time
        if let Waiter::Reply(p) = w
            && now >= p.resend
            && p.resent < RETRANSMITS
        {
            // a query or its answer lost on the way (a busy upstream's full socket): sent
            // again, as resolvers do, before the upstream's timeout gives up
            p.resent += 1;
            p.resend = now + p.slot.0.retransmit();
            conn.send_now(&p.wire);
        }
    }
    let empty = waiting.is_empty();
    drop(waiting);
    for w in expired {
        if let Waiter::Reply(p) = w {
            let fwd = &p.slot.0;
            if let Some(pool) = fwd.pools.get(p.upstream) {
                tracing::debug!(upstream = %pool.upstream, "upstream timed out");
            }
            fwd.upstream_failures.fetch_add(1, Relaxed);
            fail_over(p);
        }
    }
    empty
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

    /// The answers a UDP worker would send, collected.
    #[derive(Default)]
    struct Collect(Mutex<Vec<(SocketAddr, Vec<u8>)>>);

    impl Deliver for Collect {
        fn deliver(&self, to: SocketAddr, _: &Query, _: &[u8], resp: Vec<u8>, _: Instant) {
            self.0.lock().expect("collect").push((to, resp));
        }
    }

    impl Collect {
        /// Waits (10 s at most) until `n` answers came; they, in order.
        async fn wait(&self, n: usize) -> Vec<(SocketAddr, Vec<u8>)> {
            let t = Instant::now();
            loop {
                let got = self.0.lock().expect("collect").clone();
                if got.len() >= n || t.elapsed() > Duration::from_secs(10) {
                    return got;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    /// A fake upstream on loopback that answers each query the way `kind` says; counts them.
    async fn upstream_of(kind: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = sock.local_addr().expect("addr");
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                seen.fetch_add(1, Relaxed);
                let id = message::header_id(&buf[..n]).expect("id");
                let mut a = answer(&buf[..n], id, false);
                match kind {
                    "silent" => continue,
                    "servfail" => a[3] = (a[3] & 0xf0) | rcode::SERVFAIL,
                    _ => {}
                }
                let _ = sock.send_to(&a, from).await;
            }
        });
        (addr, count)
    }

    /// Forwards `msg` for a client at `to` through `fwd`, its answer going to `out`.
    fn forward_to(fwd: &Arc<Forwarder>, msg: &[u8], to: SocketAddr, out: Arc<dyn Deliver>) {
        let q = message::parse_query(msg).expect("query");
        let slot = Forwarder::slot(fwd).expect("a place upstream");
        Forwarder::forward(slot, Box::new(q), msg, to, out, Instant::now());
    }

    /// [`forward_to`] a fresh collector, returned.
    fn forward(fwd: &Arc<Forwarder>, msg: &[u8], to: SocketAddr) -> Arc<Collect> {
        let out = Arc::new(Collect::default());
        forward_to(fwd, msg, to, out.clone());
        out
    }

    #[tokio::test]
    async fn udp_client_queries_take_no_task_and_each_gets_its_own_answer() {
        let (addr, seen) = upstream().await;
        let fwd = Arc::new(Forwarder::new(vec![addr], Duration::from_secs(2), 0));
        let metrics = tokio::runtime::Handle::current().metrics();
        let before = metrics.num_alive_tasks();
        let out = Arc::new(Collect::default());
        let reply: Arc<dyn Deliver> = out.clone();
        let mut peak = 0;
        for i in 0..200u16 {
            let msg = query(1000 + i, &format!("n{i}.example.org"));
            let to = SocketAddr::from(([127, 0, 0, 1], 2000 + i));
            forward_to(&fwd, &msg, to, reply.clone());
            peak = peak.max(metrics.num_alive_tasks() - before);
        }
        // the sockets' readers are the only tasks (a task per query would be 200)
        assert!(peak <= SOCKETS, "{peak} tasks for 200 queries in flight");
        let got = out.wait(200).await;
        assert_eq!(got.len(), 200, "answers");
        for (to, resp) in &got {
            let i = to.port() - 2000;
            assert_eq!(
                message::header_id(resp),
                Some(1000 + i),
                "the client's ID back"
            );
            assert_eq!(message::rcode_of(resp), Some(0), "not SERVFAIL");
            let q = message::parse_query(&query(0, &format!("n{i}.example.org"))).expect("q");
            assert!(
                repeats_question(resp, q.name(), &type_class(&q)),
                "{i}: its own answer"
            );
        }
        assert_eq!(seen.lock().expect("seen").len(), 200, "one send each");
        assert_eq!(fwd.in_flight.load(Relaxed), 0, "every place given back");
        assert_eq!(fwd.upstream_failures.load(Relaxed), 0);
        // each answer's time is kept under its upstream
        let mut text = String::new();
        let (up, latency) = fwd.upstreams().next().expect("one upstream");
        assert_eq!(up, addr);
        latency.render("t", "", &mut text);
        assert!(text.contains("\nt_count 200\n"), "{text}");
        println!("200 forwarded UDP queries: at most {peak} tasks beside the test's");
    }

    #[tokio::test]
    async fn a_udp_client_query_moves_on_past_a_dead_a_silent_and_a_failing_upstream() {
        let dead = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let dead_addr = dead.local_addr().expect("addr");
        drop(dead); // its port answers with an ICMP error
        let (silent, silent_n) = upstream_of("silent").await;
        let (failing, failing_n) = upstream_of("servfail").await;
        let (good, good_n) = upstream_of("good").await;
        let timeout = Duration::from_millis(500); // resent every 100 ms
        let fwd = Arc::new(Forwarder::new(
            vec![dead_addr, silent, failing, good],
            timeout,
            100,
        ));
        let msg = query(77, "www.example.org");
        let to = SocketAddr::from(([127, 0, 0, 1], 5353));
        let t = Instant::now();
        let out = forward(&fwd, &msg, to);
        let got = out.wait(1).await;
        let took = t.elapsed();
        assert_eq!(got.len(), 1, "an answer");
        assert_eq!(got[0].0, to);
        assert_eq!(message::header_id(&got[0].1), Some(77));
        assert_eq!(
            message::rcode_of(&got[0].1),
            Some(0),
            "the good upstream's answer"
        );
        let sent = silent_n.load(Relaxed);
        assert!(
            (3..=6).contains(&sent),
            "the silent upstream got {sent} copies"
        );
        assert_eq!((failing_n.load(Relaxed), good_n.load(Relaxed)), (1, 1));
        assert_eq!(
            fwd.upstream_failures.load(Relaxed),
            3,
            "dead, silent, failing"
        );
        assert!(
            took >= timeout,
            "answered after {took:?}, before the silent one's timeout"
        );
        println!("dead, silent ({sent} sends), SERVFAIL, then an answer: {took:?}");
        assert_eq!(fwd.in_flight.load(Relaxed), 0);

        // when every upstream fails, the client gets SERVFAIL from vxgate after the last
        let fwd = Arc::new(Forwarder::new(vec![dead_addr, failing], timeout, 100));
        let out = forward(&fwd, &msg, to);
        let got = out.wait(1).await;
        assert_eq!(got.len(), 1, "an answer");
        assert_eq!(message::header_id(&got[0].1), Some(77));
        assert_eq!(message::rcode_of(&got[0].1), Some(rcode::SERVFAIL));
        assert_eq!(fwd.upstream_failures.load(Relaxed), 2);
        assert_eq!(fwd.in_flight.load(Relaxed), 0);
        // a forwarder without upstreams answers SERVFAIL at once
        let none = Arc::new(Forwarder::new(vec![], timeout, 0));
        let out = forward(&none, &msg, to);
        assert_eq!(
            out.0.lock().expect("collect").len(),
            1,
            "answered in the call"
        );
    }
}
