//! vxgate: a container edge gateway in one async process.
//!
//! ```text
//!            config ──► registry (containers, labels, health) ──watch──► snapshots
//!                                                     │            │            │
//!  HTTPS :443 ──► ingress (rustls → hyper) ◄──────────┘            │            │
//!  DNS :53   ──► dns (vxgate-dns: zone from snapshot, forwarding) ◄┘            │
//!  TAP vxg0 ◄─► overlay switch (FDB) ◄─► UDP :4789 ◄─► peer hosts ◄─────────────┘
//! ```
//!
//! Protocol logic (`wire`, the overlay switch, zone answering) takes bytes and `now` and
//! returns decisions; the I/O shells own sockets, the TAP fd and timers.

pub mod acme;
pub mod admin;
pub mod config;
pub mod crypto;
pub mod ctl;
pub mod daemon;
mod error;
pub mod fd_limit;
pub mod ingress;
pub mod nameserver;
pub mod notify;
pub mod overlay;
pub mod privilege;
pub mod registry;
pub mod shutdown;
pub mod wire;
pub mod worker;

pub use error::{Error, Tasks};
use registry::Registry;
use shutdown::Shutdown;
use std::sync::Arc;

/// Handles to running parts: what a reload touches and what the admin API reads.
#[derive(Default)]
pub struct Running {
    pub overlay: Option<overlay::Overlay>,
    pub dns: Option<nameserver::Dns>,
    pub ingress: Option<ingress::Ingress>,
    /// The shared-registry backend's state (etcd only).
    pub registry_backend: Option<Arc<registry::BackendStatus>>,
    /// The Docker source's state (`[docker]` only).
    pub docker: Option<Arc<registry::docker::DockerStatus>>,
}

/// Starts every part the config enables, each as a task in `tasks` that ends when `shutdown`
/// fires. Every socket is bound first, so a binding error is returned before anything runs.
pub async fn start(
    config: &config::Config,
    registry: &Arc<Registry>,
    shutdown: &Shutdown,
    tasks: &mut crate::Tasks,
) -> Result<Running, Error> {
    let mut running = Running::default();
    let overlay_spec = config.overlay_spec();
    let underlay = overlay_spec.as_ref().map(overlay::bind).transpose()?;
    let dns_sockets = config.dns.as_ref().map(nameserver::bind).transpose()?;
    let ingress_listeners = config
        .ingress
        .as_ref()
        .map(ingress::bind_listeners)
        .transpose()?;
    let docker_host = std::env::var("DOCKER_HOST").ok();
    if let Some(spec) = config.docker_spec(docker_host.as_deref()) {
        let status = registry::docker::start(spec?, registry, shutdown, tasks);
        // a moment for the first resync, so DNS and the ingress start with the containers;
        // without dockerd the first session fails at once and startup goes on
        use std::sync::atomic::Ordering::Relaxed;
        settle(|| status.resyncs.load(Relaxed) > 0 || status.errors.load(Relaxed) > 0).await;
        running.docker = Some(status);
    }
    if config.registry.backend == config::RegistryBackend::Etcd {
        let crypto = underlay
            .as_ref()
            .and_then(|u| u.wireguard.as_ref())
            .map(|(_, c)| c.clone());
        running.registry_backend =
            Some(start_etcd(config, crypto, registry, shutdown, tasks).await?);
    }
    if let (Some(o), Some(underlay)) = (&overlay_spec, underlay) {
        running.overlay =
            Some(overlay::start(o, underlay, &config.node.name, registry, shutdown, tasks).await?);
    }
    if let (Some(d), Some(bound)) = (&config.dns, dns_sockets) {
        running.dns = Some(nameserver::start_bound(
            d, bound, registry, shutdown, tasks,
        )?);
    }
    if let (Some(i), Some(zone), Some(listeners)) =
        (&config.ingress, config.ingress_zone(), ingress_listeners)
    {
        let state = &config.node.state_dir;
        let fleet = acme_fleet(config);
        running.ingress = Some(
            ingress::start(i, listeners, &zone, state, fleet, registry, shutdown, tasks).await?,
        );
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
    registry: &Arc<Registry>,
    shutdown: &Shutdown,
    tasks: &mut crate::Tasks,
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
    let status = registry::etcd::start(
        &config.etcd_spec(),
        &config.node.name,
        registry::etcd::LocalNode { vtep, wireguard },
        registry,
        shutdown,
        tasks,
    );
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
    _: &Arc<Registry>,
    _: &Shutdown,
    _: &mut crate::Tasks,
) -> Result<Arc<registry::BackendStatus>, Error> {
    Err(registry::EtcdError::NotBuilt.into())
}
