//! Active health checks: every `interval`, GET `path` on each container that belongs to a
//! service, in the protocol the service is proxied with (`vxgate.protocol`: HTTP/1.1, h2c, or
//! HTTP/2 over TLS; a gRPC server answers such a GET with 200 and a grpc-status); `fall`
//! failures in a row mark it unhealthy, `rise` successes healthy again. The result goes to the
//! registry, so DNS stops answering with it too. The state machine is pure.

use super::proxy::{BackendTls, Pool};
use super::routes;
use crate::config::HealthConfig;
use crate::registry::{Health, Registry};
use crate::shutdown::Shutdown;
use http_body_util::{BodyExt, Empty};
use std::collections::HashMap;
use std::sync::Arc;

/// Consecutive results for one container, and the health they were counted against.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Streak {
    pub ok: u32,
    pub failed: u32,
    pub seen: Health,
}

/// Records one check; returns the new health when it changes (`current` is the registry's).
/// A change made by someone else (the proxy's passive ejection) starts the count afresh.
pub fn observe(
    streak: &mut Streak,
    ok: bool,
    current: Health,
    fall: u32,
    rise: u32,
) -> Option<Health> {
    if current != streak.seen {
        *streak = Streak {
            ok: 0,
            failed: 0,
            seen: current,
        };
    }
    let change = observe_counts(streak, ok, current, fall, rise);
    if let Some(h) = change {
        streak.seen = h;
    }
    change
}

fn observe_counts(
    streak: &mut Streak,
    ok: bool,
    current: Health,
    fall: u32,
    rise: u32,
) -> Option<Health> {
    if ok {
        streak.ok += 1;
        streak.failed = 0;
        (current != Health::Healthy && (streak.ok >= rise || current == Health::Unknown))
            .then_some(Health::Healthy)
    } else {
        streak.failed += 1;
        streak.ok = 0;
        (current != Health::Unhealthy && streak.failed >= fall).then_some(Health::Unhealthy)
    }
}

pub async fn run(
    cfg: HealthConfig,
    registry: Arc<Registry>,
    tls: BackendTls,
    mut shutdown: Shutdown,
) -> Result<(), super::Error> {
    // its own budget: one connection per container at most
    let pool = Arc::new(super::proxy::pool(
        tls,
        0,
        super::backend_pool::Budget::new(usize::MAX),
    ));
    let mut streaks: HashMap<String, Streak> = HashMap::new();
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            _ = tick.tick() => {}
        }
        let snap = registry.snapshot();
        let targets: Vec<_> = snap
            .services()
            .flat_map(|(service, members)| {
                let protocol = routes::protocol_of(service, members);
                members.iter().map(move |c| (c.clone(), protocol))
            })
            .collect();
        streaks.retain(|name, _| snap.container(name).is_some());
        let checks = targets.iter().map(|(c, protocol)| {
            let addr = std::net::SocketAddr::new(c.ip, c.port);
            let uri = Pool::target(*protocol, addr, &cfg.path);
            let (pool, protocol, timeout) = (pool.clone(), *protocol, cfg.timeout);
            async move {
                let body = Empty::new().map_err(|never| match never {}).boxed();
                let version = Pool::version(protocol);
                let Ok(Ok(req)) = uri.map(|u| http::Request::get(u).version(version).body(body))
                else {
                    return Some(false);
                };
                let res = tokio::time::timeout(timeout, pool.request(protocol, addr, req)).await;
                match res {
                    // out of descriptors or ports here says nothing of the backend
                    Ok(Err(e)) if e.is_local() => None,
                    Ok(Ok(r)) => Some(r.status().is_success() || r.status().is_redirection()),
                    _ => Some(false),
                }
            }
        });
        // a probe of an unreachable backend waits its whole timeout: shutdown does not
        let results = tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            r = futures_join(checks) => r,
        };
        for ((c, _), ok) in targets.iter().zip(results) {
            let Some(ok) = ok else {
                tracing::debug!(container = %c.name, "ingress: health check failed on our side; not counted");
                continue;
            };
            let streak = streaks.entry(c.name.clone()).or_default();
            if let Some(h) = observe(streak, ok, c.health, cfg.fall, cfg.rise) {
                tracing::info!(container = %c.name, health = ?h, "ingress: health changed");
                let _ = registry.set_health(&c.name, h);
            }
        }
    }
}

/// Runs the checks concurrently and collects their results in order.
async fn futures_join<F: std::future::Future<Output = Option<bool>> + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<Option<bool>> {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap_or(Some(false)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fall_ejects_and_rise_restores() {
        let mut s = Streak::default();
        assert_eq!(
            observe(&mut s, true, Health::Unknown, 2, 2),
            Some(Health::Healthy),
            "first success confirms"
        );
        assert_eq!(observe(&mut s, false, Health::Healthy, 2, 2), None);
        assert_eq!(
            observe(&mut s, false, Health::Healthy, 2, 2),
            Some(Health::Unhealthy)
        );
        assert_eq!(observe(&mut s, false, Health::Unhealthy, 2, 2), None);
        assert_eq!(observe(&mut s, true, Health::Unhealthy, 2, 2), None);
        assert_eq!(
            observe(&mut s, true, Health::Unhealthy, 2, 2),
            Some(Health::Healthy)
        );
    }

    #[test]
    fn a_passively_ejected_backend_comes_back_after_rise_successes() {
        let mut s = Streak {
            ok: 5,
            failed: 0,
            seen: Health::Healthy,
        };
        // the proxy marked it unhealthy on a connect error: old successes do not count
        assert_eq!(observe(&mut s, true, Health::Unhealthy, 3, 2), None);
        assert_eq!(
            observe(&mut s, true, Health::Unhealthy, 3, 2),
            Some(Health::Healthy)
        );
    }
}
