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

/// Removes hop-by-hop headers (RFC 9110 §7.6.1): the fixed list and every header that
/// `Connection` names. With `keep_upgrade`, `Connection: upgrade` and `Upgrade` stay (a
/// WebSocket handshake passes through).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for h in named {
        if keep_upgrade && h == header::UPGRADE {
            continue;
        }
        headers.remove(h);
    }
    for h in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(h);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    if keep_upgrade {
        headers.insert(
            header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// Whether a request asks for a protocol upgrade (`Connection: upgrade` and `Upgrade`).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Adds X-Forwarded-For/Proto/Host and `Forwarded` (RFC 7239) for a request from `client`
/// that arrived over https for `host`.
pub fn add_forwarded(headers: &mut HeaderMap, client: std::net::IpAddr, host: &str) {
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {client}"),
        None => client.to_string(),
    };
    let node = match client {
        std::net::IpAddr::V6(v6) => format!("\"[{v6}]\""),
        v4 => v4.to_string(),
    };
    let fwd_host = host.replace('"', "");
    let fwd = format!("for={node};proto=https;host=\"{fwd_host}\"");
    let fwd = match headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {fwd}"),
        None => fwd,
    };
    for (k, v) in [
        ("x-forwarded-for", xff),
        ("forwarded", fwd),
        ("x-forwarded-host", host.to_owned()),
    ] {
        if let Ok(v) = http::HeaderValue::from_str(&v) {
            headers.insert(k, v);
        }
    }
    headers.insert("x-forwarded-proto", http::HeaderValue::from_static("https"));
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn hop_by_hop_headers_go_rfc9110_7_6_1() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret".parse().expect("v"));
        h.insert("keep-alive", "timeout=5".parse().expect("v"));
        h.insert("x-secret", "1".parse().expect("v"));
        h.insert("te", "trailers".parse().expect("v"));
        h.insert("transfer-encoding", "chunked".parse().expect("v"));
        h.insert("upgrade", "websocket".parse().expect("v"));
        h.insert("x-keep", "1".parse().expect("v"));
        strip_hop_by_hop(&mut h, false);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
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
