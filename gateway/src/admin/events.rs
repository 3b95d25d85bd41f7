//! `GET /v1/events`: the registry's changes as they happen — containers added, removed or
//! changed, health and readiness transitions — as Server-Sent Events. The last [`KEEP`] are
//! kept and sent first to each new stream (oldest first); then each change as it is
//! published. At most [`MAX_STREAMS`] streams at once (more: 503); a stream that falls
//! behind is told how many it missed; every stream ends when the admin drains.

use crate::registry::{Change, Container, Registry, Snapshot};
use crate::shutdown::Shutdown;
use bytes::Bytes;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// Changes kept for new streams.
pub const KEEP: usize = 200;
/// Streams open at once.
pub const MAX_STREAMS: usize = 16;
/// A comment line this often keeps proxies and the browser from timing the stream out.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// One change of the registry.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    pub seq: u64,
    /// Unix time, milliseconds.
    pub time_ms: u64,
    /// `added`, `removed`, `changed`, `health`, `ready` (a container's); `node` (a node
    /// joined or left the shared registry: `container` is empty).
    pub kind: &'static str,
    pub container: String,
    pub service: Option<String>,
    pub node: String,
    /// What changed, as a person reads it.
    pub detail: String,
}

/// When a node of the shared registry was seen: since when it is there, and when it left
/// (its etcd lease ended), Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSeen {
    pub since_ms: u64,
    pub left_ms: Option<u64>,
}

/// The kept changes and the live feed.
#[derive(Debug)]
pub struct Events {
    kept: Mutex<VecDeque<Arc<Event>>>,
    nodes: Mutex<std::collections::BTreeMap<String, NodeSeen>>,
    tx: broadcast::Sender<Arc<Event>>,
    seq: AtomicU64,
    streams: AtomicUsize,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            kept: Mutex::new(VecDeque::with_capacity(KEEP)),
            nodes: Default::default(),
            tx: broadcast::channel(256).0,
            seq: AtomicU64::new(0),
            streams: AtomicUsize::new(0),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Events {
    fn push(&self, kind: &'static str, c: &Container, label: &str, detail: String) {
        self.push_event(Event {
            seq: 0,
            time_ms: 0,
            kind,
            container: c.name.clone(),
            service: c.labels.get(label).cloned(),
            node: c.node.clone(),
            detail,
        });
    }

    fn push_event(&self, mut e: Event) {
        e.seq = self.seq.fetch_add(1, Relaxed) + 1;
        e.time_ms = now_ms();
        let e = Arc::new(e);
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() == KEEP {
            kept.pop_front();
        }
        kept.push_back(e.clone());
        drop(kept);
        let _ = self.tx.send(e);
    }

    /// The kept changes, oldest first.
    pub fn kept(&self) -> Vec<Arc<Event>> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().cloned().collect()
    }

    /// The nodes seen: present ones since when, and those that left, when.
    pub fn nodes(&self) -> std::collections::BTreeMap<String, NodeSeen> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Notes the nodes of `snap` present (at the start: since now).
    fn nodes_present(&self, snap: &Snapshot) {
        let mut seen = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        for name in snap.nodes().keys() {
            seen.entry(name.clone()).or_insert(NodeSeen {
                since_ms: now,
                left_ms: None,
            });
        }
    }

    fn node_event(&self, node: &str, detail: &str) {
        self.push_event(Event {
            seq: 0,
            time_ms: 0,
            kind: "node",
            container: String::new(),
            service: None,
            node: node.to_owned(),
            detail: detail.to_owned(),
        });
    }

    /// Records what changed from `old` to `new`: in the size of the change when `new` was
    /// made from `old` (the registry's snapshots share what a change did not touch).
    pub fn record(&self, old: &Snapshot, new: &Snapshot) {
        if !std::ptr::eq(old.nodes(), new.nodes()) {
            self.record_nodes(old, new);
        }
        let label = new.service_label.as_str();
        let mut removed = Vec::new();
        for change in old.changes_to(new) {
            match change {
                Change::Added(c) => self.push(
                    "added",
                    c,
                    label,
                    format!("{} port {} ({:?})", c.ip, c.port, c.origin).to_lowercase(),
                ),
                Change::Changed { old: o, new: c } => {
                    if o.health != c.health {
                        let d = format!("{:?} -> {:?}", o.health, c.health).to_lowercase();
                        self.push("health", c, label, d);
                    }
                    if o.ready != c.ready {
                        let d = if c.ready { "ready" } else { "not ready" };
                        self.push("ready", c, label, d.into());
                    }
                    if o.ip != c.ip || o.port != c.port || o.labels != c.labels || o.node != c.node
                    {
                        let d = format!("{} port {}, {} labels", c.ip, c.port, c.labels.len());
                        self.push("changed", c, label, d);
                    }
                }
                // after the others, as before
                Change::Removed(o) => removed.push(o),
            }
        }
        for o in removed {
            self.push("removed", o, label, String::new());
        }
    }

    /// Nodes that joined or left from `old` to `new`.
    fn record_nodes(&self, old: &Snapshot, new: &Snapshot) {
        for name in new.nodes().keys().filter(|n| !old.nodes().contains_key(*n)) {
            let now = now_ms();
            let mut seen = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            seen.insert(
                name.clone(),
                NodeSeen {
                    since_ms: now,
                    left_ms: None,
                },
            );
            drop(seen);
            self.node_event(name, "joined");
        }
        for name in old.nodes().keys().filter(|n| !new.nodes().contains_key(*n)) {
            let mut seen = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = seen.get_mut(name) {
                s.left_ms = Some(now_ms());
            }
            drop(seen);
            self.node_event(name, "left (its lease ended)");
        }
    }

    /// Follows the registry until the stop.
    pub async fn follow(&self, registry: &Registry, mut shutdown: Shutdown) {
        let mut snaps = registry.subscribe();
        let mut last = snaps.borrow_and_update().clone();
        self.nodes_present(&last);
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                changed = snaps.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let now = snaps.borrow_and_update().clone();
                    self.record(&last, &now);
                    last = now;
                }
            }
        }
    }

    /// A stream's frames: the kept changes, then the live ones, until `shutdown`; `None`
    /// when [`MAX_STREAMS`] are open.
    pub fn stream(
        self: &Arc<Self>,
        shutdown: Shutdown,
    ) -> Option<
        impl futures_util::Stream<Item = Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>
        + use<>,
    > {
        if self.streams.fetch_add(1, Relaxed) >= MAX_STREAMS {
            self.streams.fetch_sub(1, Relaxed);
            return None;
        }
        let guard = StreamGuard(self.clone());
        let rx = self.tx.subscribe();
        let backlog: VecDeque<Arc<Event>> = self.kept().into();
        let state = (guard, rx, backlog, shutdown);
        Some(futures_util::stream::unfold(
            state,
            |(guard, mut rx, mut backlog, mut shutdown)| async move {
                let text = if let Some(e) = backlog.pop_front() {
                    frame(&e)
                } else {
                    tokio::select! {
                        _ = shutdown.wait() => return None,
                        r = rx.recv() => match r {
                            Ok(e) => frame(&e),
                            Err(broadcast::error::RecvError::Lagged(n)) => {
                                format!("event: lagged\ndata: {{\"missed\":{n}}}\n\n")
                            }
                            Err(broadcast::error::RecvError::Closed) => return None,
                        },
                        () = tokio::time::sleep(KEEPALIVE) => ": keepalive\n\n".to_owned(),
                    }
                };
                let f = hyper::body::Frame::data(Bytes::from(text));
                Some((Ok(f), (guard, rx, backlog, shutdown)))
            },
        ))
    }
}

/// Counts a stream as open while it lives.
struct StreamGuard(Arc<Events>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Relaxed);
    }
}

/// One SSE message: `id`, `event: registry`, the change as JSON.
fn frame(e: &Event) -> String {
    let json = serde_json::to_string(e).unwrap_or_else(|_| "{}".into());
    format!("id: {}\nevent: registry\ndata: {json}\n\n", e.seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Health, Origin};
    use futures_util::StreamExt;
    use std::collections::BTreeMap;

    fn c(name: &str, ip: &str) -> Container {
        Container {
            name: name.into(),
            ip: ip.parse().expect("ip"),
            mac: None,
            port: 80,
            labels: BTreeMap::from([("app".into(), "web".into())]),
            network: "default".into(),
            node: "h1".into(),
            health: Health::Unknown,
            ready: true,
            origin: Origin::Config,
        }
    }

    #[test]
    fn changes_are_recorded_by_kind_and_the_oldest_dropped() {
        let r = Registry::new("app");
        let ev = Events::default();
        let s0 = r.snapshot();
        r.add(c("a", "10.0.0.1")).expect("add");
        r.add(c("b", "10.0.0.2")).expect("add");
        let s1 = r.snapshot();
        ev.record(&s0, &s1);
        r.set_health("a", Health::Unhealthy).expect("health");
        r.remove("b").expect("remove");
        let s2 = r.snapshot();
        ev.record(&s1, &s2);
        let kinds: Vec<(&str, String)> = ev
            .kept()
            .iter()
            .map(|e| (e.kind, e.container.clone()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("added", "a".into()),
                ("added", "b".into()),
                ("health", "a".into()),
                ("removed", "b".into())
            ]
        );
        let h = &ev.kept()[2];
        assert_eq!(h.detail, "unknown -> unhealthy");
        assert_eq!(h.service.as_deref(), Some("web"));
        assert_eq!(h.seq, 3);
        for i in 0..KEEP {
            ev.push(
                "changed",
                &c(&format!("x{i}"), "10.0.0.9"),
                "app",
                String::new(),
            );
        }
        let kept = ev.kept();
        assert_eq!(kept.len(), KEEP);
        assert_eq!(kept[0].container, "x0", "the oldest went first");
    }

    #[tokio::test]
    async fn a_stream_sends_the_kept_then_the_live_and_ends_with_the_drain() {
        let ev = Arc::new(Events::default());
        ev.push("added", &c("a", "10.0.0.1"), "app", "first".into());
        let (stop, shutdown) = Shutdown::new();
        let mut s = Box::pin(ev.stream(shutdown.clone()).expect("a stream"));
        let text = |f: Option<Result<hyper::body::Frame<Bytes>, _>>| {
            let f = f.expect("a frame").expect("ok");
            String::from_utf8(f.into_data().expect("data").to_vec()).expect("utf-8")
        };
        let first = text(s.next().await);
        assert!(
            first.starts_with("id: 1\nevent: registry\ndata: {"),
            "{first}"
        );
        assert!(first.contains("\"detail\":\"first\""), "{first}");
        ev.push("removed", &c("a", "10.0.0.1"), "app", String::new());
        assert!(text(s.next().await).contains("\"kind\":\"removed\""));
        // the limit: MAX_STREAMS at once, one more refused
        let more: Vec<_> = (1..MAX_STREAMS)
            .map(|_| ev.stream(shutdown.clone()).expect("under the limit"))
            .collect();
        assert!(ev.stream(shutdown.clone()).is_none(), "over the limit");
        drop(more);
        assert!(
            ev.stream(shutdown.clone()).is_some(),
            "closed ones free their place"
        );
        stop.send(true).expect("stop");
        assert!(
            tokio::time::timeout(Duration::from_secs(2), s.next())
                .await
                .expect("ends at once")
                .is_none(),
            "the drain ends the stream"
        );
    }
}
