//! Starting the parts: every socket bound first, then each part started with its handle kept
//! for the admin API and reloads, and its life (`Part::run`) spawned into the daemon's task
//! set.

use super::error::{Error, Tasks};
use crate::admin::Running;
use crate::config;
use crate::part::Part;
use crate::registry::{self, Registry};
use crate::shutdown::Shutdown;
use crate::{acme, ingress, nameserver, overlay};
use std::sync::Arc;

/// Spawns a part's life into the daemon's task set.
fn spawn<E>(tasks: &mut Tasks, part: Part<E>, shutdown: &Shutdown)
where
    E: Send + std::fmt::Display + 'static,
    Error: From<E>,
{
    let shutdown = shutdown.clone();
    tasks.spawn(async move { part.run(shutdown).await.map_err(Error::from) });
}

/// Where the overlay runs: its own task set and stop signal, fired once the other parts have
/// drained (requests in flight to containers on other hosts still cross it).
pub struct Late<'a> {
    pub shutdown: &'a Shutdown,
    pub tasks: &'a mut Tasks,
}

/// Starts every part the config enables, each as a task in `tasks` that ends when `shutdown`
/// fires (the overlay in `late`). Every socket is bound first, so a binding error is returned
/// before anything runs.
pub async fn start(
    config: &config::Config,
    registry: &Arc<Registry>,
    shutdown: &Shutdown,
    tasks: &mut Tasks,
    late: Late<'_>,
    passed: &mut crate::activation::Passed,
) -> Result<Running, Error> {
    let mut running = Running::default();
    let overlay_spec = config.overlay_spec().map(|mut spec| {
        spec.offloads_off = offloads_off_from_env();
        spec
    });
    let underlay = overlay_spec.as_ref().map(overlay::bind).transpose()?;
    let dns_sockets = config
        .dns
        .as_ref()
        .map(|d| nameserver::bind(d, passed))
        .transpose()?;
    let ingress_listeners = config
        .ingress
        .as_ref()
        .map(|i| ingress::bind_listeners(i, passed))
        .transpose()?;
    let docker_host = std::env::var("DOCKER_HOST").ok();
    if let Some(spec) = config.docker_spec(docker_host.as_deref()) {
        let (status, part) = registry::docker::start(spec?, registry, shutdown);
        spawn(tasks, part, shutdown);
        // a moment for the first resync, so DNS and the ingress start with the containers;
        // without dockerd the first session fails at once and startup goes on
        use std::sync::atomic::Ordering::Relaxed;
        settle(|| status.resyncs.load(Relaxed) > 0 || status.errors.load(Relaxed) > 0).await;
        running.docker = Some(status);
    }
    // this node's gateway addresses, followed once for the policy, the overlay's source check
    // and the etcd node record
    let gateways = crate::policy::follow_gateways(config.policy_spec().taps);
    if config.registry.backend == config::RegistryBackend::Etcd {
        let crypto = underlay
            .as_ref()
            .and_then(|u| u.wireguard.as_ref())
            .map(|(_, c)| c.clone());
        running.registry_backend =
            Some(start_etcd(config, crypto, gateways.clone(), registry, shutdown, tasks).await?);
    }
    if let (Some(o), Some(underlay)) = (&overlay_spec, underlay) {
        let (handle, part) = overlay::start(
            o,
            underlay,
            &config.node.name,
            registry,
            gateways.clone(),
            late.shutdown,
        )
        .await?;
        spawn(late.tasks, part, late.shutdown);
        running.overlay = Some(handle);
    }
    {
        let (handle, part) =
            crate::policy::start(config.policy_spec(), gateways, registry, shutdown);
        spawn(tasks, part, shutdown);
        running.policy = Some(handle);
    }
    if let (Some(d), Some(bound)) = (&config.dns, dns_sockets) {
        let (handle, part) = nameserver::start_bound(d, bound, registry, shutdown)?;
        spawn(tasks, part, shutdown);
        running.dns = Some(handle);
    }
    if let (Some(i), Some(zone), Some(listeners)) =
        (&config.ingress, config.ingress_zone(), ingress_listeners)
    {
        let state = &config.node.state_dir;
        let fleet = acme_fleet(config);
        let (handle, part) =
            ingress::start(i, listeners, &zone, state, fleet, registry, shutdown).await?;
        spawn(tasks, part, shutdown);
        running.ingress = Some(handle);
    }
    Ok(running)
}

/// With ACME and the etcd registry, the nodes share certificates and order each once.
#[cfg(feature = "etcd")]
fn acme_fleet(config: &config::Config) -> Option<Arc<acme::fleet::Fleet>> {
    let acme = config.ingress.as_ref()?.acme.as_ref()?;
    (config.registry.backend == config::RegistryBackend::Etcd).then(|| {
        acme::fleet::Fleet::new(acme::fleet::FleetSpec {
            directory: acme.directory.clone(),
            endpoints: config.registry.endpoints.clone(),
            prefix: config.registry.prefix.clone(),
            lease_ttl: config.registry.lease_ttl,
            node: config.node.name.clone(),
            auth: config.etcd_auth(),
        })
    })
}

#[cfg(not(feature = "etcd"))]
fn acme_fleet(_: &config::Config) -> Option<Arc<acme::fleet::Fleet>> {
    None
}

/// Waits until `done` or for at most 2 s: a registry source's first read, before the parts
/// that serve its state start.
async fn settle(done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    while !done() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Starts the etcd backend and gives it a moment for the first full read, so DNS and the
/// ingress start with the fleet's state when etcd is there; without etcd, startup goes on.
#[cfg(feature = "etcd")]
async fn start_etcd(
    config: &config::Config,
    crypto: Option<Arc<overlay::wg::Crypto>>,
    gateways: tokio::sync::watch::Receiver<Vec<std::net::IpAddr>>,
    registry: &Arc<Registry>,
    shutdown: &Shutdown,
    tasks: &mut Tasks,
) -> Result<Arc<registry::BackendStatus>, Error> {
    use std::sync::atomic::Ordering::Relaxed;
    let overlay = config.overlay.as_ref();
    let encryption = overlay.and_then(|o| o.wireguard());
    // a host that refuses plain VXLAN does not offer a plain VTEP
    let vtep = overlay
        .filter(|_| encryption.is_none_or(|e| e.allow_plaintext))
        .and_then(|o| o.advertise.or(o.listen));
    let wireguard = match (encryption, crypto) {
        (Some(e), Some(c)) => e
            .listen
            .map(|endpoint| (endpoint, c.address(), c.subscribe_public_key())),
        _ => None,
    };
    let (status, part) = registry::etcd::start(
        &config.etcd_spec(),
        &config.node.name,
        registry::etcd::LocalNode {
            vtep,
            wireguard,
            gateways,
        },
        registry,
        shutdown,
    );
    spawn(tasks, part, shutdown);
    settle(|| status.resyncs.load(Relaxed) > 0).await;
    if status.resyncs.load(Relaxed) == 0 {
        tracing::warn!("etcd: not in sync yet; starting with the local state");
    }
    Ok(status)
}

#[cfg(not(feature = "etcd"))]
async fn start_etcd(
    _: &config::Config,
    _: Option<Arc<overlay::wg::Crypto>>,
    _: tokio::sync::watch::Receiver<Vec<std::net::IpAddr>>,
    _: &Arc<Registry>,
    _: &Shutdown,
    _: &mut Tasks,
) -> Result<Arc<registry::BackendStatus>, Error> {
    Err(registry::EtcdError::NotBuilt.into())
}

/// `VXGATE_OFFLOAD_DISABLE`: offloads not to use even where the kernel has them.
fn offloads_off_from_env() -> overlay::OffloadsOff {
    let list = std::env::var("VXGATE_OFFLOAD_DISABLE").unwrap_or_default();
    let (off, unknown) = overlay::OffloadsOff::parse(&list);
    if !unknown.is_empty() {
        tracing::warn!(
            ?unknown,
            "VXGATE_OFFLOAD_DISABLE: names not known (tap_tso, tap_uso, udp_gso, udp_gro, multi_queue)"
        );
    }
    off
}
