//! Runs the embedded DNS server (crate `vxgate-dns`) for the config's `[dns]` section: keeps
//! its zone in step with the registry and owns its sockets' lifetime.
//!
//! A task rebuilds the zone from every registry snapshot and publishes it on a watch channel
//! that the server's workers read per query, so a registry change answers the next query.

use crate::config::DnsConfig;
use crate::part::Part;
use crate::registry::{Registry, Snapshot};
use crate::shutdown::Shutdown;
use std::fmt::Write as _;
use std::sync::Arc;
use tokio::sync::watch;
use vxgate_dns::forward::{CACHE_ENTRIES, Forwarder};
use vxgate_dns::ratelimit::RateLimiter;
use vxgate_dns::server::{self, Context, Stats};
use vxgate_dns::zone::{Zone, ZoneContainer, ZoneSettings};

/// Why the DNS server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("dns: cannot bind {listen:?}: {source}{}", crate::privilege::bind(listen.iter().map(|a| a.port()).min().unwrap_or(0), source))]
    Bind {
        listen: Vec<std::net::SocketAddr>,
        source: std::io::Error,
    },
    #[error("dns: zone {0:?} is not a valid name")]
    Zone(String),
}

/// A running DNS server's counters.
#[derive(Clone)]
pub struct Dns {
    pub stats: Arc<Stats>,
    pub forwarder: Arc<Forwarder>,
    /// With `dns.rate_limit`: the limiter, for the size of its table.
    pub rate_limit: Option<Arc<RateLimiter>>,
}

/// The zone for a registry snapshot.
pub fn zone_of(settings: &ZoneSettings, snap: &Snapshot) -> Option<Zone> {
    let label = &snap.service_label;
    let containers: Vec<ZoneContainer> = snap
        .containers()
        .map(|c| ZoneContainer {
            name: c.name.clone(),
            ip: c.ip,
            port: c.port,
            service: c.labels.get(label).cloned(),
            serving: c.is_serving(),
        })
        .collect();
    Zone::build(settings, snap.version, &containers)
}

/// Binds the DNS sockets: UDP (one per core, `SO_REUSEPORT`) and TCP on every address.
/// Sockets systemd passed for a listen address are used instead (UDP, TCP or both).
pub fn bind(
    cfg: &DnsConfig,
    passed: &mut crate::activation::Passed,
) -> Result<server::Bound, Error> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut failed = None;
    let mut handed = |addr| {
        let mut h = server::Handed::default();
        match passed.udp(addr).transpose() {
            Ok(u) => h.udp = u,
            Err(e) => failed = Some(e),
        }
        match passed.tcp(addr).transpose() {
            Ok(t) => h.tcp = t,
            Err(e) => failed = Some(e),
        }
        h
    };
    let bound = server::bind_passed(&cfg.listen, workers, &mut handed);
    if let Some(source) = failed {
        return Err(Error::Bind {
            listen: cfg.listen.clone(),
            source,
        });
    }
    bound.map_err(|source| Error::Bind {
        listen: cfg.listen.clone(),
        source,
    })
}

/// The server and the zone updater on sockets bound by [`bind`] (tests bind port 0): the
/// handle, and the part whose `run` serves.
pub fn start_bound(
    cfg: &DnsConfig,
    bound: server::Bound,
    registry: &Arc<Registry>,
    shutdown: &Shutdown,
) -> Result<(Dns, Part<Error>), Error> {
    let mut tasks = Part::new();
    let settings = ZoneSettings {
        zone: cfg.zone.clone(),
        ttl: u32::try_from(cfg.ttl.as_secs()).unwrap_or(u32::MAX),
        ns_addrs: cfg.listen.iter().map(|a| a.ip()).collect(),
        max_udp_records: cfg.max_udp_records as usize,
    };
    let first =
        zone_of(&settings, &registry.snapshot()).ok_or_else(|| Error::Zone(cfg.zone.clone()))?;
    let (zone_tx, zone_rx) = watch::channel(Arc::new(first));
    let workers = bound.udp.len() / cfg.listen.len().max(1);
    let stats = Arc::new(Stats::default());
    let forwarder = Arc::new(Forwarder::new(
        cfg.upstreams.clone(),
        cfg.upstream_timeout,
        CACHE_ENTRIES,
    ));
    let rate_limit = (cfg.rate_limit > 0).then(|| Arc::new(RateLimiter::new(cfg.rate_limit)));
    let handle = Dns {
        stats: stats.clone(),
        forwarder: forwarder.clone(),
        rate_limit: rate_limit.clone(),
    };
    let ctx = Arc::new(Context {
        zone: zone_rx,
        forwarder,
        recursion_from: cfg.recursion_from.clone(),
        stats: stats.clone(),
        rate_limit,
        tcp_clients: Default::default(),
    });
    tracing::info!(listen = ?cfg.listen, zone = %cfg.zone, upstreams = ?cfg.upstreams, workers, max_udp_records = cfg.max_udp_records, rate_limit = cfg.rate_limit, "dns up");
    {
        let mut shutdown = shutdown.clone();
        tasks.spawn(async move {
            server::serve(bound, ctx, async move { shutdown.wait().await }).await;
            Ok(())
        });
    }
    let mut rx = registry.subscribe();
    let mut shutdown = shutdown.clone();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                changed = rx.changed() => {
                    if changed.is_err() { return Ok(()); }
                    let snap = rx.borrow_and_update().clone();
                    match zone_of(&settings, &snap) {
                        Some(z) => { zone_tx.send_replace(Arc::new(z)); }
                        None => tracing::error!("dns: cannot build the zone; keeping the last one"),
                    }
                }
            }
        }
    });
    Ok((handle, tasks))
}

impl Dns {
    /// Appends `vxgate_dns_*` to `out`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::sync::atomic::Ordering::Relaxed;
        use vxgate_metrics::text::{by_label, family, single};
        let (d, s) = (self, &self.stats);
        family(
            out,
            "vxgate_dns_queries_total",
            "counter",
            "DNS queries received.",
        );
        let _ = writeln!(out, "vxgate_dns_queries_total {}", s.queries.load(Relaxed));
        family(
            out,
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
                let _ = writeln!(out, "vxgate_dns_responses_total{{rcode=\"{name}\"}} {v}");
            }
        }
        family(
            out,
            "vxgate_dns_queries_by_type_total",
            "counter",
            "DNS queries by question type.",
        );
        for (n, name) in s.qtypes.iter().zip(vxgate_dns::server::QTYPE_NAMES) {
            let _ = writeln!(
                out,
                "vxgate_dns_queries_by_type_total{{type=\"{name}\"}} {}",
                n.load(Relaxed)
            );
        }
        family(
            out,
            "vxgate_dns_forwarded_total",
            "counter",
            "Queries for names outside the zone sent upstream or answered from the cache.",
        );
        let _ = writeln!(
            out,
            "vxgate_dns_forwarded_total {}",
            s.forwarded.load(Relaxed)
        );
        family(
            out,
            "vxgate_dns_upstream_failures_total",
            "counter",
            "Upstream exchanges that timed out, failed or answered SERVFAIL/REFUSED.",
        );
        let _ = writeln!(
            out,
            "vxgate_dns_upstream_failures_total {}",
            d.forwarder.upstream_failures.load(Relaxed)
        );
        single(
            out,
            "vxgate_dns_forward_in_flight",
            "gauge",
            "Forwarded UDP queries waiting for an upstream now.",
            d.forwarder.in_flight.load(Relaxed) as u64,
        );
        single(
            out,
            "vxgate_dns_forward_overflow_total",
            "counter",
            "Queries answered SERVFAIL at once because the cap of forwarded queries in flight was reached.",
            d.forwarder.overflow.load(Relaxed),
        );
        single(
            out,
            "vxgate_dns_cache_hits_total",
            "counter",
            "Queries for names outside the zone answered from the cache.",
            d.forwarder.cache_hits.load(Relaxed),
        );
        single(
            out,
            "vxgate_dns_cache_misses_total",
            "counter",
            "Queries for names outside the zone the cache did not hold (sent upstream).",
            d.forwarder.cache_misses.load(Relaxed),
        );
        family(
            out,
            "vxgate_dns_upstream_seconds",
            "histogram",
            "Time an upstream took to answer, by upstream.",
        );
        for (upstream, latency) in d.forwarder.upstreams() {
            latency.render(
                "vxgate_dns_upstream_seconds",
                &format!("upstream=\"{upstream}\""),
                out,
            );
        }
        single(
            out,
            "vxgate_dns_tcp_connections",
            "gauge",
            "Open DNS TCP connections.",
            s.tcp_connections.load(Relaxed) as u64,
        );
        single(
            out,
            "vxgate_dns_tcp_refused_total",
            "counter",
            "DNS TCP connections closed on accept: over 256 open, or 16 from one client (IPv4 /24, IPv6 /56).",
            s.tcp_refused.load(Relaxed),
        );
        single(
            out,
            "vxgate_dns_budget_truncated_total",
            "counter",
            "UDP answers to clients outside dns.recursion_from over 10x their query (at least 512 bytes), sent as TC.",
            s.budget_truncated.load(Relaxed),
        );
        by_label(
            out,
            "vxgate_dns_rate_limited_total",
            "counter",
            "UDP responses to clients outside dns.recursion_from held back by dns.rate_limit: sent as TC (slip) or dropped.",
            "action",
            &[
                ("slip", s.rate_limit_slipped.load(Relaxed)),
                ("drop", s.rate_limit_dropped.load(Relaxed)),
            ],
        );
        if let Some(rl) = &self.rate_limit {
            single(
                out,
                "vxgate_dns_rate_limit_networks",
                "gauge",
                "Client networks (/24, /56) dns.rate_limit tracks now (at most 65,536; while all are busy a new network gets only TC answers).",
                rl.len(),
            );
        }
        family(
            out,
            "vxgate_dns_answer_seconds",
            "histogram",
            "Time from a query's arrival to its answer.",
        );
        s.answer_latency
            .render("vxgate_dns_answer_seconds", "", out);
    }
}
