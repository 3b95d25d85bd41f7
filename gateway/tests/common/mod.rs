//! Helpers shared by the process-level tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// (status, body) of one HTTP/1.1 request to the admin API.
pub fn http(port: u16, method: &str, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The rcode of an A query for `name`.
pub fn dns_rcode(port: u16, name: &str) -> u8 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend(vxgate_dns::message::name_from_text(name).expect("name"));
    q.extend_from_slice(&[0, 1, 0, 1]);
    s.send_to(&q, ("127.0.0.1", port)).expect("send");
    let mut buf = [0u8; 512];
    let n = s.recv(&mut buf).expect("answer");
    assert!(n >= 12);
    buf[3] & 0x0f
}

/// Starts `vxgate run --config CONFIG` with its log in `log`, and waits until that process
/// itself logs "vxgate running" (every listener bound). `None` when it exited first (a port
/// taken meanwhile by a parallel test: pick new ports and try again) or did not start in 10 s.
/// A TCP connect alone is not proof: another test's vxgate may hold the port.
pub fn spawn_vxgate(
    config: &std::path::Path,
    log: &std::path::Path,
) -> Option<std::process::Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log");
    let start_len = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0) as usize;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vxgate"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stderr(file)
        .spawn()
        .expect("start vxgate");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text
            .get(start_len..)
            .is_some_and(|t| t.contains("vxgate running"))
        {
            return Some(child);
        }
        if child.try_wait().ok().flatten().is_some() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A registry entry of service `app` (label `app`) at `ip:port`, as the config file has it
/// (the operator's own: any address, loopback included).
pub fn container(
    name: &str,
    app: &str,
    ip: std::net::IpAddr,
    port: u16,
) -> vxgate::registry::Container {
    vxgate::registry::Container {
        name: name.into(),
        ip,
        mac: None,
        port,
        labels: std::collections::BTreeMap::from([("app".to_string(), app.to_string())]),
        network: "default".into(),
        node: "h1".into(),
        health: vxgate::registry::Health::Unknown,
        ready: true,
        origin: vxgate::registry::Origin::Config,
    }
}

/// A running in-process ingress: its life, to wait for after the stop.
pub type IngressTasks = tokio::task::JoinSet<Result<(), vxgate::ingress::Error>>;

/// An ingress serving `registry` in-process on a loopback port of its own, with the
/// self-signed certificate generated into `state_dir` (`tls/self-signed.crt`). The sender
/// stops it; the task set holds its parts.
pub async fn start_ingress(
    state_dir: &std::path::Path,
    registry: &std::sync::Arc<vxgate::registry::Registry>,
) -> (
    vxgate::ingress::Ingress,
    tokio::sync::watch::Sender<bool>,
    IngressTasks,
) {
    start_ingress_with(state_dir, registry, "").await
}

/// [`start_ingress`] with more `[ingress]` keys (TOML lines).
pub async fn start_ingress_with(
    state_dir: &std::path::Path,
    registry: &std::sync::Arc<vxgate::registry::Registry>,
    ingress_keys: &str,
) -> (
    vxgate::ingress::Ingress,
    tokio::sync::watch::Sender<bool>,
    IngressTasks,
) {
    let text = format!(
        "[node]\nstate_dir = {:?}\n[ingress]\nlisten = [\"127.0.0.1:8443\"]\nzone = \"example.com\"\n{ingress_keys}\n",
        state_dir.display().to_string()
    );
    let config = vxgate::config::parse(&text, std::path::Path::new(".")).expect("config");
    let mut cfg = config.ingress.clone().expect("ingress");
    cfg.listen = vec!["127.0.0.1:0".parse().expect("addr")];
    let (stop, shutdown) = vxgate::shutdown::Shutdown::new();
    let mut tasks = tokio::task::JoinSet::new();
    let listeners = vxgate::ingress::bind_listeners(&cfg, &mut Default::default()).expect("bind");
    let (ingress, part) = vxgate::ingress::start(
        &cfg,
        listeners,
        "example.com",
        state_dir,
        None,
        registry,
        &shutdown,
    )
    .await
    .expect("start");
    tasks.spawn(part.run(shutdown));
    (ingress, stop, tasks)
}

/// The PEM certificates in `ca`, as roots.
pub fn roots(ca: &std::path::Path) -> rustls::RootCertStore {
    let pem = std::fs::read(ca).expect("ca");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(c.expect("pem")).expect("root");
    }
    roots
}

/// A TLS client configuration (ring) trusting only the PEM certificates in `ca`.
pub fn tls_client(ca: &std::path::Path) -> std::sync::Arc<rustls::ClientConfig> {
    let roots = roots(ca);
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}
