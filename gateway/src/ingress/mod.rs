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
mod conn;
pub(crate) use conn::{Active, now_ms};
pub mod health;
pub mod limit;
mod metrics;
pub mod path;
pub mod plan;
pub mod proxy;
mod redirect;
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
use http::StatusCode;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

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
    /// Time from a request's head to the response's head, a histogram per worker (summed
    /// when read: [`Stats::latency`]).
    latency: Box<[state::PerWorker<vxgate_metrics::Histogram>]>,
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
            latency: (0..workers.max(1)).map(|_| Default::default()).collect(),
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
        self.requests.count(worker, service, status, took);
        self.latency[worker % self.latency.len()].observe(took);
    }

    /// The time from request heads to response heads, summed over the workers.
    pub fn latency(&self) -> vxgate_metrics::Histogram {
        let sum = vxgate_metrics::Histogram::default();
        self.latency.iter().for_each(|h| sum.add(h));
        sum
    }
}

struct Shared {
    proxy: proxy::Proxy,
    tls: tls::ServerConfigs,
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
    let (certs, server_config, acme) = certificates(cfg, zone, state_dir)?;
    let access_log = open_access_log(cfg)?;
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
        tls: server_config,
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
    spawn_workers(per_worker, &shared, &backend_tls, shutdown, tasks)?;
    let https_port = cfg.listen.first().map(|a| a.port()).unwrap_or(443);
    for l in redirect {
        let l = TcpListener::from_std(l).map_err(Error::Listener)?;
        let shutdown = shutdown.clone();
        let challenges = acme.as_ref().map(|a| a.challenges.clone());
        tasks.spawn(
            async move { redirect::accept_redirect(l, https_port, challenges, shutdown).await },
        );
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

/// `ingress.access_log`'s writer, when on.
fn open_access_log(cfg: &IngressConfig) -> Result<Option<Arc<access_log::AccessLog>>, Error> {
    let log = match &cfg.access_log {
        Some(target) => Some(access_log::AccessLog::start(
            match target {
                crate::config::AccessLogConfig::Stderr => access_log::Target::Stderr,
                crate::config::AccessLogConfig::File(p) => access_log::Target::File(p.clone()),
            },
            cfg.access_log_query,
        )?),
        None => None,
    };
    Ok(log)
}

/// The certificates (configured files, else self-signed, with ACME's on top) and the TLS
/// server config over them.
fn certificates(
    cfg: &IngressConfig,
    zone: &str,
    state_dir: &Path,
) -> Result<
    (
        Arc<tls::CertStore>,
        tls::ServerConfigs,
        Option<crate::acme::Acme>,
    ),
    Error,
> {
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
    let server_config = tls::ServerConfigs::new(certs.clone(), cfg.session_resumption)?;
    Ok((certs, server_config, acme))
}

/// One `ingress-N` thread per worker's listeners, each with its own backend pool.
fn spawn_workers(
    per_worker: Vec<Vec<std::net::TcpListener>>,
    shared: &Arc<Shared>,
    backend_tls: &proxy::BackendTls,
    shutdown: &Shutdown,
    tasks: &mut Part<Error>,
) -> Result<(), Error> {
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
                set.spawn(async move { conn::accept_tls(l, shared, pool, shutdown).await });
            }
            while set.join_next().await.is_some() {}
            Ok::<(), Error>(())
        })?;
    }
    Ok(())
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
///
/// A listener systemd passed for an address (socket activation) is shared by every worker
/// instead (each accepts from the one queue).
pub fn bind_listeners(
    cfg: &IngressConfig,
    passed: &mut crate::activation::Passed,
) -> Result<Listeners, Error> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut per_worker: Vec<Vec<std::net::TcpListener>> =
        (0..workers).map(|_| Vec::new()).collect();
    let mut listen = Vec::new();
    let bind_err = |addr: &SocketAddr| {
        let addr = *addr;
        move |source| Error::Bind { addr, source }
    };
    for addr in &cfg.listen {
        if let Some(l) = passed.tcp(*addr) {
            let l = l.map_err(bind_err(addr))?;
            for w in per_worker.iter_mut() {
                w.push(l.try_clone().map_err(bind_err(addr))?);
            }
            listen.push(*addr);
            continue;
        }
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
        let l = match passed.tcp(*addr) {
            Some(l) => l,
            None => bind(*addr),
        }
        .map_err(bind_err(addr))?;
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
