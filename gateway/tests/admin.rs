//! The admin API and `vxgate ctl` against a running vxgate on loopback: health, containers
//! added and removed (validated, 400 naming the field, 409 on clashes), a container added
//! through the API answering in DNS at once, /metrics parsed and moving, the bearer token,
//! and ctl's tables, JSON and errors.

mod common;

use common::{dns_rcode, free_port, http, spawn_vxgate};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Vx {
    child: Child,
    admin: u16,
    dns: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Vx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(token: Option<&str>) -> Vx {
    // a port picked free may be taken by a parallel test before vxgate binds it: retry
    for _ in 0..5 {
        let dir = tempfile::tempdir().expect("tmp");
        let (admin, dns) = (free_port(), free_port());
        let mut cfg = format!(
            "[admin]\nlisten = \"127.0.0.1:{admin}\"\n{}\n[dns]\nlisten = [\"127.0.0.1:{dns}\"]\nzone = \"example.com\"\n\
             [[containers]]\nname = \"web-1\"\nip = \"10.0.0.1\"\nport = 80\nlabels = {{ app = \"web\" }}\n",
            if token.is_some() {
                "token_file = \"token\""
            } else {
                ""
            }
        );
        if let Some(t) = token {
            std::fs::write(dir.path().join("token"), format!("{t}\n")).expect("token");
        }
        cfg.push('\n');
        let path = dir.path().join("vxgate.toml");
        std::fs::write(&path, cfg).expect("write");
        if let Some(child) = spawn_vxgate(&path, &dir.path().join("vxgate.log")) {
            return Vx {
                child,
                admin,
                dns,
                _dir: dir,
            };
        }
    }
    panic!("vxgate did not start (5 attempts)");
}

#[test]
fn containers_come_and_go_through_the_api_and_dns_follows() {
    let vx = start(None);
    assert_eq!(http(vx.admin, "GET", "/healthz", "", None).0, 200);
    let (code, body) = http(vx.admin, "GET", "/v1/services", "", None);
    assert_eq!(code, 200);
    assert!(body.contains("\"web-1\""), "{body}");

    assert_eq!(dns_rcode(vx.dns, "api-1.example.com"), 3);
    let t = Instant::now();
    let (code, body) = http(
        vx.admin,
        "POST",
        "/v1/containers",
        r#"{"name":"api-1","ip":"10.0.0.9","port":8080,"labels":{"app":"api"}}"#,
        None,
    );
    let api_answered = t.elapsed();
    assert_eq!(code, 201, "{body}");
    let t = Instant::now();
    while dns_rcode(vx.dns, "api.example.com") != 0 {
        assert!(t.elapsed() < Duration::from_secs(1));
    }
    eprintln!(
        "POST answered in {api_answered:?}; DNS answered {:?} after it",
        t.elapsed()
    );
    // timing is reported above, not asserted (the bound of the loop is the check)

    // validated like the config: 400 naming the field
    let (code, body) = http(
        vx.admin,
        "POST",
        "/v1/containers",
        r#"{"name":"x","ip":"10.0.0.3","port":0}"#,
        None,
    );
    assert_eq!(code, 400);
    assert!(body.contains("port: port 0"), "{body}");
    let (code, body) = http(
        vx.admin,
        "POST",
        "/v1/containers",
        r#"{"name":"x","ip":"10.0.0.3","port":80,"colour":"red"}"#,
        None,
    );
    assert_eq!(code, 400);
    assert!(body.contains("unknown field `colour`"), "{body}");
    let (code, body) = http(
        vx.admin,
        "POST",
        "/v1/containers",
        r#"{"name":"x","ip":"not-an-ip","port":80}"#,
        None,
    );
    assert_eq!(code, 400, "{body}");
    let (code, _) = http(
        vx.admin,
        "POST",
        "/v1/containers",
        r#"{"name":"api-1","ip":"10.0.0.10","port":80}"#,
        None,
    );
    assert_eq!(code, 409);
    let (code, _) = http(
        vx.admin,
        "POST",
        "/v1/containers",
        r#"{"name":"api-2","ip":"10.0.0.1","port":80}"#,
        None,
    );
    assert_eq!(code, 409, "an IP already in use");
    let (code, _) = http(
        vx.admin,
        "POST",
        "/v1/containers",
        r#"{"name":"API-1","ip":"10.0.0.11","port":80}"#,
        None,
    );
    assert_eq!(
        code, 409,
        "a name differing only in case (names are DNS names)"
    );

    assert_eq!(
        http(vx.admin, "DELETE", "/v1/containers/api-1", "", None).0,
        200
    );
    let t = Instant::now();
    while dns_rcode(vx.dns, "api-1.example.com") != 3 {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "still answered after {:?}",
            t.elapsed()
        );
    }
    eprintln!("DELETE answered; DNS followed {:?} after it", t.elapsed());
    assert_eq!(
        http(vx.admin, "DELETE", "/v1/containers/api-1", "", None).0,
        404
    );
    assert_eq!(http(vx.admin, "GET", "/v1/nothing", "", None).0, 404);
}

/// Parses the text format: every sample line is `name{labels} value`, names start `vxgate_`.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            assert!(k.starts_with("vxgate_"), "{k}");
            (
                k.to_owned(),
                v.parse::<f64>()
                    .unwrap_or_else(|_| panic!("bad value in {l:?}")),
            )
        })
        .collect()
}

fn value(text: &str, key: &str) -> f64 {
    samples(text)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {key}"))
}

#[test]
fn metrics_parse_and_move() {
    let vx = start(None);
    let (code, before) = http(vx.admin, "GET", "/metrics", "", None);
    assert_eq!(code, 200);
    let q0 = value(&before, "vxgate_dns_queries_total");
    for _ in 0..5 {
        dns_rcode(vx.dns, "web.example.com");
    }
    dns_rcode(vx.dns, "nope.example.com");
    let (_, after) = http(vx.admin, "GET", "/metrics", "", None);
    assert_eq!(value(&after, "vxgate_dns_queries_total") - q0, 6.0);
    assert!(value(&after, "vxgate_dns_responses_total{rcode=\"NXDOMAIN\"}") >= 1.0);
    assert!(value(&after, "vxgate_dns_answer_seconds_count") >= 6.0);
    assert_eq!(
        value(
            &after,
            "vxgate_backend_healthy{service=\"web\",container=\"web-1\"}"
        ),
        1.0
    );
    assert!(value(&after, "vxgate_uptime_seconds") > 0.0);
}

#[test]
fn a_token_is_required_when_configured() {
    let vx = start(Some("s3cret"));
    assert_eq!(http(vx.admin, "GET", "/v1/containers", "", None).0, 401);
    assert_eq!(
        http(vx.admin, "GET", "/v1/containers", "", Some("wrong")).0,
        401
    );
    assert_eq!(
        http(vx.admin, "GET", "/v1/containers", "", Some("s3cret")).0,
        200
    );
}

#[test]
fn ctl_prints_tables_json_and_clear_errors() {
    let vx = start(None);
    let ctl = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_vxgate"))
            .arg("ctl")
            .args(["--admin", &format!("127.0.0.1:{}", vx.admin)])
            .args(args)
            .output()
            .expect("ctl runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = ctl(&[
        "add", "--name", "api-1", "--ip", "10.0.0.9", "--port", "8080", "--label", "app=api",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("added api-1"));
    let (_, out, _) = ctl(&["services"]);
    assert!(out.starts_with("SERVICE"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("api ") && l.contains("api-1(10.0.0.9:8080")),
        "{out}"
    );
    let (_, out, _) = ctl(&["--json", "containers"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v.as_array().map(Vec::len), Some(2));
    let (code, _, err) = ctl(&[
        "add", "--name", "bad_name", "--ip", "10.0.0.5", "--port", "80",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("400") && err.contains("name:"), "{err}");
    assert_eq!(ctl(&["rm", "api-1"]).0, Some(0));
    let out = Command::new(env!("CARGO_BIN_EXE_vxgate"))
        .args([
            "ctl",
            "--admin",
            &format!("127.0.0.1:{}", free_port()),
            "services",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the admin API"));
}

/// The admin API in-process, served on a listener the test bound to port 0 (no port picked
/// free and retried): health, the config's container listed with its origin, one added
/// through the API and then in the registry, a clash refused with 409, /metrics, and a
/// clean stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_serves_on_a_listener_bound_to_port_0() {
    use std::sync::Arc;
    let config = vxgate::config::parse(
        "[[containers]]\nname = \"web-1\"\nip = \"10.0.0.1\"\nport = 80\nlabels = { app = \"web\" }\n",
        std::path::Path::new("."),
    )
    .expect("config");
    let registry = Arc::new(config.registry().expect("registry"));
    let (stop, shutdown) = vxgate::shutdown::Shutdown::new();
    let mut tasks = tokio::task::JoinSet::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    assert_ne!(port, 0);
    let admin = vxgate::admin::Admin {
        config,
        registry: registry.clone(),
        running: Arc::new(vxgate::admin::Running::default()),
        token: None,
        started: Instant::now(),
    };
    tasks.spawn(vxgate::admin::serve(admin, listener, shutdown));
    let call = |method: &'static str, path: &'static str, body: &'static str| {
        tokio::task::spawn_blocking(move || http(port, method, path, body, None))
    };
    assert_eq!(call("GET", "/healthz", "").await.expect("join").0, 200);
    let (code, body) = call("GET", "/v1/containers", "").await.expect("join");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("\"web-1\"") && body.contains("\"config\""),
        "{body}"
    );
    let api = r#"{"name":"api-1","ip":"10.0.0.9","port":8080,"labels":{"app":"api"}}"#;
    let (code, body) = call("POST", "/v1/containers", api).await.expect("join");
    assert_eq!(code, 201, "{body}");
    assert!(registry.snapshot().container("api-1").is_some());
    let (code, body) = call("POST", "/v1/containers", api).await.expect("join");
    assert_eq!(code, 409, "the same name again: {body}");
    let (code, body) = call("GET", "/metrics", "").await.expect("join");
    assert_eq!(code, 200);
    assert!(body.contains("\nvxgate_uptime_seconds "), "{body}");
    stop.send(true).expect("stop");
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(r) = tasks.join_next().await {
            r.expect("join").expect("the admin task failed");
        }
    })
    .await;
    assert!(drained.is_ok(), "the admin API did not stop within 10 s");
}

/// One raw HTTP/1.1 exchange with the admin API (headers as given); the status and the time
/// the answer took.
fn raw(port: u16, request: &str) -> (u16, Duration) {
    use std::io::{Read, Write};
    let t0 = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    (
        text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0),
        t0.elapsed(),
    )
}

/// Issue 30, items 9, 10 and 13: the token-less loopback admin refuses what a web page could
/// send it (a text/plain POST, a foreign Origin, a DNS name as Host: rebinding), a body
/// that never comes is cut off, and API containers on loopback or link-local addresses are
/// refused (the ingress would proxy to this host). Positive controls beside each.
#[test]
fn the_tokenless_admin_refuses_cross_site_requests_and_special_addresses() {
    let vx = start(None);
    let body = r#"{"name":"api-1","ip":"10.0.0.7","port":80,"labels":{"app":"api"}}"#;
    let post = |extra: &str, ctype: &str| {
        format!(
            "POST /v1/containers HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{extra}Content-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            vx.admin,
            body.len()
        )
    };
    assert_eq!(
        raw(vx.admin, &post("", "text/plain")).0,
        415,
        "text/plain POST"
    );
    assert_eq!(
        raw(
            vx.admin,
            &post("Origin: http://evil.example\r\n", "application/json")
        )
        .0,
        403,
        "a foreign Origin"
    );
    let rebound = post("", "application/json").replace(
        &format!("Host: 127.0.0.1:{}", vx.admin),
        &format!("Host: evil.example:{}", vx.admin),
    );
    assert_eq!(raw(vx.admin, &rebound).0, 403, "a DNS name as Host");
    let get_rebound =
        "GET /v1/containers HTTP/1.1\r\nHost: rebind.evil.example\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(vx.admin, get_rebound).0, 403, "reads too: rebinding");
    // positive controls: the same POST as JSON from the admin's own origin
    let own = post(
        &format!("Origin: http://localhost:{}\r\n", vx.admin),
        "application/json; charset=utf-8",
    );
    assert_eq!(raw(vx.admin, &own).0, 201, "a same-origin JSON POST");

    // SSRF: a container on loopback or link-local is refused through the API
    for ip in ["127.0.0.1", "::ffff:127.0.0.1", "169.254.169.254", "::1"] {
        let (code, text) = http(
            vx.admin,
            "POST",
            "/v1/containers",
            &format!(r#"{{"name":"ssrf","ip":"{ip}","port":9180,"labels":{{"app":"ssrf"}}}}"#),
            None,
        );
        assert_eq!(code, 400, "{ip}: {text}");
        assert!(text.contains("backend_networks"), "{ip}: {text}");
    }
    let metrics = http(vx.admin, "GET", "/metrics", "", None).1;
    assert_eq!(
        value(&metrics, "vxgate_registry_refused_addresses_total"),
        4.0
    );
    // (0.0.0.0 and multicast were refused before by the config's validator)
    let (code, _) = http(
        vx.admin,
        "POST",
        "/v1/containers",
        r#"{"name":"any","ip":"0.0.0.0","port":80,"labels":{"app":"any"}}"#,
        None,
    );
    assert_eq!(code, 400, "0.0.0.0");

    // a body announced and never sent: 408 within the body timeout, not a held connection
    let (code, took) = raw(
        vx.admin,
        &format!(
            "POST /v1/containers HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: 100000000000\r\n\r\n",
            vx.admin
        ),
    );
    eprintln!("a body that never came: {code} after {took:?}");
    assert_eq!(code, 408);
    assert!(took < Duration::from_secs(25), "{took:?}");
}

/// `GET /v1/events` streams the registry's changes (the kept ones first, then each as it
/// happens) and ends with the drain; `/v1/nodes` names this node; with a token, the
/// dashboard's files are served to anyone (they hold no data) and the data is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_the_registrys_changes_and_the_dashboard_needs_the_token_for_data() {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::Arc;
    let config = vxgate::config::parse(
        "[node]\nname = \"n1\"\n[[containers]]\nname = \"web-1\"\nip = \"10.0.0.1\"\nport = 80\nlabels = { app = \"web\" }\n",
        std::path::Path::new("."),
    )
    .expect("config");
    let registry = Arc::new(config.registry().expect("registry"));
    let (stop, shutdown) = vxgate::shutdown::Shutdown::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let admin = vxgate::admin::Admin {
        config,
        registry: registry.clone(),
        running: Arc::new(vxgate::admin::Running::default()),
        token: Some("t0ken".into()),
        started: Instant::now(),
    };
    let served = tokio::spawn(vxgate::admin::serve(admin, listener, shutdown));
    let get = |path: &'static str, token: Option<&'static str>| {
        tokio::task::spawn_blocking(move || http(port, "GET", path, "", token))
    };
    // the dashboard's files without the token; its data only with it
    let (code, page) = get("/ui/", None).await.expect("join");
    assert_eq!(code, 200);
    assert!(page.contains("<script src=\"app.js\""), "{page}");
    assert_eq!(get("/v1/events", None).await.expect("join").0, 401);
    let (code, nodes) = get("/v1/nodes", Some("t0ken")).await.expect("join");
    assert_eq!(code, 200, "{nodes}");
    assert!(
        nodes.contains("\"name\": \"n1\"") && nodes.contains("\"self\": true"),
        "{nodes}"
    );
    // a change before the stream opens is kept and sent first; one after arrives live
    registry
        .set_health("web-1", vxgate::registry::Health::Unhealthy)
        .expect("health");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(
            b"GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer t0ken\r\n\r\n",
        )
        .expect("send");
        for line in BufReader::new(s).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_data = async |lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>| loop {
        let l = tokio::time::timeout(Duration::from_secs(10), lines.recv())
            .await
            .expect("an event within 10 s")
            .expect("the stream is open");
        if let Some(d) = l.strip_prefix("data: ") {
            return d.to_owned();
        }
    };
    let first = next_data(&mut lines).await;
    assert!(
        first.contains("\"kind\":\"health\"") && first.contains("\"container\":\"web-1\""),
        "{first}"
    );
    registry.remove("web-1").expect("remove");
    let second = next_data(&mut lines).await;
    assert!(second.contains("\"kind\":\"removed\""), "{second}");
    // the drain ends the stream: the reader sees the connection end
    stop.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("the admin stops")
        .expect("join")
        .expect("no error");
    let ended = tokio::task::spawn_blocking(move || reader.join().is_ok());
    assert!(
        tokio::time::timeout(Duration::from_secs(10), ended)
            .await
            .expect("the stream ends with the drain")
            .expect("join"),
    );
}
