//! What the package installs fits together: the starter config passes `check`, and every
//! socket of the socket unit is an address of that config (vxgate refuses to start with a
//! passed socket no listener takes).

use std::net::SocketAddr;
use std::path::Path;

fn dist(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dist")
        .join(file)
}

#[test]
fn the_socket_unit_listens_on_the_starter_configs_addresses() {
    let cfg = vxgate::config::load(&dist("vxgate.toml")).expect("the starter config loads");
    let ingress = cfg.ingress.as_ref().expect("[ingress]");
    let dns = cfg.dns.as_ref().expect("[dns]");
    let mut streams: Vec<SocketAddr> = ingress.listen.clone();
    streams.extend(&ingress.http_redirect);
    streams.extend(&dns.listen);
    streams.push(cfg.admin.listen);
    let unit = std::fs::read_to_string(dist("vxgate.socket")).expect("vxgate.socket");
    let mut seen = 0;
    for line in unit.lines() {
        let (key, value) = match line.split_once('=') {
            Some((k, v)) if k.starts_with("Listen") => (k, v),
            _ => continue,
        };
        let addr: SocketAddr = value
            .parse()
            .unwrap_or_else(|e| panic!("{line}: not an address: {e}"));
        let ok = match key {
            "ListenStream" => streams.contains(&addr),
            "ListenDatagram" => dns.listen.contains(&addr),
            other => panic!("{other}: a socket vxgate does not take"),
        };
        assert!(
            ok,
            "{line}: no listener of dist/vxgate.toml has this address"
        );
        seen += 1;
    }
    assert_eq!(
        seen,
        streams.len() + dns.listen.len(),
        "a listener without its socket"
    );
}
