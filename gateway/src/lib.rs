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

pub mod admin;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod dns;
pub mod ingress;
pub mod overlay;
pub mod registry;
pub mod wire;

use daemon::Shutdown;
use registry::Registry;
use std::sync::Arc;

/// Handles to running parts: what a reload touches and what the admin API reads.
#[derive(Default)]
pub struct Running {
    pub overlay: Option<overlay::driver::Overlay>,
    pub dns: Option<dns::Dns>,
    pub ingress: Option<ingress::Ingress>,
}

/// Starts every part the config enables, each as a task in `tasks` that ends when `shutdown`
/// fires. Binding errors are returned before anything runs.
pub async fn start(
    config: &config::Config,
    registry: &Arc<Registry>,
    shutdown: &Shutdown,
    tasks: &mut tokio::task::JoinSet<Result<(), String>>,
) -> Result<Running, String> {
    let mut running = Running::default();
    if let Some(o) = &config.overlay {
        running.overlay =
            Some(overlay::driver::start(o, &config.node.name, registry, shutdown, tasks).await?);
    }
    if let Some(d) = &config.dns {
        running.dns = Some(dns::start(d, registry, shutdown, tasks).await?);
    }
    if let (Some(i), Some(zone)) = (&config.ingress, config.ingress_zone()) {
        let state = &config.node.state_dir;
        running.ingress = Some(ingress::start(i, &zone, state, registry, shutdown, tasks).await?);
    }
    Ok(running)
}
