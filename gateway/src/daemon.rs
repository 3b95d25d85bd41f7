//! `vxgate run`: starts what the config enables, then serves signals until told to stop.
//!
//! SIGTERM and SIGINT drain: every part is told to stop and given a bounded time to finish.
//! SIGHUP re-reads the config; a config that fails validation is logged and the running one
//! stays. Containers from the config are swapped into the registry in one change.

use crate::config::{self, Config};
use crate::registry::{self, Origin, Registry};
use crate::shutdown::Shutdown;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

/// How long parts get to finish after a stop signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

pub fn main(path: &Path) -> ExitCode {
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
    match rt.block_on(run(path, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: &Path, mut config: Config) -> Result<(), String> {
    let registry = Arc::new(
        Registry::from_config(&config)
            .map_err(|e| format!("{}: containers: {e}", path.display()))?,
    );
    // Handlers first: a signal that arrives while parts start is queued, not fatal.
    let sig = |kind| signal(kind).map_err(|e| format!("cannot install a signal handler: {e}"));
    let (mut term, mut int, mut hup) = (
        sig(SignalKind::terminate())?,
        sig(SignalKind::interrupt())?,
        sig(SignalKind::hangup())?,
    );
    let (stop, shutdown) = Shutdown::new();
    let mut tasks = tokio::task::JoinSet::new();
    let running = Arc::new(crate::start(&config, &registry, &shutdown, &mut tasks).await?);
    let token = match &config.admin.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    // last: /healthz answering means every other listener is bound
    crate::admin::start(
        crate::admin::Admin {
            config: config.clone(),
            registry: registry.clone(),
            running: running.clone(),
            token,
            started: std::time::Instant::now(),
        },
        &shutdown,
        &mut tasks,
    )
    .await?;
    tracing::info!(
        node = %config.node.name,
        containers = registry.snapshot().len(),
        "vxgate running"
    );

    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: draining"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: draining"); break; }
            _ = hup.recv() => reload(path, &mut config, &registry, &running),
            Some(done) = tasks.join_next() => {
                // A part that ends on its own before shutdown has failed.
                let why = match done {
                    Ok(Ok(())) => "ended unexpectedly".to_owned(),
                    Ok(Err(e)) => e,
                    Err(e) => format!("panicked: {e}"),
                };
                let _ = stop.send(true);
                drain(&mut tasks).await;
                return Err(why);
            }
        }
    }
    let _ = stop.send(true);
    drain(&mut tasks).await;
    tracing::info!("stopped");
    Ok(())
}

async fn drain(tasks: &mut tokio::task::JoinSet<Result<(), String>>) {
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

/// SIGHUP: validate the file again; apply what can change live, keep the old config otherwise.
fn reload(path: &Path, config: &mut Config, registry: &Registry, running: &crate::Running) {
    let new = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            for line in e.to_string().lines() {
                tracing::error!("reload rejected, keeping the running config: {line}");
            }
            return;
        }
    };
    if let Err(e) = registry.replace_origin(Origin::Config, registry::config_containers(&new)) {
        tracing::error!("reload rejected, keeping the running config: containers: {e}");
        return;
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
    let restart_needed: Vec<&str> = [
        ("node", config.node != new.node),
        ("admin", config.admin != new.admin),
        ("registry", config.registry != new.registry),
        ("overlay", config.overlay != new.overlay),
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
    *config = Config {
        containers: new.containers,
        ..config.clone()
    };
    tracing::info!(
        containers = registry.snapshot().len(),
        version = registry.snapshot().version,
        "config reloaded"
    );
}
