//! `/metrics`: the Prometheus text format (version 0.0.4), every name prefixed `vxgate_`.

use super::Admin;
use crate::overlay::{Counters, DropReason};
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// How one sample of a per-network family is read from a network's counters.
type Reading = Box<dyn Fn(&Counters) -> u64>;

/// A family with one sample per network and per `label` value (no second label when `label`
/// is empty): `name{network="…",label="…"} value`.
fn per_network(
    out: &mut String,
    (name, kind): (&str, &str),
    help: &str,
    counters: &[(String, Arc<Counters>)],
    label: &str,
    readings: Vec<(String, Reading)>,
) {
    head(out, name, kind, help);
    for (net, c) in counters {
        for (value, read) in &readings {
            let extra = if label.is_empty() {
                String::new()
            } else {
                format!(",{label}=\"{value}\"")
            };
            let _ = writeln!(out, "{name}{{network=\"{}\"{extra}}} {}", esc(net), read(c));
        }
    }
}

/// A family of one unlabelled sample.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    head(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// A family with one sample per value of one label: `name{label="…"} value`.
fn by_label(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    samples: &[(&str, u64)],
) {
    head(out, name, kind, help);
    for (value, n) in samples {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
    }
}

/// Label values escaped for the text format.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render(a: &Admin) -> String {
    let mut o = String::with_capacity(8192);
    head(
        &mut o,
        "vxgate_uptime_seconds",
        "gauge",
        "Seconds since vxgate started.",
    );
    let _ = writeln!(
        o,
        "vxgate_uptime_seconds {}",
        a.started.elapsed().as_secs_f64()
    );

    if let Some(ov) = &a.running.overlay {
        let counters = ov.counters();
        let dir = |rx: fn(&Counters) -> &AtomicU64, tx: fn(&Counters) -> &AtomicU64| {
            vec![
                (
                    "rx".to_owned(),
                    Box::new(move |c: &Counters| rx(c).load(Relaxed)) as Reading,
                ),
                (
                    "tx".to_owned(),
                    Box::new(move |c: &Counters| tx(c).load(Relaxed)),
                ),
            ]
        };
        per_network(
            &mut o,
            ("vxgate_overlay_packets_total", "counter"),
            "Overlay packets by network and direction (rx: underlay to TAP).",
            &counters,
            "direction",
            dir(|c| &c.rx_packets, |c| &c.tx_packets),
        );
        per_network(
            &mut o,
            ("vxgate_overlay_bytes_total", "counter"),
            "Overlay bytes by network and direction.",
            &counters,
            "direction",
            dir(|c| &c.rx_bytes, |c| &c.tx_bytes),
        );
        per_network(
            &mut o,
            ("vxgate_overlay_drops_total", "counter"),
            "Dropped frames and datagrams by network and reason.",
            &counters,
            "reason",
            DropReason::ALL
                .iter()
                .map(|&r| {
                    (
                        r.name().to_owned(),
                        Box::new(move |c: &Counters| c.drops(r)) as Reading,
                    )
                })
                .collect(),
        );
        per_network(
            &mut o,
            ("vxgate_overlay_arp_suppressed_total", "counter"),
            "ARP requests answered locally.",
            &counters,
            "",
            vec![(
                String::new(),
                Box::new(|c: &Counters| c.arp_suppressed.load(Relaxed)),
            )],
        );
        head(
            &mut o,
            "vxgate_overlay_fdb_entries",
            "gauge",
            "FDB entries by network.",
        );
        {
            let sw = ov.switch.lock().unwrap_or_else(|p| p.into_inner());
            for (i, n) in ov.networks.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "vxgate_overlay_fdb_entries{{network=\"{}\"}} {}",
                    esc(&n.name),
                    sw.fdb(i).len()
                );
            }
        }
        head(
            &mut o,
            "vxgate_overlay_datapath_mode",
            "gauge",
            "The active datapath (1 for the mode in use).",
        );
        let mode = ov.features.mode();
        for m in ["portable", "offload"] {
            let _ = writeln!(
                o,
                "vxgate_overlay_datapath_mode{{mode=\"{m}\"}} {}",
                u8::from(m == mode)
            );
        }
        head(
            &mut o,
            "vxgate_overlay_offload",
            "gauge",
            "1 for each offload in use (tap_tso, udp_gso, udp_gro, multi_queue).",
        );
        for (name, on) in ov.features.list() {
            let _ = writeln!(
                o,
                "vxgate_overlay_offload{{feature=\"{name}\"}} {}",
                u8::from(on)
            );
        }
        head(
            &mut o,
            "vxgate_overlay_queues",
            "gauge",
            "TAP queues, one datapath worker each.",
        );
        let _ = writeln!(o, "vxgate_overlay_queues {}", ov.features.queues);
        per_network(
            &mut o,
            ("vxgate_overlay_offload_events_total", "counter"),
            "TSO super-frames segmented, UDP GSO sends, and received segments merged (GRO).",
            &counters,
            "event",
            vec![
                (
                    "tso_frames".to_owned(),
                    Box::new(|c: &Counters| c.tso_frames.load(Relaxed)) as Reading,
                ),
                (
                    "gso_sends".to_owned(),
                    Box::new(|c: &Counters| c.gso_sends.load(Relaxed)),
                ),
                (
                    "gro_merged".to_owned(),
                    Box::new(|c: &Counters| c.gro_merged.load(Relaxed)),
                ),
            ],
        );
    }

    if let Some(d) = &a.running.dns {
        let s = &d.stats;
        head(
            &mut o,
            "vxgate_dns_queries_total",
            "counter",
            "DNS queries received.",
        );
        let _ = writeln!(o, "vxgate_dns_queries_total {}", s.queries.load(Relaxed));
        head(
            &mut o,
            "vxgate_dns_responses_total",
            "counter",
            "DNS responses by rcode.",
        );
        const RCODES: [&str; 6] = [
            "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
        ];
        for (i, n) in s.rcodes.iter().enumerate() {
            let v = n.load(Relaxed);
            if i < RCODES.len() || v > 0 {
                let name = RCODES
                    .get(i)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| i.to_string());
                let _ = writeln!(o, "vxgate_dns_responses_total{{rcode=\"{name}\"}} {v}");
            }
        }
        head(
            &mut o,
            "vxgate_dns_queries_by_type_total",
            "counter",
            "DNS queries by question type.",
        );
        for (n, name) in s.qtypes.iter().zip(vxgate_dns::server::QTYPE_NAMES) {
            let _ = writeln!(
                o,
                "vxgate_dns_queries_by_type_total{{type=\"{name}\"}} {}",
                n.load(Relaxed)
            );
        }
        head(
            &mut o,
            "vxgate_dns_forwarded_total",
            "counter",
            "Queries for names outside the zone sent upstream or answered from the cache.",
        );
        let _ = writeln!(
            o,
            "vxgate_dns_forwarded_total {}",
            s.forwarded.load(Relaxed)
        );
        head(
            &mut o,
            "vxgate_dns_upstream_failures_total",
            "counter",
            "Upstream exchanges that timed out, failed or answered SERVFAIL/REFUSED.",
        );
        let _ = writeln!(
            o,
            "vxgate_dns_upstream_failures_total {}",
            d.forwarder.upstream_failures.load(Relaxed)
        );
        single(
            &mut o,
            "vxgate_dns_forward_in_flight",
            "gauge",
            "Forwarded UDP queries waiting for an upstream now.",
            d.forwarder.in_flight.load(Relaxed) as u64,
        );
        single(
            &mut o,
            "vxgate_dns_forward_overflow_total",
            "counter",
            "Queries answered SERVFAIL at once because the cap of forwarded queries in flight was reached.",
            d.forwarder.overflow.load(Relaxed),
        );
        single(
            &mut o,
            "vxgate_dns_tcp_connections",
            "gauge",
            "Open DNS TCP connections.",
            s.tcp_connections.load(Relaxed) as u64,
        );
        single(
            &mut o,
            "vxgate_dns_tcp_refused_total",
            "counter",
            "DNS TCP connections closed on accept: over 256 open, or 16 from one client address.",
            s.tcp_refused.load(Relaxed),
        );
        by_label(
            &mut o,
            "vxgate_dns_rate_limited_total",
            "counter",
            "UDP responses to clients outside dns.recursion_from held back by dns.rate_limit: sent as TC (slip) or dropped.",
            "action",
            &[
                ("slip", s.rate_limit_slipped.load(Relaxed)),
                ("drop", s.rate_limit_dropped.load(Relaxed)),
            ],
        );
        head(
            &mut o,
            "vxgate_dns_answer_seconds",
            "histogram",
            "Time from a query's arrival to its answer.",
        );
        s.answer_latency
            .render("vxgate_dns_answer_seconds", "", &mut o);
    }

    if let Some(acme) = a.running.ingress.as_ref().and_then(|i| i.acme.as_ref()) {
        by_label(
            &mut o,
            "vxgate_acme_orders_total",
            "counter",
            "ACME orders by result (a failed one is retried with backoff).",
            "result",
            &[
                ("ok", acme.stats.orders_ok.load(Relaxed)),
                ("failed", acme.stats.orders_failed.load(Relaxed)),
            ],
        );
        head(
            &mut o,
            "vxgate_acme_certificate_expiry_seconds",
            "gauge",
            "Unix time at which each ACME certificate expires.",
        );
        for (domain, issued) in acme.certs.all() {
            let _ = writeln!(
                o,
                "vxgate_acme_certificate_expiry_seconds{{domain=\"{}\"}} {}",
                esc(&domain),
                issued.validity.not_after
            );
        }
    }

    if let Some(i) = &a.running.ingress {
        let s = &i.stats;
        by_label(
            &mut o,
            "vxgate_tls_handshakes_total",
            "counter",
            "Completed TLS handshakes by version.",
            "version",
            &[
                ("1.2", s.tls12.load(Relaxed)),
                ("1.3", s.tls13.load(Relaxed)),
            ],
        );
        head(
            &mut o,
            "vxgate_tls_handshake_failures_total",
            "counter",
            "TLS handshakes that failed or timed out.",
        );
        let _ = writeln!(
            o,
            "vxgate_tls_handshake_failures_total {}",
            s.handshake_failures.load(Relaxed)
        );
        head(
            &mut o,
            "vxgate_http_requests_total",
            "counter",
            "HTTP requests by service and status class.",
        );
        for (service, by_class) in s.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            for (class, n) in by_class.iter().enumerate().filter(|(_, n)| **n > 0) {
                let _ = writeln!(
                    o,
                    "vxgate_http_requests_total{{service=\"{}\",class=\"{class}xx\"}} {n}",
                    esc(service)
                );
            }
        }
        head(
            &mut o,
            "vxgate_http_connections_refused_total",
            "counter",
            "Connections closed at accept (max_connections).",
        );
        let _ = writeln!(
            o,
            "vxgate_http_connections_refused_total {}",
            s.refused_connections.load(Relaxed)
        );
        head(
            &mut o,
            "vxgate_http_backend_seconds",
            "histogram",
            "Time from a request's head to the backend's response head.",
        );
        s.latency.render("vxgate_http_backend_seconds", "", &mut o);
    }

    head(
        &mut o,
        "vxgate_backend_healthy",
        "gauge",
        "1 when a service container is serving (ready in Docker, not unhealthy in checks).",
    );
    let snap = a.registry.snapshot();
    for (service, cs) in snap.services() {
        for c in cs {
            let _ = writeln!(
                o,
                "vxgate_backend_healthy{{service=\"{}\",container=\"{}\"}} {}",
                esc(service),
                esc(&c.name),
                u8::from(c.is_serving())
            );
        }
    }
    head(
        &mut o,
        "vxgate_registry_containers",
        "gauge",
        "Containers in the registry.",
    );
    let _ = writeln!(o, "vxgate_registry_containers {}", snap.len());
    head(
        &mut o,
        "vxgate_registry_remote_nodes",
        "gauge",
        "Other nodes known through the shared registry.",
    );
    let _ = writeln!(o, "vxgate_registry_remote_nodes {}", snap.nodes().len());
    if let Some(b) = &a.running.registry_backend {
        for (name, kind, help, value) in [
            (
                "vxgate_registry_etcd_connected",
                "gauge",
                "1 while registered in etcd with a live lease and watch.",
                u64::from(b.connected.load(Relaxed)),
            ),
            (
                "vxgate_registry_etcd_resyncs_total",
                "counter",
                "Full reads of the etcd prefix.",
                b.resyncs.load(Relaxed),
            ),
            (
                "vxgate_registry_etcd_compactions_total",
                "counter",
                "Watches restarted because their revision was compacted.",
                b.compacted.load(Relaxed),
            ),
            (
                "vxgate_registry_etcd_errors_total",
                "counter",
                "etcd sessions that ended in an error.",
                b.errors.load(Relaxed),
            ),
            (
                "vxgate_registry_etcd_bad_records_total",
                "counter",
                "Remote records that could not be parsed.",
                b.bad_records.load(Relaxed),
            ),
            (
                "vxgate_registry_etcd_clashes",
                "gauge",
                "Remote containers left out because their name or IP is taken.",
                b.clashes.load(Relaxed),
            ),
        ] {
            single(&mut o, name, kind, help, value);
        }
    }
    if let Some(d) = &a.running.docker {
        docker(&mut o, d);
    }
    o
}

/// `vxgate_docker_*`: the Docker source.
fn docker(o: &mut String, d: &crate::registry::docker::DockerStatus) {
    use crate::registry::docker::{EVENT_KINDS, mapping::Skip};
    for (name, kind, help, value) in [
        (
            "vxgate_docker_connected",
            "gauge",
            "1 while connected to the Docker Engine API and following its events.",
            u64::from(d.connected.load(Relaxed)),
        ),
        (
            "vxgate_docker_resyncs_total",
            "counter",
            "Full resyncs (list and inspect) from the Docker Engine.",
            d.resyncs.load(Relaxed),
        ),
        (
            "vxgate_docker_errors_total",
            "counter",
            "Docker sessions that ended in an error (dockerd absent, stopped or restarted).",
            d.errors.load(Relaxed),
        ),
        (
            "vxgate_docker_api_calls_total",
            "counter",
            "Requests made to the Docker Engine API (all GET).",
            d.api_calls.load(Relaxed),
        ),
        (
            "vxgate_docker_containers_published",
            "gauge",
            "Docker containers in the registry.",
            d.published.load(Relaxed),
        ),
        (
            "vxgate_docker_clashes",
            "gauge",
            "Docker containers left out because a config or API container has their name or IP.",
            d.clashes.load(Relaxed),
        ),
    ] {
        single(o, name, kind, help, value);
    }
    head(
        o,
        "vxgate_docker_events_total",
        "counter",
        "Docker events received, by type.",
    );
    let kinds = EVENT_KINDS.iter().copied().chain(["other"]);
    for (kind, n) in kinds.zip(d.events.iter()) {
        let _ = writeln!(
            o,
            "vxgate_docker_events_total{{type=\"{kind}\"}} {}",
            n.load(Relaxed)
        );
    }
    head(
        o,
        "vxgate_docker_containers_skipped",
        "gauge",
        "Running Docker containers left out, by reason.",
    );
    for (reason, n) in Skip::ALL.iter().zip(d.skipped.iter()) {
        let _ = writeln!(
            o,
            "vxgate_docker_containers_skipped{{reason=\"{}\"}} {}",
            reason.as_str(),
            n.load(Relaxed)
        );
    }
}
