//! What decides where a request goes and what the backend is told: the routing Host (from
//! the target, Host and :authority), the service it names, and the forwarding headers
//! appended to whatever the client sent. Arbitrary values must route consistently or be
//! refused, and vxgate's own Forwarded element must always survive. Input: NUL-separated
//! target, Host, second Host, X-Forwarded-For, Forwarded.
#![no_main]

use http::{HeaderMap, HeaderValue, Method, Uri, header};
use libfuzzer_sys::fuzz_target;
use vxgate::ingress::route;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0);
    let mut next = || parts.next().unwrap_or_default();
    let (target, host, host2, xff, fwd) = (next(), next(), next(), next(), next());
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for (name, v) in [
        (header::HOST, host),
        (header::HOST, host2),
        (header::HeaderName::from_static("x-forwarded-for"), xff),
        (header::FORWARDED, fwd),
    ] {
        if !v.is_empty()
            && let Ok(v) = HeaderValue::from_bytes(v)
        {
            headers.append(name, v);
        }
    }
    for method in [Method::GET, Method::CONNECT, Method::OPTIONS] {
        match route::routing_host(&method, &uri, &headers) {
            Ok(h) => {
                assert!(route::valid_host(&h), "routed by an invalid host {h:?}");
                assert!(headers.get_all(header::HOST).iter().count() <= 1);
                if let Some(s) = route::service_of(&h, "example.com") {
                    assert!(!s.is_empty() && !s.contains('.'));
                }
            }
            Err(refusal) => {
                assert!(refusal.status().is_client_error());
            }
        }
    }
    let mut out = headers.clone();
    route::add_forwarded(
        &mut out,
        "192.0.2.7".parse().expect("ip"),
        "web.example.com",
    );
    let f: Vec<&str> = out
        .get_all(header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(f.len(), 1, "Forwarded not joined: {f:?}");
    assert!(
        f[0].ends_with("for=192.0.2.7;proto=https;host=\"web.example.com\""),
        "vxgate's element lost or swallowed: {f:?}"
    );
    let x: Vec<&str> = out
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(x.len(), 1, "X-Forwarded-For not joined: {x:?}");
    assert!(x[0].trim_end().ends_with("192.0.2.7"), "{x:?}");
});
