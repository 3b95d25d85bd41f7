//! A client connection: accept (bounded by `max_connections`), the TLS handshake, hyper's
//! HTTP/1.1 and HTTP/2 server over it, each request handed to the proxy, and the
//! connection's timers (idle, send timeout, the drain at shutdown).

use super::{Error, Shared, access_log, proxy, send_watch};
use crate::config::IngressConfig;
use crate::shutdown::Shutdown;
use http::header;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

pub(super) async fn accept_tls(
    listener: TcpListener,
    shared: Arc<Shared>,
    pool: Arc<proxy::Pool>,
    mut shutdown: Shutdown,
) -> Result<(), Error> {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.wait() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!("ingress accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await; // EMFILE and friends
                    continue;
                }
            },
        };
        let Ok(permit) = shared.permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "ingress: max_connections reached; closing");
            shared.stats.refused_connections.fetch_add(1, Relaxed);
            drop(stream);
            continue;
        };
        let (shared, shutdown, pool) = (shared.clone(), shutdown.clone(), pool.clone());
        // the slot is shared with any connection this one upgrades into: it is free again
        // only when both are closed
        let slot = Arc::new(permit);
        tokio::spawn(async move {
            serve_tls(stream, peer, shared, pool, shutdown, slot).await;
        });
    }
    drop(listener);
    // drain: every connection holds a permit until it is done
    let all = u32::try_from(shared.cfg.max_connections).unwrap_or(u32::MAX);
    let _ = shared.permits.acquire_many(all).await;
    Ok(())
}

/// What a connection's requests share: who the client is and how it came in.
struct ConnInfo {
    peer: SocketAddr,
    tls: &'static str,
    /// The SNI name, kept only for the access log.
    sni: Option<Arc<str>>,
    hold: proxy::Hold,
    /// The streams of an HTTP/2 connection (its idleness is counted in streams).
    streams: Option<Arc<Streams>>,
    sends: Arc<send_watch::Sends>,
    /// A request has reached the handler on this connection.
    served: std::sync::atomic::AtomicBool,
}

/// How long a drain waits for the first request of a connection accepted just before it: the
/// client has most likely sent it already, and closing the connection as idle would lose it.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    pool: Arc<proxy::Pool>,
    mut shutdown: Shutdown,
    slot: Arc<tokio::sync::OwnedSemaphorePermit>,
) {
    let _ = stream.set_nodelay(true);
    // the socket's bytes written and still unacknowledged tell whether the client reads
    // (the send timeout); the descriptor lives as long as this function's connection
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let sent = Arc::new(AtomicU64::new(0));
    let stream = Active {
        inner: stream,
        last: None,
        sent: Some(sent.clone()),
    };
    let Some((tls, tls_version)) = handshake(stream, peer, &shared).await else {
        return;
    };
    let hold = proxy::Hold {
        slot,
        shutdown: shutdown.clone(),
    };
    let (io, info, mut watch) = Watch::start(tls, tls_version, peer, hold, sent, fd, &shared);
    let conn_info = info.clone();
    let svc = {
        let shared = shared.clone();
        service_fn(move |req| handle(req, shared.clone(), pool.clone(), info.clone()))
    };
    let builder = http_builder(&shared.cfg);
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let tick = shared.cfg.idle_timeout.min(shared.cfg.send_timeout) / 4;
    let mut closing = false;
    // after an idle close starts: a client that never finishes it (an h2 client that does not
    // answer the GOAWAY's PING) is cut off
    let mut give_up = std::pin::pin!(tokio::time::sleep(Duration::MAX));
    let mut idle_closing = false;
    // draining, and this connection's first request not seen yet: until when it is awaited
    let mut first_request_until: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    parse_error(&shared, peer, tls_version, &*e);
                }
                return;
            }
            _ = give_up.as_mut(), if idle_closing => return,
            _ = shutdown.wait(), if !closing => {
                closing = true;
                if conn_info.served.load(Relaxed) {
                    conn.as_mut().graceful_shutdown();
                } else {
                    first_request_until =
                        Some(tokio::time::Instant::now() + FIRST_REQUEST_GRACE.min(shared.cfg.header_read_timeout));
                }
            }
            // a request that arrives is answered (graceful_shutdown lets it finish); a client
            // that sends none within the grace is closed as idle
            _ = tokio::time::sleep(Duration::from_millis(5)), if first_request_until.is_some() => {
                if conn_info.served.load(Relaxed)
                    || first_request_until.is_some_and(|t| tokio::time::Instant::now() >= t)
                {
                    first_request_until = None;
                    conn.as_mut().graceful_shutdown();
                }
            }
            // the send timeout holds while closing too: a drain must not wait on a client
            // that does not read
            _ = tokio::time::sleep(tick) => match watch.tick(closing) {
                Tick::Stalled => {
                    tracing::debug!(%peer, "ingress: a response made no progress for send_timeout; closing the connection");
                    shared.stats.send_timeouts.fetch_add(1, Relaxed);
                    return;
                }
                Tick::Idle => {
                    closing = true;
                    idle_closing = true;
                    give_up.as_mut().reset(tokio::time::Instant::now() + IDLE_CLOSE_GRACE);
                    conn.as_mut().graceful_shutdown();
                }
                Tick::Busy => {}
            },
        }
    }
}

/// The TLS handshake within `header_read_timeout` (counted by version, or as a failure); a
/// tls-alpn-01 validation ends here (the handshake was the answer, RFC 8737 §3).
async fn handshake(
    stream: Active<TcpStream>,
    peer: SocketAddr,
    shared: &Shared,
) -> Option<(
    tokio_rustls::server::TlsStream<Active<TcpStream>>,
    &'static str,
)> {
    // the ClientHello first: it picks the config (the cipher suite order)
    let accepted = tokio::time::timeout(shared.cfg.header_read_timeout, async {
        let start =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
                .await?;
        let config = shared
            .tls
            .choose(start.client_hello().cipher_suites())
            .clone();
        start.into_stream(config).await
    })
    .await;
    let tls = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            shared.stats.handshake_failures.fetch_add(1, Relaxed);
            return None;
        }
        Err(_) => {
            shared.stats.handshake_failures.fetch_add(1, Relaxed);
            return None;
        }
    };
    if tls.get_ref().1.alpn_protocol() == Some(crate::acme::challenge::ACME_TLS_ALPN) {
        return None;
    }
    let version = match tls.get_ref().1.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => {
            shared.stats.tls13.fetch_add(1, Relaxed);
            "1.3"
        }
        _ => {
            shared.stats.tls12.fetch_add(1, Relaxed);
            "1.2"
        }
    };
    Some((tls, version))
}

/// hyper's server for HTTP/1.1 and HTTP/2 with the ingress's limits.
fn http_builder(cfg: &IngressConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size(cfg.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
        // each stream can hold a backend connection: one client connection must not fan
        // out to hundreds
        .max_concurrent_streams(cfg.max_streams_per_connection)
        .keep_alive_interval(Some(Duration::from_secs(30).min(cfg.idle_timeout / 2)));
    builder
}

/// One request: proxied, counted, logged when its body is done, watched for the send
/// timeout.
async fn handle(
    req: http::Request<hyper::body::Incoming>,
    shared: Arc<Shared>,
    pool: Arc<proxy::Pool>,
    info: Arc<ConnInfo>,
) -> Result<
    http::Response<send_watch::Watched<proxy::Body, Option<StreamGuard>>>,
    std::convert::Infallible,
> {
    info.served.store(true, Relaxed);
    let stream = info.streams.as_ref().map(StreamGuard::open);
    let start = std::time::Instant::now();
    let logged = shared.access_log.as_ref().map(|log| log_head(log, &req));
    // boxed: its state is kilobytes, and this future is moved into place whole (hyper spawns
    // each HTTP/2 stream's future as a task)
    let proxied = Box::pin(shared.proxy.handle(&pool, req, info.peer, &info.hold));
    let (resp, outcome) = proxied.await;
    // requests that no route took are counted together: a client sending random Hosts must
    // not grow the metrics without bound
    let label = outcome.service.as_deref().unwrap_or("-");
    shared
        .stats
        .request(pool.worker, label, resp.status(), start.elapsed());
    // the line is written when the response body is done (or dropped)
    let resp = match logged {
        Some(head) => {
            let pending = head.pending(&info, start, &outcome, resp.status());
            resp.map(|body| pending.wrap(body))
        }
        None => resp,
    };
    // an h2 stream is open until its response body is done; the body is watched for the
    // send timeout from now on
    let watch = info.sends.watch(now_ms());
    Ok(resp.map(|body| send_watch::Watched::new(body, watch, stream)))
}

/// What the access log keeps of a request's head.
struct LogHead {
    log: Arc<access_log::AccessLog>,
    method: http::Method,
    host: String,
    path: String,
}

fn log_head<B>(log: &Arc<access_log::AccessLog>, req: &http::Request<B>) -> LogHead {
    let path = match (log.with_query, req.uri().path_and_query()) {
        (true, Some(pq)) => pq.as_str().to_owned(),
        _ => req.uri().path().to_owned(),
    };
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("")
        .to_owned();
    LogHead {
        log: log.clone(),
        method: req.method().clone(),
        host,
        path,
    }
}

impl LogHead {
    fn pending(
        self,
        info: &ConnInfo,
        start: std::time::Instant,
        outcome: &proxy::Outcome,
        status: http::StatusCode,
    ) -> access_log::Pending {
        access_log::Pending {
            log: self.log,
            start,
            bytes_in: outcome.bytes_in.clone(),
            entry: Some(access_log::Entry {
                time: std::time::SystemTime::now(),
                client: info.peer,
                tls: info.tls,
                sni: info.sni.clone(),
                method: self.method,
                host: self.host,
                path: self.path,
                status: status.as_u16(),
                bytes_in: 0,
                bytes_out: 0,
                duration: Duration::ZERO,
                service: outcome.service.clone(),
                backend: outcome.backend.clone(),
                retries: outcome.retries,
                upstream_status: outcome.upstream_status,
            }),
        }
    }
}

/// A connection's timers: the send timeout (a response that makes no progress while the
/// client does not read) and the idle timeout.
struct Watch {
    fd: std::os::fd::RawFd,
    sent: Arc<AtomicU64>,
    activity: Arc<AtomicU64>,
    streams: Option<Arc<Streams>>,
    sends: Arc<send_watch::Sends>,
    drain: send_watch::Drain,
    idle: Duration,
    send_timeout: u64,
}

enum Tick {
    /// A response made no progress for `send_timeout`: close now.
    Stalled,
    /// Nothing for `idle_timeout`: close gracefully.
    Idle,
    Busy,
}

type Io = TokioIo<Active<tokio_rustls::server::TlsStream<Active<TcpStream>>>>;

impl Watch {
    /// The connection's IO (recording activity), what its requests share, and its timers.
    fn start(
        tls: tokio_rustls::server::TlsStream<Active<TcpStream>>,
        tls_version: &'static str,
        peer: SocketAddr,
        hold: proxy::Hold,
        sent: Arc<AtomicU64>,
        fd: std::os::fd::RawFd,
        shared: &Shared,
    ) -> (Io, Arc<ConnInfo>, Watch) {
        let sni: Option<Arc<str>> = shared
            .access_log
            .as_ref()
            .and(tls.get_ref().1.server_name())
            .map(Arc::from);
        // HTTP/2 idleness is counted in streams: the keep-alive PINGs (and their ACKs) move
        // bytes but are not use, and would keep an unused connection open for ever
        let streams = (tls.get_ref().1.alpn_protocol() == Some(b"h2")).then(|| {
            Arc::new(Streams {
                open: AtomicU64::new(0),
                last: AtomicU64::new(now_ms()),
            })
        });
        let activity = Arc::new(AtomicU64::new(now_ms()));
        let io = TokioIo::new(Active {
            inner: tls,
            last: Some(activity.clone()),
            sent: None,
        });
        // HTTP/1.1 answers one request at a time; two slots leave room for the next one's
        // response while the last one's body is being dropped
        let slots = match streams {
            Some(_) => shared.cfg.max_streams_per_connection as usize,
            None => 2,
        };
        let sends = send_watch::Sends::new(slots);
        let info = Arc::new(ConnInfo {
            peer,
            tls: tls_version,
            sni,
            hold,
            streams: streams.clone(),
            sends: sends.clone(),
            served: std::sync::atomic::AtomicBool::new(false),
        });
        let watch = Watch {
            fd,
            sent,
            activity,
            streams,
            sends,
            drain: send_watch::Drain::default(),
            idle: shared.cfg.idle_timeout,
            send_timeout: shared.cfg.send_timeout.as_millis() as u64,
        };
        (io, info, watch)
    }

    fn tick(&mut self, closing: bool) -> Tick {
        let now = now_ms();
        self.drain
            .observe(now, self.sent.load(Relaxed), unacknowledged(self.fd));
        let stalled = self.sends.stalled_ms(now);
        if stalled >= self.send_timeout && !self.drain.client_reading(now, self.send_timeout) {
            return Tick::Stalled;
        }
        if closing {
            return Tick::Busy;
        }
        let last = match &self.streams {
            Some(s) if s.open.load(Relaxed) > 0 => now,
            Some(s) => s.last.load(Relaxed),
            None => self.activity.load(Relaxed),
        };
        if now.saturating_sub(last) >= self.idle.as_millis() as u64 {
            Tick::Idle
        } else {
            Tick::Busy
        }
    }
}

/// A connection that ended with an error of the HTTP parser (a bad request line, control
/// bytes, a head over `max_header_bytes`): hyper has answered 400 or 431 and closed; the
/// access log gets a line with what is known.
fn parse_error(
    shared: &Shared,
    peer: SocketAddr,
    tls: &'static str,
    e: &(dyn std::error::Error + Send + Sync + 'static),
) {
    let Some(e) = e.downcast_ref::<hyper::Error>() else {
        return;
    };
    if !e.is_parse() && !e.is_parse_too_large() {
        return;
    }
    shared.stats.parse_errors.fetch_add(1, Relaxed);
    tracing::debug!(%peer, "ingress: request refused by the HTTP parser: {e}");
    if let Some(log) = &shared.access_log {
        log.log(access_log::Entry {
            time: std::time::SystemTime::now(),
            client: peer,
            tls,
            sni: None,
            method: http::Method::from_bytes(b"-").unwrap_or(http::Method::GET),
            host: String::new(),
            path: "-".to_owned(),
            status: if e.is_parse_too_large() { 431 } else { 400 },
            bytes_in: 0,
            bytes_out: 0,
            duration: Duration::ZERO,
            service: None,
            backend: None,
            retries: 0,
            upstream_status: None,
        });
    }
}

/// How long an idle connection's graceful close may take before the socket is closed.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The streams of one HTTP/2 connection: how many are open, and when the last one opened or
/// closed (ms of [`now_ms`]).
struct Streams {
    open: AtomicU64,
    last: AtomicU64,
}

/// One open stream; closed when the response body is done or dropped.
struct StreamGuard(Arc<Streams>);

impl StreamGuard {
    fn open(streams: &Arc<Streams>) -> StreamGuard {
        streams.open.fetch_add(1, Relaxed);
        streams.last.store(now_ms(), Relaxed);
        StreamGuard(streams.clone())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.last.store(now_ms(), Relaxed);
        self.0.open.fetch_sub(1, Relaxed);
    }
}

/// Milliseconds of the coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`: the kernel's last
/// tick, 1–10 ms old, read without a timestamp counter): what the idle and send timeouts
/// measure in, read several times a request. (An `Instant` since a start, as before, took two
/// clock reads and a 128-bit division each time.)
pub(crate) fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which lives here; the clock id is
    // a constant Linux has had since 2.6.32 (it fails with EINVAL, leaving `ts` zero, on
    // anything older).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

/// Bytes of a TCP socket's send queue its peer has not acknowledged (`SIOCOUTQ`); 0 when it
/// cannot be read.
fn unacknowledged(fd: std::os::fd::RawFd) -> u64 {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ on a socket) writes one int into `n`, which lives here; the
    // descriptor is the connection's socket, open while its connection is served.
    if unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) } != 0 {
        return 0;
    }
    u64::try_from(n).unwrap_or(0)
}

/// An IO wrapper that records when bytes last moved (for the idle timeout) and counts the
/// bytes written (under TLS, for the send timeout's [`send_watch::Drain`]), each when asked.
pub(crate) struct Active<T> {
    pub(crate) inner: T,
    pub(crate) last: Option<Arc<AtomicU64>>,
    pub(crate) sent: Option<Arc<AtomicU64>>,
}

impl<T> Active<T> {
    fn moved(&self, n: usize) {
        if n == 0 {
            return;
        }
        if let Some(last) = &self.last {
            last.store(now_ms(), Relaxed);
        }
        if let Some(sent) = &self.sent {
            sent.fetch_add(n as u64, Relaxed);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Active<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before
            && let Some(last) = &self.last
        {
            last.store(now_ms(), Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Active<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = r {
            self.moved(n);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.moved(n);
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
