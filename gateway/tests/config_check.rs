//! `vxgate check` against every example config and a catalogue of broken ones: each broken
//! config exits 2 with a `FILE:LINE: key: message` line naming the offending key and line.

use std::path::{Path, PathBuf};
use std::process::Command;

fn vxgate_check(path: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vxgate"))
        .args(["check", "--config"])
        .arg(path)
        .output()
        .expect("vxgate runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_example_config_is_accepted() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("configs/ exists") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (code, _, err) = vxgate_check(&path);
            assert_eq!(code, 0, "{} rejected: {err}", path.display());
            checked += 1;
        }
    }
    assert!(
        checked >= 3,
        "expected the example configs, found {checked}"
    );
}

const ACME: &str = "[ingress]\nlisten = [\"127.0.0.1:8443\"]\nzone = \"example.com\"\n[ingress.acme]\ndirectory = \"https://acme.test/dir\"\nemail = \"ops@example.com\"\n";

const GOOD_OVERLAY: &str =
    "[overlay]\nlisten = \"10.99.0.1:4789\"\n[[overlay.networks]]\nname = \"default\"\nvni = 42\n";

/// (name, config text, expected line, expected key, a word the message must hold)
fn broken() -> Vec<(&'static str, String, usize, &'static str, &'static str)> {
    vec![
        ("unknown top-level key", "[node]\nname = \"h1\"\ncolour = \"red\"\n".into(), 3, "node.colour", "unknown field"),
        ("unknown section", "[nodes]\nname = \"h1\"\n".into(), 1, "nodes", "unknown field"),
        ("bad socket address", "[admin]\nlisten = \"localhost\"\n".into(), 2, "admin.listen", "socket address"),
        ("vni over 24 bits", "[overlay]\nlisten = \"10.99.0.1:4789\"\n[[overlay.networks]]\nname = \"default\"\nvni = 16777216\n".into(), 5, "overlay.networks[0].vni", "24 bits"),
        ("two networks on one tap", format!("{GOOD_OVERLAY}[[overlay.networks]]\nname = \"b\"\nvni = 43\n"), 6, "overlay.networks[1].tap", "vxg0"),
        ("two networks on one vni", format!("{GOOD_OVERLAY}[[overlay.networks]]\nname = \"b\"\nvni = 42\ntap = \"vxg1\"\n"), 8, "overlay.networks[1].vni", "42"),
        ("port 0 container", "[[containers]]\nname = \"a\"\nip = \"10.0.0.1\"\nport = 0\n".into(), 4, "containers[0].port", "port 0"),
        ("duplicate container name", "[[containers]]\nname = \"a\"\nip = \"10.0.0.1\"\nport = 80\n[[containers]]\nname = \"a\"\nip = \"10.0.0.2\"\nport = 80\n".into(), 6, "containers[1].name", "duplicate"),
        ("duplicate container ip", "[[containers]]\nname = \"a\"\nip = \"10.0.0.1\"\nport = 80\n[[containers]]\nname = \"b\"\nip = \"10.0.0.1\"\nport = 80\n".into(), 7, "containers[1].ip", "already used"),
        ("unknown registry backend", "[registry]\nbackend = \"consul\"\n".into(), 2, "registry.backend", "unknown variant"),
        ("etcd without endpoints", "[registry]\nbackend = \"etcd\"\n".into(), 1, "registry.endpoints", "at least one endpoint"),
        ("etcd with an unspecified vtep", "[registry]\nbackend = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\n[overlay]\nlisten = \"0.0.0.0:4789\"\n[[overlay.networks]]\nname = \"d\"\nvni = 1\n".into(), 4, "overlay.advertise", "VTEP address"),
        ("etcd prefix not a key path", "[registry]\nbackend = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\nprefix = \"vxgate\"\n".into(), 4, "registry.prefix", "key prefix"),
        ("unreadable cert", "[ingress]\nlisten = [\"127.0.0.1:8443\"]\n[[ingress.certs]]\ncert = \"/nonexistent/x.crt\"\nkey = \"/nonexistent/x.key\"\n".into(), 4, "ingress.certs[0].cert", "cannot read"),
        ("bad allow_from label", "[[containers]]\nname = \"a\"\nip = \"10.0.0.1\"\nport = 80\nlabels = { app = \"a\", \"vxgate.allow_from\" = \"web:99999\" }\n".into(), 5, "containers[0].labels.\"vxgate.allow_from\"", "port must be 1-65535"),
        ("bad network policy", "[overlay]\nlisten = \"127.0.0.1:4789\"\n[[overlay.networks]]\nname = \"d\"\nvni = 1\npolicy = \"closed\"\n".into(), 6, "overlay.networks[0].policy", "expected `open` or `isolated`"),
        ("peer gateways of an unknown node", "[overlay]\nlisten = \"10.99.0.1:4789\"\npeers = [\"10.99.0.2:4789\"]\npeer_gateways = { h3 = [\"10.200.3.1\"] }\n[[overlay.networks]]\nname = \"d\"\nvni = 1\n".into(), 4, "overlay.peer_gateways.h3", "not in overlay.peer_nodes"),
        ("bad dns zone", "[dns]\nlisten = [\"127.0.0.1:53\"]\nzone = \"exa mple.com\"\n".into(), 3, "dns.zone", "not allowed"),
        ("empty access log", "[ingress]\nlisten = [\"127.0.0.1:8443\"]\naccess_log = \"\"\n".into(), 3, "ingress.access_log", "stderr"),
        ("access log in a missing directory", "[ingress]\nlisten = [\"127.0.0.1:8443\"]\naccess_log = \"/nonexistent-dir/access.log\"\n".into(), 3, "ingress.access_log", "does not exist"),
        ("bad mac", "[[containers]]\nname = \"a\"\nip = \"10.0.0.1\"\nport = 80\nmac = \"02:00:zz:00:00:01\"\n".into(), 5, "containers[0].mac", "MAC"),
        ("bad cidr", "[dns]\nlisten = [\"127.0.0.1:53\"]\nzone = \"example.com\"\nrecursion_from = [\"10.0.0.0/33\"]\n".into(), 4, "dns.recursion_from", "invalid"),
        ("wrong type", "[overlay]\nlisten = \"10.99.0.1:4789\"\nfdb_aging_s = \"5m\"\n[[overlay.networks]]\nname = \"d\"\nvni = 1\n".into(), 3, "overlay.fdb_aging_s", "expected u64"),
        ("admin off loopback without token", "[admin]\nlisten = \"0.0.0.0:9180\"\n".into(), 2, "admin.listen", "token_file"),
        ("mtu out of range", format!("{GOOD_OVERLAY}mtu = 100\n"), 6, "overlay.networks[0].mtu", "576-9000"),
        ("container on unknown network", format!("{GOOD_OVERLAY}[[containers]]\nname = \"a\"\nip = \"10.0.0.1\"\nport = 80\nnetwork = \"other\"\n"), 10, "containers[0].network", "other"),
        ("peer is own address", "[overlay]\nlisten = \"10.99.0.1:4789\"\npeers = [\"10.99.0.1:4789\"]\n[[overlay.networks]]\nname = \"d\"\nvni = 1\n".into(), 3, "overlay.peers[0]", "own"),
        ("tap name too long", format!("{GOOD_OVERLAY}tap = \"a-very-long-tap-name\"\n"), 6, "overlay.networks[0].tap", "1-15"),
        ("toml syntax error", "[node\nname = \"h1\"\n".into(), 1, "(document)", "unclosed table"),
        ("max_header_bytes under hyper's minimum", "[ingress]\nlisten = [\"127.0.0.1:8443\"]\nzone = \"example.com\"\nmax_header_bytes = 4096\n".into(), 4, "ingress.max_header_bytes", "8192-1048576"),
        ("etcd tls with an http endpoint", "[registry]\nbackend = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\ntls = {}\n".into(), 3, "registry.endpoints[0]", "plain HTTP"),
        ("etcd client cert without its key", "[registry]\nbackend = \"etcd\"\nendpoints = [\"https://127.0.0.1:2379\"]\ntls = { cert_file = \"/nonexistent/c.pem\" }\n".into(), 4, "registry.tls.key_file", "cert_file needs"),
        ("etcd user without a password file", "[registry]\nbackend = \"etcd\"\nendpoints = [\"https://127.0.0.1:2379\"]\nusername = \"vxgate\"\n".into(), 1, "registry.password_file", "needs a password_file"),
        ("wireguard peer key not 32 bytes", "[overlay]\nlisten = \"10.99.0.1:4789\"\n[overlay.encryption]\nmode = \"wireguard\"\nlisten = \"10.99.0.1:51820\"\naddress = \"10.250.0.1\"\nprivate_key_file = \"/nonexistent/wg.key\"\n[[overlay.encryption.peers]]\npublic_key = \"c2hvcnQ=\"\nendpoint = \"10.99.0.2:51820\"\naddress = \"10.250.0.2\"\n".into(), 9, "overlay.encryption.peers[0].public_key", "32 bytes of base64"),
        ("wireguard tunnel address taken", "[overlay]\nlisten = \"10.99.0.1:4789\"\n[overlay.encryption]\nmode = \"wireguard\"\nlisten = \"10.99.0.1:51820\"\naddress = \"10.250.0.1\"\nprivate_key_file = \"/nonexistent/wg.key\"\n[[overlay.encryption.peers]]\npublic_key = \"HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=\"\nendpoint = \"10.99.0.2:51820\"\naddress = \"10.250.0.1\"\n".into(), 11, "overlay.encryption.peers[0].address", "already the tunnel address"),
        ("overlay without listen", "[overlay]\n[[overlay.networks]]\nname = \"d\"\nvni = 1\n".into(), 1, "overlay.listen", "may be omitted only with [overlay.encryption]"),
        ("plain peers, encryption and no listen", "[overlay]\npeers = [\"10.99.0.2:4789\"]\n[overlay.encryption]\nmode = \"wireguard\"\nlisten = \"10.99.0.1:51820\"\naddress = \"10.250.0.1\"\nallow_plaintext = true\nprivate_key_file = \"/nonexistent/wg.key\"\n".into(), 1, "overlay.listen", "plain overlay.peers need"),
        ("wireguard without listen", "[overlay]\nlisten = \"10.99.0.1:4789\"\n[overlay.encryption]\nmode = \"wireguard\"\naddress = \"10.250.0.1\"\n".into(), 3, "overlay.encryption.listen", "UDP address"),
        ("bad route_hosts entry", "[ingress]\nlisten = [\"127.0.0.1:8443\"]\nzone = \"example.com\"\nroute_hosts = [\"*.\"]\n".into(), 4, "ingress.route_hosts[0]", "host name"),
        ("send_timeout_ms 10", "[ingress]\nlisten = [\"127.0.0.1:8443\"]\nzone = \"example.com\"\nsend_timeout_ms = 10\n".into(), 4, "ingress.send_timeout_ms", "1000-86400000"),
        ("max_streams_per_connection 0", "[ingress]\nlisten = [\"127.0.0.1:8443\"]\nzone = \"example.com\"\nmax_streams_per_connection = 0\n".into(), 4, "ingress.max_streams_per_connection", "1-1000"),
        ("max_backend_connections 0", "[ingress]\nlisten = [\"127.0.0.1:8443\"]\nzone = \"example.com\"\nmax_backend_connections = 0\n".into(), 4, "ingress.max_backend_connections", "at least 1"),
        ("bad backend_networks", "[ingress]\nlisten = [\"127.0.0.1:8443\"]\nzone = \"example.com\"\nbackend_networks = [\"127.0.0.0/40\"]\n".into(), 4, "ingress.backend_networks", "invalid"),
        ("max_connections 0", "[ingress]\nlisten = [\"127.0.0.1:8443\"]\nzone = \"example.com\"\nmax_connections = 0\n".into(), 4, "ingress.max_connections", "1-1000000"),
        ("max_connections over the semaphore", "[ingress]\nlisten = [\"127.0.0.1:8443\"]\nzone = \"example.com\"\nmax_connections = 4611686018427387904\n".into(), 4, "ingress.max_connections", "out of range"),
        ("header_read_timeout_ms 0", "[ingress]\nlisten = [\"127.0.0.1:8443\"]\nzone = \"example.com\"\nheader_read_timeout_ms = 0\n".into(), 4, "ingress.header_read_timeout_ms", "100-3600000"),
        ("idle_timeout_ms 0", "[ingress]\nlisten = [\"127.0.0.1:8443\"]\nzone = \"example.com\"\nidle_timeout_ms = 0\n".into(), 4, "ingress.idle_timeout_ms", "out of range"),
        ("backend_timeout_ms 0", "[ingress]\nlisten = [\"127.0.0.1:8443\"]\nzone = \"example.com\"\nbackend_timeout_ms = 0\n".into(), 4, "ingress.backend_timeout_ms", "out of range"),
        ("health timeout 0", "[ingress]\nlisten = [\"127.0.0.1:8443\"]\nzone = \"example.com\"\n[ingress.health]\ntimeout_ms = 0\n".into(), 5, "ingress.health.timeout_ms", "10-60000"),
        ("health fall 0", "[ingress]\nlisten = [\"127.0.0.1:8443\"]\nzone = \"example.com\"\n[ingress.health]\nfall = 0\n".into(), 5, "ingress.health.fall", "1-100"),
        ("docker endpoint not a unix or tcp url", "[docker]\nendpoint = \"/var/run/docker.sock\"\n".into(), 2, "docker.endpoint", "unix://"),
        ("docker endpoint over https", "[docker]\nendpoint = \"https://10.0.0.1:2376\"\n".into(), 2, "docker.endpoint", "https is not supported"),
        ("docker endpoint tcp without port", "[docker]\nendpoint = \"tcp://10.0.0.1\"\n".into(), 2, "docker.endpoint", "host:port"),
        ("docker unknown key", "[docker]\nsocket = \"/x\"\n".into(), 2, "docker.socket", "unknown field"),
        ("docker empty network", "[docker]\nnetwork = \"\"\n".into(), 2, "docker.network", "network name"),
        ("bridge name too long", format!("{GOOD_OVERLAY}bridge = \"a-very-long-bridge-name\"\n"), 6, "overlay.networks[0].bridge", "1-15"),
        ("bridge is the tap", format!("{GOOD_OVERLAY}bridge = \"vxg0\"\n"), 6, "overlay.networks[0].bridge", "TAP itself"),
        ("dns ttl over a day", "[dns]\nlisten = [\"127.0.0.1:53\"]\nzone = \"example.com\"\nttl_s = 604800\n".into(), 4, "dns.ttl_s", "0-86400"),
        ("dns upstream timeout 0", "[dns]\nlisten = [\"127.0.0.1:53\"]\nzone = \"example.com\"\nupstream_timeout_ms = 0\n".into(), 4, "dns.upstream_timeout_ms", "10-60000"),
        ("dns max_udp_records 0", "[dns]\nlisten = [\"127.0.0.1:53\"]\nzone = \"example.com\"\nmax_udp_records = 0\n".into(), 4, "dns.max_udp_records", "1-1000"),
        ("dns rate_limit too high", "[dns]\nlisten = [\"127.0.0.1:53\"]\nzone = \"example.com\"\nrate_limit = 5000000\n".into(), 4, "dns.rate_limit", "1-1000000"),
        ("lease ttl over an hour", "[registry]\nlease_ttl_s = 86400\n".into(), 2, "registry.lease_ttl_s", "2-3600"),
        ("lease ttl 1", "[registry]\nlease_ttl_s = 1\n".into(), 2, "registry.lease_ttl_s", "2-3600"),
        ("fdb aging 0", "[overlay]\nlisten = \"10.99.0.1:4789\"\nfdb_aging_s = 0\n[[overlay.networks]]\nname = \"d\"\nvni = 1\n".into(), 3, "overlay.fdb_aging_s", "1-1000000"),
        ("fdb aging huge", "[overlay]\nlisten = \"10.99.0.1:4789\"\nfdb_aging_s = 18446744073709551615\n[[overlay.networks]]\nname = \"d\"\nvni = 1\n".into(), 3, "overlay.fdb_aging_s", "out of range"),
        ("health interval huge", "[ingress]\nlisten = [\"127.0.0.1:8443\"]\nzone = \"example.com\"\n[ingress.health]\ninterval_ms = 18446744073709551615\n".into(), 5, "ingress.health.interval_ms", "10-3600000"),
        ("upgrade idle timeout 0", "[ingress]\nlisten = [\"127.0.0.1:8443\"]\nzone = \"example.com\"\nupgrade_idle_timeout_ms = 0\n".into(), 4, "ingress.upgrade_idle_timeout_ms", "out of range"),
        ("dns listen port 0", "[dns]\nlisten = [\"127.0.0.1:0\"]\nzone = \"example.com\"\n".into(), 2, "dns.listen[0]", "port 0"),
        ("ingress listen port 0", "[ingress]\nlisten = [\"127.0.0.1:0\"]\nzone = \"example.com\"\n".into(), 2, "ingress.listen[0]", "port 0"),
        ("redirect port 0", "[ingress]\nlisten = [\"127.0.0.1:443\"]\nhttp_redirect = [\"127.0.0.1:0\"]\nzone = \"example.com\"\n".into(), 3, "ingress.http_redirect[0]", "port 0"),
        ("admin port 0", "[admin]\nlisten = \"127.0.0.1:0\"\n".into(), 2, "admin.listen", "port 0"),
        ("acme directory over http", ACME.replace("https://", "http://"), 5, "ingress.acme.directory", "https directory URL"),
        ("acme email without @", ACME.replace("ops@example", "ops.example"), 6, "ingress.acme.email", "ops@example.com"),
        ("acme http-01 without a redirect listener", format!("{ACME}challenge = \"http-01\"\n"), 7, "ingress.acme.challenge", "http_redirect"),
        ("acme unknown challenge", format!("{ACME}challenge = \"dns-01\"\n"), 7, "ingress.acme.challenge", "unknown variant"),
        ("acme bad domain", format!("{ACME}domains = [\"web example.com\"]\n"), 7, "ingress.acme.domains[0]", "host name"),
        ("acme unreadable ca_file", format!("{ACME}ca_file = \"/nonexistent/ca.pem\"\n"), 7, "ingress.acme.ca_file", "cannot read"),
        ("acme retry 0", format!("{ACME}retry_initial_s = 0\n"), 7, "ingress.acme.retry_initial_s", "1-86400"),
        ("service label value not a dns label", "[[containers]]\nname = \"a\"\nip = \"10.0.0.1\"\nport = 80\nlabels = { app = \"web_x\" }\n".into(), 5, "containers[0].labels.app", "DNS label"),
    ]
}

#[test]
fn broken_configs_exit_2_naming_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = broken();
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for (i, (name, text, line, key, word)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("broken-{i}.toml"));
        std::fs::write(&path, &text).expect("write");
        let (code, _, err) = vxgate_check(&path);
        let prefix = format!("{}:{line}: {key}", path.display());
        if code != 2
            || !err
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(word))
        {
            failures.push(format!(
                "{name}: expected exit 2 and a line starting {prefix:?} containing {word:?}, got exit {code}:\n{err}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("two.toml");
    std::fs::write(
        &path,
        "[[containers]]\nname = \"a\"\nip = \"10.0.0.1\"\nport = 0\n[[containers]]\nname = \"a\"\nip = \"10.0.0.2\"\nport = 80\n",
    )
    .expect("write");
    let (code, _, err) = vxgate_check(&path);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 2, "{err}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let (code, _, err) = vxgate_check(Path::new("/nonexistent/vxgate.toml"));
    assert_eq!(code, 2);
    assert!(err.contains("cannot read the config file"), "{err}");
}

#[test]
fn an_empty_admin_token_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("admin.token");
    std::fs::write(&token, " \n").expect("write");
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!("[admin]\ntoken_file = {:?}\n", token.display().to_string()),
    )
    .expect("write");
    let (code, _, err) = vxgate_check(&path);
    assert_eq!(code, 2, "{err}");
    let prefix = format!("{}:2: admin.token_file", path.display());
    assert!(
        err.lines()
            .any(|l| l.starts_with(&prefix) && l.contains("is empty")),
        "{err}"
    );
    // the control: a token makes the same config valid
    std::fs::write(&token, "s3cret\n").expect("write");
    let (code, _, err) = vxgate_check(&path);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_valid_acme_section_is_accepted() {
    // the control for the acme cases of broken(): the same section, valid, with http-01
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("acme.toml");
    let text = format!(
        "{}challenge = \"http-01\"\ndomains = [\"web.example.com\"]\nretry_initial_s = 60\n",
        ACME.replace("zone =", "http_redirect = [\"127.0.0.1:8080\"]\nzone =")
    );
    std::fs::write(&path, text).expect("write");
    let (code, _, err) = vxgate_check(&path);
    assert_eq!(code, 0, "{err}");
}

/// Issue 30, item 14: `access_log = "access.log"` (a bare name) in a config named by a bare
/// relative path is a file beside the config, accepted; a missing directory still is not.
#[test]
fn a_bare_relative_access_log_is_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    // `vxgate check --config vxgate.toml` from the config's directory: its exit code
    let check_with_log = |log: &str| {
        std::fs::write(
            dir.path().join("vxgate.toml"),
            format!("[ingress]\nlisten = [\"127.0.0.1:8443\"]\nzone = \"example.com\"\naccess_log = {log:?}\n"),
        )
        .expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_vxgate"))
            .args(["check", "--config", "vxgate.toml"])
            .current_dir(dir.path())
            .output()
            .expect("vxgate runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = check_with_log("access.log");
    assert_eq!(code, Some(0), "{err}");
    let (code, _) = check_with_log("logs/access.log");
    assert_eq!(code, Some(2), "a missing logs/ directory is still refused");
}

/// Issue 29, item 5: etcd's password file and client key must not be readable by every
/// user; the control: the same files at 0600 are accepted.
#[test]
fn etcd_secrets_readable_by_others_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let pass = dir.path().join("etcd.pass");
    std::fs::write(&pass, "s3cret\n").expect("write");
    let key = dir.path().join("client.key");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let cert = dir.path().join("client.pem");
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[registry]\nbackend = \"etcd\"\nendpoints = [\"https://127.0.0.1:2379\"]\n\
         tls = { cert_file = \"client.pem\", key_file = \"client.key\" }\n\
         username = \"vxgate\"\npassword_file = \"etcd.pass\"\n",
    )
    .expect("write");
    for f in [&pass, &key] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let (code, _, err) = vxgate_check(&path);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("registry.password_file")
            && err.contains("registry.tls.key_file")
            && err.contains("readable by every user"),
        "{err}"
    );
    for f in [&pass, &key] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let (code, _, err) = vxgate_check(&path);
    assert_eq!(code, 0, "{err}");
}

/// Issue 29: a WireGuard private key file readable by others, or not a key, is refused; the
/// control: the same key at 0600 is accepted.
#[test]
fn a_wireguard_key_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("wg.key");
    std::fs::write(&key, "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n").expect("write");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[overlay]\nlisten = \"10.99.0.1:4789\"\n[overlay.encryption]\nmode = \"wireguard\"\n\
         listen = \"10.99.0.1:51820\"\naddress = \"10.250.0.1\"\nprivate_key_file = \"wg.key\"\n\
         [[overlay.networks]]\nname = \"d\"\nvni = 1\n",
    )
    .expect("write");
    let (code, _, err) = vxgate_check(&path);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("overlay.encryption.private_key_file") && err.contains("readable by others"),
        "{err}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (code, _, err) = vxgate_check(&path);
    assert_eq!(code, 0, "{err}");
    std::fs::write(&key, "not a key\n").expect("write");
    let (code, _, err) = vxgate_check(&path);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("holds no key"), "{err}");
}

/// Issue 33 item 6: `--version` names the version and the commit; `--log-format json` makes
/// every log line one JSON object (here: the line `key show` logs when it makes a key).
#[test]
fn version_names_the_commit_and_logs_can_be_json() {
    let out = Command::new(env!("CARGO_BIN_EXE_vxgate"))
        .arg("--version")
        .output()
        .expect("run");
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(
        v.starts_with(&format!("vxgate {} (", env!("CARGO_PKG_VERSION")))
            && v.trim_end().ends_with(')'),
        "{v}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[node]\nstate_dir = \"{}\"\n[overlay]\n[overlay.encryption]\nmode = \"wireguard\"\n\
             listen = \"10.99.0.1:51820\"\naddress = \"10.250.0.1\"\n\
             [[overlay.networks]]\nname = \"d\"\nvni = 1\n",
            dir.path().display()
        ),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_vxgate"))
        .args(["--log-format", "json", "key", "show", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("generated this host's WireGuard key"))
        .unwrap_or_else(|| panic!("no log line: {err}"));
    let v: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(v["level"], "INFO", "{v}");
    assert!(
        v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("generated")),
        "{v}"
    );
    assert_eq!(
        v["fields"]["public_key"].as_str().map(str::len),
        Some(44),
        "{v}"
    );
}
