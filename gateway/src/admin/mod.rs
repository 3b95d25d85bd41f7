//! The admin API (JSON over HTTP/1.1 on `admin.listen`), `/metrics` and `/healthz`.
//!
//! `GET /v1/services`, `GET /v1/containers`, `POST /v1/containers` (one `[[containers]]`
//! entry as JSON, validated like the config), `DELETE /v1/containers/{name}`,
//! `GET /v1/overlay` (datapath mode and offloads), `GET /v1/overlay/fdb`, `GET /v1/overlay/peers`, `GET /metrics`, `GET /healthz`,
//! `GET /v1/events` (Server-Sent Events: the registry's changes), and the dashboard at `/ui/`.
//! Off loopback every request needs `Authorization: Bearer <admin.token_file>` (else 401).
//! It starts after every other listener is bound, so `/healthz` answering 200 means they are.

pub mod events;
pub mod metrics;
mod ui;

use crate::config::{Config, ContainerConfig};
use crate::registry::{Container, Origin, Registry, RegistryError};
use crate::shutdown::Shutdown;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Handles to running parts: what a reload touches and what the admin API reads.
#[derive(Default)]
pub struct Running {
    pub overlay: Option<crate::overlay::Overlay>,
    pub dns: Option<crate::nameserver::Dns>,
    pub ingress: Option<crate::ingress::Ingress>,
    /// The shared-registry backend's state (etcd only).
    pub registry_backend: Option<Arc<crate::registry::BackendStatus>>,
    /// The Docker source's state (`[docker]` only).
    pub docker: Option<Arc<crate::registry::docker::DockerStatus>>,
    /// The policy between services.
    pub policy: Option<Arc<crate::policy::Policy>>,
}

pub struct Admin {
    pub config: Config,
    pub registry: Arc<Registry>,
    pub running: Arc<Running>,
    pub token: Option<String>,
    pub started: Instant,
}

/// Why the admin API could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("admin: cannot bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Token {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Binds `admin.listen`.
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Serves the admin API on `listener` (bound by [`bind`], or by a test on port 0) until
/// shutdown: the admin part's life.
pub async fn serve(
    admin: Admin,
    listener: TcpListener,
    mut shutdown: Shutdown,
) -> Result<(), Error> {
    let addr = listener.local_addr().unwrap_or(admin.config.admin.listen);
    tracing::info!(listen = %addr, auth = admin.token.is_some(), "admin API up");
    let events = Arc::new(events::Events::default());
    {
        let (e, r, s) = (events.clone(), admin.registry.clone(), shutdown.clone());
        tokio::spawn(async move { e.follow(&r, s).await });
    }
    let admin = Arc::new(Served {
        admin,
        events,
        shutdown: shutdown.clone(),
    });
    {
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            };
            let admin = admin.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, std::convert::Infallible>(admin.respond(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }
}

/// `GET /v1/policy`: the effective matrix (every protected container, who may reach it on
/// which port and why), this node's chains, and the table's state.
fn policy(p: &crate::policy::Policy, node: &str) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let m = p.matrix.load();
    let chains = p.chains.load();
    let protected: Vec<Value> = m
        .protected
        .iter()
        .map(|c| {
            let (why, allow) = match &c.rule {
                crate::policy::Rule::Allow(a) => (
                    format!("label {}", crate::policy::ALLOW_LABEL),
                    serde_json::to_value(a).unwrap_or(Value::Null),
                ),
                crate::policy::Rule::Isolated => {
                    (format!("network {} is isolated", c.network), json!([]))
                }
            };
            json!({
                "container": c.container, "service": c.service, "node": c.node,
                "network": c.network, "ip": c.ip.to_string(), "allow": allow, "why": why,
                "chain": chains.get(&c.container),
            })
        })
        .collect();
    json!({
        "node": node,
        "in_use": m.in_use(),
        "protected": protected,
        "services": m.services,
        "ingress": m.ingress,
        "problems": m.problems,
        "table": {
            "applied": p.applied.load(Relaxed),
            "failed": p.failed.load(Relaxed),
            "last_apply_us": p.last_apply_us.load(Relaxed),
            "bridged_traffic_filtered": p.bridged_filtered.load(Relaxed),
        },
    })
}

/// Time a client gets to send a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut text = serde_json::to_string_pretty(&body).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    reply(status, json!({ "error": msg }))
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive
/// (RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// Whether a request comes from the admin's own origin: its `Host` (if any) is an IP
/// literal or `localhost`, with or without a port, and so is its `Origin` (if any, as
/// `http://host[:port]`). A DNS name there is a page of some other site that made its
/// name resolve to this host (DNS rebinding), or a cross-site request.
fn same_origin(headers: &http::HeaderMap) -> Result<(), &'static str> {
    fn local_host(hostport: &str) -> bool {
        let host = if let Some(rest) = hostport.strip_prefix('[') {
            match rest.split_once(']') {
                Some((h, port)) if port.is_empty() || port.starts_with(':') => h,
                _ => return false,
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
                _ => hostport,
            }
        };
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok()
    }
    for value in headers.get_all(header::HOST).iter() {
        if !value.to_str().is_ok_and(local_host) {
            return Err("Host must be this admin's address (an IP or localhost)");
        }
    }
    for value in headers.get_all(header::ORIGIN).iter() {
        let ok = value.to_str().is_ok_and(|o| {
            o.strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
                .is_some_and(local_host)
        });
        if !ok {
            return Err("cross-origin requests are refused");
        }
    }
    Ok(())
}

/// `Content-Type: application/json` (parameters allowed).
fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

fn container_json(c: &Container) -> Value {
    json!({
        "name": c.name,
        "ip": c.ip.to_string(),
        "mac": c.mac.map(|m| m.to_string()),
        "port": c.port,
        "labels": c.labels,
        "network": c.network,
        "node": c.node,
        "health": format!("{:?}", c.health).to_lowercase(),
        "ready": c.ready,
        "origin": format!("{:?}", c.origin).to_lowercase(),
    })
}

/// What the admin answers with: a whole body, or a stream (`/v1/events`).
type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// The admin API as served: the API, the dashboard, the event stream.
struct Served {
    admin: Admin,
    events: Arc<events::Events>,
    shutdown: Shutdown,
}

impl Served {
    async fn respond(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path();
        // the dashboard's files hold no data: served to anyone who reaches the listener,
        // so that a browser without the token gets the login form
        let mut r = if path == "/ui" || path.starts_with("/ui/") {
            ui::serve(req.method(), path).map(BodyExt::boxed_unsync)
        } else if let Some(denied) = self.admin.refusal(&req) {
            denied.map(BodyExt::boxed_unsync)
        } else if path == "/v1/nodes" && req.method() == Method::GET {
            self.admin
                .nodes(&self.events.nodes())
                .map(BodyExt::boxed_unsync)
        } else if path == "/v1/events" && req.method() == Method::GET {
            match self.events.stream(self.shutdown.clone()) {
                Some(stream) => {
                    let mut r =
                        Response::new(http_body_util::StreamBody::new(stream).boxed_unsync());
                    // the stream's end (the drain) ends the connection too
                    set_headers(
                        &mut r,
                        &[
                            (header::CONTENT_TYPE, "text/event-stream"),
                            (header::CACHE_CONTROL, "no-store"),
                            (header::CONNECTION, "close"),
                        ],
                    );
                    r
                }
                None => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many event streams open",
                )
                .map(BodyExt::boxed_unsync),
            }
        } else {
            self.admin.handle(req).await.map(BodyExt::boxed_unsync)
        };
        set_headers(
            &mut r,
            &[
                (header::X_FRAME_OPTIONS, "DENY"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
        );
        r
    }
}

/// Sets each of `headers` on `r`.
pub(crate) fn set_headers<B>(r: &mut Response<B>, headers: &[(header::HeaderName, &'static str)]) {
    for (name, value) in headers {
        r.headers_mut()
            .insert(name.clone(), http::HeaderValue::from_static(value));
    }
}

impl Admin {
    /// The token (when one is set), else the same-origin rule: the refusal of a request
    /// that passes neither, `None` for one that may go on.
    fn refusal(&self, req: &Request<Incoming>) -> Option<Response<Full<Bytes>>> {
        if let Some(token) = &self.token {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer_token);
            if given.map(|g| constant_time_eq(g.trim().as_bytes(), token.as_bytes())) != Some(true)
            {
                let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer"),
                );
                return Some(r);
            }
        }
        if self.token.is_none()
            && let Err(why) = same_origin(req.headers())
        {
            // without a token, the loopback admin is reachable by any page the browser of
            // someone on this host visits: a foreign Origin, or a Host that is a DNS name
            // (DNS rebinding), is refused
            return Some(error(StatusCode::FORBIDDEN, why));
        }
        None
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() == Method::POST && !is_json(req.headers()) {
            // a cross-site form or text/plain POST needs no preflight; JSON does
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "writes take Content-Type: application/json",
            );
        }
        let path = req.uri().path().to_owned();
        match (req.method().clone(), path.as_str()) {
            (Method::GET, "/healthz") => reply(StatusCode::OK, json!({ "status": "ok" })),
            (Method::GET, "/metrics") => {
                let text = metrics::render(self);
                let mut r = Response::new(Full::new(Bytes::from(text)));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            }
            (Method::GET, "/v1/containers") => {
                let snap = self.registry.snapshot();
                reply(
                    StatusCode::OK,
                    Value::Array(snap.containers().map(|c| container_json(c)).collect()),
                )
            }
            (Method::GET, "/v1/services") => {
                let snap = self.registry.snapshot();
                let table = self.running.ingress.as_ref().map(|i| i.routes.load_full());
                let services: Vec<Value> = snap
                    .services()
                    .map(|(name, cs)| {
                        let mut s = json!({
                            "name": name,
                            "serving": cs.iter().filter(|c| c.is_serving()).count(),
                            "backends": cs.iter().map(|c| container_json(c)).collect::<Vec<_>>(),
                        });
                        if let Some(t) = &table {
                            s["routes"] = t
                                .routes_of(name)
                                .iter()
                                .map(|r| json!({ "host": r.host, "prefix": r.prefix, "strip_prefix": r.strip }))
                                .collect();
                            s["conflicts"] = t
                                .conflicts()
                                .iter()
                                .filter(|c| c.winner == name || c.loser == name)
                                .map(|c| json!({ "host": c.host, "prefix": c.prefix, "serving": c.winner, "left_out": c.loser }))
                                .collect();
                            s["refused"] = t
                                .refused()
                                .iter()
                                .filter(|r| r.service == name)
                                .map(|r| json!({ "host": r.host, "why": r.why }))
                                .collect();
                        }
                        s
                    })
                    .collect();
                reply(StatusCode::OK, Value::Array(services))
            }
            (Method::POST, "/v1/containers") => self.add(req).await,
            (Method::DELETE, p) if p.starts_with("/v1/containers/") => {
                let name = &p["/v1/containers/".len()..];
                // only this node's config and API entries are the API's to remove
                let refusal = self.registry.snapshot().container(name).and_then(|c| {
                    match c.origin {
                        crate::registry::Origin::Docker => Some(format!(
                            "container {name:?} is Docker's; it leaves when it stops (docker stop), or label it vxgate.enable=false"
                        )),
                        crate::registry::Origin::Remote => Some(format!(
                            "container {name:?} belongs to node {:?}; remove it there",
                            c.node
                        )),
                        _ => None,
                    }
                });
                if let Some(why) = refusal {
                    return error(StatusCode::CONFLICT, &why);
                }
                match self.registry.remove(name) {
                    Ok(_) => reply(StatusCode::OK, json!({ "removed": name })),
                    Err(e) => error(StatusCode::NOT_FOUND, &e.to_string()),
                }
            }
            (Method::GET, "/v1/overlay/fdb") => self.fdb(),
            (Method::GET, "/v1/policy") => match &self.running.policy {
                Some(p) => reply(StatusCode::OK, policy(p, &self.config.node.name)),
                None => error(StatusCode::NOT_FOUND, "policy is not running"),
            },
            (Method::GET, "/v1/certificates") => match &self.running.ingress {
                Some(i) => reply(StatusCode::OK, certificates(&i.certs)),
                None => error(StatusCode::NOT_FOUND, "no [ingress] section configured"),
            },
            (Method::GET, "/v1/overlay") => match &self.running.overlay {
                Some(o) => {
                    let f = &o.features;
                    let features: serde_json::Map<String, Value> = f
                        .list()
                        .iter()
                        .map(|(n, on)| ((*n).to_owned(), Value::Bool(*on)))
                        .collect();
                    reply(
                        StatusCode::OK,
                        json!({
                            "datapath": f.mode(),
                            "description": f.describe(),
                            "queues": f.queues,
                            "offloads": features,
                            "networks": o.networks.iter().map(|n| json!({
                                "name": n.name, "vni": n.vni, "mtu": n.mtu,
                            })).collect::<Vec<_>>(),
                            "encryption": o.wireguard.as_ref().map(|w| json!({
                                "mode": "wireguard",
                                "public_key": w.public_key(),
                                "allow_plaintext": w.allow_plaintext,
                                "address": w.address().to_string(),
                                "nodes_without_key": w.left_out(),
                                "peers": w.peers().iter().map(|p| json!({
                                    "address": p.address.to_string(),
                                    "public_key": p.public_key,
                                    "endpoint": p.endpoint.to_string(),
                                    "last_handshake_s": p.last_handshake.map(|d| d.as_secs_f64()),
                                    "session_up": p.last_handshake.is_some_and(|d| d.as_secs() < 180),
                                    "tx_bytes": p.tx_bytes,
                                    "rx_bytes": p.rx_bytes,
                                })).collect::<Vec<_>>(),
                            })),
                        }),
                    )
                }
                None => error(StatusCode::NOT_FOUND, "no [overlay] section configured"),
            },
            (Method::GET, "/v1/overlay/peers") => {
                let Some(o) = self.running.overlay.as_ref() else {
                    return reply(StatusCode::OK, Value::Array(Vec::new()));
                };
                let snapshot = self.registry.snapshot();
                let nodes = self
                    .config
                    .overlay
                    .as_ref()
                    .map(|o| o.peer_nodes.clone())
                    .unwrap_or_default();
                let sessions = o.wireguard.as_ref().map(|w| w.peers()).unwrap_or_default();
                let list: Vec<Value> = o
                    .switch
                    .peers()
                    .iter()
                    .map(|p| {
                        let node = snapshot
                            .nodes()
                            .iter()
                            .find(|(_, n)| {
                                n.vtep == Some(*p)
                                    || n.wireguard.as_ref().is_some_and(|w| {
                                        *p == std::net::SocketAddr::new(
                                            w.address.into(),
                                            crate::overlay::wg::VXLAN_PORT,
                                        )
                                    })
                            })
                            .map(|(n, _)| n.clone())
                            .or_else(|| {
                                nodes.iter().find(|(_, a)| *a == p).map(|(n, _)| n.clone())
                            });
                        peer_traffic(*p, node, &o.switch, &sessions)
                    })
                    .collect();
                reply(StatusCode::OK, Value::Array(list))
            }
            (
                _,
                "/healthz" | "/metrics" | "/v1/containers" | "/v1/services" | "/v1/overlay/fdb"
                | "/v1/certificates" | "/v1/overlay" | "/v1/overlay/peers" | "/v1/policy"
                | "/v1/events" | "/v1/nodes",
            ) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
        }
    }

    /// `GET /v1/nodes`: this node and every node the shared registry knows (present while
    /// its etcd lease lives): its VTEP, WireGuard identity, gateway addresses, containers,
    /// since when it is there; then the nodes that left since vxgate started, and when.
    fn nodes(&self, seen: &BTreeMap<String, events::NodeSeen>) -> Response<Full<Bytes>> {
        let snap = self.registry.snapshot();
        let me = &self.config.node.name;
        let mut count: std::collections::BTreeMap<&str, usize> = Default::default();
        for c in snap.containers() {
            *count.entry(c.node.as_str()).or_default() += 1;
        }
        let overlay = self.config.overlay.as_ref();
        let mut list = vec![json!({
            "name": me,
            "self": true,
            "vtep": overlay.and_then(|o| o.advertise.or(o.listen)).map(|a| a.to_string()),
            "wireguard": self.running.overlay.as_ref().and_then(|o| o.wireguard.as_ref()).map(|w| json!({
                "public_key": w.public_key(),
                "address": w.address().to_string(),
            })),
            "gateways": crate::policy::gateway_addrs(&self.config.policy_spec().taps)
                .iter().map(|g| g.to_string()).collect::<Vec<_>>(),
            "containers": count.get(me.as_str()).copied().unwrap_or(0),
            "present": true,
        })];
        for (name, n) in snap.nodes().iter().filter(|(name, _)| *name != me) {
            list.push(json!({
                "name": name,
                "self": false,
                "vtep": n.vtep.map(|a| a.to_string()),
                "gateways": n.gateways.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
                "wireguard": n.wireguard.as_ref().map(|w| json!({
                    "public_key": crate::overlay::wg::encode_key(&w.public_key),
                    "endpoint": w.endpoint.to_string(),
                    "address": w.address.to_string(),
                })),
                "containers": count.get(name.as_str()).copied().unwrap_or(0),
                "present": true,
                "since_ms": seen.get(name).map(|s| s.since_ms),
            }));
        }
        for (name, s) in seen {
            if let (Some(left), false) = (s.left_ms, snap.nodes().contains_key(name)) {
                list.push(json!({
                    "name": name, "self": false, "present": false,
                    "since_ms": s.since_ms, "last_seen_ms": left,
                }));
            }
        }
        reply(StatusCode::OK, Value::Array(list))
    }

    async fn add(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        // a body that never comes (Content-Length: 1e11, nothing sent) must not hold the
        // connection: 10 s for the whole of it
        let body = match tokio::time::timeout(
            BODY_TIMEOUT,
            Limited::new(req.into_body(), 64 * 1024).collect(),
        )
        .await
        {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(_)) => return error(StatusCode::PAYLOAD_TOO_LARGE, "body larger than 64 KiB"),
            Err(_) => {
                let mut r = error(
                    StatusCode::REQUEST_TIMEOUT,
                    "the body did not arrive within 10 s",
                );
                r.headers_mut()
                    .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
                return r;
            }
        };
        let entry: ContainerConfig = match serde_json::from_slice(&body) {
            Ok(c) => c,
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("body: {e}")),
        };
        // validate like the config does, as the only container
        let mut probe = self.config.clone();
        probe.containers = vec![entry.clone()];
        probe.overlay.iter_mut().for_each(|o| o.peer_nodes.clear());
        let problems: Vec<String> = probe
            .validate()
            .into_iter()
            .filter_map(|p| {
                p.key
                    .strip_prefix("containers[0].")
                    .map(|k| format!("{k}: {}", p.message))
            })
            .collect();
        if !problems.is_empty() {
            return error(StatusCode::BAD_REQUEST, &problems.join("; "));
        }
        let container = self.config.container(&entry, Origin::Api);
        let json = container_json(&container);
        match self.registry.add(container) {
            Ok(()) => reply(StatusCode::CREATED, json),
            Err(e @ (RegistryError::DuplicateName(_) | RegistryError::DuplicateIp { .. })) => {
                error(StatusCode::CONFLICT, &e.to_string())
            }
            Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    }

    fn fdb(&self) -> Response<Full<Bytes>> {
        let Some(overlay) = &self.running.overlay else {
            return reply(StatusCode::OK, json!([]));
        };
        let now = Instant::now();
        let switch = &overlay.switch;
        let mut out = Vec::new();
        for (i, n) in overlay.networks.iter().enumerate() {
            for (mac, e) in switch.fdb(i).entries() {
                let (kind, age) = match e.kind {
                    crate::overlay::fdb::Kind::Static => ("static", None),
                    crate::overlay::fdb::Kind::Learned { last_seen } => (
                        "learned",
                        Some(now.saturating_duration_since(last_seen).as_secs()),
                    ),
                };
                out.push(json!({
                    "network": n.name, "vni": n.vni, "mac": mac.to_string(),
                    "vtep": e.vtep.to_string(), "kind": kind, "age_s": age,
                }));
            }
        }
        reply(StatusCode::OK, Value::Array(out))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /v1/certificates`: every served certificate, its names, where it comes from, its end
/// and serial.
/// One overlay peer for `/v1/overlay/peers`: its VTEP, node, transport and traffic each way.
/// A plain VXLAN peer's datagrams and bytes (UDP payload) are the datapath's; a WireGuard
/// peer's (its tunnel address) are its sessions' bytes, with no packet counts.
fn peer_traffic(
    vtep: std::net::SocketAddr,
    node: Option<String>,
    switch: &crate::overlay::Switch,
    sessions: &[crate::overlay::wg::PeerStatus],
) -> Value {
    let tunnel = |s: &&crate::overlay::wg::PeerStatus| {
        std::net::SocketAddr::new(s.address.into(), crate::overlay::wg::VXLAN_PORT) == vtep
    };
    if let Some(s) = sessions.iter().find(tunnel) {
        return json!({
            "vtep": vtep.to_string(), "node": node, "transport": "wireguard",
            "tx_packets": null, "tx_bytes": s.tx_bytes,
            "rx_packets": null, "rx_bytes": s.rx_bytes,
        });
    }
    let [tx_packets, tx_bytes, rx_packets, rx_bytes] =
        switch.peer_counters().read(vtep).unwrap_or_default();
    json!({
        "vtep": vtep.to_string(), "node": node, "transport": "vxlan",
        "tx_packets": tx_packets, "tx_bytes": tx_bytes,
        "rx_packets": rx_packets, "rx_bytes": rx_bytes,
    })
}

fn certificates(store: &crate::ingress::tls::CertStore) -> Value {
    let list: Vec<Value> = store
        .served()
        .iter()
        .filter_map(|(source, ck)| {
            let der = ck.cert.first()?;
            let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
            let names: Vec<String> = cert
                .subject_alternative_name()
                .ok()
                .flatten()
                .map(|san| {
                    san.value
                        .general_names
                        .iter()
                        .filter_map(|n| match n {
                            x509_parser::extensions::GeneralName::DNSName(d) => {
                                Some((*d).to_owned())
                            }
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            let (validity, serial) = crate::acme::plan::validity_of(der)?;
            Some(json!({
                "domain": names.first().cloned().unwrap_or_default(),
                "names": names,
                "source": source.as_str(),
                "not_after": validity.not_after,
                // ACME's are renewed two thirds into their life; others are the operator's
                "renew_at": (source.as_str() == "acme").then(|| validity.renew_at()),
                "serial": serial,
                "sha256": crate::ingress::tls::fingerprint(der),
            }))
        })
        .collect();
    Value::Array(list)
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_case_insensitive_rfc9110_11_1() {
        for v in [
            "Bearer s3cret",
            "bearer s3cret",
            "BEARER s3cret",
            " Bearer s3cret",
        ] {
            assert_eq!(bearer_token(v), Some("s3cret"), "{v:?}");
        }
        for v in ["Basic s3cret", "Bearers3cret", "s3cret", ""] {
            assert_eq!(bearer_token(v), None, "{v:?}");
        }
    }
}
