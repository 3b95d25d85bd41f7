//! `vxgate ctl`: talks to a running vxgate's admin API. Tables for people, `--json` for
//! scripts, a clear message when the API cannot be reached.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::process::ExitCode;
use std::time::Duration;

/// What to ask.
pub enum Call {
    Services,
    Containers,
    Fdb,
    /// The overlay's WireGuard peers (`GET /v1/overlay`'s `encryption`).
    Peers,
    /// The policy between services (`GET /v1/policy`).
    Policy,
    Add(Value),
    Remove(String),
}

pub struct Options {
    pub admin: String,
    pub token: Option<String>,
    pub json: bool,
}

pub fn main(opts: Options, call: Call) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vxgate ctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(opts, call))
}

async fn run(opts: Options, call: Call) -> ExitCode {
    let (method, path, body) = match &call {
        Call::Services => (Method::GET, "/v1/services".to_owned(), None),
        Call::Containers => (Method::GET, "/v1/containers".to_owned(), None),
        Call::Fdb => (Method::GET, "/v1/overlay/fdb".to_owned(), None),
        Call::Peers => (Method::GET, "/v1/overlay".to_owned(), None),
        Call::Policy => (Method::GET, "/v1/policy".to_owned(), None),
        Call::Add(v) => (
            Method::POST,
            "/v1/containers".to_owned(),
            Some(v.to_string()),
        ),
        Call::Remove(n) => (Method::DELETE, format!("/v1/containers/{n}"), None),
    };
    let base = opts.admin.trim_end_matches('/');
    let base = if base.starts_with("http://") {
        base.to_owned()
    } else {
        format!("http://{base}")
    };
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{base}{path}"));
    if let Some(t) = &opts.token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header(http::header::CONTENT_TYPE, "application/json");
    }
    let Ok(req) = req.body(Full::new(Bytes::from(body.unwrap_or_default()))) else {
        eprintln!("vxgate ctl: bad admin address {base:?}");
        return ExitCode::from(2);
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = match tokio::time::timeout(Duration::from_secs(5), client.request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            eprintln!(
                "vxgate ctl: cannot reach the admin API at {base}: {e} (is vxgate running? see --admin)"
            );
            return ExitCode::FAILURE;
        }
        Err(_) => {
            eprintln!("vxgate ctl: the admin API at {base} did not answer within 5 s");
            return ExitCode::FAILURE;
        }
    };
    let status = resp.status();
    let bytes = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            eprintln!("vxgate ctl: reading the answer: {e}");
            return ExitCode::FAILURE;
        }
    };
    let value: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({ "error": String::from_utf8_lossy(&bytes) }));
    if !status.is_success() {
        let msg = value
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        eprintln!("vxgate ctl: {} {msg}", status.as_u16());
        return if status == StatusCode::UNAUTHORIZED {
            ExitCode::from(3)
        } else {
            ExitCode::FAILURE
        };
    }
    if opts.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    let rows = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let s = |v: &Value, k: &str| match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    };
    let health = |v: &Value| {
        if v.get("ready") == Some(&Value::Bool(false)) {
            "not-ready".to_owned()
        } else {
            s(v, "health")
        }
    };
    let labels = |v: &Value| {
        v.get("labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    match call {
        Call::Policy => {
            let mut t = vec![vec![
                "CONTAINER".into(),
                "SERVICE".into(),
                "NODE".into(),
                "IP".into(),
                "FROM".into(),
            ]];
            for p in rows(&value["protected"]) {
                let from: Vec<String> = rows(&p["allow"])
                    .iter()
                    .map(|a| {
                        let who = match &a["from"] {
                            Value::String(w) => w.replace("any", "*"),
                            Value::Object(o) => o
                                .get("service")
                                .and_then(Value::as_str)
                                .unwrap_or("?")
                                .to_owned(),
                            _ => "?".into(),
                        };
                        match a["port"].as_u64() {
                            Some(port) => format!("{who}:{port}"),
                            None => who,
                        }
                    })
                    .collect();
                let from = if from.is_empty() {
                    "(nobody)".to_owned()
                } else {
                    from.join(",")
                };
                t.push(vec![
                    s(&p, "container"),
                    s(&p, "service"),
                    s(&p, "node"),
                    s(&p, "ip"),
                    from,
                ]);
            }
            print_table(&t);
        }
        Call::Services => {
            let mut t = vec![vec!["SERVICE".into(), "SERVING".into(), "BACKENDS".into()]];
            for svc in rows(&value) {
                let backends: Vec<String> = rows(&svc["backends"])
                    .iter()
                    .map(|b| {
                        format!(
                            "{}({}:{},{},{})",
                            s(b, "name"),
                            s(b, "ip"),
                            s(b, "port"),
                            s(b, "node"),
                            health(b)
                        )
                    })
                    .collect();
                t.push(vec![
                    s(&svc, "name"),
                    s(&svc, "serving"),
                    backends.join(" "),
                ]);
            }
            print_table(&t);
        }
        Call::Containers => {
            // HEALTH: the ingress's checks, or "not-ready" while Docker's HEALTHCHECK says no
            let mut t = vec![
                [
                    "NAME", "IP", "PORT", "NODE", "NETWORK", "HEALTH", "ORIGIN", "LABELS",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for c in rows(&value) {
                t.push(vec![
                    s(&c, "name"),
                    s(&c, "ip"),
                    s(&c, "port"),
                    s(&c, "node"),
                    s(&c, "network"),
                    health(&c),
                    s(&c, "origin"),
                    labels(&c),
                ]);
            }
            print_table(&t);
        }
        Call::Fdb => {
            let mut t = vec![
                ["NETWORK", "VNI", "MAC", "VTEP", "KIND", "AGE"]
                    .map(String::from)
                    .to_vec(),
            ];
            for e in rows(&value) {
                t.push(vec![
                    s(&e, "network"),
                    s(&e, "vni"),
                    s(&e, "mac"),
                    s(&e, "vtep"),
                    s(&e, "kind"),
                    s(&e, "age_s"),
                ]);
            }
            print_table(&t);
        }
        Call::Peers => {
            let Some(enc) = value.get("encryption").filter(|e| !e.is_null()) else {
                println!("the overlay is not encrypted ([overlay.encryption] mode = \"off\")");
                return ExitCode::SUCCESS;
            };
            println!(
                "public key: {}  tunnel address: {}",
                s(enc, "public_key"),
                s(enc, "address")
            );
            let mut t = vec![
                [
                    "ADDRESS",
                    "PUBLIC KEY",
                    "ENDPOINT",
                    "HANDSHAKE",
                    "SESSION",
                    "TX",
                    "RX",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for p in rows(&enc["peers"]) {
                let handshake = p["last_handshake_s"]
                    .as_f64()
                    .map_or("never".to_owned(), |secs| format!("{secs:.0} s ago"));
                let up = if p["session_up"].as_bool() == Some(true) {
                    "up"
                } else {
                    "down"
                };
                t.push(vec![
                    s(&p, "address"),
                    s(&p, "public_key"),
                    s(&p, "endpoint"),
                    handshake,
                    up.to_owned(),
                    s(&p, "tx_bytes"),
                    s(&p, "rx_bytes"),
                ]);
            }
            print_table(&t);
            let without: Vec<String> = rows(&enc["nodes_without_key"])
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect();
            if !without.is_empty() {
                println!(
                    "not used (they publish no WireGuard key): {}",
                    without.join(", ")
                );
            }
        }
        Call::Add(_) => println!(
            "added {} ({}:{})",
            s(&value, "name"),
            s(&value, "ip"),
            s(&value, "port")
        ),
        Call::Remove(n) => println!("removed {n}"),
    }
    ExitCode::SUCCESS
}

fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i + 1 == r.len() {
                    c.clone()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        println!("{}", line.join("  "));
    }
}
