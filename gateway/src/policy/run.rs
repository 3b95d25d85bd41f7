//! The policy part: follows the registry and keeps `inet vxgate` what the matrix says for
//! this host's containers. A change is applied as soon as the snapshot that carries it is
//! published; a table left by an earlier run stays until its replacement is in (no open
//! window at a restart), and only `vxgate policy flush` removes it.

use super::{Matrix, nflog, nft};
use crate::part::Part;
use crate::registry::Registry;
use crate::shutdown::Shutdown;
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

/// What the policy part needs.
#[derive(Debug, Clone)]
pub struct PolicySpec {
    /// This node's name: the containers it enforces for.
    pub node: String,
    /// Networks whose containers are closed without a label (at start; see
    /// [`Policy::set_isolated`]).
    pub isolated: BTreeSet<String>,
    /// The overlay's TAPs: the bridges they are in hold this node's gateway addresses.
    pub taps: Vec<String>,
    /// A static fleet's other nodes' gateway addresses (`overlay.peer_gateways`).
    pub peer_gateways: Vec<IpAddr>,
}

/// Why the policy could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("policy: cannot run nft (apt-get install nftables): {0}")]
    Spawn(std::io::Error),
    #[error("policy: nft refused the table: {0}")]
    Refused(String),
}

/// The running policy: what `/v1/policy` and `/metrics` read.
#[derive(Debug)]
pub struct Policy {
    pub matrix: ArcSwap<Matrix>,
    /// Each of this host's protected containers and the chain that holds its rules.
    pub chains: ArcSwap<BTreeMap<String, String>>,
    pub applied: AtomicU64,
    pub failed: AtomicU64,
    /// How long the last change took, from the snapshot to the table in place (µs).
    pub last_apply_us: AtomicU64,
    /// Whether bridged traffic reaches the forward hook (br_netfilter), as last checked.
    pub bridged_filtered: std::sync::atomic::AtomicBool,
    /// The isolated networks, as the config says now (a reload changes them).
    isolated: tokio::sync::watch::Sender<BTreeSet<String>>,
    /// Packets dropped by this host's table, by (from service, to service), since start
    /// (`?`: from an address of no service).
    pub drops: ArcSwap<BTreeMap<(String, String), u64>>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            matrix: Default::default(),
            chains: Default::default(),
            applied: Default::default(),
            failed: Default::default(),
            last_apply_us: Default::default(),
            bridged_filtered: Default::default(),
            isolated: tokio::sync::watch::Sender::new(BTreeSet::new()),
            drops: Default::default(),
        }
    }
}

impl Policy {
    /// A reload's isolated networks: the table follows at once.
    pub fn set_isolated(&self, isolated: BTreeSet<String>) {
        self.isolated.send_if_modified(|old| {
            let changed = *old != isolated;
            *old = isolated;
            changed
        });
    }

    /// Appends `vxgate_policy_*` to `out`.
    pub fn render_metrics(&self, node: &str, out: &mut String) {
        use vxgate_metrics::text::single;
        let m = self.matrix.load();
        single(
            out,
            "vxgate_policy_protected_containers",
            "gauge",
            "This host's containers that not everyone may reach (vxgate.allow_from, isolated networks).",
            m.on_node(node).count(),
        );
        single(
            out,
            "vxgate_policy_applied_total",
            "counter",
            "Times table inet vxgate was replaced (one nft transaction each).",
            self.applied.load(Relaxed),
        );
        single(
            out,
            "vxgate_policy_apply_failures_total",
            "counter",
            "Replacements nft refused or could not run (the last table stays; retried).",
            self.failed.load(Relaxed),
        );
        vxgate_metrics::text::family(
            out,
            "vxgate_policy_dropped_packets_total",
            "counter",
            "Packets this host's table refused, by source service (? for none) and destination service, read every 5 s.",
        );
        for ((from, to), n) in self.drops.load().iter() {
            let _ = std::fmt::Write::write_fmt(
                out,
                format_args!(
                    "vxgate_policy_dropped_packets_total{{from=\"{}\",to=\"{}\"}} {n}\n",
                    vxgate_metrics::text::escape(from),
                    vxgate_metrics::text::escape(to)
                ),
            );
        }
        single(
            out,
            "vxgate_policy_last_apply_seconds",
            "gauge",
            "Time from a registry change to its table in place, last time.",
            self.last_apply_us.load(Relaxed) as f64 / 1e6,
        );
    }
}

/// Starts following the registry: the handle, and the part whose `run` keeps the table.
pub fn start(
    spec: PolicySpec,
    gateways: watch::Receiver<Vec<IpAddr>>,
    registry: &Arc<Registry>,
    shutdown: &Shutdown,
) -> (Arc<Policy>, Part<Error>) {
    let policy = Arc::new(Policy::default());
    policy.set_isolated(spec.isolated.clone());
    let mut part = Part::new();
    let (p, r, s) = (policy.clone(), registry.clone(), shutdown.clone());
    part.spawn(async move { follow(spec, gateways, r, p, s).await });
    (policy, part)
}

/// How soon a failed apply is tried again.
const RETRY: Duration = Duration::from_secs(2);

async fn follow(
    spec: PolicySpec,
    mut own_gateways: watch::Receiver<Vec<IpAddr>>,
    registry: Arc<Registry>,
    policy: Arc<Policy>,
    mut shutdown: Shutdown,
) -> Result<(), Error> {
    let mut snaps = registry.subscribe();
    let mut isolated = policy.isolated.subscribe();
    let mut in_place: Option<String> = None;
    let mut warned_bridge = false;
    let mut counted = Counted::default();
    let mut flows: Option<FlowLog> = None;
    let mut poll = tokio::time::interval(DROPS_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let started = std::time::Instant::now();
        let snap = snaps.borrow_and_update().clone();
        let networks = isolated.borrow_and_update().clone();
        let mut gateways = own_gateways.borrow_and_update().clone();
        gateways.extend(&spec.peer_gateways);
        let m = Matrix::build(&snap, &networks, &gateways);
        report_problems(&policy.matrix.load(), &m);
        let (script, chains) = nft::script(&m, &spec.node);
        let mut retry = false;
        if in_place.as_ref() != Some(&script) {
            let bridged = nft::bridged_traffic_filtered();
            policy.bridged_filtered.store(bridged.is_ok(), Relaxed);
            if let (Err(why), true, false) = (bridged, m.in_use(), warned_bridge) {
                tracing::error!("policy: {why}");
                warned_bridge = true;
            }
            match apply(&script).await {
                Ok(()) => {
                    policy.applied.fetch_add(1, Relaxed);
                    let took = started.elapsed();
                    policy.last_apply_us.store(took.as_micros() as u64, Relaxed);
                    tracing::info!(
                        protected = chains.len(),
                        took_ms = took.as_secs_f64() * 1e3,
                        "policy: table inet vxgate in place"
                    );
                    in_place = Some(script);
                }
                // with no policy in use, a table that cannot be removed (no nft, or not
                // allowed to) is most likely not there: said once at debug level, no retry
                Err(e) if !m.in_use() => {
                    tracing::debug!("policy: no table to remove: {e}");
                    in_place = Some(script);
                }
                Err(e) => {
                    policy.failed.fetch_add(1, Relaxed);
                    tracing::error!("{e}");
                    retry = true;
                }
            }
        }
        let in_use = !chains.is_empty();
        if in_use && flows.is_none() {
            flows = Some(FlowLog::start(&policy, &registry));
        }
        policy.chains.store(Arc::new(chains));
        policy.matrix.store(Arc::new(m));
        loop {
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                changed = snaps.changed() => if changed.is_err() { return Ok(()) } else { break },
                _ = isolated.changed() => break,
                Ok(()) = own_gateways.changed() => break,
                _ = tokio::time::sleep(RETRY), if retry => break,
                _ = poll.tick(), if in_use => {
                    let per_flow = flows.as_ref().is_some_and(FlowLog::reading);
                    read_drops(&policy, &mut counted, per_flow).await
                }
            }
        }
    }
}

/// How often the drop counters are read (and new drops logged: one line per pair and read).
const DROPS_POLL: Duration = Duration::from_secs(5);

/// The drop counters as last read, and the totals since start.
#[derive(Debug, Default)]
struct Counted {
    last: BTreeMap<(String, String), u64>,
    totals: BTreeMap<(String, String), u64>,
}

impl Counted {
    /// Adds a new reading; a counter lower than last time was reset (the table replaced).
    /// The pairs that dropped more since the last reading, and how many.
    fn add(&mut self, now: BTreeMap<(String, String), u64>) -> Vec<((String, String), u64)> {
        let mut new = Vec::new();
        for (pair, n) in &now {
            let before = self.last.get(pair).copied().unwrap_or(0);
            let delta = if *n >= before { n - before } else { *n };
            if delta > 0 {
                *self.totals.entry(pair.clone()).or_default() += delta;
                new.push((pair.clone(), delta));
            }
        }
        self.last = now;
        new
    }
}

/// Reads this host's drop counters (`nft -j list table`), keeps the totals, logs new drops
/// (at debug level when each refused flow is logged on its own).
async fn read_drops(policy: &Policy, counted: &mut Counted, per_flow: bool) {
    let out = tokio::process::Command::new("nft")
        .args(["-j", "list", "table", "inet", "vxgate"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    let Ok(out) = out.map_err(|e| tracing::debug!("policy: reading the counters: {e}")) else {
        return;
    };
    for ((from, to), n) in counted.add(nft::drop_counts(&out.stdout)) {
        if per_flow {
            tracing::debug!(%from, %to, packets = n, "policy: refused traffic from {from} to {to}");
        } else {
            tracing::info!(%from, %to, packets = n, "policy: refused traffic from {from} to {to}");
        }
    }
    policy.drops.store(Arc::new(counted.totals.clone()));
}

/// The reader of refused flows (`nflog`): a thread on the NFLOG socket, stopped when this
/// is dropped. `None` inside when the group could not be bound (said once).
struct FlowLog(Option<Arc<std::sync::atomic::AtomicBool>>);

impl FlowLog {
    fn start(policy: &Arc<Policy>, registry: &Arc<Registry>) -> FlowLog {
        let fd = match nflog::open(nflog::GROUP) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(
                    "policy: refused flows are counted but not logged one by one: cannot bind NFLOG group {} ({e})",
                    nflog::GROUP
                );
                return FlowLog(None);
            }
        };
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, r, s) = (policy.clone(), registry.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name("policy-log".into())
            .spawn(move || {
                nflog::read(fd, &s, |refused, unsaid| {
                    log_refused(&p, &r, refused, unsaid)
                })
            });
        match spawned {
            Ok(_) => FlowLog(Some(stop)),
            Err(e) => {
                tracing::warn!("policy: refused flows are not logged one by one: {e}");
                FlowLog(None)
            }
        }
    }

    fn reading(&self) -> bool {
        self.0.is_some()
    }
}

impl Drop for FlowLog {
    fn drop(&mut self) {
        if let Some(stop) = &self.0 {
            stop.store(true, Relaxed);
        }
    }
}

/// One line for a refused new flow, naming both sides: service, container, address, port.
fn log_refused(policy: &Policy, registry: &Registry, r: &nflog::Refused, unsaid: u64) {
    let m = policy.matrix.load();
    let snap = registry.view();
    let f = &r.flow;
    let from = m
        .services
        .iter()
        .find(|(_, ips)| ips.contains(&f.src))
        .map(|(s, _)| s.as_str())
        .or_else(|| m.ingress.contains(&f.src).then_some("ingress"))
        .unwrap_or("?");
    let from_container = snap.by_ip(f.src).map(|c| c.name.as_str()).unwrap_or("-");
    let to = m
        .protected
        .iter()
        .find(|p| p.container == r.container)
        .and_then(|p| p.service.as_deref())
        .unwrap_or("?");
    let end = |ip: IpAddr, port: u16| match (ip, port) {
        (_, 0) => ip.to_string(),
        (IpAddr::V4(_), p) => format!("{ip}:{p}"),
        (IpAddr::V6(_), p) => format!("[{ip}]:{p}"),
    };
    tracing::info!(
        from = %from,
        from_container = %from_container,
        to = %to,
        to_container = %r.container,
        proto = %f.proto_name(),
        src = %end(f.src, f.sport),
        dst = %end(f.dst, f.dport),
        unlogged_before = unsaid,
        "policy: refused a new flow from {from} to {to}"
    );
}

fn report_problems(old: &Matrix, new: &Matrix) {
    if old.problems != new.problems {
        for p in &new.problems {
            tracing::warn!("policy: {p} (the container is closed until the label is fixed)");
        }
    }
}

/// Runs `nft -f -` on `script`: one transaction.
pub async fn apply(script: &str) -> Result<(), Error> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(Error::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(Error::Spawn)?;
    }
    let out = child.wait_with_output().await.map_err(Error::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&out.stderr);
        Err(Error::Refused(
            text.lines().take(3).collect::<Vec<_>>().join(" / "),
        ))
    }
}

/// This node's gateway addresses ([`gateway_addrs`]), read again every 2 s (Docker makes the
/// bridge the TAP joins, and gives it its address, possibly after the start): one reader for
/// the policy and the etcd node record; it stops with the last receiver.
pub fn follow_gateways(taps: Vec<String>) -> watch::Receiver<Vec<IpAddr>> {
    let (tx, rx) = watch::channel(gateway_addrs(&taps));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tx.closed() => return,
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
            let now = gateway_addrs(&taps);
            tx.send_if_modified(|g| {
                let changed = *g != now;
                *g = now;
                changed
            });
        }
    });
    rx
}

/// This node's addresses on the bridges its TAPs are in: where its ingress and health checks
/// reach other nodes' containers from.
pub fn gateway_addrs(taps: &[String]) -> Vec<IpAddr> {
    let bridges: BTreeSet<String> = taps
        .iter()
        .filter_map(|t| std::fs::read_link(format!("/sys/class/net/{t}/master")).ok())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    if bridges.is_empty() {
        return Vec::new();
    }
    interface_addrs()
        .into_iter()
        .filter(|(name, ip)| bridges.contains(name) && !is_link_local(ip))
        .map(|(_, ip)| ip)
        .collect()
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// Every interface's addresses (`getifaddrs`).
pub fn interface_addrs() -> Vec<(String, IpAddr)> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list that freeifaddrs releases below; the list
    // is only read in between.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string of the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: ifa_addr points to a sockaddr whose family says which one it is.
        let ip = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    Some(IpAddr::from(
                        u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                    ))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    Some(IpAddr::from(sin6.sin6_addr.s6_addr))
                }
                _ => None,
            }
        };
        if let Some(ip) = ip {
            out.push((name, ip));
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_counts_accumulate_across_table_replacements() {
        let pair = |f: &str, t: &str| (f.to_owned(), t.to_owned());
        let mut c = Counted::default();
        let new = c.add(BTreeMap::from([
            (pair("web", "db"), 3),
            (pair("?", "db"), 0),
        ]));
        assert_eq!(new, [(pair("web", "db"), 3)]);
        assert!(
            c.add(BTreeMap::from([(pair("web", "db"), 3)])).is_empty(),
            "nothing new"
        );
        // the table was replaced: its counters start again from 0
        assert_eq!(
            c.add(BTreeMap::from([(pair("web", "db"), 2)])),
            [(pair("web", "db"), 2)]
        );
        assert_eq!(c.totals[&pair("web", "db")], 5);
    }

    #[test]
    fn interfaces_are_listed_with_their_addresses() {
        let all = interface_addrs();
        assert!(
            all.iter().any(|(n, ip)| n == "lo" && ip.is_loopback()),
            "lo with 127.0.0.1 or ::1: {all:?}"
        );
        assert!(gateway_addrs(&["no-such-tap".into()]).is_empty());
    }
}
