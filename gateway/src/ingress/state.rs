//! The request path's shared state, without a lock: each service's round-robin turn and
//! requests in flight (held by its routes and carried across route table rebuilds), and the
//! request counters (one row per worker thread, summed when `/metrics` is read).

use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// One service's state on the request path. The round-robin turn is shared by the workers
/// (per-worker cursors were tried: four new connections landing on two workers could go a,
/// b, a, a); taking it is one atomic add.
#[derive(Debug, Default)]
pub struct ServiceState {
    turn: AtomicUsize,
    /// Requests in flight to the service (`vxgate.max_in_flight`).
    in_flight: Arc<AtomicUsize>,
    /// Requests in flight per backend (`least_requests`), by container name: swapped whole
    /// when the service's containers change, each counter kept while its container is.
    loads: ArcSwap<HashMap<String, Arc<AtomicUsize>>>,
}

/// The state is not part of what a route is (route tables compare equal without it).
impl PartialEq for ServiceState {
    fn eq(&self, _: &ServiceState) -> bool {
        true
    }
}

impl Eq for ServiceState {}

/// A request counted in flight until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl ServiceState {
    /// This request's round-robin turn.
    pub fn next_turn(&self) -> usize {
        self.turn.fetch_add(1, Relaxed)
    }

    /// A place among the service's `max` requests in flight, or `None` when they are taken.
    pub fn enter(&self, max: usize) -> Option<InFlight> {
        let guard = InFlight(self.in_flight.clone());
        (self.in_flight.fetch_add(1, Relaxed) < max).then_some(guard)
    }

    /// Requests in flight to the service now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    /// The containers the service has now (called when the route table is rebuilt).
    pub fn set_backends<'a>(&self, names: impl Iterator<Item = &'a str>) {
        let old = self.loads.load();
        let new: HashMap<String, Arc<AtomicUsize>> = names
            .map(|n| (n.to_owned(), old.get(n).cloned().unwrap_or_default()))
            .collect();
        if new.len() != old.len() || new.keys().any(|k| !old.contains_key(k)) {
            self.loads.store(Arc::new(new));
        }
    }

    /// Requests in flight to the backend `name` (0 for one not known yet).
    pub fn load(&self, name: &str) -> usize {
        self.loads.load().get(name).map_or(0, |c| c.load(Relaxed))
    }

    /// Counts a request on the backend `name` until dropped (not counted for a container the
    /// table does not know yet).
    pub fn on_backend(&self, name: &str) -> Option<InFlight> {
        let counter = self.loads.load().get(name)?.clone();
        counter.fetch_add(1, Relaxed);
        Some(InFlight(counter))
    }
}

/// One service's request counters: a row per worker, a column per status class; and the
/// time its backends took to answer, a histogram per worker (no cache line shared between
/// workers on the request path), summed when read.
#[derive(Debug)]
pub struct ServiceCounts {
    rows: Box<[PerWorker<[AtomicU64; 6]>]>,
    latency: Box<[PerWorker<vxgate_metrics::Histogram>]>,
}

/// A worker's own copy of a counter, alone on its cache lines (128 bytes: x86 prefetches
/// lines in pairs): two workers counting side by side never write the same line. Rows of
/// 48 bytes packed together had two workers' counts on one line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct PerWorker<T>(pub T);

impl<T> std::ops::Deref for PerWorker<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

type Rows = Arc<ServiceCounts>;

/// Requests by service and status class (index 1-5 for 1xx-5xx), a row per worker thread.
/// A request adds to its own thread's row of its service's counters: one atomic add, no
/// lock; a service's counters are made at its first request (the map is swapped whole, so
/// readers never lock either).
#[derive(Debug)]
pub struct RequestCounts {
    workers: usize,
    by_service: ArcSwap<HashMap<Arc<str>, Rows>>,
}

impl Default for RequestCounts {
    fn default() -> Self {
        RequestCounts::new(1)
    }
}

impl RequestCounts {
    pub fn new(workers: usize) -> RequestCounts {
        RequestCounts {
            workers: workers.max(1),
            by_service: Default::default(),
        }
    }

    /// Counts one request of `service` answered with `status` on `worker`, `took` from its
    /// head to the response's head.
    pub fn count(
        &self,
        worker: usize,
        service: &str,
        status: http::StatusCode,
        took: std::time::Duration,
    ) {
        let class = usize::from(status.as_u16() / 100).min(5);
        let row = worker % self.workers;
        let add = |c: &ServiceCounts| {
            c.rows[row][class].fetch_add(1, Relaxed);
            c.latency[row].observe(took);
        };
        if let Some(c) = self.by_service.load().get(service) {
            add(c);
            return;
        }
        let name: Arc<str> = Arc::from(service);
        let workers = self.workers;
        self.by_service.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.entry(name.clone()).or_insert_with(|| {
                Arc::new(ServiceCounts {
                    rows: (0..workers).map(|_| Default::default()).collect(),
                    latency: (0..workers).map(|_| Default::default()).collect(),
                })
            });
            m
        });
        if let Some(c) = self.by_service.load().get(service) {
            add(c);
        }
    }

    /// Each service's latency histogram, summed over the workers, by name.
    pub fn latencies(&self) -> BTreeMap<String, vxgate_metrics::Histogram> {
        self.by_service
            .load()
            .iter()
            .map(|(k, v)| {
                let sum = vxgate_metrics::Histogram::default();
                v.latency.iter().for_each(|h| sum.add(h));
                (k.to_string(), sum)
            })
            .collect()
    }

    /// Requests by service and status class, summed over the workers.
    pub fn sum(&self) -> BTreeMap<String, [u64; 6]> {
        let mut all = BTreeMap::new();
        for (service, rows) in self.by_service.load().iter() {
            let mut sum = [0u64; 6];
            for row in rows.rows.iter() {
                for (s, n) in sum.iter_mut().zip(row.iter()) {
                    *s += n.load(Relaxed);
                }
            }
            all.insert(service.to_string(), sum);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_admits_its_max_in_flight_and_frees_places_on_drop() {
        let s = ServiceState::default();
        let a = s.enter(2).expect("1st");
        let b = s.enter(2).expect("2nd");
        assert!(s.enter(2).is_none(), "a third over 2");
        assert_eq!(s.in_flight(), 2, "the refused one is not counted");
        drop(a);
        let c = s.enter(2).expect("a freed place");
        drop((b, c));
        assert_eq!(s.in_flight(), 0);
        assert_eq!((s.next_turn(), s.next_turn()), (0, 1));
    }

    #[test]
    fn backend_loads_follow_the_containers_and_keep_their_counts() {
        let s = ServiceState::default();
        s.set_backends(["a", "b"].into_iter());
        let on_a = s.on_backend("a").expect("a known");
        assert_eq!((s.load("a"), s.load("b")), (1, 0));
        s.set_backends(["a", "c"].into_iter());
        assert_eq!(s.load("a"), 1, "a's count kept across the change");
        assert!(s.on_backend("b").is_none() && s.load("b") == 0, "b is gone");
        drop(on_a);
        assert_eq!(s.load("a"), 0);
    }

    #[test]
    fn requests_are_counted_per_worker_and_summed() {
        let c = RequestCounts::new(2);
        let ms = std::time::Duration::from_millis;
        c.count(0, "web", http::StatusCode::OK, ms(1));
        c.count(1, "web", http::StatusCode::OK, ms(2));
        c.count(3, "web", http::StatusCode::BAD_GATEWAY, ms(3));
        c.count(0, "-", http::StatusCode::NOT_FOUND, ms(4));
        let sum = c.sum();
        assert_eq!(sum["web"], [0, 0, 2, 0, 0, 1]);
        assert_eq!(sum["-"], [0, 0, 0, 0, 1, 0]);
        assert_eq!(sum.len(), 2);
        let mut text = String::new();
        c.latencies()["web"].render("t", "", &mut text);
        assert!(text.contains("t_count 3"), "{text}");
    }
}
