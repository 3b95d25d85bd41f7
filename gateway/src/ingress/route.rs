//! Routing decisions, no I/O: which service a Host names, which backend gets a request, which
//! headers are hop-by-hop.

use http::HeaderMap;
use http::header::{self, HeaderName};

/// The service a Host header (or h2 authority) names: `<service>.<zone>`, any case, an
/// optional port and trailing dot. None for the zone itself, deeper names and other domains.
pub fn service_of(host: &str, zone: &str) -> Option<String> {
    let host = match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let zone = zone.strip_suffix('.').unwrap_or(zone).to_ascii_lowercase();
    let service = host.strip_suffix(&zone)?.strip_suffix('.')?;
    (!service.is_empty() && !service.contains('.')).then(|| service.to_owned())
}

/// Round robin: the backend for the `counter`-th request among `n`.
pub fn round_robin(counter: usize, n: usize) -> usize {
    if n == 0 { 0 } else { counter % n }
}

/// Power of two choices: two different backends drawn from the random numbers `r1` and `r2`,
/// and of those the one with fewer requests in flight (ties go to the first draw).
pub fn two_choices(in_flight: &[usize], r1: usize, r2: usize) -> usize {
    let n = in_flight.len();
    if n < 2 {
        return 0;
    }
    let a = r1 % n;
    let b = (a + 1 + r2 % (n - 1)) % n; // never a
    if in_flight[b] < in_flight[a] { b } else { a }
}

/// Whether a retry on another backend is safe: an idempotent method (RFC 9110 §9.2.2) and no
/// request body already sent.
pub fn retryable(method: &http::Method, has_body: bool) -> bool {
    use http::Method;
    !has_body
        && matches!(
            *method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        )
}

const HOPS: usize = 8;

/// The fixed hop-by-hop headers (RFC 9110 §7.6.1, and the two legacy ones every proxy drops).
/// `Upgrade` is one too, kept for a WebSocket handshake.
const HOP_BY_HOP: [HeaderName; HOPS] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Removes hop-by-hop headers (RFC 9110 §7.6.1): the fixed list and every header that
/// `Connection` names. With `keep_upgrade`, `Connection: upgrade` and `Upgrade` stay (a
/// WebSocket handshake passes through).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // one pass over the names finds the ones there (most requests carry none): a remove
    // hashes its name even when there is nothing to remove, 4,500 instructions a request
    // for the ten names
    let mut present = [false; HOPS];
    let mut upgrade = false;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        } else if name == header::UPGRADE {
            upgrade = true;
        }
    }
    if present[0]
    /* HOP_BY_HOP[0]: Connection */
    {
        // the headers that Connection names, looked for among the names there: an option
        // with no header of its name ("keep-alive", "close": the usual case) is neither
        // parsed into a name nor hashed, and nothing is allocated
        let mut named: Vec<HeaderName> = Vec::new();
        for option in headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
        {
            if let Some(name) = headers
                .keys()
                .find(|k| k.as_str().eq_ignore_ascii_case(option))
                && !(keep_upgrade && name == header::UPGRADE)
                && !named.contains(name)
            {
                named.push(name.clone());
            }
        }
        for h in named {
            headers.remove(h);
        }
    }
    for (h, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, there)| *there) {
        headers.remove(h);
    }
    if keep_upgrade {
        headers.insert(
            header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
    } else if upgrade {
        headers.remove(header::UPGRADE);
    }
}

/// Whether a request asks for a WebSocket upgrade (`Connection: upgrade` and `Upgrade:
/// websocket`), the one upgrade the ingress splices. Any other token (`h2c`, `TLS/1.0`, ...)
/// is not an upgrade here: its headers are stripped and the request goes on as a plain one,
/// so nothing can tunnel past the routes, limits and access log (h2c smuggling).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.get_all(header::UPGRADE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|t| {
                t.trim()
                    .split('/')
                    .next()
                    .is_some_and(|p| p.eq_ignore_ascii_case("websocket"))
            })
        })
    }) && headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
}

/// The forwarding headers' names, parsed once (a `&str` name is parsed at every use).
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Adds X-Forwarded-For/Proto/Host and `Forwarded` (RFC 7239) for a request from `client`
/// that arrived over https for `host`.
pub fn add_forwarded(headers: &mut HeaderMap, client: std::net::IpAddr, host: &str) {
    use std::fmt::Write as _;
    // one buffer for each value in turn (no format! per header)
    let mut v = String::with_capacity(128);
    // every X-Forwarded-For line the client sent, in order, then this hop
    for prev in headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        v.push_str(prev);
        v.push_str(", ");
    }
    push_ip(&mut v, client);
    let xff = http::HeaderValue::from_str(&v);
    v.clear();
    // Forwarded lines are kept only when each parses (RFC 7239 §4): an unclosed quote would
    // otherwise swallow this proxy's own element when appended to
    // (collected only when there are some: an empty Vec does not allocate)
    let prev_fwd: Vec<&str> = headers
        .get_all(header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    if prev_fwd.iter().all(|p| forwarded_parses(p)) {
        for p in &prev_fwd {
            v.push_str(p);
            v.push_str(", ");
        }
    }
    match client {
        std::net::IpAddr::V6(v6) => {
            let _ = write!(v, "for=\"[{v6}]\"");
        }
        v4 => {
            v.push_str("for=");
            push_ip(&mut v, v4);
        }
    }
    v.push_str(";proto=https;host=\"");
    v.extend(host.chars().filter(|c| *c != '"'));
    v.push('"');
    let fwd = http::HeaderValue::from_str(&v);
    for (k, value) in [
        (X_FORWARDED_FOR, xff),
        (header::FORWARDED, fwd),
        (X_FORWARDED_HOST, http::HeaderValue::from_str(host)),
    ] {
        if let Ok(value) = value {
            headers.insert(k, value);
        }
    }
    headers.insert(X_FORWARDED_PROTO, http::HeaderValue::from_static("https"));
}

/// Appends `ip` as text, as its `Display` writes it; an IPv4 address by hand (through
/// `fmt`, about 1,900 instructions an address, twice a request).
fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, &n) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if n >= 100 {
                    out.push(char::from(b'0' + n / 100));
                }
                if n >= 10 {
                    out.push(char::from(b'0' + n / 10 % 10));
                }
                out.push(char::from(b'0' + n % 10));
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

/// Whether a `Forwarded` value is a list of `;`-separated `token=value` pairs whose quoted
/// strings are closed (RFC 7239 §4, RFC 9110 §5.6.4).
fn forwarded_parses(v: &str) -> bool {
    let b = v.as_bytes();
    let mut i = 0;
    let mut expect_name = true;
    while i < b.len() {
        match b[i] {
            b'"' => {
                if expect_name {
                    return false;
                }
                i += 1;
                loop {
                    match b.get(i) {
                        None => return false,
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
            }
            b'=' => expect_name = false,
            b';' | b',' => expect_name = true,
            c if c.is_ascii_control() => return false,
            _ => {}
        }
        i += 1;
    }
    true
}

/// Why the proxy answers a request itself instead of forwarding it. None of these count
/// against a backend: the request never reaches one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// CONNECT asks for a tunnel, not a resource of a service (405).
    Connect,
    /// A target that is neither origin-form nor absolute-form (`OPTIONS *`) (400).
    Target,
    /// No Host (400).
    NoHost,
    /// More than one Host header (RFC 9112 §3.2: 400).
    DuplicateHost,
    /// The target's authority (absolute-form, or HTTP/2 `:authority`) differs from Host (400).
    HostMismatch,
    /// A Host that is not a host name or IP literal with an optional port (400).
    BadHost,
}

impl Refusal {
    pub fn status(self) -> http::StatusCode {
        match self {
            Refusal::Connect => http::StatusCode::METHOD_NOT_ALLOWED,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::Connect => "CONNECT is not proxied",
            Refusal::Target => "the request target must be a path",
            Refusal::NoHost => "no Host header",
            Refusal::DuplicateHost => "more than one Host header",
            Refusal::HostMismatch => "the request target's authority and Host differ",
            Refusal::BadHost => "Host is not a host name",
        }
    }
}

/// Whether `h` is `name[:port]` or `[v6][:port]`: letters, digits, '-', '.', a port of digits.
pub fn valid_host(h: &str) -> bool {
    let (name, port) = if let Some(rest) = h.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after.strip_prefix(':') {
            Some(p) => ("x", Some(p)),
            None if after.is_empty() => ("x", None),
            None => return false,
        }
    } else {
        match h.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (h, None),
        }
    };
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The host a request is routed by, or why the proxy must answer it itself. The target's
/// authority (absolute-form, or HTTP/2 `:authority`) and Host must agree when both are there
/// (compared without case); the backend then gets exactly the host it was routed by.
pub fn routing_host(
    method: &http::Method,
    uri: &http::Uri,
    headers: &HeaderMap,
) -> Result<String, Refusal> {
    if method == http::Method::CONNECT {
        return Err(Refusal::Connect);
    }
    if !uri.path().starts_with('/') {
        return Err(Refusal::Target);
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::DuplicateHost);
    }
    let host = match host {
        Some(h) => Some(h.to_str().map_err(|_| Refusal::BadHost)?),
        None => None,
    };
    let chosen = match (uri.authority().map(|a| a.as_str()), host) {
        (Some(a), Some(h)) if !a.eq_ignore_ascii_case(h) => return Err(Refusal::HostMismatch),
        (Some(a), _) => a,
        (None, Some(h)) => h,
        (None, None) => return Err(Refusal::NoHost),
    };
    if !valid_host(chosen) {
        return Err(Refusal::BadHost);
    }
    Ok(chosen.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str, hosts: &[&str]) -> Result<String, Refusal> {
        let mut h = HeaderMap::new();
        for v in hosts {
            h.append(header::HOST, v.parse().expect("value"));
        }
        let m: http::Method = method.parse().expect("method");
        let uri: http::Uri = target.parse().expect("uri");
        routing_host(&m, &uri, &h)
    }

    #[test]
    fn the_routed_host_is_the_one_the_backend_gets() {
        assert_eq!(
            req("GET", "/", &["web.example.com"]),
            Ok("web.example.com".into())
        );
        assert_eq!(
            req("GET", "http://web.example.com/x", &["WEB.example.com"]),
            Ok("web.example.com".into()),
            "absolute-form agreeing with Host"
        );
        assert_eq!(
            req("GET", "http://api.example.com/", &["web.example.com"]),
            Err(Refusal::HostMismatch)
        );
        assert_eq!(
            req("GET", "/", &["web.example.com", "api.example.com"]),
            Err(Refusal::DuplicateHost),
            "RFC 9112 3.2"
        );
        assert_eq!(req("GET", "/", &[]), Err(Refusal::NoHost));
        assert_eq!(
            req("OPTIONS", "*", &["web.example.com"]),
            Err(Refusal::Target)
        );
        assert_eq!(
            req("CONNECT", "web.example.com:443", &["web.example.com:443"]),
            Err(Refusal::Connect)
        );
        for bad in [
            "web.example.com@evil.com",
            "web.example.com/x",
            "a b",
            "h:",
            "h:1x",
            "[::1",
            "",
        ] {
            assert_eq!(req("GET", "/", &[bad]), Err(Refusal::BadHost), "{bad:?}");
        }
        for good in ["web.example.com:8443", "[fd00::1]:443", "10.0.0.1"] {
            assert!(valid_host(good), "{good}");
        }
        assert_eq!(
            Refusal::Connect.status(),
            http::StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(Refusal::Target.status(), http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn forwarding_headers_are_parsed_not_concatenated() {
        let client = "10.99.0.100".parse().expect("ip");
        // two X-Forwarded-For lines: both kept, in order
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "192.0.2.1".parse().expect("v"));
        h.append(
            "x-forwarded-for",
            "192.0.2.2, 192.0.2.3".parse().expect("v"),
        );
        add_forwarded(&mut h, client, "web.example.com");
        assert_eq!(
            h["x-forwarded-for"],
            "192.0.2.1, 192.0.2.2, 192.0.2.3, 10.99.0.100"
        );
        // an unclosed quote must not swallow this proxy's element: the client's value goes
        let mut h = HeaderMap::new();
        h.append(header::FORWARDED, "for=\"192.0.2.9".parse().expect("v"));
        add_forwarded(&mut h, client, "web.example.com");
        assert_eq!(
            h[header::FORWARDED],
            "for=10.99.0.100;proto=https;host=\"web.example.com\""
        );
        // two well-formed lines are joined, then this hop
        let mut h = HeaderMap::new();
        h.append(header::FORWARDED, "for=192.0.2.1".parse().expect("v"));
        h.append(
            header::FORWARDED,
            "for=\"[2001:db8::1]\";proto=http".parse().expect("v"),
        );
        add_forwarded(&mut h, client, "web.example.com");
        assert_eq!(
            h[header::FORWARDED],
            "for=192.0.2.1, for=\"[2001:db8::1]\";proto=http, for=10.99.0.100;proto=https;host=\"web.example.com\""
        );
        assert!(forwarded_parses("for=\"a\\\"b\";by=x"));
        assert!(!forwarded_parses("for=\"a"));
        assert!(!forwarded_parses("\"x\"=1"));
    }

    #[test]
    fn host_names_a_service_in_the_zone() {
        assert_eq!(
            service_of("web.example.com", "example.com").as_deref(),
            Some("web")
        );
        assert_eq!(
            service_of("WEB.Example.COM:443", "example.com").as_deref(),
            Some("web")
        );
        assert_eq!(
            service_of("web.example.com.", "example.com").as_deref(),
            Some("web")
        );
        assert_eq!(service_of("example.com", "example.com"), None);
        assert_eq!(service_of("a.web.example.com", "example.com"), None);
        assert_eq!(service_of("web.example.org", "example.com"), None);
        assert_eq!(service_of("webexample.com", "example.com"), None);
        assert_eq!(service_of("[::1]:443", "example.com"), None);
    }

    #[test]
    fn balancing() {
        let picks: Vec<usize> = (0..6).map(|c| round_robin(c, 3)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(two_choices(&[5, 1, 9], 0, 0), 1, "draws 0 and 1");
        assert_eq!(two_choices(&[5, 1, 9], 2, 0), 0, "draws 2 and 0");
        assert_eq!(two_choices(&[2, 2], 1, 0), 1, "ties go to the first draw");
        // two backends: always the less loaded one, whatever the draws
        for r1 in 0..4 {
            for r2 in 0..4 {
                assert_eq!(two_choices(&[3, 1], r1, r2), 1);
            }
        }
        assert_eq!(two_choices(&[7], 5, 9), 0);
    }

    /// The names left of `pairs` (appended in order) once hop-by-hop headers are stripped.
    fn left_after_strip(pairs: &[(&str, &str)]) -> Vec<String> {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        strip_hop_by_hop(&mut h, false);
        h.keys().map(|k| k.as_str().to_owned()).collect()
    }

    #[test]
    fn hop_by_hop_headers_go_rfc9110_7_6_1() {
        let left = left_after_strip(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-keep", "1"),
        ]);
        assert_eq!(left, ["x-keep"]);
    }

    #[test]
    fn each_hop_by_hop_header_goes_alone_and_end_to_end_ones_stay() {
        // each one without a Connection header naming it, twice over (every value goes)
        for name in [
            "te",
            "trailer",
            "transfer-encoding",
            "proxy-authorization",
            "proxy-authenticate",
            "keep-alive",
            "proxy-connection",
            "upgrade",
            "connection",
        ] {
            let left =
                left_after_strip(&[("accept", "*/*"), (name, "a"), (name, "b"), ("x-keep", "1")]);
            assert_eq!(left, ["accept", "x-keep"], "{name}");
        }
        // nothing hop-by-hop: untouched, every value in its place
        let mut h = HeaderMap::new();
        h.insert("host", "web.example.com".parse().expect("v"));
        h.append("cookie", "a=1".parse().expect("v"));
        h.append("cookie", "b=2".parse().expect("v"));
        h.insert("x-forwarded-for", "192.0.2.1".parse().expect("v"));
        let before = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, before);
    }

    #[test]
    fn connection_options_name_headers_in_any_case() {
        let left = left_after_strip(&[
            ("connection", "close , X-Secret"),
            ("connection", "X-Other"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("x-keep", "3"),
        ]);
        assert_eq!(left, ["x-keep"]);
    }

    #[test]
    fn websocket_handshakes_keep_their_upgrade() {
        let mut h = HeaderMap::new();
        h.insert("connection", "Upgrade".parse().expect("v"));
        h.insert("upgrade", "websocket".parse().expect("v"));
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(
            h.get("upgrade").map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            h.get("connection").map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let mut ips: Vec<std::net::IpAddr> = [
            "0.0.0.0",
            "255.255.255.255",
            "10.99.0.100",
            "192.0.2.9",
            "1.20.100.0",
            "::1",
            "2001:db8::7",
            "::ffff:10.0.0.1",
        ]
        .iter()
        .map(|s| s.parse().expect("ip"))
        .collect();
        // every octet value in every place
        ips.extend((0..=255u8).map(|n| std::net::IpAddr::from([n, 255 - n, n / 3, n ^ 0x5a])));
        for ip in ips {
            let mut s = String::from("x");
            push_ip(&mut s, ip);
            assert_eq!(s, format!("x{ip}"));
        }
    }

    #[test]
    fn forwarded_headers_append() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "192.0.2.1".parse().expect("v"));
        add_forwarded(
            &mut h,
            "10.99.0.100".parse().expect("ip"),
            "web.example.com",
        );
        assert_eq!(h["x-forwarded-for"], "192.0.2.1, 10.99.0.100");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "web.example.com");
        assert_eq!(
            h["forwarded"],
            "for=10.99.0.100;proto=https;host=\"web.example.com\""
        );
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, "fd00::1".parse().expect("ip"), "web.example.com");
        assert!(
            h["forwarded"]
                .to_str()
                .expect("ascii")
                .starts_with("for=\"[fd00::1]\"")
        );
    }

    #[test]
    fn only_idempotent_requests_without_body_are_retried() {
        assert!(retryable(&http::Method::GET, false));
        assert!(!retryable(&http::Method::GET, true));
        assert!(!retryable(&http::Method::POST, false));
    }
}
