//! The reverse proxy: one request in, one backend chosen, the request streamed there and the
//! response streamed back. Bodies are never buffered whole.
//!
//! The service comes from the route table (host and path, [`super::routes`]). No route →
//! 404; no serving backend → 503; a connect failure ejects that backend
//! (passive health); any failure of an idempotent request without a body (a refused connect,
//! a pooled connection reset under it) is retried on other backends (three in all), else 502; no response head within `backend_timeout` → 504. HTTP/1.1 upgrades (WebSocket)
//! are spliced both ways after the backend's 101.

use super::plan;
use super::route;
use super::routes;
use super::state::InFlight;
use crate::config::LoadBalancing;
use crate::registry::{Container, Health, Registry};
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use smallvec::SmallVec;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

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

/// Shared by every connection of the ingress. Nothing here takes a lock on the request
/// path: the services' counts live in the route table ([`super::state`]), the per-client
/// limits in tables of atomics ([`super::limit`]).
pub struct Proxy {
    pub registry: Arc<Registry>,
    /// The route table of the newest registry snapshot.
    pub routes: routes::Routes,
    pub zone: String,
    pub policy: LoadBalancing,
    pub backend_timeout: Duration,
    /// An upgraded connection with no bytes either way for this long is closed.
    pub upgrade_idle: Duration,
    /// Token buckets per (service, client), for `vxgate.rate`.
    rates: super::limit::Rates,
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

/// vxgate's own answer as a response.
fn reply(r: plan::Reply) -> Response<Body> {
    let mut resp = text(r.status, &r.message);
    if let Some(secs) = r.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, http::HeaderValue::from(secs));
    }
    resp
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

/// A client's place among a service's requests in flight.
type ServiceShare = super::limit::Share<(Arc<str>, std::net::IpAddr)>;

/// What a request holds while it is in flight: given back when its response body is done.
struct Admitted {
    _service: Option<(InFlight, ServiceShare)>,
    _client: super::limit::Share<std::net::IpAddr>,
}

/// A request ready to send: its head (rewritten), its body, the upgrade it may become.
struct Outgoing {
    parts: http::request::Parts,
    body: Option<Body>,
    /// Set when the client's body fails (its fault: 400, no retry, no mark on the backend).
    body_failed: Arc<std::sync::atomic::AtomicBool>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
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
            rates: super::limit::Rates::new(super::limit::SLOTS, std::time::Instant::now()),
            stats,
            sticky: super::sticky::Sticky::random(),
            rng: AtomicUsize::new(0x9e37_79b9),
        }
    }

    fn random(&self) -> usize {
        // a Weyl sequence mixed: cheap and good enough to pick two backends
        let x = self
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15_u64 as usize, Relaxed);
        x ^ (x >> 29)
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
        let resp = match self.forward(pool, req, client, hold, &mut outcome).await {
            Ok(r) => r,
            Err(r) => reply(r),
        };
        (resp, outcome)
    }

    /// The plan, its limits, then the backends in order until one answers.
    async fn forward(
        &self,
        pool: &Pool,
        req: Request<Incoming>,
        client: SocketAddr,
        hold: &Hold,
        outcome: &mut Outcome,
    ) -> Result<Response<Body>, plan::Reply> {
        let fwd = plan::route(plan::Head::of(&req), &self.routes.load())?;
        outcome.service = Some(fwd.service.clone());
        let admitted = self.admit(&fwd, client.ip()).map_err(|r| {
            match r {
                plan::Refused::Rate(_) => &self.stats.rate_limited,
                plan::Refused::ClientShare => &self.stats.client_share,
                _ => &self.stats.over_in_flight,
            }
            .fetch_add(1, Relaxed);
            r.reply(&fwd.service)
        })?;
        // only the backends to try are kept (no list of all of them, and one reference
        // count taken per try: the containers' counts are shared by the workers)
        let (mut out, chosen, pinned) = {
            let view = self.registry.view();
            let serving: SmallVec<[&Arc<Container>; 16]> = view.serving(&fwd.service).collect();
            if serving.is_empty() {
                return Err(plan::no_backend(&fwd.service));
            }
            let out = self.outgoing(req, &fwd, client, outcome)?;
            let has_body = out
                .body
                .as_ref()
                .is_some_and(|b| !hyper::body::Body::is_end_stream(b));
            let choice = self.choose(&fwd, &serving, &out, has_body);
            let chosen: SmallVec<[Arc<Container>; plan::MAX_ATTEMPTS]> =
                choice.order().iter().map(|&i| serving[i].clone()).collect();
            (out, chosen, choice.pinned)
        };
        let attempts = chosen.len();
        for (attempt, backend) in chosen.iter().enumerate() {
            outcome.retries = attempt as u32;
            outcome.backend = Some(backend.name.clone());
            let addr = SocketAddr::new(backend.ip, backend.port);
            let uri = Pool::target(fwd.policy.protocol, addr, &fwd.target)
                .map_err(|_| plan::Reply::new(StatusCode::BAD_REQUEST, "bad request target"))?;
            let may_retry = attempts > 1;
            let failure = match tokio::time::timeout(
                self.backend_timeout,
                self.send(pool, uri, &fwd, backend, &mut out, may_retry),
            )
            .await
            {
                Err(_) => plan::Failure::Timeout,
                Ok(Ok((resp, counted))) => {
                    outcome.upstream_status = Some(resp.status().as_u16());
                    let held = (admitted, counted);
                    let pinned = pinned.as_deref();
                    return self.respond(resp, &fwd, backend, pinned, out, hold, held);
                }
                Ok(Err(e)) => failure(&e, backend, &out, &self.stats),
            };
            let next = plan::after_failure(failure, &backend.name, &fwd.service, attempt, attempts);
            if next.eject {
                let _ = self.registry.set_health(&backend.name, Health::Unhealthy);
            }
            if let Some(r) = next.reply {
                return Err(r);
            }
        }
        Err(plan::unreachable(&fwd.service))
    }

    /// The backends to try, in order (the balancer's state read here, the choice planned).
    fn choose(
        &self,
        fwd: &plan::Forward,
        backends: &[&Arc<Container>],
        out: &Outgoing,
        has_body: bool,
    ) -> plan::Choice {
        let balance = match self.policy {
            LoadBalancing::RoundRobin => plan::Balance::Turn(fwd.state.next_turn()),
            LoadBalancing::LeastRequests => plan::Balance::Loads(
                backends.iter().map(|b| fwd.state.load(&b.name)).collect(),
                self.random(),
                self.random(),
            ),
        };
        let sticky = self.sticky.as_ref().filter(|_| fwd.policy.sticky);
        let cookies = |key| plan::StickyIn {
            key,
            cookies: out
                .parts
                .headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect(),
        };
        plan::choose(
            backends,
            &balance,
            plan::retryable(&out.parts.method, has_body, fwd.upgrade),
            &fwd.service,
            sticky.map(cookies),
        )
    }

    /// Takes what the request's limits ask: a rate token, a place among the service's
    /// requests in flight (and the client's half of them), the client's share of the
    /// backend connections.
    fn admit(
        &self,
        fwd: &plan::Forward,
        client: std::net::IpAddr,
    ) -> Result<Admitted, plan::Refused> {
        let who = super::limit::client_key(client, self.v6_prefix);
        if let Some(rate) = fwd.policy.rate {
            self.rates
                .take(&fwd.service, who, rate, std::time::Instant::now())
                .map_err(plan::Refused::Rate)?;
        }
        let service = match fwd.policy.max_in_flight {
            Some(max) => {
                let place = fwd
                    .state
                    .enter(max)
                    .ok_or(plan::Refused::ServiceFull(max))?;
                // and no client fills it alone: half the places per client at most
                let share = self
                    .service_clients
                    .take(&(fwd.service.clone(), who), super::limit::client_share(max))
                    .ok_or(plan::Refused::ClientShareOfService(max))?;
                Some((place, share))
            }
            None => None,
        };
        // a client holds at most half of what one backend may: another client still
        // reaches the backend that one floods
        let cap = super::limit::client_share(super::limit::client_share(self.budget.cap()));
        let client = self
            .clients
            .take(&who, cap)
            .ok_or(plan::Refused::ClientShare)?;
        Ok(Admitted {
            _service: service,
            _client: client,
        })
    }

    /// The request's head rewritten for the backend, its body counted and watched.
    fn outgoing(
        &self,
        mut req: Request<Incoming>,
        fwd: &plan::Forward,
        client: SocketAddr,
        outcome: &Outcome,
    ) -> Result<Outgoing, plan::Reply> {
        let client_upgrade = fwd.upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let has_authority = parts.uri.authority().is_some();
        plan::rewrite_request(&mut parts.headers, fwd, client.ip(), has_authority)?;
        let body_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = body_failed.clone();
        let bytes_in = outcome.bytes_in.clone();
        let body = body
            .map_frame(move |f| {
                if let Some(d) = f.data_ref() {
                    bytes_in.fetch_add(d.len() as u64, Relaxed);
                }
                f
            })
            .map_err(move |e| {
                flag.store(true, Relaxed);
                e
            })
            .boxed();
        Ok(Outgoing {
            parts,
            body: Some(body),
            body_failed,
            client_upgrade,
        })
    }

    /// Sends the request to `backend` (its head copied when it may be sent again).
    async fn send(
        &self,
        pool: &Pool,
        uri: http::Uri,
        fwd: &plan::Forward,
        backend: &Container,
        out: &mut Outgoing,
        may_retry: bool,
    ) -> Result<(Response<Body>, Option<InFlight>), super::backend_pool::Error> {
        let addr = SocketAddr::new(backend.ip, backend.port);
        let protocol = fwd.policy.protocol;
        let mut req = Request::new(out.body.take().unwrap_or_else(empty));
        *req.method_mut() = out.parts.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = Pool::version(protocol);
        *req.headers_mut() = if may_retry {
            out.parts.headers.clone()
        } else {
            std::mem::take(&mut out.parts.headers)
        };
        // only least_requests reads the per-backend counts
        let counted = (self.policy == LoadBalancing::LeastRequests)
            .then(|| fwd.state.on_backend(&backend.name))
            .flatten();
        let resp = pool.request(protocol, addr, req).await?;
        Ok((resp, counted))
    }

    /// The backend's response on its way to the client: hop-by-hop headers gone, the sticky
    /// cookie set, the request's counts held until the body is done; a 101 becomes a splice.
    #[allow(clippy::too_many_arguments)]
    fn respond(
        &self,
        mut resp: Response<Body>,
        fwd: &plan::Forward,
        backend: &Container,
        pinned: Option<&str>,
        out: Outgoing,
        hold: &Hold,
        held: (Admitted, Option<InFlight>),
    ) -> Result<Response<Body>, plan::Reply> {
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_up) = out.client_upgrade else {
                tracing::debug!(backend = %backend.name, "ingress: a 101 to a request that asked for no upgrade");
                return Err(plan::unasked_switch(&backend.name));
            };
            let backend_up = hyper::upgrade::on(&mut resp);
            let (hold, idle) = (hold.clone(), self.upgrade_idle);
            tokio::spawn(async move {
                if let (Ok(a), Ok(b)) = (client_up.await, backend_up.await) {
                    splice(TokioIo::new(a), TokioIo::new(b), hold, idle).await;
                }
            });
            let (p, _) = resp.into_parts();
            return Ok(Response::from_parts(p, empty()));
        }
        let (mut p, b) = resp.into_parts();
        route::strip_hop_by_hop(&mut p.headers, false);
        let sticky = self.sticky.as_ref().filter(|_| fwd.policy.sticky);
        if let Some(cookie) = plan::sticky_cookie(sticky, &fwd.service, &backend.name, pinned)
            && let Ok(v) = http::HeaderValue::from_str(&cookie)
        {
            p.headers.append(header::SET_COOKIE, v);
        }
        // the in-flight counts last until the response body is done
        let b = b.map_frame(move |f| {
            let _ = &held;
            f
        });
        Ok(Response::from_parts(p, b.boxed()))
    }
}

/// What a backend error was, logged (a connect failure, a local shortage, ...).
fn failure(
    e: &super::backend_pool::Error,
    backend: &Container,
    out: &Outgoing,
    stats: &super::Stats,
) -> plan::Failure {
    if out.body_failed.load(Relaxed) {
        tracing::debug!(backend = %backend.name, "ingress: the client's body failed: {}", Chain(e));
        plan::Failure::ClientBody
    } else if e.is_local() {
        tracing::warn!(backend = %backend.name, "ingress: cannot reach a backend for a local reason (not ejected): {}", Chain(e));
        stats.local_errors.fetch_add(1, Relaxed);
        plan::Failure::Local
    } else if e.is_connect() {
        tracing::warn!(backend = %backend.name, "ingress: connect failed, ejecting: {}", Chain(e));
        plan::Failure::Connect
    } else {
        // a kept-alive connection that died under the request (the backend was killed,
        // say): an idempotent request without a body is safe to send again, elsewhere
        tracing::debug!(backend = %backend.name, "ingress: backend error: {}", Chain(e));
        plan::Failure::Other
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
