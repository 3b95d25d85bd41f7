//! `/metrics`: the Prometheus text format (version 0.0.4), every name prefixed `vxgate_`.
//! Each part renders its own families next to the counters it keeps (`render_metrics` on the
//! overlay, the DNS server, ACME, the ingress, the registry snapshot, the etcd backend and the
//! Docker source); this only puts them in order.

use super::Admin;
use std::fmt::Write as _;

pub fn render(a: &Admin) -> String {
    let mut o = String::with_capacity(8192);
    vxgate_metrics::text::single(
        &mut o,
        "vxgate_uptime_seconds",
        "gauge",
        "Seconds since vxgate started.",
        a.started.elapsed().as_secs_f64(),
    );
    let r = &a.running;
    if let Some(ov) = &r.overlay {
        ov.render_metrics(&mut o);
    }
    if let Some(d) = &r.dns {
        d.render_metrics(&mut o);
    }
    if let Some(acme) = r.ingress.as_ref().and_then(|i| i.acme.as_ref()) {
        acme.render_metrics(&mut o);
    }
    if let Some(i) = &r.ingress {
        i.render_metrics(&mut o);
    }
    a.registry.snapshot().render_metrics(&mut o);
    vxgate_metrics::text::single(
        &mut o,
        "vxgate_registry_refused_addresses_total",
        "counter",
        "Containers (admin API, Docker, etcd) refused or left out for a loopback, link-local, broadcast, multicast or unspecified address outside ingress.backend_networks.",
        a.registry
            .refused_addresses
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    if let Some(b) = &r.registry_backend {
        b.render_metrics(&mut o);
        vxgate_metrics::text::family(
            &mut o,
            "vxgate_registry_remote_updates_total",
            "counter",
            "Updates from the shared registry: applied as the change since the last one, or whole (the first, after a full read or a clash).",
        );
        let u = &a.registry.remote_updates;
        for (applied, n) in [("change", &u.changed), ("whole", &u.whole)] {
            let n = n.load(std::sync::atomic::Ordering::Relaxed);
            let _ = writeln!(
                o,
                "vxgate_registry_remote_updates_total{{applied=\"{applied}\"}} {n}"
            );
        }
    }
    if let Some(p) = &r.policy {
        p.render_metrics(&a.config.node.name, &mut o);
    }
    if let Some(d) = &r.docker {
        d.render_metrics(&mut o);
    }
    o
}
