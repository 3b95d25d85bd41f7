//! The ingress's Prometheus families: TLS, requests by service, limits, backend
//! connections, the access log, routes.

use super::Ingress;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use vxgate_metrics::text::{by_label, escape, family, single};

impl Ingress {
    /// Appends `vxgate_tls_*` and `vxgate_http_*` to `out`.
    pub fn render_metrics(&self, out: &mut String) {
        self.render_tls(out);
        self.render_requests(out);
        self.render_limits(out);
        self.render_backends(out);
    }

    fn render_tls(&self, out: &mut String) {
        let s = &self.stats;
        by_label(
            out,
            "vxgate_tls_handshakes_total",
            "counter",
            "Completed TLS handshakes by version.",
            "version",
            &[
                ("1.2", s.tls12.load(Relaxed)),
                ("1.3", s.tls13.load(Relaxed)),
            ],
        );
        family(
            out,
            "vxgate_tls_handshake_failures_total",
            "counter",
            "TLS handshakes that failed or timed out.",
        );
        let _ = writeln!(
            out,
            "vxgate_tls_handshake_failures_total {}",
            s.handshake_failures.load(Relaxed)
        );
    }

    fn render_requests(&self, out: &mut String) {
        let s = &self.stats;
        family(
            out,
            "vxgate_http_requests_total",
            "counter",
            "HTTP requests by service and status class.",
        );
        for (service, by_class) in s.requests().iter() {
            for (class, n) in by_class.iter().enumerate().filter(|(_, n)| **n > 0) {
                let _ = writeln!(
                    out,
                    "vxgate_http_requests_total{{service=\"{}\",class=\"{class}xx\"}} {n}",
                    escape(service)
                );
            }
        }
        family(
            out,
            "vxgate_http_connections_refused_total",
            "counter",
            "Connections closed at accept (max_connections).",
        );
        let _ = writeln!(
            out,
            "vxgate_http_connections_refused_total {}",
            s.refused_connections.load(Relaxed)
        );
        family(
            out,
            "vxgate_http_backend_seconds",
            "histogram",
            "Time from a request's head to the backend's response head.",
        );
        s.latency().render("vxgate_http_backend_seconds", "", out);
        family(
            out,
            "vxgate_http_service_seconds",
            "histogram",
            "Time from a request's head to the response's head, by service.",
        );
        for (service, latency) in s.requests.latencies() {
            latency.render(
                "vxgate_http_service_seconds",
                &format!("service=\"{}\"", escape(&service)),
                out,
            );
        }
    }

    fn render_limits(&self, out: &mut String) {
        let s = &self.stats;
        by_label(
            out,
            "vxgate_http_limited_total",
            "counter",
            "Requests refused by limits: rate (vxgate.rate, 429), in_flight (vxgate.max_in_flight or a client's half of it, 503), client_share (a client's quarter of the backend connections, 503).",
            "reason",
            &[
                ("rate", s.rate_limited.load(Relaxed)),
                ("in_flight", s.over_in_flight.load(Relaxed)),
                ("client_share", s.client_share.load(Relaxed)),
            ],
        );
        for (name, help, v) in [
            (
                "vxgate_http_local_errors_total",
                "Requests answered 503 for a reason of ours (no descriptor, port or backend connection budget); no backend was ejected.",
                s.local_errors.load(Relaxed),
            ),
            (
                "vxgate_http_send_timeouts_total",
                "Connections closed because a response made no progress towards the client for send_timeout_ms.",
                s.send_timeouts.load(Relaxed),
            ),
            (
                "vxgate_http_parse_errors_total",
                "Requests the HTTP parser refused (400, 431).",
                s.parse_errors.load(Relaxed),
            ),
        ] {
            family(out, name, "counter", help);
            let _ = writeln!(out, "{name} {v}");
        }
    }

    fn render_backends(&self, out: &mut String) {
        single(
            out,
            "vxgate_http_backend_connections",
            "gauge",
            "HTTP/1.1 backend connections open (ingress.max_backend_connections bounds them).",
            self.backend_budget.open(),
        );
        single(
            out,
            "vxgate_http_backend_connections_limit",
            "gauge",
            "ingress.max_backend_connections in effect.",
            self.backend_budget.cap(),
        );
        if let Some(log) = &self.access_log {
            by_label(
                out,
                "vxgate_http_access_log_lines_total",
                "counter",
                "Access log lines: written, dropped (the writer was behind; requests never wait) or failed (write errors).",
                "result",
                &[
                    ("written", log.written.load(Relaxed)),
                    ("dropped", log.dropped.load(Relaxed)),
                    ("failed", log.failed.load(Relaxed)),
                ],
            );
        }
        let table = self.routes.load();
        single(
            out,
            "vxgate_http_route_conflicts",
            "gauge",
            "Host and path prefixes claimed by more than one service (the older claim serves).",
            table.conflicts().len(),
        );
    }
}
