//! The Docker source: running containers become registry entries of this node.
//!
//! ```text
//!  dockerd ──GET /version, /containers/json, /containers/{id}/json──► session ──► Registry
//!          ──GET /events (container + network, filtered by the Engine)─┘  set_local_source(Docker)
//! ```
//!
//! A session negotiates the API version (dockerd 20.10 speaks 1.41 and rejects newer
//! clients), notes the time, lists the running containers and inspects each (a full resync:
//! the result replaces every `docker` entry in one change), then follows `/events` from that
//! time, so an event that happened during the resync is replayed rather than lost (each event
//! is idempotent: it inspects or removes). Per event: `die`, `stop`, `destroy` and `pause`
//! remove the container at once with no API call; `start`, `unpause`, `health_status` and
//! `rename` inspect it once, and so do network `connect`/`disconnect` of a running container
//! (a starting container's `connect` comes before its `start`, and costs nothing).
//!
//! When dockerd is absent or goes away, the registry keeps the last state the source saw
//! (containers keep running under `--live-restore`), one warning is logged per outage, and a
//! new session follows after a backoff (0.1 s doubling to 5 s) and resyncs in full. Only GET
//! requests are ever made: the source never creates, starts, stops or execs anything.

mod endpoint;
pub mod mapping;

pub use endpoint::{DockerEndpoint, EndpointError};
pub use mapping::Settings;

use crate::registry::{Container, Origin, Registry};
use crate::shutdown::Shutdown;
use bollard::Docker;
use bollard::query_parameters::{EventsOptions, InspectContainerOptions, ListContainersOptions};
use futures_util::StreamExt;
use mapping::{Action, Skip};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bound on each request that is not the event stream.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Event kinds counted one by one (those subscribed to); anything else counts as `other`.
pub use mapping::EVENTS as EVENT_KINDS;

/// What the source reports (admin API and metrics).
#[derive(Debug)]
pub struct DockerStatus {
    /// The endpoint in use (`unix:///…` or `tcp://…`).
    pub endpoint: String,
    /// Connected, resynced, and following events.
    pub connected: AtomicBool,
    /// Full resyncs (the first, and one after every reconnect).
    pub resyncs: AtomicU64,
    /// Sessions that ended in an error (dockerd absent, stopped, restarted).
    pub errors: AtomicU64,
    /// Requests made to the Engine API (version, list, inspect, events).
    pub api_calls: AtomicU64,
    /// Events received, by [`EVENT_KINDS`] and a last slot for any other.
    pub events: [AtomicU64; EVENT_KINDS.len() + 1],
    /// Containers published in the registry now.
    pub published: AtomicU64,
    /// Running containers left out now, by [`Skip::ALL`] reason.
    pub skipped: [AtomicU64; Skip::ALL.len()],
    /// Containers left out now because their name or IP is taken by a config or API entry.
    pub clashes: AtomicU64,
}

impl DockerStatus {
    fn new(endpoint: String) -> DockerStatus {
        DockerStatus {
            endpoint,
            connected: AtomicBool::new(false),
            resyncs: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            api_calls: AtomicU64::new(0),
            events: Default::default(),
            published: AtomicU64::new(0),
            skipped: Default::default(),
            clashes: AtomicU64::new(0),
        }
    }

    fn count_event(&self, kind: &str) {
        let slot = EVENT_KINDS
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(EVENT_KINDS.len());
        self.events[slot].fetch_add(1, Relaxed);
    }
}

struct Ctx {
    endpoint: DockerEndpoint,
    settings: Settings,
    registry: Arc<Registry>,
    status: Arc<DockerStatus>,
}

/// Why the Docker source cannot start: its endpoint, named by where it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("docker: DOCKER_HOST: {0}")]
    DockerHost(EndpointError),
    #[error("docker.endpoint: {0}")]
    Endpoint(EndpointError),
}

/// Why a session with the Engine ended (logged; the source reconnects with backoff).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot reach {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: bollard::errors::Error,
    },
    #[error("{what}: no answer within {CALL_TIMEOUT:?}")]
    Timeout { what: &'static str },
    #[error("{what}: {source}")]
    Api {
        what: String,
        source: bollard::errors::Error,
    },
    #[error("the event stream ended (dockerd stopped?)")]
    EventsEnded,
}

/// What the Docker source needs: where the Engine is, and how its containers become
/// registry entries.
#[derive(Debug, Clone)]
pub struct DockerSpec {
    pub endpoint: DockerEndpoint,
    pub settings: Settings,
}

/// The source: its status, and the part whose `run` follows Docker. It never fails startup:
/// without dockerd, vxgate serves what it has and keeps trying.
pub fn start(
    spec: DockerSpec,
    registry: &Arc<Registry>,
    shutdown: &Shutdown,
) -> (Arc<DockerStatus>, crate::part::Part<Error>) {
    let status = Arc::new(DockerStatus::new(spec.endpoint.to_string()));
    tracing::info!(
        endpoint = %spec.endpoint,
        network = ?spec.settings.network,
        "docker: following containers"
    );
    let ctx = Ctx {
        endpoint: spec.endpoint,
        settings: spec.settings,
        registry: registry.clone(),
        status: status.clone(),
    };
    let mut part = crate::part::Part::new();
    part.spawn(run(ctx, shutdown.clone()));
    (status, part)
}

/// State that outlives sessions: what Docker last said.
#[derive(Default)]
struct State {
    /// Published containers by Docker id.
    containers: BTreeMap<String, Container>,
    /// Running containers left out, by Docker id, with the name for logs.
    skipped: HashMap<String, (String, Skip)>,
    /// Names left out for clashing, to log only when that set changes.
    clashing: Vec<String>,
    /// In an outage (logged once).
    down: bool,
}

async fn run(ctx: Ctx, mut shutdown: Shutdown) -> Result<(), Error> {
    let mut st = State::default();
    let mut backoff = BACKOFF_MIN;
    loop {
        let connected_before = ctx.status.resyncs.load(Relaxed);
        let Err(e) = session(&ctx, &mut st, &mut shutdown).await else {
            return Ok(());
        };
        ctx.status.connected.store(false, Relaxed);
        ctx.status.errors.fetch_add(1, Relaxed);
        if ctx.status.resyncs.load(Relaxed) != connected_before {
            backoff = BACKOFF_MIN; // that session got going: start over
        }
        if !st.down {
            st.down = true;
            tracing::warn!(
                endpoint = %ctx.endpoint,
                containers = st.containers.len(),
                "docker: {e}; serving the last known state and reconnecting (at most every {BACKOFF_MAX:?})"
            );
        } else {
            tracing::debug!(endpoint = %ctx.endpoint, retry_in = ?backoff, "docker: {e}");
        }
        tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One Engine API request: counted, and bounded by [`CALL_TIMEOUT`] (the outer error); the
/// Engine's own answer is left to the caller.
async fn timed<T, E>(
    status: &DockerStatus,
    what: &'static str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<Result<T, E>, SessionError> {
    status.api_calls.fetch_add(1, Relaxed);
    tokio::time::timeout(CALL_TIMEOUT, fut)
        .await
        .map_err(|_| SessionError::Timeout { what })
}

/// [`timed`], with any error of the Engine's as the session's error.
async fn call<T>(
    status: &DockerStatus,
    what: &'static str,
    fut: impl Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, SessionError> {
    timed(status, what, fut)
        .await?
        .map_err(|source| SessionError::Api {
            what: what.to_owned(),
            source,
        })
}

pub fn connect(endpoint: &DockerEndpoint) -> Result<Docker, SessionError> {
    let timeout = CALL_TIMEOUT.as_secs();
    let version = bollard::API_DEFAULT_VERSION;
    match endpoint {
        DockerEndpoint::Unix(path) => {
            Docker::connect_with_unix(&path.to_string_lossy(), timeout, version)
        }
        DockerEndpoint::Tcp(addr) => Docker::connect_with_http(addr, timeout, version),
    }
    .map_err(|source| SessionError::Connect {
        endpoint: endpoint.to_string(),
        source,
    })
}

/// One connection's life. `Ok` means shutdown was asked.
async fn session(ctx: &Ctx, st: &mut State, shutdown: &mut Shutdown) -> Result<(), SessionError> {
    let status = &ctx.status;
    let docker = connect(&ctx.endpoint)?;
    // dockerd 20.10 answers 400 to clients newer than API 1.41: agree on a version first
    let docker = call(status, "version", docker.negotiate_version()).await?;
    // Events from this moment on are replayed after the resync (1 s early: the Engine's
    // `since` has second granularity in older versions); replaying is harmless.
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs().saturating_sub(1))
        .unwrap_or(0);
    let list = call(
        status,
        "list containers",
        docker.list_containers(Some(ListContainersOptions {
            all: false,
            ..Default::default()
        })),
    )
    .await?;
    let mut fresh = State {
        clashing: st.clashing.clone(),
        down: st.down,
        ..State::default()
    };
    for summary in list {
        let Some(id) = summary.id else { continue };
        inspect_into(ctx, &docker, &id, &mut fresh).await?;
    }
    *st = fresh;
    publish(ctx, st);
    status.resyncs.fetch_add(1, Relaxed);
    status.connected.store(true, Relaxed);
    let version = docker.client_version();
    if std::mem::replace(&mut st.down, false) {
        tracing::info!(
            endpoint = %ctx.endpoint,
            containers = st.containers.len(),
            "docker: connected again (API {version}); resynced"
        );
    } else {
        tracing::info!(
            endpoint = %ctx.endpoint,
            containers = st.containers.len(),
            "docker: connected (API {version})"
        );
    }

    let filters: HashMap<String, Vec<String>> = [
        (
            "type".to_owned(),
            vec!["container".into(), "network".into()],
        ),
        (
            "event".to_owned(),
            mapping::EVENTS.iter().map(|s| (*s).to_owned()).collect(),
        ),
    ]
    .into();
    status.api_calls.fetch_add(1, Relaxed);
    let mut events = docker.events(Some(EventsOptions {
        since: Some(since.to_string()),
        until: None,
        filters: Some(filters),
    }));
    loop {
        let event = tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            e = events.next() => e,
        };
        let event = match event {
            None => return Err(SessionError::EventsEnded),
            Some(Err(source)) => {
                return Err(SessionError::Api {
                    what: "events".into(),
                    source,
                });
            }
            Some(Ok(e)) => e,
        };
        status.count_event(mapping::kind(&event));
        match mapping::classify(&event) {
            Action::Ignore => continue,
            Action::Remove(id) => {
                let gone = st.containers.remove(&id).is_some();
                if st.skipped.remove(&id).is_none() && !gone {
                    continue;
                }
                tracing::debug!(
                    id = short(&id),
                    event = mapping::kind(&event),
                    "docker: container left"
                );
            }
            Action::Inspect(id) => inspect_into(ctx, &docker, &id, st).await?,
            Action::InspectIfKnown(id) => {
                if !st.containers.contains_key(&id) && !st.skipped.contains_key(&id) {
                    continue;
                }
                inspect_into(ctx, &docker, &id, st).await?
            }
        }
        publish(ctx, st);
    }
}

/// Inspects one container and files it as published or skipped (or forgets it when Docker no
/// longer has it).
async fn inspect_into(
    ctx: &Ctx,
    docker: &Docker,
    id: &str,
    st: &mut State,
) -> Result<(), SessionError> {
    let answer = timed(
        &ctx.status,
        "inspect",
        docker.inspect_container(id, None::<InspectContainerOptions>),
    )
    .await?;
    let info = match answer {
        Ok(info) => info,
        // removed between the event (or the list) and the inspect
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {
            st.containers.remove(id);
            st.skipped.remove(id);
            return Ok(());
        }
        Err(source) => {
            return Err(SessionError::Api {
                what: format!("inspect {}", short(id)),
                source,
            });
        }
    };
    match mapping::entry(&info, &ctx.settings) {
        Ok(c) => {
            st.skipped.remove(id);
            st.containers.insert(id.to_owned(), c);
        }
        Err(why) => {
            st.containers.remove(id);
            let name = info
                .name
                .as_deref()
                .unwrap_or("")
                .trim_start_matches('/')
                .to_owned();
            if why != Skip::NotRunning {
                let before = st.skipped.get(id).map(|(_, w)| *w);
                if before != Some(why) {
                    log_skip(&name, why, ctx.settings.network.as_deref());
                }
                st.skipped.insert(id.to_owned(), (name, why));
            } else {
                st.skipped.remove(id);
            }
        }
    }
    Ok(())
}

fn log_skip(name: &str, why: Skip, network: Option<&str>) {
    match why {
        Skip::AmbiguousNetwork => tracing::warn!(
            container = name,
            "docker: container is on several networks; set docker.network to say which address to publish; skipped"
        ),
        Skip::BadPort => tracing::warn!(
            container = name,
            "docker: label {} is not a port number (1-65535); skipped",
            mapping::LABEL_PORT
        ),
        Skip::BadService => tracing::warn!(
            container = name,
            "docker: its service label's value is not a DNS label (letters, digits, '-'; at most 63); skipped"
        ),
        Skip::OtherNetwork => tracing::debug!(
            container = name,
            network = network.unwrap_or(""),
            "docker: container is not on the network; skipped"
        ),
        other => tracing::debug!(container = name, reason = other.as_str(), "docker: skipped"),
    }
}

/// Puts the current set into the registry in one change and updates the gauges.
fn publish(ctx: &Ctx, st: &mut State) {
    let clashing = ctx
        .registry
        .set_local_source(Origin::Docker, st.containers.values().cloned().collect());
    if clashing != st.clashing {
        if !clashing.is_empty() {
            tracing::warn!(
                containers = ?clashing,
                "docker: left out: the name or IP is taken by a container of the config or the admin API"
            );
        }
        st.clashing = clashing;
    }
    let status = &ctx.status;
    status.clashes.store(st.clashing.len() as u64, Relaxed);
    status.published.store(
        (st.containers.len() - st.clashing.len().min(st.containers.len())) as u64,
        Relaxed,
    );
    for (slot, reason) in Skip::ALL.iter().enumerate() {
        let n = st.skipped.values().filter(|(_, w)| w == reason).count();
        status.skipped[slot].store(n as u64, Relaxed);
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

impl DockerStatus {
    /// Appends `vxgate_docker_*` to `out`.
    pub fn render_metrics(&self, out: &mut String) {
        use mapping::Skip;
        use vxgate_metrics::text::{family, single};
        let d = self;
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
            single(out, name, kind, help, value);
        }
        family(
            out,
            "vxgate_docker_events_total",
            "counter",
            "Docker events received, by type.",
        );
        let kinds = EVENT_KINDS.iter().copied().chain(["other"]);
        for (kind, n) in kinds.zip(d.events.iter()) {
            let _ = writeln!(
                out,
                "vxgate_docker_events_total{{type=\"{kind}\"}} {}",
                n.load(Relaxed)
            );
        }
        family(
            out,
            "vxgate_docker_containers_skipped",
            "gauge",
            "Running Docker containers left out, by reason.",
        );
        for (reason, n) in Skip::ALL.iter().zip(d.skipped.iter()) {
            let _ = writeln!(
                out,
                "vxgate_docker_containers_skipped{{reason=\"{}\"}} {}",
                reason.as_str(),
                n.load(Relaxed)
            );
        }
    }
}
