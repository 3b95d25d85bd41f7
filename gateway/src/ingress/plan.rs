//! The request planner: what the ingress does with a request, decided from its head and the
//! route table alone, without sockets or clocks. The shell (`proxy.rs`) takes the counts and
//! tokens the plan asks for and performs it.
//!
//! - [`route`]: the routing host, the normalised path, the route, the backend's target and
//!   what of the head goes on (or the answer vxgate gives itself: 400, 404, 405);
//! - [`Refused`]: a limit's answer (429, 503);
//! - [`rewrite_request`], [`sticky_cookie`]: the header rewrite, both ways;
//! - [`choose`]: the backends in the order to try them (balancer, sticky cookie, retries);
//! - [`after_failure`]: what a backend failure leads to (retry, eject, 502/503/504);
//! - [`redirect`]: the plain-HTTP listener's `Location`.

use super::route;
use super::routes::{self, Policy, Protocol, RouteTable};
use super::state::ServiceState;
use super::sticky::Sticky;
use crate::registry::Container;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version, header};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Most backends one idempotent request is tried on (connect failures and connections reset
/// under the request): when several containers of a service go at once (`docker rm -f` of a
/// scaled service), one retry can land on another dying one.
pub const MAX_ATTEMPTS: usize = 3;

/// What the planner reads of a request.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub version: Version,
    pub headers: &'a HeaderMap,
}

impl<'a> Head<'a> {
    pub fn of<B>(req: &'a http::Request<B>) -> Head<'a> {
        Head {
            method: req.method(),
            uri: req.uri(),
            version: req.version(),
            headers: req.headers(),
        }
    }
}

/// An answer vxgate gives itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: StatusCode,
    pub message: String,
    /// `Retry-After` in seconds.
    pub retry_after: Option<u64>,
}

impl Reply {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Reply {
        Reply {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    fn retry_after(mut self, secs: u64) -> Reply {
        self.retry_after = Some(secs);
        self
    }
}

/// A request to forward: which service, and how its head goes on.
#[derive(Debug, Clone)]
pub struct Forward {
    pub service: Arc<str>,
    pub policy: Arc<Policy>,
    pub state: Arc<ServiceState>,
    /// The host it was routed by (maybe with a port): the backend gets it as Host.
    pub host: String,
    /// The backend's request target: normalised, the route's prefix stripped if it says so.
    pub target: String,
    /// A WebSocket (HTTP/1.1 upgrade) to splice: only to HTTP/1.1 backends.
    pub upgrade: bool,
    /// `TE: trailers` goes on (gRPC over HTTP/2 asks for trailers with it).
    pub te_trailers: bool,
}

/// Routes a request: the service and the rewritten target, or vxgate's own answer.
pub fn route(head: Head<'_>, table: &RouteTable) -> Result<Forward, Reply> {
    // requests that cannot be forwarded as they are get a 4xx here, and never reach (or
    // count against) a backend
    let host = route::routing_host(head.method, head.uri, head.headers)
        .map_err(|r| Reply::new(r.status(), r.message()))?;
    // one normalised path for the route and the backend (`/public/../secret` is `/secret`,
    // matched and forwarded as such)
    let original = head.uri.path_and_query().map_or("/", |p| p.as_str());
    let normalized = super::path::normalize(original)
        .map_err(|e| Reply::new(StatusCode::BAD_REQUEST, e.message()))?;
    let Some(routed) = table.lookup(&host, &normalized) else {
        let why = if table.knows_host(&host) {
            let path = normalized.split('?').next().unwrap_or("/");
            format!("no route for {path} on host {host}")
        } else {
            format!("no service for host {host}")
        };
        return Err(Reply::new(StatusCode::NOT_FOUND, why));
    };
    let h2 = routed.policy.protocol != Protocol::Http1;
    Ok(Forward {
        service: routed.service.clone(),
        policy: routed.policy.clone(),
        state: routed.state.clone(),
        target: routes::forwarded_target(routed, &normalized).into_owned(),
        upgrade: !h2 && head.version == Version::HTTP_11 && route::wants_upgrade(head.headers),
        te_trailers: h2 && asks_trailers(head.headers),
        host,
    })
}

/// `TE: trailers`, the one TE value HTTP/2 allows.
fn asks_trailers(headers: &HeaderMap) -> bool {
    headers.get_all(header::TE).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim() == "trailers"))
    })
}

/// The request head as the backend gets it: hop-by-hop headers gone (an upgrade's kept),
/// `TE: trailers` for HTTP/2, `Forwarded`/`X-Forwarded-*` for `client`, and Host the host it
/// was routed by when the target named one (`has_authority`; else the Host it came with,
/// which routing found to be that host).
pub fn rewrite_request(
    headers: &mut HeaderMap,
    fwd: &Forward,
    client: IpAddr,
    has_authority: bool,
) -> Result<(), Reply> {
    route::strip_hop_by_hop(headers, fwd.upgrade);
    if fwd.te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let host_only = fwd.host.split(':').next().unwrap_or(&fwd.host);
    route::add_forwarded(headers, client, host_only);
    if has_authority {
        let v = HeaderValue::from_str(&fwd.host)
            .map_err(|_| Reply::new(StatusCode::BAD_REQUEST, "Host is not a host name"))?;
        headers.insert(header::HOST, v);
    }
    Ok(())
}

/// A limit that refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `vxgate.rate`: the client's bucket is empty for this long.
    Rate(Duration),
    /// `vxgate.max_in_flight` is reached.
    ServiceFull(usize),
    /// The client holds its half of `vxgate.max_in_flight`.
    ClientShareOfService(usize),
    /// The client holds its quarter of the backend connections.
    ClientShare,
}

impl Refused {
    pub fn reply(self, service: &str) -> Reply {
        match self {
            Refused::Rate(wait) => Reply::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many requests to {service}; retry later"),
            )
            .retry_after(wait.as_secs_f64().ceil().max(1.0) as u64),
            Refused::ServiceFull(max) => Reply::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{service} has {max} requests in flight; retry later"),
            )
            .retry_after(1),
            Refused::ClientShareOfService(max) => Reply::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("you have your share of {service}'s {max} requests in flight; retry later"),
            )
            .retry_after(1),
            Refused::ClientShare => Reply::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "you have your share of backend connections in use; retry later",
            )
            .retry_after(1),
        }
    }
}

/// How the balancer picks the first backend.
#[derive(Debug, Clone)]
pub enum Balance {
    /// Round robin: the request's turn.
    Turn(usize),
    /// Power of two choices over the backends' requests in flight, with two random numbers.
    Loads(Vec<usize>, usize, usize),
}

/// The sticky cookie a request may carry.
pub struct StickyIn<'a> {
    pub key: &'a Sticky,
    /// The request's `Cookie` header values.
    pub cookies: Vec<&'a str>,
}

/// The backends a request is sent to, in order: indices into the backends it was chosen
/// from (no copy of them, and nothing allocated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    order: [usize; MAX_ATTEMPTS],
    /// How many may be tried (1 unless the request is safe to send again).
    pub attempts: usize,
    /// The backend the request's sticky cookie named (it needs no new cookie).
    pub pinned: Option<String>,
}

impl Choice {
    /// The backends to try, in order (`attempts` of them).
    pub fn order(&self) -> &[usize] {
        &self.order[..self.attempts]
    }
}

/// The order to try `backends` (non-empty) in: the balancer's choice first, unless a sticky
/// cookie names a backend that serves (then that one). `retry`: the request may go to
/// another backend after a failure (idempotent, no body, not an upgrade).
pub fn choose<B: AsRef<Container>>(
    backends: &[B],
    balance: &Balance,
    retry: bool,
    service: &str,
    sticky: Option<StickyIn<'_>>,
) -> Choice {
    let n = backends.len();
    let first = match balance {
        Balance::Turn(turn) => route::round_robin(*turn, n),
        Balance::Loads(loads, r1, r2) => route::two_choices(loads, *r1, *r2),
    };
    let mut pinned = None;
    if let Some(s) = sticky {
        let name = super::sticky::cookie_name(service);
        if let Some(value) = super::sticky::find(s.cookies.into_iter(), &name) {
            pinned = (0..n).find(|&i| s.key.token(service, &backends[i].as_ref().name) == value);
        }
    }
    let attempts = if retry && n > 1 {
        n.min(MAX_ATTEMPTS)
    } else {
        1
    };
    // the pinned one first, then the balancer's order from its choice on
    let mut order = [0; MAX_ATTEMPTS];
    let rest = (0..n)
        .map(|k| (first + k) % n)
        .filter(|i| Some(*i) != pinned);
    for (slot, i) in order.iter_mut().zip(pinned.into_iter().chain(rest)) {
        *slot = i;
    }
    Choice {
        order,
        attempts,
        pinned: pinned.map(|i| backends[i].as_ref().name.clone()),
    }
}

/// Whether a request may be sent again to another backend after a failure.
pub fn retryable(method: &Method, has_body: bool, upgrade: bool) -> bool {
    route::retryable(method, has_body) && !upgrade
}

/// How sending to a backend failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No response head within `backend_timeout`.
    Timeout,
    /// The client's body turned out malformed (bad chunking, cut short).
    ClientBody,
    /// Out of descriptors, ports or budget here: the backend did nothing wrong.
    Local,
    /// The backend refused or did not answer the connect.
    Connect,
    /// Anything else (a kept-alive connection reset under the request).
    Other,
}

/// What follows a failure on the `attempt`-th (from 0) of `attempts` backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Next {
    /// Mark the backend unhealthy (passive health check).
    pub eject: bool,
    /// The answer, or `None`: try the next backend.
    pub reply: Option<Reply>,
}

pub fn after_failure(
    failure: Failure,
    backend: &str,
    service: &str,
    attempt: usize,
    attempts: usize,
) -> Next {
    let last = attempt + 1 >= attempts;
    let (eject, reply) = match failure {
        Failure::Timeout => (
            false,
            Some(Reply::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("backend {backend} timed out"),
            )),
        ),
        Failure::ClientBody => (
            false,
            Some(Reply::new(
                StatusCode::BAD_REQUEST,
                "malformed request body",
            )),
        ),
        Failure::Local => (
            false,
            Some(
                Reply::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the gateway is out of backend connections; retry later",
                )
                .retry_after(1),
            ),
        ),
        Failure::Connect => (true, last.then(|| unreachable(service))),
        Failure::Other => (
            false,
            last.then(|| Reply::new(StatusCode::BAD_GATEWAY, format!("backend {backend} failed"))),
        ),
    };
    Next { eject, reply }
}

/// Every backend tried failed to connect.
pub fn unreachable(service: &str) -> Reply {
    Reply::new(
        StatusCode::BAD_GATEWAY,
        format!("no backend of {service} could be reached"),
    )
}

/// The service has no backend that serves.
pub fn no_backend(service: &str) -> Reply {
    Reply::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("no healthy backend for {service}"),
    )
}

/// A 101 the request did not ask for (its Upgrade was stripped) would open a tunnel nobody
/// routes.
pub fn unasked_switch(backend: &str) -> Reply {
    Reply::new(
        StatusCode::BAD_GATEWAY,
        format!("backend {backend} switched protocols unasked"),
    )
}

/// The `Set-Cookie` value a response carries when the service is sticky and `backend`
/// answered without the request's cookie naming it.
pub fn sticky_cookie(
    key: Option<&Sticky>,
    service: &str,
    backend: &str,
    pinned: Option<&str>,
) -> Option<String> {
    key.filter(|_| pinned != Some(backend))
        .map(|k| k.set_cookie(service, backend))
}

/// The plain-HTTP listener's answer: `https://host[:port]/path` for a well-formed host (no
/// `web.example.com@evil`), or why not.
pub fn redirect(head: Head<'_>, https_port: u16) -> Result<String, Reply> {
    let host = route::routing_host(head.method, head.uri, head.headers)
        .map_err(|r| Reply::new(r.status(), r.message()))?;
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => &host,
    };
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let path = head.uri.path_and_query().map_or("/", |p| p.as_str());
    Ok(format!("https://{name}{port}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Health, Origin, Registry};
    use std::collections::BTreeMap;

    fn container(name: &str, labels: &[(&str, &str)]) -> Container {
        let n = name
            .bytes()
            .fold(0u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
        let mut l: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        l.entry("app".into())
            .or_insert_with(|| name.split('-').next().unwrap_or(name).to_owned());
        Container {
            name: name.into(),
            ip: std::net::IpAddr::from([10, 0, 1, n]),
            mac: None,
            port: 80,
            labels: l,
            network: "default".into(),
            node: "h1".into(),
            health: Health::Unknown,
            ready: true,
            origin: Origin::Config,
        }
    }

    fn table(containers: Vec<Container>) -> RouteTable {
        let r = Registry::new("app");
        for c in containers {
            r.add(c).expect("add");
        }
        RouteTable::build(
            &r.snapshot(),
            "example.com",
            &routes::HostAllowList::new(["*.example.org"]),
            None,
        )
    }

    fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> http::Request<()> {
        let mut b = http::Request::builder().method(method).uri(target);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn routing_plans_the_service_and_target_or_answers_itself() {
        let t = table(vec![
            container("web-1", &[]),
            container(
                "api-1",
                &[
                    ("vxgate.host", "api.example.org"),
                    ("vxgate.path", "/v1"),
                    ("vxgate.strip_prefix", "true"),
                ],
            ),
            container("grpc-1", &[("vxgate.protocol", "h2c")]),
        ]);
        // (method, target, Host, expected service and backend target, or status)
        type Case<'a> = (&'a str, &'a str, &'a str, Result<(&'a str, &'a str), u16>);
        let cases: &[Case] = &[
            ("GET", "/", "web.example.com", Ok(("web", "/"))),
            (
                "GET",
                "/a/../b?q=1",
                "WEB.example.com:443",
                Ok(("web", "/b?q=1")),
            ),
            ("GET", "/v1/users", "api.example.org", Ok(("api", "/users"))),
            ("GET", "/v1", "api.example.org", Ok(("api", "/"))),
            ("GET", "/other", "api.example.org", Err(404)),
            ("GET", "/", "nobody.example.com", Err(404)),
            ("GET", "/", "", Err(400)),
            ("GET", "/", "bad host", Err(400)),
            (
                "CONNECT",
                "web.example.com:443",
                "web.example.com",
                Err(405),
            ),
            ("GET", "/%zz", "web.example.com", Err(400)),
        ];
        for (method, target, host, want) in cases {
            let headers: Vec<(&str, &str)> = if host.is_empty() {
                vec![]
            } else {
                vec![("host", *host)]
            };
            let req = request(method, target, &headers);
            let got = route(Head::of(&req), &t);
            match (want, got) {
                (Ok((service, path)), Ok(f)) => {
                    assert_eq!(
                        (&*f.service, f.target.as_str()),
                        (*service, *path),
                        "{target}"
                    )
                }
                (Err(status), Err(r)) => assert_eq!(r.status.as_u16(), *status, "{target}: {r:?}"),
                (want, got) => panic!("{method} {target} Host {host}: want {want:?}, got {got:?}"),
            }
        }
        let ws = request(
            "GET",
            "/",
            &[
                ("host", "web.example.com"),
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
            ],
        );
        assert!(route(Head::of(&ws), &t).expect("routed").upgrade);
        let grpc = request(
            "POST",
            "/x",
            &[("host", "grpc.example.com"), ("te", "trailers")],
        );
        let f = route(Head::of(&grpc), &t).expect("routed");
        assert!(f.te_trailers && !f.upgrade);
        let grpc_ws = request(
            "GET",
            "/",
            &[
                ("host", "grpc.example.com"),
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
            ],
        );
        assert!(
            !route(Head::of(&grpc_ws), &t).expect("routed").upgrade,
            "no upgrade to h2"
        );
    }

    #[test]
    fn the_backend_gets_the_routed_host_and_no_hop_by_hop_headers() {
        let t = table(vec![container("web-1", &[])]);
        let req = request(
            "GET",
            "https://web.example.com:8443/x",
            &[
                ("host", "web.example.com:8443"),
                ("connection", "close, x-drop"),
                ("x-drop", "1"),
                ("te", "trailers"),
                ("keep", "1"),
            ],
        );
        let f = route(Head::of(&req), &t).expect("routed");
        let mut h = req.headers().clone();
        rewrite_request(&mut h, &f, "192.0.2.9".parse().expect("ip"), true).expect("rewrite");
        assert_eq!(h["host"], "web.example.com:8443");
        assert!(
            h.get("x-drop").is_none() && h.get("connection").is_none() && h.get("te").is_none()
        );
        assert_eq!(h["keep"], "1");
        assert_eq!(h["x-forwarded-for"], "192.0.2.9");
        assert!(
            h["forwarded"]
                .to_str()
                .expect("ascii")
                .contains("for=192.0.2.9")
        );
    }

    #[test]
    fn limits_answer_429_or_503_with_retry_after() {
        let cases = [
            (
                Refused::Rate(Duration::from_millis(1500)),
                429,
                2,
                "too many requests to api",
            ),
            (
                Refused::Rate(Duration::from_millis(10)),
                429,
                1,
                "too many requests",
            ),
            (
                Refused::ServiceFull(8),
                503,
                1,
                "api has 8 requests in flight",
            ),
            (
                Refused::ClientShareOfService(8),
                503,
                1,
                "your share of api's 8",
            ),
            (
                Refused::ClientShare,
                503,
                1,
                "your share of backend connections",
            ),
        ];
        for (refused, status, after, text) in cases {
            let r = refused.reply("api");
            assert_eq!(r.status.as_u16(), status, "{refused:?}");
            assert_eq!(r.retry_after, Some(after), "{refused:?}");
            assert!(r.message.contains(text), "{refused:?}: {}", r.message);
        }
    }

    #[test]
    fn backends_in_balancer_order_sticky_first_retries_bounded() {
        let b: Vec<Arc<Container>> = ["a-1", "a-2", "a-3", "a-4"]
            .iter()
            .map(|n| Arc::new(container(n, &[])))
            .collect();
        fn names<'a>(b: &'a [Arc<Container>], c: &Choice) -> Vec<&'a str> {
            c.order().iter().map(|&i| b[i].name.as_str()).collect()
        }
        let rr = choose(&b, &Balance::Turn(5), true, "a", None);
        assert_eq!(names(&b, &rr), ["a-2", "a-3", "a-4"], "three tries at most");
        assert_eq!((rr.attempts, rr.pinned.as_deref()), (MAX_ATTEMPTS, None));
        let least = choose(
            &b,
            &Balance::Loads(vec![5, 0, 9, 9], 0, 0),
            false,
            "a",
            None,
        );
        assert_eq!((names(&b, &least)[0], least.attempts), ("a-2", 1));
        let one = choose(&b[..1], &Balance::Turn(0), true, "a", None);
        assert_eq!(one.attempts, 1, "nowhere else to retry");
        let key = Sticky::with_key(b"k");
        let cookie = format!("x=1; {}", key.set_cookie("a", "a-3"));
        let cookie = cookie.split(';').take(2).collect::<Vec<_>>().join(";");
        let s = choose(
            &b,
            &Balance::Turn(0),
            true,
            "a",
            Some(StickyIn {
                key: &key,
                cookies: vec![&cookie],
            }),
        );
        assert_eq!(
            names(&b, &s),
            ["a-3", "a-1", "a-2"],
            "the pinned one, then the turn's"
        );
        assert_eq!(s.pinned.as_deref(), Some("a-3"));
        assert_eq!(sticky_cookie(Some(&key), "a", "a-3", Some("a-3")), None);
        assert!(
            sticky_cookie(Some(&key), "a", "a-1", Some("a-3"))
                .is_some_and(|c| c.starts_with("vxgate_a="))
        );
        let forged = choose(
            &b,
            &Balance::Turn(0),
            true,
            "a",
            Some(StickyIn {
                key: &key,
                cookies: vec!["vxgate_a=a-3"],
            }),
        );
        assert_eq!(
            (names(&b, &forged)[0], forged.pinned.as_deref()),
            ("a-1", None),
            "a name is not a token"
        );
        assert!(retryable(&Method::GET, false, false));
        assert!(!retryable(&Method::POST, false, false));
        assert!(!retryable(&Method::GET, true, false));
        assert!(!retryable(&Method::GET, false, true));
    }

    #[test]
    fn failures_retry_eject_or_answer() {
        // (failure, attempt, attempts) → (eject, status or retry)
        let cases = [
            (Failure::Connect, 0, 3, true, None),
            (Failure::Connect, 2, 3, true, Some(502)),
            (Failure::Other, 0, 3, false, None),
            (Failure::Other, 0, 1, false, Some(502)),
            (Failure::Timeout, 0, 3, false, Some(504)),
            (Failure::ClientBody, 0, 3, false, Some(400)),
            (Failure::Local, 0, 3, false, Some(503)),
        ];
        for (failure, attempt, attempts, eject, status) in cases {
            let next = after_failure(failure, "a-1", "a", attempt, attempts);
            assert_eq!(next.eject, eject, "{failure:?}");
            assert_eq!(
                next.reply.map(|r| r.status.as_u16()),
                status,
                "{failure:?} {attempt}/{attempts}"
            );
        }
    }

    #[test]
    fn redirects_keep_host_and_path_and_refuse_bad_hosts() {
        let cases: &[(&str, &str, u16, Result<&str, u16>)] = &[
            (
                "web.example.com",
                "/a?b=1",
                443,
                Ok("https://web.example.com/a?b=1"),
            ),
            (
                "web.example.com:80",
                "/",
                8443,
                Ok("https://web.example.com:8443/"),
            ),
            ("[2001:db8::1]:80", "/", 443, Ok("https://[2001:db8::1]/")),
            ("web.example.com@evil.org", "/", 443, Err(400)),
            ("", "/", 443, Err(400)),
        ];
        for (host, path, port, want) in cases {
            let headers: Vec<(&str, &str)> = if host.is_empty() {
                vec![]
            } else {
                vec![("host", *host)]
            };
            let req = request("GET", path, &headers);
            let got = redirect(Head::of(&req), *port);
            match (want, got) {
                (Ok(w), Ok(g)) => assert_eq!(&g, w),
                (Err(s), Err(r)) => assert_eq!(r.status.as_u16(), *s, "{host}"),
                (w, g) => panic!("{host}: want {w:?}, got {g:?}"),
            }
        }
    }
}
