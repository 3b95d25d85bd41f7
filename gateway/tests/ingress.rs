//! The HTTPS ingress in-process on loopback (listeners bound to port 0): a TLS handshake
//! against the generated certificate, routing by Host to a backend, and the answers vxgate
//! gives itself (404 for an unknown service, 400 for a request it cannot forward), and the
//! cipher suite it picks for clients that order theirs differently.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vxgate::registry::{Container, Registry};

/// A backend that answers every request with 200, its name, and the Host it received.
async fn backend(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let host = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("host").then(|| v.trim().to_owned())
                            })
                            .unwrap_or_default();
                        let body = format!("{name} host={host}");
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Backend: {name}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

mod common;

fn container(name: &str, app: &str, at: SocketAddr) -> Container {
    common::container(name, app, at.ip(), at.port())
}

/// One HTTP/1.1 request over TLS with SNI `sni`, trusting `ca`; returns the status and body.
async fn https(addr: SocketAddr, ca: &Path, sni: &str, request: &str) -> (u16, String) {
    let cfg = common::tls_client(ca);
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .expect("the handshake verifies against the generated certificate");
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    (status, body.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_routing_and_the_proxys_own_answers_on_loopback() {
    let state = tempfile::tempdir().expect("tmp");
    let registry = Arc::new(Registry::new("app"));
    let b1 = backend("b1").await;
    registry.add(container("web-1", "web", b1)).expect("add");
    let (ingress, stop, mut tasks) = common::start_ingress(state.path(), &registry).await;
    let addr = ingress.listen[0];
    assert_ne!(addr.port(), 0, "the bound port is reported");
    let ca = state.path().join("tls/self-signed.crt");

    let get = |host: &str| format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let (status, body) = https(addr, &ca, "web.example.com", &get("web.example.com")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body, "b1 host=web.example.com",
        "routed to web's backend with its Host"
    );

    let (status, body) = https(addr, &ca, "nope.example.com", &get("nope.example.com")).await;
    assert_eq!(status, 404, "an unknown service: {body}");

    let (status, _) = https(
        addr,
        &ca,
        "web.example.com",
        "OPTIONS * HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        status, 400,
        "a target that is not a path is answered by vxgate"
    );
    // and web's backend still serves (the 400 did not count against it)
    let (status, _) = https(addr, &ca, "web.example.com", &get("web.example.com")).await;
    assert_eq!(status, 200);
    let tls13 = ingress
        .stats
        .tls13
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(tls13 >= 4, "4 TLS 1.3 handshakes counted, saw {tls13}");

    stop.send(true).expect("stop");
    let drained = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(r) = tasks.join_next().await {
            r.expect("join").expect("a part failed");
        }
    })
    .await;
    assert!(drained.is_ok(), "the ingress did not stop within 15 s");
}

/// The suite the ingress picks for a client that offers `suites` in that order (TLS 1.3 or
/// 1.2 per `version`), after a request answered 200 on it.
async fn negotiated(
    addr: SocketAddr,
    ca: &Path,
    suites: &[rustls::SupportedCipherSuite],
    version: &'static rustls::SupportedProtocolVersion,
) -> rustls::CipherSuite {
    let roots = common::roots(ca);
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: suites.to_vec(),
        ..rustls::crypto::ring::default_provider()
    };
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("web.example.com").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let suite = tls.get_ref().1.negotiated_cipher_suite().expect("suite");
    tls.write_all(b"GET / HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    suite.suite()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aes_128_gcm_is_preferred_unless_the_client_puts_chacha20_first() {
    use rustls::CipherSuite as S;
    use rustls::crypto::ring::cipher_suite as cs;
    use rustls::version::{TLS12, TLS13};
    let state = tempfile::tempdir().expect("tmp");
    let registry = Arc::new(Registry::new("app"));
    let b1 = backend("b1").await;
    registry.add(container("web-1", "web", b1)).expect("add");
    let (ingress, stop, _tasks) = common::start_ingress(state.path(), &registry).await;
    let (addr, ca) = (ingress.listen[0], state.path().join("tls/self-signed.crt"));
    let cases = [
        // OpenSSL's order: AES-256 first
        (
            vec![
                cs::TLS13_AES_256_GCM_SHA384,
                cs::TLS13_CHACHA20_POLY1305_SHA256,
                cs::TLS13_AES_128_GCM_SHA256,
            ],
            &TLS13,
            S::TLS13_AES_128_GCM_SHA256,
        ),
        // a client without AES instructions puts ChaCha20 first: it gets it
        (
            vec![
                cs::TLS13_CHACHA20_POLY1305_SHA256,
                cs::TLS13_AES_128_GCM_SHA256,
                cs::TLS13_AES_256_GCM_SHA384,
            ],
            &TLS13,
            S::TLS13_CHACHA20_POLY1305_SHA256,
        ),
        // AES-256 only: AES-256
        (
            vec![cs::TLS13_AES_256_GCM_SHA384],
            &TLS13,
            S::TLS13_AES_256_GCM_SHA384,
        ),
        // TLS 1.2 the same (the generated certificate is ECDSA)
        (
            vec![
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ],
            &TLS12,
            S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            vec![
                cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ],
            &TLS12,
            S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    ];
    for (offer, version, want) in cases {
        let names: Vec<_> = offer.iter().map(|s| s.suite()).collect();
        let got = negotiated(addr, &ca, &offer, version).await;
        assert_eq!(got, want, "client offering {names:?}");
    }
    stop.send(true).expect("stop");
}
