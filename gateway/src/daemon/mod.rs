//! `vxgate run`: starts what the config enables, then serves signals until told to stop.
//!
//! SIGTERM and SIGINT drain: every part is told to stop and given a bounded time to finish.
//! SIGHUP re-reads the config; a config that fails validation is logged and the running one
//! stays. SIGHUP and SIGUSR1 reopen the access log file. Containers from the config are swapped into the registry in one change.

mod error;
mod start;

use crate::admin::Running;
use crate::config::{self, Config};
use crate::registry::{Origin, Registry};
use crate::shutdown::Shutdown;
pub use error::Error;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

/// Why `vxgate run` stopped without being asked to.
#[derive(Debug, thiserror::Error)]
enum Stopped {
    #[error("{}: containers: {source}", path.display())]
    Containers {
        path: std::path::PathBuf,
        source: crate::registry::RegistryError,
    },
    #[error(transparent)]
    Part(#[from] Error),
    #[error("a part ended unexpectedly")]
    Ended,
    #[error("panicked: {0}")]
    Panicked(tokio::task::JoinError),
}

/// How long parts get to finish after a stop signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the runtime's leftovers get once `run` has returned.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// `passed`: the sockets systemd handed over (socket activation), taken before any thread
/// started ([`crate::activation::Passed::from_env`]).
pub fn main(path: &Path, passed: crate::activation::Passed) -> ExitCode {
    let config = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match rt.block_on(run(path, config, passed)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    };
    // Dropping the runtime would wait without end for its blocking tasks, among them the
    // joins of datapath threads: one that outlived the drain's bound (its task aborted, its
    // thread still serving) would keep the process alive, its sockets open, after "stopped".
    rt.shutdown_timeout(EXIT_GRACE);
    code
}

async fn run(
    path: &Path,
    mut config: Config,
    mut passed: crate::activation::Passed,
) -> Result<(), Stopped> {
    let (before, after) = crate::fd_limit::raise();
    tracing::info!(before, after, "open-files limit (soft RLIMIT_NOFILE)");
    let registry = Arc::new(config.registry().map_err(|source| Stopped::Containers {
        path: path.to_owned(),
        source,
    })?);
    // Handlers first: a signal that arrives while parts start is queued, not fatal.
    let sig = |kind| {
        signal(kind).map_err(|source| Error::Process {
            what: "cannot install a signal handler",
            source,
        })
    };
    let (mut term, mut int, mut hup, mut usr1) = (
        sig(SignalKind::terminate())?,
        sig(SignalKind::interrupt())?,
        sig(SignalKind::hangup())?,
        sig(SignalKind::user_defined1())?,
    );
    let (stop, shutdown) = Shutdown::new();
    let mut tasks = tokio::task::JoinSet::new();
    // the overlay stops after the rest has drained: in-flight requests may need it
    let (stop_late, late_shutdown) = Shutdown::new();
    let mut late_tasks = tokio::task::JoinSet::new();
    let late = start::Late {
        shutdown: &late_shutdown,
        tasks: &mut late_tasks,
    };
    let running =
        Arc::new(start::start(&config, &registry, &shutdown, &mut tasks, late, &mut passed).await?);
    let token = match &config.admin.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|source| crate::admin::Error::Token {
                    path: p.clone(),
                    source,
                })
                .map_err(Error::from)?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    // last: /healthz answering means every other listener is bound
    let listener = match passed.tcp(config.admin.listen) {
        Some(l) => l
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|source| crate::admin::Error::Bind {
                addr: config.admin.listen,
                source,
            })
            .map_err(Error::from)?,
        None => crate::admin::bind(config.admin.listen)
            .await
            .map_err(Error::from)?,
    };
    // a passed socket no listener took would hold connections nobody accepts
    passed.finish().map_err(Error::from)?;
    let admin = crate::admin::Admin {
        config: config.clone(),
        registry: registry.clone(),
        running: running.clone(),
        token,
        started: std::time::Instant::now(),
    };
    let admin_shutdown = shutdown.clone();
    tasks.spawn(async move {
        crate::admin::serve(admin, listener, admin_shutdown)
            .await
            .map_err(Error::from)
    });
    tracing::info!(
        node = %config.node.name,
        containers = registry.snapshot().len(),
        "vxgate running"
    );
    crate::notify::notify("READY=1");
    let watchdog = crate::notify::watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));

    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: draining"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: draining"); break; }
            _ = hup.recv() => {
                crate::notify::notify("RELOADING=1");
                reopen_logs(&running);
                reload(path, &mut config, &registry, &running);
                crate::notify::notify("READY=1");
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => crate::notify::notify("WATCHDOG=1"),
            _ = usr1.recv() => reopen_logs(&running),
            Some(done) = next_of(&mut tasks, &mut late_tasks) => {
                // A part that ends on its own before shutdown has failed.
                let why = match done {
                    Ok(Ok(())) => Stopped::Ended,
                    Ok(Err(e)) => Stopped::Part(e),
                    Err(e) => Stopped::Panicked(e),
                };
                let _ = stop.send(true);
                drain(&mut tasks).await;
                let _ = stop_late.send(true);
                drain(&mut late_tasks).await;
                return Err(why);
            }
        }
    }
    crate::notify::notify("STOPPING=1");
    let _ = stop.send(true);
    drain(&mut tasks).await;
    let _ = stop_late.send(true);
    drain(&mut late_tasks).await;
    tracing::info!("stopped");
    Ok(())
}

/// The next of either set's tasks to end (None only when both are empty).
async fn next_of(
    a: &mut error::Tasks,
    b: &mut error::Tasks,
) -> Option<Result<Result<(), Error>, tokio::task::JoinError>> {
    tokio::select! {
        Some(done) = a.join_next() => Some(done),
        Some(done) = b.join_next() => Some(done),
        else => None,
    }
}

async fn drain(tasks: &mut error::Tasks) {
    let all = async {
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Err(e)) => tracing::warn!("while stopping: {e}"),
                Err(e) => tracing::warn!("while stopping: {e}"),
                Ok(Ok(())) => {}
            }
        }
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, all).await.is_err() {
        tracing::warn!("parts still busy after {DRAIN_TIMEOUT:?}; stopping anyway");
        tasks.abort_all();
    }
}

/// SIGHUP and SIGUSR1: the access log file is opened again (after logrotate moved it).
fn reopen_logs(running: &Running) {
    if let Some(log) = running.ingress.as_ref().and_then(|i| i.access_log.as_ref()) {
        log.reopen();
    }
}

/// SIGHUP: validate the file again; apply what can change live, keep the old config otherwise.
fn reload(path: &Path, config: &mut Config, registry: &Registry, running: &Running) {
    let new = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            for line in e.to_string().lines() {
                tracing::error!("reload rejected, keeping the running config: {line}");
            }
            return;
        }
    };
    registry.set_backend_networks(
        new.ingress
            .as_ref()
            .map(|i| i.backend_networks.clone())
            .unwrap_or_default(),
    );
    if let Err(e) = registry.replace_origin(Origin::Config, new.containers()) {
        tracing::error!("reload rejected, keeping the running config: containers: {e}");
        return;
    }
    if let Some(policy) = &running.policy {
        policy.set_isolated(new.policy_spec().isolated);
    }
    if let Some(ingress) = &running.ingress {
        // certificate files are re-read even when the config text is unchanged (renewals)
        match ingress.certs.reload() {
            Ok(n) => tracing::info!(certs = n, "ingress certificates reloaded"),
            Err(e) => {
                tracing::error!("ingress certificates not reloaded, keeping the old ones: {e}")
            }
        }
    }
    let overlay_live = running
        .overlay
        .as_ref()
        .is_some_and(|o| reload_wireguard(&new, o));
    let restart_needed: Vec<&str> = [
        ("node", config.node != new.node),
        ("admin", config.admin != new.admin),
        ("registry", config.registry != new.registry),
        (
            "overlay",
            without_live_wireguard(config, overlay_live)
                != without_live_wireguard(&new, overlay_live),
        ),
        ("dns", config.dns != new.dns),
        ("ingress", config.ingress != new.ingress),
        ("docker", config.docker != new.docker),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect();
    if !restart_needed.is_empty() {
        tracing::warn!(
            sections = ?restart_needed,
            "reloaded containers; changes to these sections take effect at the next restart"
        );
    }
    let overlay = match (&mut config.overlay, &new.overlay, overlay_live) {
        (Some(o), Some(n), true) => {
            o.encryption = n.encryption.clone();
            Some(o.clone())
        }
        (o, _, _) => o.clone(),
    };
    *config = Config {
        containers: new.containers,
        overlay,
        ..config.clone()
    };
    tracing::info!(
        containers = registry.snapshot().len(),
        version = registry.snapshot().version,
        "config reloaded"
    );
}

/// SIGHUP with encryption on: the key file is read again (a new key ends every session and is
/// published; peers shake hands again) and the configured WireGuard peers are applied.
/// Returns whether that was done (false: the overlay is not encrypted, or the new config
/// turns encryption off or changes what needs a restart).
fn reload_wireguard(new: &Config, overlay: &crate::overlay::Overlay) -> bool {
    let (Some(crypto), Some(peers_tx)) = (&overlay.wireguard, &overlay.wireguard_peers) else {
        return false;
    };
    let Some(spec) = new.overlay_spec().and_then(|o| o.encryption) else {
        return false;
    };
    if spec.address != crypto.address() {
        return false;
    }
    match crate::overlay::wg::load_key(&spec.key_file) {
        Ok(key) => {
            if crypto.set_private_key(&key) {
                tracing::warn!(
                    public_key = %crypto.public_key(),
                    "overlay: new WireGuard key; sessions end and shake hands again"
                );
            }
        }
        Err(e) => tracing::error!("overlay: WireGuard key not reloaded, keeping the old one: {e}"),
    }
    peers_tx.send_if_modified(|p| {
        let changed = *p != spec.peers;
        *p = spec.peers.clone();
        changed
    });
    true
}

/// The overlay section without what a reload applies live (the WireGuard key and peers).
fn without_live_wireguard(c: &Config, live: bool) -> Option<config::OverlayConfig> {
    let mut o = c.overlay.clone()?;
    if live && let Some(e) = &mut o.encryption {
        e.peers.clear();
        e.private_key_file = None;
    }
    Some(o)
}
