//! The DNS server's I/O shell: UDP and TCP on every listen address.
//!
//! UDP: one socket per worker on each address (SO_REUSEPORT, so the kernel spreads clients
//! over cores), each drained [`BATCH`] datagrams per wake-up: up to [`SLOTS`] queries per
//! `recvmmsg`, their answers sent together in one `sendmmsg` (names forwarded upstream are
//! answered later, one `sendto` each, by the reader of the upstream socket: no task per
//! query). TCP: a task per connection,
//! queries pipelined, frames above [`MAX_TCP_QUERY`] close the connection, idle connections
//! (and clients that do not read their answers) close after [`TCP_IDLE`] (less as the places
//! fill: [`tcp_idle`]), at most [`MAX_TCP_CONNECTIONS`] at once and [`MAX_TCP_PER_CLIENT`]
//! from one /24 or /56 (more are closed on accept, counted). UDP answers to clients outside
//! `recursion_from` are kept within [`udp_budget`] (else TC) and pass the optional
//! response-rate limiter ([`crate::ratelimit`]). Each query sees the newest zone: workers check the watch channel's version per
//! query, which costs one atomic load.

use crate::answer::{self, Action, Rng};
use crate::forward::{Deliver, Forwarder};
use crate::message::{self, Query, rcode};
use crate::ratelimit::{RateLimiter, Verdict};
use crate::zone::Zone;
use ipnet::IpNet;
use socket2::{Domain, Protocol, Socket, Type};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Datagrams handled per wake-up before yielding.
pub const BATCH: usize = 64;
/// Datagrams per `recvmmsg`, each in a slot of [`SLOT`] bytes: a batch's answers leave in
/// one `sendmmsg`.
pub const SLOTS: usize = 32;
/// Largest UDP query read whole; a longer datagram is no query (dropped, counted).
pub const SLOT: usize = 4096;
pub const MAX_TCP_QUERY: usize = 4096;
/// How long a TCP connection may wait for its next query while at most half the places
/// are taken; it shrinks as they fill ([`tcp_idle`]), as Unbound's does, so that clients
/// that keep connections open with a query now and then cannot hold every place.
pub const TCP_IDLE: Duration = Duration::from_secs(10);
pub const MAX_TCP_CONNECTIONS: usize = 256;
/// TCP connections one client may hold at once, a client being an IPv4 /24 or an IPv6 /56
/// (addresses next to each other are one owner's): one client cannot take every place.
pub const MAX_TCP_PER_CLIENT: usize = 16;
/// UDP answers to clients outside `recursion_from` are at most this many times the query's
/// size (but never cut below [`MIN_UDP_BUDGET`]); a larger one is sent as TC, so the client
/// asks again over TCP. Bounds the amplification a spoofed query buys.
pub const UDP_AMPLIFICATION: usize = 10;
pub const MIN_UDP_BUDGET: usize = 512;

/// The idle time of a TCP connection when `open` of [`MAX_TCP_CONNECTIONS`] places are
/// taken: [`TCP_IDLE`] up to half, 2 s up to three quarters, 500 ms above.
pub fn tcp_idle(open: usize) -> Duration {
    if open <= MAX_TCP_CONNECTIONS / 2 {
        TCP_IDLE
    } else if open <= MAX_TCP_CONNECTIONS * 3 / 4 {
        Duration::from_secs(2)
    } else {
        Duration::from_millis(500)
    }
}

/// The client a TCP connection is counted for: its IPv4 /24 or IPv6 /56 (an IPv4-mapped
/// address as IPv4).
pub fn tcp_client(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) & 0xffff_ff00).into()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => tcp_client(IpAddr::V4(v4)),
            None => IpAddr::V6((u128::from(v6) & (u128::MAX << 72)).into()),
        },
    }
}

/// The largest UDP answer sent to a client outside `recursion_from` for a query of
/// `query_len` bytes.
pub fn udp_budget(query_len: usize) -> usize {
    (query_len * UDP_AMPLIFICATION).max(MIN_UDP_BUDGET)
}

/// Sockets bound for the server: per address, worker UDP sockets and one TCP listener.
pub struct Bound {
    pub udp: Vec<UdpSocket>,
    pub tcp: Vec<TcpListener>,
}

/// Binds UDP (`workers` sockets each, SO_REUSEPORT) and TCP on every address. A port 0
/// address gets one port for all its sockets, UDP and TCP alike.
pub fn bind(addrs: &[SocketAddr], workers: usize) -> io::Result<Bound> {
    bind_passed(addrs, workers, &mut |_| Handed::default())
}

/// Sockets already bound to an address, handed over by the caller (systemd's socket
/// activation): the server uses them instead of binding its own.
#[derive(Debug, Default)]
pub struct Handed {
    /// Shared by every worker (one socket: the workers read it in turn).
    pub udp: Option<std::net::UdpSocket>,
    pub tcp: Option<std::net::TcpListener>,
}

/// [`bind`], taking for each address what `handed` gives (non-blocking sockets) and binding
/// the rest.
pub fn bind_passed(
    addrs: &[SocketAddr],
    workers: usize,
    handed: &mut dyn FnMut(SocketAddr) -> Handed,
) -> io::Result<Bound> {
    let mut bound = Bound {
        udp: Vec::new(),
        tcp: Vec::new(),
    };
    for addr in addrs {
        let h = handed(*addr);
        if h.udp.is_some() || h.tcp.is_some() {
            let udp = match h.udp {
                Some(u) => {
                    let mut all = Vec::new();
                    for _ in 1..workers.max(1) {
                        all.push(UdpSocket::from_std(u.try_clone()?)?);
                    }
                    all.push(UdpSocket::from_std(u)?);
                    all
                }
                None => {
                    let first = udp_socket(*addr)?;
                    let mut all = vec![UdpSocket::from_std(first.into())?];
                    for _ in 1..workers.max(1) {
                        all.push(UdpSocket::from_std(udp_socket(*addr)?.into())?);
                    }
                    all
                }
            };
            let tcp = match h.tcp {
                Some(t) => TcpListener::from_std(t)?,
                None => tcp_listener(*addr)?,
            };
            bound.udp.extend(udp);
            bound.tcp.push(tcp);
            continue;
        }
        // a port 0 address: the TCP listener takes the port the kernel gave the first UDP
        // socket, which a TCP socket may hold already; then another port is drawn
        let mut tries = 0;
        let (udp, tcp) = loop {
            match bind_one(*addr, workers) {
                Err(e)
                    if e.kind() == io::ErrorKind::AddrInUse && addr.port() == 0 && tries < 16 =>
                {
                    tries += 1;
                }
                got => break got?,
            }
        };
        bound.udp.extend(udp);
        bound.tcp.push(tcp);
    }
    Ok(bound)
}

/// `workers` UDP sockets and a TCP listener on `addr` (one port for all).
fn bind_one(addr: SocketAddr, workers: usize) -> io::Result<(Vec<UdpSocket>, TcpListener)> {
    let first = udp_socket(addr)?;
    let actual = first.local_addr()?.as_socket().unwrap_or(addr);
    let mut udp = vec![UdpSocket::from_std(first.into())?];
    for _ in 1..workers.max(1) {
        udp.push(UdpSocket::from_std(udp_socket(actual)?.into())?);
    }
    Ok((udp, tcp_listener(actual)?))
}

fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let t = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    t.set_reuse_address(true)?;
    t.set_nonblocking(true)?;
    t.bind(&addr.into())?;
    t.listen(1024)?;
    TcpListener::from_std(t.into())
}

fn udp_socket(addr: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    Ok(s)
}

/// Counters the admin API and logs read.
#[derive(Debug, Default)]
pub struct Stats {
    pub queries: AtomicU64,
    pub forwarded: AtomicU64,
    pub refused: AtomicU64,
    pub dropped: AtomicU64,
    pub tcp_connections: AtomicUsize,
    /// TCP connections closed on accept: over [`MAX_TCP_CONNECTIONS`] or
    /// [`MAX_TCP_PER_CLIENT`].
    pub tcp_refused: AtomicU64,
    /// UDP answers to clients outside `recursion_from` over their byte budget, sent as TC.
    pub budget_truncated: AtomicU64,
    /// UDP responses the rate limiter turned into TC answers / dropped.
    pub rate_limit_slipped: AtomicU64,
    pub rate_limit_dropped: AtomicU64,
    /// Responses by rcode (low 4 bits).
    pub rcodes: [AtomicU64; 16],
    /// Queries by type: A, AAAA, SRV, PTR, other.
    pub qtypes: [AtomicU64; 5],
    /// Time from a query's arrival to its answer being ready (zone answers and refusals).
    pub answer_latency: vxgate_metrics::Histogram,
}

/// The names of [`Stats::qtypes`]' slots.
pub const QTYPE_NAMES: [&str; 5] = ["A", "AAAA", "SRV", "PTR", "other"];

impl Stats {
    fn count(&self, query: &[u8], response: &[u8], since: std::time::Instant) {
        if let Some(rc) = message::rcode_of(response) {
            self.rcodes[usize::from(rc)].fetch_add(1, Relaxed);
        }
        let slot = match message::qtype_of(query) {
            Some(message::rtype::A) => 0,
            Some(message::rtype::AAAA) => 1,
            Some(message::rtype::SRV) => 2,
            Some(message::rtype::PTR) => 3,
            _ => 4,
        };
        self.qtypes[slot].fetch_add(1, Relaxed);
        self.answer_latency.observe(since.elapsed());
    }
}

/// What the server needs besides sockets.
pub struct Context {
    pub zone: watch::Receiver<Arc<Zone>>,
    pub forwarder: Arc<Forwarder>,
    /// Clients that may have names outside the zone resolved.
    pub recursion_from: Vec<IpNet>,
    pub stats: Arc<Stats>,
    /// Response-rate limiting for UDP clients outside `recursion_from` (None: off).
    pub rate_limit: Option<std::sync::Arc<RateLimiter>>,
    /// Open TCP connections per client address.
    pub tcp_clients: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
}

impl Context {
    fn may_recurse(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.recursion_from.iter().any(|n| n.contains(&ip))
    }

    /// Passes a UDP response through the rate limiter (clients that may not recurse): false
    /// when it is dropped; a slipped one is rewritten in place into a TC answer.
    fn rate_limit(&self, msg: &[u8], resp: &mut Vec<u8>, to: SocketAddr) -> bool {
        let verdict = match &self.rate_limit {
            Some(rl) if !self.may_recurse(to.ip()) => rl.check(to.ip(), std::time::Instant::now()),
            _ => Verdict::Send,
        };
        match verdict {
            Verdict::Send => true,
            Verdict::Slip => {
                self.stats.rate_limit_slipped.fetch_add(1, Relaxed);
                match message::parse_query(msg) {
                    Ok(q) => {
                        *resp = tc_response(&q, 0);
                        true
                    }
                    Err(_) => false,
                }
            }
            Verdict::Drop => {
                self.stats.rate_limit_dropped.fetch_add(1, Relaxed);
                false
            }
        }
    }

    /// Keeps a UDP answer to a client outside `recursion_from` within [`udp_budget`]: a
    /// larger one becomes a TC answer (counted).
    fn budget(&self, msg: &[u8], resp: &mut Vec<u8>, to: SocketAddr) {
        if resp.len() <= udp_budget(msg.len()) || self.may_recurse(to.ip()) {
            return;
        }
        if let Ok(q) = message::parse_query(msg) {
            self.stats.budget_truncated.fetch_add(1, Relaxed);
            *resp = tc_response(&q, message::rcode_of(resp).unwrap_or(0));
        }
    }

    /// Takes a TCP place for `ip`, or None when the client or the server is at its limit.
    fn tcp_admit(self: &Arc<Self>, ip: IpAddr) -> Option<TcpPlace> {
        let ip = tcp_client(ip);
        if self.stats.tcp_connections.fetch_add(1, Relaxed) >= MAX_TCP_CONNECTIONS {
            self.stats.tcp_connections.fetch_sub(1, Relaxed);
            return None;
        }
        let mut clients = self.tcp_clients.lock().unwrap_or_else(|e| e.into_inner());
        let n = clients.entry(ip).or_insert(0);
        if *n >= MAX_TCP_PER_CLIENT {
            drop(clients);
            self.stats.tcp_connections.fetch_sub(1, Relaxed);
            return None;
        }
        *n += 1;
        Some(TcpPlace(self.clone(), ip))
    }
}

/// One open TCP connection's place, given back on drop.
struct TcpPlace(Arc<Context>, IpAddr);

impl Drop for TcpPlace {
    fn drop(&mut self) {
        let mut clients = self.0.tcp_clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = clients.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                clients.remove(&self.1);
            }
        }
        drop(clients);
        self.0.stats.tcp_connections.fetch_sub(1, Relaxed);
    }
}

/// Serves until `shutdown` resolves.
pub async fn serve(bound: Bound, ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send) {
    let mut tasks = JoinSet::new();
    for (i, sock) in bound.udp.into_iter().enumerate() {
        let ctx = ctx.clone();
        tasks.spawn(async move { udp_worker(Arc::new(sock), ctx, i as u64).await });
    }
    for listener in bound.tcp {
        let ctx = ctx.clone();
        tasks.spawn(async move { tcp_acceptor(listener, ctx).await });
    }
    shutdown.await;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// The newest zone, re-read only when the channel says it changed.
fn refresh(rx: &mut watch::Receiver<Arc<Zone>>, zone: &mut Arc<Zone>) {
    if rx.has_changed().unwrap_or(false) {
        *zone = rx.borrow_and_update().clone();
    }
}

/// Where a UDP worker's forwarded answers go: counted, fitted to the client, sent from the
/// worker's socket.
struct UdpReply {
    ctx: Arc<Context>,
    sock: Arc<UdpSocket>,
}

impl Deliver for UdpReply {
    fn deliver(&self, to: SocketAddr, q: &Query, query: &[u8], resp: Vec<u8>, since: Instant) {
        self.ctx.stats.count(query, &resp, since);
        let resp = fit_udp(resp, q);
        // straight to the socket: tokio's readiness may be stale after the worker's own sends
        if socket2::SockRef::from(&*self.sock)
            .send_to(&resp, &to.into())
            .is_err()
        {
            self.ctx.stats.dropped.fetch_add(1, Relaxed); // socket buffer full
        }
    }
}

async fn udp_worker(sock: Arc<UdpSocket>, ctx: Arc<Context>, seed: u64) {
    let reply: Arc<dyn Deliver> = Arc::new(UdpReply {
        ctx: ctx.clone(),
        sock: sock.clone(),
    });
    let mut rx = ctx.zone.clone();
    let mut zone = rx.borrow_and_update().clone();
    let mut rng = Rng::new(
        0x9e37_79b9_7f4a_7c15
            ^ seed.wrapping_mul(0x1234_5678_9abc_def1)
            ^ std::process::id() as u64,
    );
    let mut slots = vxgate_udp::Slots::new(SLOTS);
    let mut inbuf = vec![0u8; SLOTS * SLOT];
    // one answer buffer per slot: a batch's answers leave together
    let mut outs: Vec<Vec<u8>> = (0..SLOTS).map(|_| Vec::with_capacity(1232)).collect();
    let mut ready: Vec<(usize, SocketAddr)> = Vec::with_capacity(SLOTS);
    loop {
        if sock.readable().await.is_err() {
            return;
        }
        let mut reads = 0;
        while reads < BATCH {
            let k = match sock.try_io(Interest::READABLE, || {
                vxgate_udp::recv_slots(&*sock, &mut inbuf, SLOT, &mut slots)
            }) {
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    reads += 1; // an ICMP error surfaced; go on
                    continue;
                }
            };
            reads += k.max(1);
            let since = std::time::Instant::now();
            refresh(&mut rx, &mut zone);
            ready.clear();
            for i in 0..k {
                let Some((n, src, cut)) = slots.get(i) else {
                    continue;
                };
                ctx.stats.queries.fetch_add(1, Relaxed);
                if cut {
                    // longer than any query: not answered (counted)
                    ctx.stats.dropped.fetch_add(1, Relaxed);
                    continue;
                }
                let msg = &inbuf[i * SLOT..i * SLOT + n];
                let out = &mut outs[i];
                if query(&ctx, &reply, &zone, msg, src, &mut rng, out, since) && {
                    ctx.budget(msg, out, src);
                    ctx.rate_limit(msg, out, src)
                } {
                    ready.push((i, src));
                }
            }
            send_ready(&ctx, &sock, &outs, &ready);
        }
        tokio::task::yield_now().await;
    }
}

/// Answers one UDP query into `out`: true when `out` is the reply to send now; false when
/// there is none (dropped) or it is sent later (forwarded upstream, answered through `reply`).
#[allow(clippy::too_many_arguments)]
fn query(
    ctx: &Arc<Context>,
    reply: &Arc<dyn Deliver>,
    zone: &Zone,
    msg: &[u8],
    src: SocketAddr,
    rng: &mut Rng,
    out: &mut Vec<u8>,
    since: std::time::Instant,
) -> bool {
    match answer::answer(zone, msg, false, rng, out) {
        Action::Reply => {
            ctx.stats.count(msg, out, since);
            true
        }
        Action::Drop => {
            ctx.stats.dropped.fetch_add(1, Relaxed);
            false
        }
        Action::Forward(q) => {
            if outside(ctx, &q, src.ip(), out) {
                ctx.stats.count(msg, out, since);
                // a cached answer was stored whole: fit it to this client, as the first one
                // was (else a small query gets a large answer back)
                if out.len() > q.max_udp() {
                    *out = fit_udp(std::mem::take(out), &q);
                }
                return true;
            }
            let Some(slot) = Forwarder::slot(&ctx.forwarder) else {
                // all places upstream taken (counted): SERVFAIL now rather than one more
                // query waiting on a slow upstream
                message::error_response(out, q.id, Some(&q), rcode::SERVFAIL);
                ctx.stats.count(msg, out, since);
                return true;
            };
            Forwarder::forward(slot, Box::new(q), msg, src, reply.clone(), since);
            false
        }
    }
}

/// Sends a batch's answers in one `sendmmsg` (more if the kernel takes fewer at a time);
/// those the socket has no room for are counted as dropped, as a full buffer drops them.
fn send_ready(ctx: &Context, sock: &UdpSocket, outs: &[Vec<u8>], ready: &[(usize, SocketAddr)]) {
    let mut msgs = [(&[][..], SocketAddr::from(([0, 0, 0, 0], 0))); SLOTS];
    for (m, (i, to)) in msgs.iter_mut().zip(ready) {
        *m = (&outs[*i][..], *to);
    }
    let mut rest = &msgs[..ready.len()];
    while !rest.is_empty() {
        match sock.try_io(Interest::WRITABLE, || vxgate_udp::send_each(sock, rest)) {
            Ok(n) if n > 0 => rest = &rest[n..],
            _ => break,
        }
    }
    if !rest.is_empty() {
        ctx.stats.dropped.fetch_add(rest.len() as u64, Relaxed); // socket buffer full
    }
}

/// For a name outside the zone: REFUSED for clients that may not recurse (and when there is
/// no upstream) or a cached answer, written to `out` (true); false to go upstream.
fn outside(ctx: &Context, q: &Query, client: IpAddr, out: &mut Vec<u8>) -> bool {
    if !ctx.may_recurse(client) || !ctx.forwarder.has_upstreams() {
        ctx.stats.refused.fetch_add(1, Relaxed);
        message::error_response(out, q.id, Some(q), rcode::REFUSED);
        return true;
    }
    ctx.stats.forwarded.fetch_add(1, Relaxed);
    // into the worker's reused buffer: a hit allocates nothing
    ctx.forwarder.cached_into(q, out)
}

/// An upstream answer too big for this UDP client becomes a TC response.
fn fit_udp(resp: Vec<u8>, q: &Query) -> Vec<u8> {
    if resp.len() <= q.max_udp() {
        return resp;
    }
    tc_response(q, message::rcode_of(&resp).unwrap_or(0))
}

/// A TC answer to `q`: header, question and OPT (if the query had one), nothing else.
fn tc_response(q: &Query, rc: u8) -> Vec<u8> {
    let mut out = Vec::new();
    message::write_header(
        &mut out,
        q.id,
        Some(q),
        false,
        true,
        rc,
        [1, 0, 0, u16::from(q.edns.is_some())],
    );
    message::write_question(&mut out, q);
    if q.edns.is_some() {
        message::write_opt(&mut out, 0);
    }
    out
}

async fn tcp_acceptor(listener: TcpListener, ctx: Arc<Context>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await; // EMFILE and friends
            continue;
        };
        let Some(place) = ctx.tcp_admit(peer.ip()) else {
            ctx.stats.tcp_refused.fetch_add(1, Relaxed);
            drop(stream); // over a limit: closed at once
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _place = place;
            let _ = tcp_connection(stream, peer, &ctx).await;
        });
    }
}

async fn tcp_connection(mut s: TcpStream, peer: SocketAddr, ctx: &Context) -> io::Result<()> {
    let mut rx = ctx.zone.clone();
    let mut zone = rx.borrow_and_update().clone();
    let mut rng = Rng::new(peer.port() as u64 ^ 0xa5a5_5a5a_dead_beef);
    let mut buf = vec![0u8; MAX_TCP_QUERY];
    // the answer, and the answer behind its length: both reused, so a query allocates nothing
    let mut out = Vec::with_capacity(4096);
    let mut framed = Vec::with_capacity(4096 + 2);
    loop {
        // wait for the next query within the idle time, which shrinks while this waits if
        // the places fill up (readiness is cancel-safe: nothing is lost to a re-check)
        let waiting = Instant::now();
        loop {
            let idle = tcp_idle(ctx.stats.tcp_connections.load(Relaxed));
            let Some(left) = idle.checked_sub(waiting.elapsed()).filter(|d| !d.is_zero()) else {
                return Ok(()); // idle
            };
            match tokio::time::timeout(left.min(Duration::from_millis(250)), s.readable()).await {
                Ok(Ok(())) => break,
                Ok(Err(_)) => return Ok(()),
                Err(_) => {}
            }
        }
        let idle = tcp_idle(ctx.stats.tcp_connections.load(Relaxed));
        let len = match tokio::time::timeout(idle, s.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            _ => return Ok(()), // idle, closed or reset
        };
        if !(message::HEADER_LEN..=MAX_TCP_QUERY).contains(&len) {
            ctx.stats.dropped.fetch_add(1, Relaxed);
            return Ok(()); // no query is that big (or that small): close
        }
        tokio::time::timeout(TCP_IDLE, s.read_exact(&mut buf[..len]))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        ctx.stats.queries.fetch_add(1, Relaxed);
        let since = std::time::Instant::now();
        refresh(&mut rx, &mut zone);
        match answer::answer(&zone, &buf[..len], true, &mut rng, &mut out) {
            Action::Reply => {}
            Action::Drop => return Ok(()),
            Action::Forward(q) => {
                if !outside(ctx, &q, peer.ip(), &mut out) {
                    ctx.forwarder
                        .resolve_into(&q, &buf[..len], true, &mut out)
                        .await;
                }
            }
        }
        ctx.stats.count(&buf[..len], &out, since);
        framed.clear();
        framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
        framed.extend_from_slice(&out);
        // a client that sends and never reads must not hold the connection (and one of the
        // MAX_TCP_CONNECTIONS places) forever
        tokio::time::timeout(TCP_IDLE, s.write_all(&framed))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    }
}
