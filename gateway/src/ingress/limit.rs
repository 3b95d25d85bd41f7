//! Per-client limits without a lock: `vxgate.rate` (a rate per service and client address),
//! a client's share of `vxgate.max_in_flight` and of the backend connections, a backend's
//! share of them. Pure: time is a parameter.
//!
//! Both tables are fixed arrays of atomics in which a key owns two slots picked by a keyed
//! hash (a count-min sketch): a key's count is the smaller of its two slots, so two keys
//! that share one slot do not limit each other unless they share both (about one pair in
//! 2^32 with 65,536 slots, and the hash key is drawn at start, so a client cannot aim at
//! another's slots). Memory is bounded whatever the number of client addresses, and a
//! request takes no lock: a take is two atomic adds, a rate check two compare-and-swaps.

use super::routes::Rate;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Slots of each table (a slot is 4 bytes in [`Shares`], 8 in [`Rates`]).
pub const SLOTS: usize = 65_536;

/// A key's two slots in a table of `n`.
fn slots<K: Hash + ?Sized>(hasher: &RandomState, key: &K, n: usize) -> [usize; 2] {
    let h = hasher.hash_one(key);
    let a = (h as u32 as usize) % n;
    let b = ((h >> 32) as usize) % n;
    [a, if b == a { (a + 1) % n } else { b }]
}

/// Token buckets per (service, client) as GCRA. A slot holds a key's tag (24 bits of its
/// hash) and the time its bucket is full again (40 bits of 10 µs units, compared wrapping);
/// a request is let through when that time is at most `per - 1` emission intervals ahead of
/// now. A slot whose bucket is full again holds nothing worth keeping and is taken by the
/// next key that needs one; a key that finds both its slots busy with other keys' partly
/// empty buckets is let through untracked, as a new bucket starts full: a flood of
/// addresses never gets another client refused.
#[derive(Debug)]
pub struct Rates {
    slots: Box<[AtomicU64]>,
    hasher: RandomState,
    epoch: Instant,
}

/// Bits of a slot's time; the rest is the tag.
const TIME_BITS: u32 = 40;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;
/// A slot's time unit.
const TICK_US: u64 = 10;

impl Rates {
    pub fn new(slots: usize, epoch: Instant) -> Rates {
        Rates {
            slots: (0..slots.max(2)).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
            epoch,
        }
    }

    /// Takes a token for `client` of `service` at `now`; `Err` holds how long until one is
    /// there (what `Retry-After` says). A bucket starts full: `per` requests at once.
    pub fn take(
        &self,
        service: &str,
        client: IpAddr,
        rate: Rate,
        now: Instant,
    ) -> Result<(), Duration> {
        let per = u64::from(rate.per.max(1));
        let interval = (rate.every.as_micros() as u64 / TICK_US / per).max(1);
        let burst = interval * (per - 1);
        let now =
            (now.saturating_duration_since(self.epoch).as_micros() as u64 / TICK_US) & TIME_MASK;
        let key = (service, client);
        let h = self.hasher.hash_one(key);
        let tag = ((h >> TIME_BITS) & 0xff_ffff).max(1);
        let [a, b] = slots(&self.hasher, &key, self.slots.len());
        // how far `t` is ahead of now (0: not ahead, the bucket is full)
        let ahead = |t: u64| {
            let d = t.wrapping_sub(now) & TIME_MASK;
            if d >= 1 << (TIME_BITS - 1) { 0 } else { d }
        };
        let pack = |t: u64| (tag << TIME_BITS) | (t & TIME_MASK);
        for i in [a, b] {
            let slot = &self.slots[i];
            let mut v = slot.load(Relaxed);
            while v >> TIME_BITS == tag {
                let lead = ahead(v & TIME_MASK);
                if lead > burst {
                    return Err(Duration::from_micros((lead - burst) * TICK_US));
                }
                match slot.compare_exchange(v, pack(now + lead + interval), Relaxed, Relaxed) {
                    Ok(_) => return Ok(()),
                    Err(seen) => v = seen,
                }
            }
        }
        // a new bucket (full), in a slot whose own bucket is full again
        for i in [a, b] {
            let v = self.slots[i].load(Relaxed);
            if ahead(v & TIME_MASK) == 0
                && self.slots[i]
                    .compare_exchange(v, pack(now + interval), Relaxed, Relaxed)
                    .is_ok()
            {
                return Ok(());
            }
        }
        Ok(())
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

/// Counts held per key, each at most a cap (a client's requests in flight, a backend's
/// connections).
#[derive(Debug)]
pub struct Shares<K: ?Sized> {
    slots: Box<[AtomicU32]>,
    hasher: RandomState,
    key: std::marker::PhantomData<fn(&K)>,
}

impl<K: Hash + ?Sized> Default for Shares<K> {
    fn default() -> Self {
        Shares::new(SLOTS)
    }
}

impl<K: Hash + ?Sized> Shares<K> {
    pub fn new(slots: usize) -> Shares<K> {
        Shares {
            slots: (0..slots.max(2)).map(|_| AtomicU32::new(0)).collect(),
            hasher: RandomState::new(),
            key: std::marker::PhantomData,
        }
    }

    /// One count for `key` if it holds fewer than `cap`; given back when the [`Share`] is
    /// dropped. Two takes racing for the last place may both be refused, never both let in.
    pub fn take(self: &Arc<Self>, key: &K, cap: usize) -> Option<Share<K>> {
        let cap = u32::try_from(cap).unwrap_or(u32::MAX);
        let slots = slots(&self.hasher, key, self.slots.len());
        let after = slots.map(|i| self.slots[i].fetch_add(1, Relaxed).saturating_add(1));
        let share = Share {
            shares: self.clone(),
            slots,
        };
        (after[0].min(after[1]) <= cap).then_some(share)
    }

    /// What `key` holds now.
    pub fn held(&self, key: &K) -> usize {
        let [a, b] = slots(&self.hasher, key, self.slots.len());
        self.slots[a].load(Relaxed).min(self.slots[b].load(Relaxed)) as usize
    }

    /// Slots holding something (at most twice the keys that do).
    pub fn busy_slots(&self) -> usize {
        self.slots.iter().filter(|s| s.load(Relaxed) > 0).count()
    }
}

/// One count held by a key; given back when dropped.
#[derive(Debug)]
pub struct Share<K: ?Sized> {
    shares: Arc<Shares<K>>,
    slots: [usize; 2],
}

impl<K: ?Sized> Drop for Share<K> {
    fn drop(&mut self) {
        for i in self.slots {
            self.shares.slots[i].fetch_sub(1, Relaxed);
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
        let one = s.take(&ip(1), 2).expect("1st");
        let two = s.take(&ip(1), 2).expect("2nd");
        assert!(s.take(&ip(1), 2).is_none(), "a third over a cap of 2");
        let other = s.take(&ip(2), 2).expect("another key has its own count");
        assert_eq!((s.held(&ip(1)), s.held(&ip(2))), (2, 1));
        drop(one);
        let again = s.take(&ip(1), 2).expect("a count given back is free again");
        drop((two, again, other));
        assert_eq!(s.busy_slots(), 0, "every count given back");
        assert!(s.take(&ip(3), 0).is_none() && s.busy_slots() == 0);
        assert_eq!(
            (client_share(3), client_share(1), client_share(10)),
            (1, 1, 5)
        );
    }

    #[test]
    fn keys_sharing_a_slot_do_not_limit_each_other() {
        // 1,000 keys holding one count each: 2,000 busy slots of 65,536, so a key meets
        // another in one slot about 3 % of the time and in both about 0.1 %: a few hundred
        // keys share a slot and are not refused for it
        let s: Arc<Shares<u32>> = Arc::default();
        let held: Vec<_> = (0..1000).filter_map(|k| s.take(&k, 1)).collect();
        assert!(
            held.len() >= 990,
            "{} of 1000 keys got their one count",
            held.len()
        );
        // a control: one table slot pair shared by every key limits them together
        let tiny: Arc<Shares<u32>> = Arc::new(Shares::new(2));
        let first = tiny.take(&1, 1).expect("first");
        assert!(tiny.take(&2, 1).is_none(), "two slots, every key in both");
        drop(first);
    }

    #[test]
    fn many_threads_never_hold_more_than_the_cap() {
        let s: Arc<Shares<u8>> = Arc::default();
        let peak = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (s, peak) = (s.clone(), peak.clone());
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        if let Some(share) = s.take(&7, 3) {
                            peak.fetch_max(s.held(&7) as u32, Relaxed);
                            drop(share);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("join");
        }
        assert!(peak.load(Relaxed) >= 1, "some takes went through");
        assert_eq!(s.held(&7), 0);
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    fn rate(per: u32) -> Rate {
        Rate {
            per,
            every: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_bucket_allows_its_rate_then_says_when_to_retry() {
        let t0 = Instant::now();
        let r = Rates::new(SLOTS, t0);
        for _ in 0..5 {
            assert_eq!(r.take("api", ip(1), rate(5), t0), Ok(()));
        }
        let wait = r.take("api", ip(1), rate(5), t0).expect_err("a sixth");
        assert!(
            wait > Duration::from_millis(190) && wait <= Duration::from_millis(200),
            "one token comes every 200 ms: {wait:?}"
        );
        assert!(r.take("web", ip(1), rate(5), t0).is_ok(), "per service");
        assert!(r.take("api", ip(2), rate(5), t0).is_ok(), "per client");
        // a token every 200 ms
        let t1 = t0 + Duration::from_millis(201);
        assert!(r.take("api", ip(1), rate(5), t1).is_ok());
        assert!(r.take("api", ip(1), rate(5), t1).is_err());
        // after a long pause the bucket is full again, no more
        let later = t0 + Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(r.take("api", ip(1), rate(5), later), Ok(()));
        }
        assert!(r.take("api", ip(1), rate(5), later).is_err());
    }

    #[test]
    fn a_flood_of_addresses_takes_no_memory_and_leaves_busy_clients_limited() {
        let t0 = Instant::now();
        let r = Rates::new(SLOTS, t0);
        assert!(r.take("api", ip(7), rate(2), t0).is_ok());
        assert!(r.take("api", ip(7), rate(2), t0).is_ok());
        let mut fresh_refused = 0;
        for n in 1000..101_000 {
            if r.take("api", ip(n), rate(2), t0).is_err() {
                fresh_refused += 1;
            }
            if n % 50 == 0 {
                assert!(r.take("api", ip(7), rate(2), t0).is_err(), "at {n}");
            }
        }
        // 100,000 addresses in 65,536 slots: a newcomer never pays for the others
        assert_eq!(fresh_refused, 0, "fresh addresses refused");
    }
}
