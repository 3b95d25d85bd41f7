//! The reverse proxy: one request in, one backend chosen, the request streamed there and the
//! response streamed back. Bodies are never buffered whole.
//!
//! The service comes from the route table (host and path, [`super::routes`]). No route →
//! 404; no serving backend → 503; a connect failure ejects that backend
//! (passive health); any failure of an idempotent request without a body (a refused connect,
//! a pooled connection reset under it) is retried on other backends (three in all), else 502; no response head within `backend_timeout` → 504. HTTP/1.1 upgrades (WebSocket)
//! are spliced both ways after the backend's 101.

use super::route;
use super::routes;
use crate::config::LoadBalancing;
use crate::registry::{Container, Health, Registry};
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most backends one idempotent request is tried on (connect failures and connections reset
/// under the request).
const MAX_ATTEMPTS: usize = 3;

pub use super::backend_pool::Body;

/// What a client connection lends the requests it carries: its `max_connections` slot (an
/// upgraded connection keeps it until it closes) and the shutdown signal (which drains it).
#[derive(Clone)]
pub struct Hold {
    pub slot: Arc<tokio::sync::OwnedSemaphorePermit>,
    pub shutdown: crate::shutdown::Shutdown,
}

/// How long an upgraded connection may go on after shutdown was asked before it is closed
/// (within the process's 10 s drain).
const UPGRADE_DRAIN: Duration = Duration::from_secs(5);

/// Kept-alive connections to backends: HTTP/1.1 ([`super::backend_pool`], hyper's
/// connection API), HTTP/2 with prior knowledge (h2c) for services labelled
/// `vxgate.protocol=h2c`, and HTTP/2 over TLS for `vxgate.protocol=h2` (both hyper's pooled
/// client: one HTTP/2 connection carries many requests at once). Each ingress worker thread
/// has its own, so a request and its backend connection live on one thread.
pub struct Pool {
    h1: Arc<super::backend_pool::H1Pool>,
    h2c: Client<HttpConnector, Body>,
    h2: Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>,
    /// The ingress worker thread this pool belongs to: its shard of per-worker state (the
    /// request counters).
    pub worker: usize,
}

/// How the ingress speaks TLS to `h2` backends.
#[derive(Clone)]
pub struct BackendTls {
    pub config: Arc<rustls::ClientConfig>,
    /// The names certificates are verified for come from the registry (see
    /// [`super::backend_tls::server_name`]).
    pub registry: Arc<Registry>,
    pub zone: Arc<str>,
}

pub fn pool(tls: BackendTls, worker: usize, budget: Arc<super::backend_pool::Budget>) -> Pool {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    let h1 = super::backend_pool::H1Pool::with_budget(budget);
    let h2c = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .http2_only(true)
        .build(connector.clone());
    let BackendTls {
        config,
        registry,
        zone,
    } = tls;
    let mut plain = connector;
    // the TLS connector dials https:// URIs
    plain.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*config).clone())
        .https_only()
        .with_server_name_resolver(move |uri: &http::Uri| {
            let ip = uri
                .host()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
                .and_then(|h| h.parse().ok());
            match ip {
                Some(ip) => Ok(super::backend_tls::server_name(&registry, &zone, ip)),
                None => Err(format!("backend URI {uri} has no address")),
            }
        })
        .enable_http2()
        .wrap_connector(plain);
    let h2 = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .http2_only(true)
        .build(https);
    Pool {
        h1,
        h2c,
        h2,
        worker,
    }
}

impl Pool {
    /// Sends `req` (its URI from [`Pool::target`]) to the backend at `addr` the way
    /// `protocol` says.
    pub async fn request(
        &self,
        protocol: routes::Protocol,
        addr: SocketAddr,
        req: Request<Body>,
    ) -> Result<Response<Body>, super::backend_pool::Error> {
        let boxed = |r: Response<Incoming>| r.map(|b| b.boxed());
        match protocol {
            routes::Protocol::Http1 => self.h1.request(addr, req).await,
            routes::Protocol::H2c => Ok(boxed(self.h2c.request(req).await?)),
            routes::Protocol::H2 => Ok(boxed(self.h2.request(req).await?)),
        }
    }

    /// The HTTP version of backend requests in `protocol`.
    pub fn version(protocol: routes::Protocol) -> http::Version {
        match protocol {
            routes::Protocol::Http1 => http::Version::HTTP_11,
            routes::Protocol::H2c | routes::Protocol::H2 => http::Version::HTTP_2,
        }
    }

    /// The target of a request for `path` (`/path?query`) to the backend at `addr` in
    /// `protocol`: the path itself for HTTP/1.1 (the connection is already the backend's),
    /// `scheme://addr/path` for the HTTP/2 clients (they pick the connection by it).
    pub fn target(
        protocol: routes::Protocol,
        addr: SocketAddr,
        path: &str,
    ) -> Result<http::Uri, http::uri::InvalidUri> {
        match protocol {
            routes::Protocol::Http1 => path.parse(),
            routes::Protocol::H2c => format!("http://{addr}{path}").parse(),
            routes::Protocol::H2 => format!("https://{addr}{path}").parse(),
        }
    }
}

/// What became of a request, beside its response: for the metrics and the access log.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The service its route named (none: no route).
    pub service: Option<Arc<str>>,
    /// The backend that answered, or the last one tried.
    pub backend: Option<String>,
    /// Backends tried after the first.
    pub retries: u32,
    /// The backend's status, when one answered.
    pub upstream_status: Option<u16>,
    /// Request body bytes read from the client so far (the count goes on while it streams).
    pub bytes_in: Arc<std::sync::atomic::AtomicU64>,
}

/// Shared by every connection of the ingress.
pub struct Proxy {
    pub registry: Arc<Registry>,
    /// The route table of the newest registry snapshot.
    pub routes: routes::Routes,
    pub zone: String,
    pub policy: LoadBalancing,
    pub backend_timeout: Duration,
    /// An upgraded connection with no bytes either way for this long is closed.
    pub upgrade_idle: Duration,
    /// Requests in flight per backend, for `least_requests` (only counted under it).
    in_flight: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    /// Requests in flight per service, for `vxgate.max_in_flight`.
    service_in_flight: Mutex<HashMap<Arc<str>, Arc<AtomicUsize>>>,
    /// Token buckets per (service, client), for `vxgate.rate`.
    buckets: Mutex<super::limit::Buckets>,
    /// The ingress's counters (limits refused here).
    stats: Arc<super::Stats>,
    /// The key of sticky-session cookies (drawn at start).
    sticky: Option<super::sticky::Sticky>,
    rng: AtomicUsize,
    /// Requests in flight per (service, client): a client's share of `vxgate.max_in_flight`.
    service_clients: Arc<super::limit::Shares<(Arc<str>, std::net::IpAddr)>>,
    /// Requests in flight to backends per client: at most a quarter of the backend
    /// connections (half a backend's share).
    clients: Arc<super::limit::Shares<std::net::IpAddr>>,
    /// The backend connection budget (its cap sizes a client's share).
    pub budget: Arc<super::backend_pool::Budget>,
    /// `ingress.ipv6_client_prefix`.
    v6_prefix: u8,
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("{msg}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// An error with its causes, `outer: inner: root` (hyper's own text says only "client error
/// (Connect)"; the cause, a refused connection or a certificate rejected, is below it).
struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

/// Counts a request in flight on a backend for as long as it lives.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Proxy {
    pub fn new(
        registry: Arc<Registry>,
        routes: routes::Routes,
        zone: &str,
        cfg: &crate::config::IngressConfig,
        stats: Arc<super::Stats>,
        budget: Arc<super::backend_pool::Budget>,
    ) -> Proxy {
        Proxy {
            registry,
            routes,
            zone: zone.to_owned(),
            policy: cfg.load_balancing,
            backend_timeout: cfg.backend_timeout,
            upgrade_idle: cfg.upgrade_idle_timeout,
            service_clients: Default::default(),
            clients: Default::default(),
            budget,
            v6_prefix: cfg.ipv6_client_prefix,
            in_flight: Mutex::new(HashMap::new()),
            service_in_flight: Mutex::new(HashMap::new()),
            buckets: Mutex::new(super::limit::Buckets::new(super::limit::CAPACITY)),
            stats,
            sticky: super::sticky::Sticky::random(),
            rng: AtomicUsize::new(0x9e37_79b9),
        }
    }

    fn counter(&self, name: &str) -> Arc<AtomicUsize> {
        let mut m = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = m.get(name) {
            return c.clone();
        }
        m.entry(name.to_owned()).or_default().clone()
    }

    fn service_counter(&self, service: &Arc<str>) -> Arc<AtomicUsize> {
        let mut m = self
            .service_in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        m.entry(service.clone()).or_default().clone()
    }

    fn random(&self) -> usize {
        // a Weyl sequence mixed: cheap and good enough to pick two backends
        let x = self
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15_u64 as usize, Relaxed);
        x ^ (x >> 29)
    }

    /// The backends in the order to try them: the chosen one first. `turn` is the request's
    /// round-robin turn (its service's [`routes::Cursor`]).
    fn order(&self, turn: usize, backends: &[Arc<Container>]) -> Vec<Arc<Container>> {
        let n = backends.len();
        let first = match self.policy {
            LoadBalancing::RoundRobin => route::round_robin(turn, n),
            LoadBalancing::LeastRequests => {
                let loads: Vec<usize> = backends
                    .iter()
                    .map(|b| self.counter(&b.name).load(Relaxed))
                    .collect();
                route::two_choices(&loads, self.random(), self.random())
            }
        };
        (0..n).map(|k| backends[(first + k) % n].clone()).collect()
    }

    /// Handles one request from `client` (arrived over TLS), sending it through `pool`.
    pub async fn handle(
        &self,
        pool: &Pool,
        req: Request<Incoming>,
        client: SocketAddr,
        hold: &Hold,
    ) -> (Response<Body>, Outcome) {
        let mut outcome = Outcome::default();
        let resp = self.forward(pool, req, client, hold, &mut outcome).await;
        (resp, outcome)
    }

    async fn forward(
        &self,
        pool: &Pool,
        mut req: Request<Incoming>,
        client: SocketAddr,
        hold: &Hold,
        outcome: &mut Outcome,
    ) -> Response<Body> {
        // requests that cannot be forwarded as they are get a 4xx here, and never reach (or
        // count against) a backend
        let host = match route::routing_host(req.method(), req.uri(), req.headers()) {
            Ok(h) => h,
            Err(refusal) => return text(refusal.status(), refusal.message()),
        };
        // a guard on the current table (no lock, no reference count), let go before the
        // first await
        // one normalised path for the route and the backend (`/public/../secret` is
        // `/secret`, matched and forwarded as such)
        let normalized: Option<String> =
            match super::path::normalize(req.uri().path_and_query().map_or("/", |p| p.as_str())) {
                Ok(std::borrow::Cow::Borrowed(_)) => None,
                Ok(std::borrow::Cow::Owned(t)) => Some(t),
                Err(e) => return text(StatusCode::BAD_REQUEST, e.message()),
            };
        let target: &str = normalized
            .as_deref()
            .unwrap_or_else(|| req.uri().path_and_query().map_or("/", |p| p.as_str()));
        let table = self.routes.load();
        let Some(routed) = table.lookup(&host, target) else {
            let why = if table.knows_host(&host) {
                format!(
                    "no route for {} on host {host}",
                    target.split('?').next().unwrap_or("/")
                )
            } else {
                format!("no service for host {host}")
            };
            return text(StatusCode::NOT_FOUND, &why);
        };
        let service = routed.service.clone();
        outcome.service = Some(service.clone());
        let policy = routed.policy.clone();
        let who = super::limit::client_key(client.ip(), self.v6_prefix);
        if let Some(rate) = policy.rate {
            let taken = self.buckets.lock().unwrap_or_else(|p| p.into_inner()).take(
                &service,
                who,
                rate,
                std::time::Instant::now(),
            );
            if let Err(wait) = taken {
                self.stats.rate_limited.fetch_add(1, Relaxed);
                let mut r = text(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!("too many requests to {service}; retry later"),
                );
                let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                r.headers_mut()
                    .insert(header::RETRY_AFTER, http::HeaderValue::from(secs));
                return r;
            }
        }
        // counted from here until the response body is done
        let service_guard = match policy.max_in_flight {
            Some(max) => {
                let c = self.service_counter(&service);
                if c.fetch_add(1, Relaxed) >= max {
                    c.fetch_sub(1, Relaxed);
                    self.stats.over_in_flight.fetch_add(1, Relaxed);
                    let mut r = text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!("{service} has {max} requests in flight; retry later"),
                    );
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
                    return r;
                }
                // and no client fills it alone: half the slots per client at most
                let Some(share) = self
                    .service_clients
                    .take((service.clone(), who), super::limit::client_share(max))
                else {
                    c.fetch_sub(1, Relaxed);
                    self.stats.over_in_flight.fetch_add(1, Relaxed);
                    let mut r = text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!(
                            "you have your share of {service}'s {max} requests in flight; retry later"
                        ),
                    );
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
                    return r;
                };
                Some((InFlight(c), share))
            }
            None => None,
        };
        // a client holds at most half of what one backend may: another client still
        // reaches the backend that one floods
        let Some(client_share) = self.clients.take(
            who,
            super::limit::client_share(super::limit::client_share(self.budget.cap())),
        ) else {
            self.stats.client_share.fetch_add(1, Relaxed);
            let mut r = text(
                StatusCode::SERVICE_UNAVAILABLE,
                "you have your share of backend connections in use; retry later",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
            return r;
        };
        let backends: Vec<Arc<Container>> =
            self.registry.view().serving(&service).cloned().collect();
        if backends.is_empty() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("no healthy backend for {service}"),
            );
        }
        // h2c and h2 alike: HTTP/2 to the backend
        let h2c = policy.protocol != routes::Protocol::Http1;
        let upgrade =
            !h2c && req.version() == http::Version::HTTP_11 && route::wants_upgrade(req.headers());
        // gRPC asks for trailers with `TE: trailers`, the one TE value HTTP/2 allows
        let te_trailers = req.headers().get_all(header::TE).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim() == "trailers"))
        });
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let has_body = !hyper::body::Body::is_end_stream(&body);
        let retry = route::retryable(&parts.method, has_body) && backends.len() > 1 && !upgrade;
        route::strip_hop_by_hop(&mut parts.headers, upgrade);
        if h2c && te_trailers {
            parts
                .headers
                .insert(header::TE, http::HeaderValue::from_static("trailers"));
        }
        let host_only = host.split(':').next().unwrap_or(&host);
        route::add_forwarded(&mut parts.headers, client.ip(), host_only);
        // the backend gets the host it was routed by: the target's authority when it has one
        // (else the Host header it came with, which routing_host found to be that host)
        if parts.uri.authority().is_some() {
            match http::HeaderValue::from_str(&host) {
                Ok(v) => {
                    parts.headers.insert(header::HOST, v);
                }
                Err(_) => return text(StatusCode::BAD_REQUEST, "Host is not a host name"),
            }
        }
        let path = routes::forwarded_target(
            routed,
            normalized
                .as_deref()
                .unwrap_or_else(|| parts.uri.path_and_query().map_or("/", |p| p.as_str())),
        )
        .into_owned();
        // the request's round-robin turn, taken once it is known to be forwarded
        let turn = match self.policy {
            LoadBalancing::RoundRobin => routed.cursor.next(),
            LoadBalancing::LeastRequests => 0,
        };
        drop(table);
        // a client body that turns out malformed (bad chunking, cut short) is the client's
        // fault: 400, no retry, and no mark against the backend
        let body_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = body_failed.clone();
        let bytes_in = outcome.bytes_in.clone();
        let mut body = Some(
            body.map_frame(move |f| {
                if let Some(d) = f.data_ref() {
                    bytes_in.fetch_add(d.len() as u64, Relaxed);
                }
                f
            })
            .map_err(move |e| {
                flag.store(true, Relaxed);
                e
            })
            .boxed(),
        );
        let mut order = self.order(turn, &backends);
        // a sticky client goes to the backend its cookie names while that one serves; if it
        // is gone or unhealthy, the balancer's choice answers and the cookie is set anew
        let sticky = self.sticky.as_ref().filter(|_| policy.sticky);
        let mut pinned: Option<String> = None;
        if let Some(key) = sticky {
            let name = super::sticky::cookie_name(&service);
            let cookies = parts
                .headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok());
            if let Some(value) = super::sticky::find(cookies, &name)
                && let Some(i) = order
                    .iter()
                    .position(|b| key.token(&service, &b.name) == value)
            {
                let b = order.remove(i);
                pinned = Some(b.name.clone());
                order.insert(0, b);
            }
        }
        // Up to three different backends: when several containers of a service go at once
        // (`docker rm -f` of a scaled service), one retry can land on another dying one.
        let attempts = if retry {
            backends.len().min(MAX_ATTEMPTS)
        } else {
            1
        };
        for (attempt, backend) in order.iter().take(attempts).enumerate() {
            outcome.retries = attempt as u32;
            outcome.backend = Some(backend.name.clone());
            let addr = SocketAddr::new(backend.ip, backend.port);
            let Ok(uri) = Pool::target(policy.protocol, addr, &path) else {
                return text(StatusCode::BAD_REQUEST, "bad request target");
            };
            let mut out = Request::builder()
                .method(parts.method.clone())
                .uri(uri)
                .version(Pool::version(policy.protocol));
            if let Some(h) = out.headers_mut() {
                *h = if attempts > 1 {
                    parts.headers.clone()
                } else {
                    std::mem::take(&mut parts.headers)
                };
            }
            let Ok(out) = out.body(body.take().unwrap_or_else(empty)) else {
                return text(StatusCode::BAD_REQUEST, "bad request");
            };
            // only least_requests reads the per-backend counts
            let guard = (self.policy == LoadBalancing::LeastRequests).then(|| {
                let counter = self.counter(&backend.name);
                counter.fetch_add(1, Relaxed);
                InFlight(counter)
            });
            let sent = pool.request(policy.protocol, addr, out);
            match tokio::time::timeout(self.backend_timeout, sent).await {
                Err(_) => {
                    return text(
                        StatusCode::GATEWAY_TIMEOUT,
                        &format!("backend {} timed out", backend.name),
                    );
                }
                Ok(Err(e)) if body_failed.load(Relaxed) => {
                    tracing::debug!(backend = %backend.name, "ingress: the client's body failed: {}", Chain(&e));
                    return text(StatusCode::BAD_REQUEST, "malformed request body");
                }
                Ok(Err(e)) if e.is_local() => {
                    // out of descriptors, ports or budget here: the backend did nothing wrong
                    tracing::warn!(backend = %backend.name, "ingress: cannot reach a backend for a local reason (not ejected): {}", Chain(&e));
                    self.stats.local_errors.fetch_add(1, Relaxed);
                    let mut r = text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the gateway is out of backend connections; retry later",
                    );
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
                    return r;
                }
                Ok(Err(e)) if e.is_connect() => {
                    tracing::warn!(backend = %backend.name, "ingress: connect failed, ejecting: {}", Chain(&e));
                    let _ = self.registry.set_health(&backend.name, Health::Unhealthy);
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::debug!(backend = %backend.name, "ingress: backend error: {}", Chain(&e));
                    // A kept-alive connection that died under the request (the backend was
                    // killed, say): an idempotent request without a body is safe to send
                    // again, to another backend.
                    if attempt + 1 < attempts {
                        continue;
                    }
                    return text(
                        StatusCode::BAD_GATEWAY,
                        &format!("backend {} failed", backend.name),
                    );
                }
                Ok(Ok(mut resp)) => {
                    outcome.upstream_status = Some(resp.status().as_u16());
                    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                        // a 101 to a request that asked for no WebSocket (its Upgrade was
                        // stripped) would open a tunnel nobody routes: refused
                        let Some(client_up) = client_upgrade else {
                            tracing::debug!(backend = %backend.name, "ingress: a 101 to a request that asked for no upgrade");
                            return text(
                                StatusCode::BAD_GATEWAY,
                                &format!("backend {} switched protocols unasked", backend.name),
                            );
                        };
                        {
                            let backend_up = hyper::upgrade::on(&mut resp);
                            let (hold, idle) = (hold.clone(), self.upgrade_idle);
                            tokio::spawn(async move {
                                if let (Ok(a), Ok(b)) = (client_up.await, backend_up.await) {
                                    splice(TokioIo::new(a), TokioIo::new(b), hold, idle).await;
                                }
                            });
                        }
                        let (p, _) = resp.into_parts();
                        return Response::from_parts(p, empty());
                    }
                    let (mut p, b) = resp.into_parts();
                    route::strip_hop_by_hop(&mut p.headers, false);
                    if let Some(key) = sticky
                        && pinned.as_deref() != Some(backend.name.as_str())
                        && let Ok(v) =
                            http::HeaderValue::from_str(&key.set_cookie(&service, &backend.name))
                    {
                        p.headers.append(header::SET_COOKIE, v);
                    }
                    // the in-flight counts last until the response body is done
                    let b = b.map_frame(move |f| {
                        let _ = (&guard, &service_guard, &client_share);
                        f
                    });
                    return Response::from_parts(p, b.boxed());
                }
            }
        }
        text(
            StatusCode::BAD_GATEWAY,
            &format!("no backend of {service} could be reached"),
        )
    }
}

/// Copies an upgraded connection both ways until either side closes, nothing moves for
/// `idle`, or [`UPGRADE_DRAIN`] after shutdown was asked. Holds the client connection's slot.
async fn splice<A, B>(client: A, backend: B, hold: Hold, idle: Duration)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Hold { slot, mut shutdown } = hold;
    let last = Arc::new(std::sync::atomic::AtomicU64::new(super::now_ms()));
    let mut client = super::Active {
        inner: client,
        last: Some(last.clone()),
        sent: None,
    };
    let mut backend = backend;
    let copy = tokio::io::copy_bidirectional(&mut client, &mut backend);
    tokio::pin!(copy);
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let until_drain = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut copy => break,
            _ = shutdown.wait(), if deadline.is_none() => {
                deadline = Some(tokio::time::Instant::now() + UPGRADE_DRAIN);
            }
            _ = until_drain => break,
            _ = tokio::time::sleep(idle / 4) => {
                let quiet = super::now_ms().saturating_sub(last.load(Relaxed));
                if quiet >= idle.as_millis() as u64 {
                    tracing::debug!("ingress: upgraded connection idle for {quiet} ms; closing");
                    break;
                }
            }
        }
    }
    drop(slot);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_logged_with_their_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("client error (Connect)")]
        struct Outer(#[source] std::io::Error);
        let inner =
            std::io::Error::new(std::io::ErrorKind::InvalidData, "invalid peer certificate");
        assert_eq!(
            Chain(&Outer(inner)).to_string(),
            "client error (Connect): invalid peer certificate"
        );
    }
}
