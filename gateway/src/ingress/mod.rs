//! The HTTPS ingress: TLS termination (rustls) and a reverse proxy (hyper) to the containers
//! of the service that the Host names.
//!
//! ```text
//!  TCP accept ─► limit (max_connections) ─► TLS (SNI → cert) ─► hyper h1/h2 ─► Proxy::handle
//!                                                                               │
//!                            registry snapshot ─► serving backends ─► the worker's backend pool
//! ```
//!
//! `route` and the health state machine are pure; `tls`, `proxy`, `health` and this module are
//! the shell. Stopping: listeners close, open connections finish their requests (bounded by
//! the daemon's drain time).

pub mod access_log;
pub mod backend_pool;
pub mod backend_tls;
pub mod health;
pub mod limit;
pub mod path;
pub mod plan;
pub mod proxy;
pub mod route;
pub mod routes;
pub mod send_watch;
pub mod state;
pub mod sticky;
pub mod tls;

use crate::config::IngressConfig;
use crate::part::Part;
use crate::registry::Registry;
use crate::shutdown::Shutdown;
use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// Why the ingress could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ingress: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("ingress: cannot bind {addr}: {source}{}", crate::privilege::bind(addr.port(), source))]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("ingress: {0}")]
    Listener(io::Error),
    #[error(transparent)]
    AccessLog(#[from] access_log::Error),
    #[error(transparent)]
    Worker(#[from] crate::worker::WorkerError),
    #[error("acme: {0}")]
    Acme(#[from] crate::acme::Error),
}

/// What stays reachable of a running ingress (certificate reload on SIGHUP, metrics).
pub struct Ingress {
    pub certs: Arc<tls::CertStore>,
    pub stats: Arc<Stats>,
    /// `[ingress.acme]`'s certificates and counters.
    pub acme: Option<crate::acme::Acme>,
    /// The HTTPS listeners' bound addresses (a port 0 in the config resolved), in config order.
    pub listen: Vec<SocketAddr>,
    /// The plain-HTTP listeners' bound addresses.
    pub http_redirect: Vec<SocketAddr>,
    /// The route table in use (host and path → service).
    pub routes: routes::Routes,
    /// `ingress.access_log`, when on.
    pub access_log: Option<Arc<access_log::AccessLog>>,
    /// The HTTP/1.1 backend connection budget.
    pub backend_budget: Arc<backend_pool::Budget>,
}

/// Counters for /metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub tls12: AtomicU64,
    pub tls13: AtomicU64,
    pub handshake_failures: AtomicU64,
    /// Requests by service, then by status class: a row per ingress worker thread, no lock
    /// ([`state::RequestCounts`]); summed when `/metrics` is read.
    pub requests: state::RequestCounts,
    /// Time from a request's head to the response's head.
    pub latency: vxgate_metrics::Histogram,
    /// Connections closed at accept because of max_connections.
    pub refused_connections: AtomicU64,
    /// Requests refused by `vxgate.rate` (429) and by `vxgate.max_in_flight` (503).
    pub rate_limited: AtomicU64,
    pub over_in_flight: AtomicU64,
    /// Requests refused because their client held half the backend connections (503).
    pub client_share: AtomicU64,
    /// Requests that failed for a reason of ours (no descriptor, port or budget; 503): the
    /// backend was not ejected.
    pub local_errors: AtomicU64,
    /// Connections closed because a response made no progress for `send_timeout_ms`.
    pub send_timeouts: AtomicU64,
    /// Requests the HTTP parser refused (bad request line, header too large, ...).
    pub parse_errors: AtomicU64,
}

impl Stats {
    /// Counters for `workers` ingress threads.
    pub fn new(workers: usize) -> Stats {
        Stats {
            tls12: AtomicU64::new(0),
            tls13: AtomicU64::new(0),
            handshake_failures: AtomicU64::new(0),
            requests: state::RequestCounts::new(workers),
            latency: Default::default(),
            refused_connections: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            over_in_flight: AtomicU64::new(0),
            client_share: AtomicU64::new(0),
            local_errors: AtomicU64::new(0),
            send_timeouts: AtomicU64::new(0),
            parse_errors: AtomicU64::new(0),
        }
    }

    /// Requests by service and status class, summed over the workers.
    pub fn requests(&self) -> std::collections::BTreeMap<String, [u64; 6]> {
        self.requests.sum()
    }

    fn request(&self, worker: usize, service: &str, status: StatusCode, took: Duration) {
        self.requests.count(worker, service, status);
        self.latency.observe(took);
    }
}

struct Shared {
    proxy: proxy::Proxy,
    acceptor: TlsAcceptor,
    cfg: IngressConfig,
    permits: Arc<Semaphore>,
    stats: Arc<Stats>,
    access_log: Option<Arc<access_log::AccessLog>>,
}

/// Loads certificates (errors stop startup), then spawns the acceptors on the bound
/// `listeners`, the redirect listeners and the health checker: the handle, and the part
/// whose `run` is the ingress's life.
pub async fn start(
    cfg: &IngressConfig,
    listeners: Listeners,
    zone: &str,
    state_dir: &Path,
    acme_fleet: Option<Arc<crate::acme::fleet::Fleet>>,
    registry: &Arc<Registry>,
    shutdown: &Shutdown,
) -> Result<(Ingress, Part<Error>), Error> {
    let mut part = Part::new();
    let tasks = &mut part;
    let source = if cfg.certs.is_empty() {
        tls::Source::SelfSigned {
            zone: zone.to_owned(),
            dir: state_dir.join("tls"),
        }
    } else {
        tls::Source::Files(cfg.certs.clone())
    };
    let acme = cfg
        .acme
        .as_ref()
        .map(|a| crate::acme::Acme::load(state_dir, a));
    let certs = Arc::new(tls::CertStore::load_with_acme(source, acme.clone())?);
    let server_config = tls::server_config(certs.clone(), cfg.session_resumption)?;
    let access_log = match &cfg.access_log {
        Some(target) => Some(access_log::AccessLog::start(
            match target {
                crate::config::AccessLogConfig::Stderr => access_log::Target::Stderr,
                crate::config::AccessLogConfig::File(p) => access_log::Target::File(p.clone()),
            },
            cfg.access_log_query,
        )?),
        None => None,
    };
    let allowed = routes::HostAllowList::new(cfg.route_hosts.iter().map(String::as_str));
    let routes = follow_routes(registry, zone, allowed, shutdown, tasks);
    let backend_tls = proxy::BackendTls {
        config: Arc::new(backend_tls::client_config(cfg.backend_ca_file.as_deref())?),
        registry: registry.clone(),
        zone: Arc::from(zone),
    };
    let stats = Arc::new(Stats::new(listeners.per_worker.len()));
    let shared = Arc::new(Shared {
        proxy: proxy::Proxy::new(
            registry.clone(),
            routes.clone(),
            zone,
            cfg,
            stats.clone(),
            backend_pool::Budget::new(backend_connections(cfg)),
        ),
        acceptor: TlsAcceptor::from(Arc::new(server_config)),
        cfg: cfg.clone(),
        permits: Arc::new(Semaphore::new(cfg.max_connections)),
        stats,
        access_log: access_log.clone(),
    });
    let Listeners {
        per_worker,
        redirect,
        listen: bound,
        http_redirect: bound_redirect,
    } = listeners;
    for (i, listeners) in per_worker.into_iter().enumerate() {
        let (shared, shutdown, backend_tls) =
            (shared.clone(), shutdown.clone(), backend_tls.clone());
        crate::worker::spawn(format!("ingress-{i}"), tasks, move || async move {
            let pool = Arc::new(proxy::pool(
                backend_tls.clone(),
                i,
                shared.proxy.budget.clone(),
            ));
            let mut set = JoinSet::new();
            for l in listeners {
                let l = TcpListener::from_std(l).map_err(Error::Listener)?;
                let (shared, shutdown, pool) = (shared.clone(), shutdown.clone(), pool.clone());
                set.spawn(async move { accept_tls(l, shared, pool, shutdown).await });
            }
            while set.join_next().await.is_some() {}
            Ok::<(), Error>(())
        })?;
    }
    let https_port = cfg.listen.first().map(|a| a.port()).unwrap_or(443);
    for l in redirect {
        let l = TcpListener::from_std(l).map_err(Error::Listener)?;
        let shutdown = shutdown.clone();
        let challenges = acme.as_ref().map(|a| a.challenges.clone());
        tasks.spawn(async move { accept_redirect(l, https_port, challenges, shutdown).await });
    }
    if let (Some(a), Some(acme)) = (&cfg.acme, &acme) {
        tasks.adopt(
            acme.start(a, zone, state_dir, acme_fleet, registry, shutdown),
            shutdown,
        );
    }
    {
        let (h, r, s) = (cfg.health.clone(), registry.clone(), shutdown.clone());
        tasks.spawn(async move { health::run(h, r, backend_tls, s).await });
    }
    tracing::info!(listen = ?cfg.listen, redirect = ?cfg.http_redirect, zone, "ingress up");
    let ingress = Ingress {
        certs,
        stats: shared.stats.clone(),
        acme,
        listen: bound,
        http_redirect: bound_redirect,
        routes,
        access_log,
        backend_budget: shared.proxy.budget.clone(),
    };
    Ok((ingress, part))
}

/// The route table, rebuilt from every registry snapshot by a task (older claims keep
/// their place across rebuilds); conflicts and bad label values are logged when they change.
fn follow_routes(
    registry: &Arc<Registry>,
    zone: &str,
    allowed: routes::HostAllowList,
    shutdown: &Shutdown,
    tasks: &mut crate::part::Part<Error>,
) -> routes::Routes {
    let first = routes::RouteTable::build(&registry.snapshot(), zone, &allowed, None);
    report_routes(None, &first);
    let table: routes::Routes = Arc::new(arc_swap::ArcSwap::from_pointee(first));
    let tx = table.clone();
    let (mut snaps, mut shutdown, zone) = (registry.subscribe(), shutdown.clone(), zone.to_owned());
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                changed = snaps.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let snap = snaps.borrow_and_update().clone();
                    let old = tx.load_full();
                    let new = routes::RouteTable::build(&snap, &zone, &allowed, Some(&old));
                    report_routes(Some(&old), &new);
                    tx.store(Arc::new(new));
                }
            }
        }
    });
    table
}

fn report_routes(old: Option<&routes::RouteTable>, new: &routes::RouteTable) {
    if old.is_none_or(|o| o.conflicts() != new.conflicts()) {
        for c in new.conflicts() {
            tracing::warn!(host = %c.host, prefix = %c.prefix, serving = %c.winner, left_out = %c.loser, "ingress: two services claim one route; the older claim serves it");
        }
    }
    if old.is_none_or(|o| o.refused() != new.refused()) {
        for r in new.refused() {
            tracing::warn!(service = %r.service, host = %r.host, "ingress: route claim refused: {}", r.why);
        }
    }
    if old.is_none_or(|o| o.problems() != new.problems()) {
        for p in new.problems() {
            tracing::warn!("ingress: route label left out: {p}");
        }
    }
}

/// `ingress.max_backend_connections`, or half the open-files limit (at least 64).
fn backend_connections(cfg: &IngressConfig) -> usize {
    cfg.max_backend_connections
        .unwrap_or_else(|| (crate::fd_limit::current() / 2).max(64) as usize)
}

/// The ingress's listeners, bound before it starts ([`bind_listeners`]): for each worker
/// thread an `SO_REUSEPORT` listener on every `ingress.listen` address, and the
/// `ingress.http_redirect` listeners.
pub struct Listeners {
    per_worker: Vec<Vec<std::net::TcpListener>>,
    redirect: Vec<std::net::TcpListener>,
    /// The bound HTTPS addresses (the actual ports, where port 0 was asked for).
    pub listen: Vec<SocketAddr>,
    pub http_redirect: Vec<SocketAddr>,
}

/// Binds every listener of `cfg` (errors stop startup before anything serves). One thread
/// per core will each run its own single-threaded runtime with its own listeners and backend
/// pool: a connection, its requests and their backend connections stay on one thread (no
/// cross-thread wake-ups), as nginx's workers do.
pub fn bind_listeners(cfg: &IngressConfig) -> Result<Listeners, Error> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut per_worker: Vec<Vec<std::net::TcpListener>> =
        (0..workers).map(|_| Vec::new()).collect();
    let mut listen = Vec::new();
    for addr in &cfg.listen {
        let mut actual = *addr;
        for w in per_worker.iter_mut() {
            let l = bind(actual).map_err(|source| Error::Bind {
                addr: *addr,
                source,
            })?;
            actual = l.local_addr().unwrap_or(actual);
            w.push(l);
        }
        listen.push(actual);
    }
    let mut redirect = Vec::new();
    let mut http_redirect = Vec::new();
    for addr in &cfg.http_redirect {
        let l = bind(*addr).map_err(|source| Error::Bind {
            addr: *addr,
            source,
        })?;
        http_redirect.push(l.local_addr().unwrap_or(*addr));
        redirect.push(l);
    }
    Ok(Listeners {
        per_worker,
        redirect,
        listen,
        http_redirect,
    })
}

fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

async fn accept_tls(
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
    let hold = proxy::Hold {
        slot,
        shutdown: shutdown.clone(),
    };
    let tls = match tokio::time::timeout(
        shared.cfg.header_read_timeout,
        shared.acceptor.accept(stream),
    )
    .await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            shared.stats.handshake_failures.fetch_add(1, Relaxed);
            return;
        }
        Err(_) => {
            shared.stats.handshake_failures.fetch_add(1, Relaxed);
            return;
        }
    };
    if tls.get_ref().1.alpn_protocol() == Some(crate::acme::challenge::ACME_TLS_ALPN) {
        return; // a tls-alpn-01 validation: the handshake was the answer (RFC 8737 §3)
    }
    let tls_version = match tls.get_ref().1.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => {
            shared.stats.tls13.fetch_add(1, Relaxed);
            "1.3"
        }
        _ => {
            shared.stats.tls12.fetch_add(1, Relaxed);
            "1.2"
        }
    };
    let sni: Option<Arc<str>> = shared
        .access_log
        .as_ref()
        .and(tls.get_ref().1.server_name())
        .map(Arc::from);
    let activity = Arc::new(AtomicU64::new(now_ms()));
    let io = TokioIo::new(Active {
        inner: tls,
        last: Some(activity.clone()),
        sent: None,
    });
    // HTTP/2 idleness is counted in streams: the keep-alive PINGs (and their ACKs) move bytes
    // but are not use, and would keep an unused connection open for ever
    let streams = (io.inner().inner.get_ref().1.alpn_protocol() == Some(b"h2")).then(|| {
        Arc::new(Streams {
            open: AtomicU64::new(0),
            last: AtomicU64::new(now_ms()),
        })
    });
    let max_streams = shared.cfg.max_streams_per_connection;
    // HTTP/1.1 answers one request at a time; two slots leave room for the next one's
    // response while the last one's body is being dropped
    let sends = send_watch::Sends::new(if streams.is_some() {
        max_streams as usize
    } else {
        2
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.cfg.header_read_timeout)
        .max_buf_size(shared.cfg.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(shared.cfg.max_header_bytes).unwrap_or(u32::MAX))
        // each stream can hold a backend connection: one client connection must not fan
        // out to hundreds
        .max_concurrent_streams(max_streams)
        .keep_alive_interval(Some(
            Duration::from_secs(30).min(shared.cfg.idle_timeout / 2),
        ));
    let svc = {
        let shared = shared.clone();
        let streams = streams.clone();
        let sends = sends.clone();
        service_fn(move |req| {
            let sends = sends.clone();
            let (shared, pool, hold) = (shared.clone(), pool.clone(), hold.clone());
            let stream = streams.as_ref().map(StreamGuard::open);
            let sni = sni.clone();
            async move {
                let start = std::time::Instant::now();
                let logged = shared.access_log.as_ref().map(|log| {
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
                    (log.clone(), req.method().clone(), host, path)
                });
                let (resp, outcome) = shared.proxy.handle(&pool, req, peer, &hold).await;
                // requests that no route took are counted together: a client sending random
                // Hosts must not grow the metrics without bound
                let label = outcome.service.as_deref().unwrap_or("-");
                shared
                    .stats
                    .request(pool.worker, label, resp.status(), start.elapsed());
                // the line is written when the response body is done (or dropped)
                let resp = match logged {
                    Some((log, method, host, path)) => {
                        let pending = access_log::Pending {
                            log,
                            start,
                            bytes_in: outcome.bytes_in.clone(),
                            entry: Some(access_log::Entry {
                                time: std::time::SystemTime::now(),
                                client: peer,
                                tls: tls_version,
                                sni,
                                method,
                                host,
                                path,
                                status: resp.status().as_u16(),
                                bytes_in: 0,
                                bytes_out: 0,
                                duration: Duration::ZERO,
                                service: outcome.service.clone(),
                                backend: outcome.backend.clone(),
                                retries: outcome.retries,
                                upstream_status: outcome.upstream_status,
                            }),
                        };
                        resp.map(|body| pending.wrap(body))
                    }
                    None => resp,
                };
                // an h2 stream is open until its response body is done; the body is
                // watched for the send timeout from now on
                let watch = sends.watch(now_ms());
                let resp = resp.map(|body| send_watch::Watched::new(body, watch, stream));
                Ok::<_, std::convert::Infallible>(resp)
            }
        })
    };
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let idle = shared.cfg.idle_timeout;
    let send_timeout = shared.cfg.send_timeout.as_millis() as u64;
    let tick = idle.min(shared.cfg.send_timeout) / 4;
    let mut drain = send_watch::Drain::default();
    let mut closing = false;
    // after an idle close starts: a client that never finishes it (an h2 client that does not
    // answer the GOAWAY's PING) is cut off
    let mut give_up = std::pin::pin!(tokio::time::sleep(Duration::MAX));
    let mut idle_closing = false;
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
                conn.as_mut().graceful_shutdown();
            }
            // the send timeout holds while closing too: a drain must not wait on a client
            // that does not read
            _ = tokio::time::sleep(tick) => {
                let now = now_ms();
                drain.observe(now, sent.load(Relaxed), unacknowledged(fd));
                let stalled = sends.stalled_ms(now);
                if stalled >= send_timeout && !drain.client_reading(now, send_timeout) {
                    tracing::debug!(%peer, stalled, "ingress: a response made no progress for send_timeout; closing the connection");
                    shared.stats.send_timeouts.fetch_add(1, Relaxed);
                    return;
                }
                if closing {
                    continue;
                }
                let last = match &streams {
                    Some(s) if s.open.load(Relaxed) > 0 => now_ms(),
                    Some(s) => s.last.load(Relaxed),
                    None => activity.load(Relaxed),
                };
                if now_ms().saturating_sub(last) >= idle.as_millis() as u64 {
                    closing = true;
                    idle_closing = true;
                    give_up.as_mut().reset(tokio::time::Instant::now() + IDLE_CLOSE_GRACE);
                    conn.as_mut().graceful_shutdown();
                }
            }
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

/// Plain-HTTP listeners: 308 to the same host and path over https.
async fn accept_redirect(
    listener: TcpListener,
    https_port: u16,
    challenges: Option<Arc<crate::acme::challenge::Challenges>>,
    mut shutdown: Shutdown,
) -> Result<(), Error> {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
        };
        let challenges = challenges.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let challenges = challenges.clone();
                async move {
                    // http-01: a pending challenge's token answers its key authorization
                    if let Some(answer) = challenges
                        .as_ref()
                        .and_then(|c| c.http_answer(req.uri().path()))
                    {
                        let mut r = Response::new(Full::new(Bytes::from(answer)));
                        r.headers_mut().insert(
                            header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/octet-stream"),
                        );
                        return Ok::<_, std::convert::Infallible>(r);
                    }
                    // only a well-formed host goes into Location (no `web.example.com@evil`)
                    let host = match route::routing_host(req.method(), req.uri(), req.headers()) {
                        Ok(h) => match h.rsplit_once(':') {
                            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
                                name.to_owned()
                            }
                            _ => h,
                        },
                        Err(refusal) => {
                            let mut r = Response::new(Full::new(Bytes::from(format!(
                                "{}\n",
                                refusal.message()
                            ))));
                            *r.status_mut() = refusal.status();
                            return Ok::<_, std::convert::Infallible>(r);
                        }
                    };
                    let port = if https_port == 443 {
                        String::new()
                    } else {
                        format!(":{https_port}")
                    };
                    let path = req
                        .uri()
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or("/");
                    let location = format!("https://{host}{port}{path}");
                    let mut r = Response::new(Full::new(Bytes::from(format!(
                        "redirecting to {location}\n"
                    ))));
                    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
                    if let Ok(v) = http::HeaderValue::from_str(&location) {
                        r.headers_mut().insert(header::LOCATION, v);
                    }
                    Ok(r)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
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

pub(crate) fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
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

impl Ingress {
    /// Appends `vxgate_tls_*` and `vxgate_http_*` to `out`.
    pub fn render_metrics(&self, out: &mut String) {
        use vxgate_metrics::text::{by_label, escape, family};
        let s = &self.stats;
        by_label(
            out,
            "vxgate_tls_handshakes_total",
            "counter",
            "Completed TLS handshakes by version.",
            "version",
            &[
                ("1.2", s.tls12.load(Relaxed)),
                ("1.3", s.tls13.load(Relaxed)),
            ],
        );
        family(
            out,
            "vxgate_tls_handshake_failures_total",
            "counter",
            "TLS handshakes that failed or timed out.",
        );
        let _ = writeln!(
            out,
            "vxgate_tls_handshake_failures_total {}",
            s.handshake_failures.load(Relaxed)
        );
        family(
            out,
            "vxgate_http_requests_total",
            "counter",
            "HTTP requests by service and status class.",
        );
        for (service, by_class) in s.requests().iter() {
            for (class, n) in by_class.iter().enumerate().filter(|(_, n)| **n > 0) {
                let _ = writeln!(
                    out,
                    "vxgate_http_requests_total{{service=\"{}\",class=\"{class}xx\"}} {n}",
                    escape(service)
                );
            }
        }
        family(
            out,
            "vxgate_http_connections_refused_total",
            "counter",
            "Connections closed at accept (max_connections).",
        );
        let _ = writeln!(
            out,
            "vxgate_http_connections_refused_total {}",
            s.refused_connections.load(Relaxed)
        );
        family(
            out,
            "vxgate_http_backend_seconds",
            "histogram",
            "Time from a request's head to the backend's response head.",
        );
        s.latency.render("vxgate_http_backend_seconds", "", out);
        by_label(
            out,
            "vxgate_http_limited_total",
            "counter",
            "Requests refused by limits: rate (vxgate.rate, 429), in_flight (vxgate.max_in_flight or a client's half of it, 503), client_share (a client's quarter of the backend connections, 503).",
            "reason",
            &[
                ("rate", s.rate_limited.load(Relaxed)),
                ("in_flight", s.over_in_flight.load(Relaxed)),
                ("client_share", s.client_share.load(Relaxed)),
            ],
        );
        for (name, help, v) in [
            (
                "vxgate_http_local_errors_total",
                "Requests answered 503 for a reason of ours (no descriptor, port or backend connection budget); no backend was ejected.",
                s.local_errors.load(Relaxed),
            ),
            (
                "vxgate_http_send_timeouts_total",
                "Connections closed because a response made no progress towards the client for send_timeout_ms.",
                s.send_timeouts.load(Relaxed),
            ),
            (
                "vxgate_http_parse_errors_total",
                "Requests the HTTP parser refused (400, 431).",
                s.parse_errors.load(Relaxed),
            ),
        ] {
            family(out, name, "counter", help);
            let _ = writeln!(out, "{name} {v}");
        }
        vxgate_metrics::text::single(
            out,
            "vxgate_http_backend_connections",
            "gauge",
            "HTTP/1.1 backend connections open (ingress.max_backend_connections bounds them).",
            self.backend_budget.open(),
        );
        vxgate_metrics::text::single(
            out,
            "vxgate_http_backend_connections_limit",
            "gauge",
            "ingress.max_backend_connections in effect.",
            self.backend_budget.cap(),
        );
        if let Some(log) = &self.access_log {
            by_label(
                out,
                "vxgate_http_access_log_lines_total",
                "counter",
                "Access log lines: written, dropped (the writer was behind; requests never wait) or failed (write errors).",
                "result",
                &[
                    ("written", log.written.load(Relaxed)),
                    ("dropped", log.dropped.load(Relaxed)),
                    ("failed", log.failed.load(Relaxed)),
                ],
            );
        }
        let table = self.routes.load();
        vxgate_metrics::text::single(
            out,
            "vxgate_http_route_conflicts",
            "gauge",
            "Host and path prefixes claimed by more than one service (the older claim serves).",
            table.conflicts().len(),
        );
    }
}
