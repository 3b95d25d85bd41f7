//! Per-client rate limits (`vxgate.rate`): a token bucket per (service, client address),
//! in a table of bounded size. Pure: time is a parameter.
//!
//! A bucket holds up to `per` tokens and refills at `per` every `every`; a request takes one,
//! or is refused with the time until the next token. When the table is full, a bucket that
//! was not used since the clock hand last passed it is evicted (CLOCK, O(1) amortised; a new
//! bucket starts cold, so addresses seen once go first), so a flood of client addresses
//! costs bounded memory and does not make the table forget the clients that keep coming.

use super::routes::Rate;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Buckets kept at most (each about 80 bytes with its key).
pub const CAPACITY: usize = 65_536;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// Used since the clock hand last passed.
    used: bool,
}

type Key = (Arc<str>, IpAddr);

#[derive(Debug)]
pub struct Buckets {
    map: HashMap<Key, Bucket>,
    /// Keys in the order the hand visits them.
    ring: Vec<Key>,
    hand: usize,
    capacity: usize,
}

impl Buckets {
    pub fn new(capacity: usize) -> Buckets {
        Buckets {
            map: HashMap::new(),
            ring: Vec::new(),
            hand: 0,
            capacity: capacity.max(1),
        }
    }

    /// Takes a token for `client` of `service` at `now`; `Err` holds how long until one is
    /// there (what `Retry-After` says).
    pub fn take(
        &mut self,
        service: &Arc<str>,
        client: IpAddr,
        rate: Rate,
        now: Instant,
    ) -> Result<(), Duration> {
        let per_token = rate.every.as_secs_f64() / f64::from(rate.per);
        let cap = f64::from(rate.per);
        let key = (service.clone(), client);
        if !self.map.contains_key(&key) {
            if self.map.len() >= self.capacity {
                self.evict();
            }
            self.ring.push(key.clone());
            self.map.insert(
                key.clone(),
                Bucket {
                    tokens: cap,
                    last: now,
                    // cold until used again: a one-request address goes first
                    used: false,
                },
            );
        }
        let Some(b) = self.map.get_mut(&key) else {
            return Ok(());
        };
        if b.last != now || b.tokens < cap {
            b.used = true; // seen before: keep it over the one-request addresses
        }
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed / per_token).min(cap);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) * per_token))
        }
    }

    /// Removes one bucket not used since the hand last passed it.
    fn evict(&mut self) {
        loop {
            if self.ring.is_empty() {
                return;
            }
            self.hand %= self.ring.len();
            let key = &self.ring[self.hand];
            match self.map.get_mut(key) {
                Some(b) if b.used => {
                    b.used = false;
                    self.hand += 1;
                }
                _ => {
                    let key = self.ring.swap_remove(self.hand);
                    self.map.remove(&key);
                    return;
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The address a client is counted by: an IPv4 address as it is, an IPv6 address cut to its
/// first `v6_prefix` bits (`ingress.ipv6_client_prefix`, default /64: one host has a whole
/// /64 to pick addresses from, so counting single addresses would count nothing).
pub fn client_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u32::from(v6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

const SHARDS: usize = 16;

/// Counts held per key (a client, a service and client), each at most a cap: what one key
/// holds now, taken by [`Shares::take`] and given back when its [`Share`] is dropped. A key
/// is forgotten when its count is back to 0, so the tables hold only what is in use.
/// Sharded by the key's hash: two requests of different clients rarely share a lock.
#[derive(Debug)]
pub struct Shares<K> {
    shards: Vec<std::sync::Mutex<HashMap<K, usize>>>,
}

impl<K: std::hash::Hash + Eq + Clone> Default for Shares<K> {
    fn default() -> Self {
        Shares {
            shards: (0..SHARDS).map(|_| Default::default()).collect(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Shares<K> {
    fn shard(&self, key: &K) -> &std::sync::Mutex<HashMap<K, usize>> {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one(key);
        &self.shards[(h as usize) % SHARDS]
    }

    /// One more for `key`, unless it holds `cap` already.
    pub fn take(self: &Arc<Self>, key: K, cap: usize) -> Option<Share<K>> {
        let mut m = self.shard(&key).lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(key.clone()).or_insert(0);
        if *n >= cap {
            if *n == 0 {
                m.remove(&key);
            }
            return None;
        }
        *n += 1;
        drop(m);
        Some(Share {
            shares: self.clone(),
            key: Some(key),
        })
    }

    /// What `key` holds now.
    pub fn held(&self, key: &K) -> usize {
        let m = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        m.get(key).copied().unwrap_or(0)
    }

    /// Keys holding something.
    pub fn keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

/// One count held by a key; given back when dropped.
#[derive(Debug)]
pub struct Share<K: std::hash::Hash + Eq + Clone> {
    shares: Arc<Shares<K>>,
    key: Option<K>,
}

impl<K: std::hash::Hash + Eq + Clone> Drop for Share<K> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut m = self
            .shares
            .shard(&key)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&key);
            }
        }
    }
}

/// A client's share of a limit of `max`: half of it, at least one (so that one client
/// alone can never fill it).
pub fn client_share(max: usize) -> usize {
    (max / 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_by_prefix_ipv4_by_address() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("v6");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("v6");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("v6");
        assert_eq!(client_key(a, 64), client_key(b, 64));
        assert_ne!(client_key(a, 64), client_key(c, 64));
        assert_eq!(client_key(a, 56), client_key(c, 56));
        assert_eq!(client_key(a, 128), a);
        assert_eq!(
            client_key(a, 64),
            "2001:db8:1:2::".parse::<IpAddr>().expect("v6")
        );
        let v4: IpAddr = "192.0.2.7".parse().expect("v4");
        assert_eq!(client_key(v4, 64), v4);
        assert_ne!(client_key(v4, 64), client_key(ip(7), 64));
    }

    #[test]
    fn shares_cap_each_key_and_forget_it_when_given_back() {
        let s: Arc<Shares<IpAddr>> = Arc::default();
        let one = s.take(ip(1), 2).expect("1st");
        let two = s.take(ip(1), 2).expect("2nd");
        assert!(s.take(ip(1), 2).is_none(), "a third over a cap of 2");
        let other = s.take(ip(2), 2).expect("another key has its own count");
        assert_eq!((s.held(&ip(1)), s.held(&ip(2))), (2, 1));
        drop(one);
        let again = s.take(ip(1), 2).expect("a count given back is free again");
        drop((two, again, other));
        assert_eq!(s.keys(), 0, "keys at 0 are forgotten");
        assert!(s.take(ip(3), 0).is_none() && s.keys() == 0);
        assert_eq!(
            (client_share(3), client_share(1), client_share(10)),
            (1, 1, 5)
        );
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn a_bucket_allows_its_rate_then_says_when_to_retry() {
        let mut b = Buckets::new(16);
        let svc: Arc<str> = Arc::from("api");
        let rate = Rate {
            per: 5,
            every: Duration::from_secs(1),
        };
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(b.take(&svc, ip(1), rate, t0), Ok(()));
        }
        let wait = b
            .take(&svc, ip(1), rate, t0)
            .expect_err("the 6th is refused");
        assert!((wait.as_secs_f64() - 0.2).abs() < 1e-6, "{wait:?}");
        // another client and another service have buckets of their own
        assert_eq!(b.take(&svc, ip(2), rate, t0), Ok(()));
        assert_eq!(b.take(&Arc::from("web"), ip(1), rate, t0), Ok(()));
        // refilled at 5/s: one token after 200 ms, never more than 5
        assert_eq!(
            b.take(&svc, ip(1), rate, t0 + Duration::from_millis(200)),
            Ok(())
        );
        assert!(
            b.take(&svc, ip(1), rate, t0 + Duration::from_millis(200))
                .is_err()
        );
        let later = t0 + Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(b.take(&svc, ip(1), rate, later), Ok(()));
        }
        assert!(b.take(&svc, ip(1), rate, later).is_err());
    }

    #[test]
    fn a_flood_of_addresses_stays_within_capacity_and_keeps_busy_clients() {
        let mut b = Buckets::new(100);
        let svc: Arc<str> = Arc::from("api");
        let rate = Rate {
            per: 2,
            every: Duration::from_secs(1),
        };
        let t0 = Instant::now();
        // a regular client uses its two tokens
        assert!(b.take(&svc, ip(7), rate, t0).is_ok());
        assert!(b.take(&svc, ip(7), rate, t0).is_ok());
        for n in 1000..11_000 {
            let _ = b.take(&svc, ip(n), rate, t0);
            if n % 50 == 0 {
                // the regular client keeps coming back: it is never evicted, so its empty
                // bucket is remembered and it stays limited
                assert!(b.take(&svc, ip(7), rate, t0).is_err(), "at {n}");
            }
            assert!(b.len() <= 100);
        }
        assert_eq!(b.len(), 100);
    }
}
