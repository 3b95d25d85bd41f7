//! Response-rate limiting (RRL) for UDP clients outside `recursion_from`, like BIND's and
//! Knot's: each client network (an IPv4 /24, an IPv6 /56) has a token bucket of `rate`
//! responses per second. Over it, every second response "slips" as a TC answer (header and
//! question only, no bigger than the query, so a legitimate client retries over TCP) and the
//! others are dropped, so a spoofed source cannot turn the server into a reflector.
//!
//! Pure: the caller passes `now`. Memory is bounded by [`MAX_NETWORKS`] buckets; when they
//! are all in use and none is idle, a new network only gets slips.
//!
//! The buckets are split into shards by network (up to [`SHARDS`], each its own lock), so
//! workers answering different clients rarely meet on a lock; and a full shard looks for
//! idle buckets at most every [`SWEEP_EVERY`], so a flood of spoofed new networks costs one
//! hash lookup each, not a sweep of the whole table each.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Client networks tracked at once.
pub const MAX_NETWORKS: usize = 65_536;
/// Shards at most (1,024 networks each at [`MAX_NETWORKS`]).
pub const SHARDS: usize = 64;
/// How often a full shard looks for idle buckets to drop.
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Send a TC answer instead (header and question).
    Slip,
    Drop,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    over: u32,
}

#[derive(Debug, Default)]
struct Shard {
    buckets: HashMap<u64, Bucket>,
    swept: Option<Instant>,
}

#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    per_shard: usize,
    shards: Box<[Mutex<Shard>]>,
    /// Sweeps for idle buckets done (a full table under a flood: at most one per shard and
    /// [`SWEEP_EVERY`]).
    pub sweeps: AtomicU64,
}

/// The network a client belongs to, tagged by family.
fn network(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => u64::from(u32::from(v4) >> 8),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u64::from(u32::from(v4) >> 8),
            None => (1 << 63) | (u128::from(v6) >> 72) as u64,
        },
    }
}

impl RateLimiter {
    /// `rate` responses per second per client network (at least 1).
    pub fn new(rate: u32) -> RateLimiter {
        Self::with_capacity(rate, MAX_NETWORKS)
    }

    /// At most `max_networks` networks, in shards of 1,024 or more (one shard below that).
    pub fn with_capacity(rate: u32, max_networks: usize) -> RateLimiter {
        let max_networks = max_networks.max(1);
        let shards = (max_networks / 1024).clamp(1, SHARDS);
        RateLimiter {
            rate: f64::from(rate.max(1)),
            per_shard: max_networks.div_ceil(shards),
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            sweeps: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: u64) -> &Mutex<Shard> {
        // Fibonacci hashing: neighbouring networks land on different shards
        let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        &self.shards[h as usize % self.shards.len()]
    }

    pub fn check(&self, client: IpAddr, now: Instant) -> Verdict {
        let key = network(client);
        let mut shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        if !shard.buckets.contains_key(&key) && shard.buckets.len() >= self.per_shard {
            let due = shard
                .swept
                .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY);
            if due {
                // a bucket idle for a second is full again: the same as no bucket
                shard
                    .buckets
                    .retain(|_, b| now.saturating_duration_since(b.last) < Duration::from_secs(1));
                shard.swept = Some(now);
                self.sweeps.fetch_add(1, Relaxed);
            }
            if shard.buckets.len() >= self.per_shard {
                return Verdict::Slip;
            }
        }
        let rate = self.rate;
        let b = shard.buckets.entry(key).or_insert(Bucket {
            tokens: rate,
            last: now,
            over: 0,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(rate);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            b.over = 0;
            return Verdict::Send;
        }
        b.over = b.over.wrapping_add(1);
        if b.over % 2 == 1 {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }

    /// Networks tracked now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.buckets.len()).unwrap_or(0))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_network_gets_its_rate_then_alternating_slips_and_drops() {
        let rl = RateLimiter::new(10);
        let t = Instant::now();
        let verdicts: Vec<Verdict> = (0..14).map(|_| rl.check(ip("192.0.2.1"), t)).collect();
        assert!(verdicts[..10].iter().all(|v| *v == Verdict::Send));
        assert_eq!(
            &verdicts[10..],
            &[Verdict::Slip, Verdict::Drop, Verdict::Slip, Verdict::Drop]
        );
        // the same /24 shares the bucket; another /24 has its own
        assert_ne!(rl.check(ip("192.0.2.200"), t), Verdict::Send);
        assert_eq!(rl.check(ip("192.0.3.1"), t), Verdict::Send);
        // tokens come back at the rate: 0.5 s later, 5 more
        let later = t + Duration::from_millis(500);
        let sent = (0..10)
            .filter(|_| rl.check(ip("192.0.2.1"), later) == Verdict::Send)
            .count();
        assert_eq!(sent, 5);
    }

    #[test]
    fn ipv6_clients_are_grouped_by_56_and_mapped_v4_as_v4() {
        let rl = RateLimiter::new(1);
        let t = Instant::now();
        assert_eq!(rl.check(ip("2001:db8:0:1::1"), t), Verdict::Send);
        assert_ne!(
            rl.check(ip("2001:db8:0:2::1"), t),
            Verdict::Send,
            "same /56"
        );
        assert_eq!(
            rl.check(ip("2001:db8:0:100::1"), t),
            Verdict::Send,
            "next /56"
        );
        assert_eq!(rl.check(ip("::ffff:192.0.2.1"), t), Verdict::Send);
        assert_ne!(rl.check(ip("192.0.2.9"), t), Verdict::Send, "same /24");
    }

    #[test]
    fn memory_is_bounded_and_idle_buckets_make_room() {
        let rl = RateLimiter::with_capacity(5, 100);
        let t = Instant::now();
        for i in 0..100u32 {
            let a = std::net::Ipv4Addr::from(0x0a00_0000 | (i << 8));
            assert_eq!(rl.check(IpAddr::V4(a), t), Verdict::Send);
        }
        assert_eq!(rl.len(), 100);
        // full and none idle: a new network only slips, and is not tracked
        assert_eq!(rl.check(ip("203.0.113.1"), t), Verdict::Slip);
        assert_eq!(rl.len(), 100);
        // a second later every bucket is idle: room again
        let later = t + Duration::from_secs(2);
        assert_eq!(rl.check(ip("203.0.113.1"), later), Verdict::Send);
        assert_eq!(rl.len(), 1);
    }

    #[test]
    fn a_flood_of_new_networks_into_a_full_table_sweeps_it_once_per_interval() {
        let rl = RateLimiter::new(5);
        assert_eq!(rl.shards.len(), SHARDS);
        let t = Instant::now();
        let net = |i: u32| IpAddr::V4(std::net::Ipv4Addr::from(i << 8));
        for i in 0..(2 * MAX_NETWORKS as u32) {
            let _ = rl.check(net(i), t);
        }
        assert!(rl.len() <= MAX_NETWORKS, "bounded: {}", rl.len());
        assert!(
            rl.len() > MAX_NETWORKS * 9 / 10,
            "the shards fill evenly: {} of {MAX_NETWORKS}",
            rl.len()
        );
        let sweeps = rl.sweeps.load(Relaxed);
        assert!(
            sweeps <= SHARDS as u64,
            "{sweeps} sweeps for 65,536 new networks at one instant (at most one per shard)"
        );
        // a network tracked before the flood keeps its bucket and its rate
        let rl = RateLimiter::with_capacity(5, 4096);
        let old = ip("198.51.100.7");
        assert_eq!(rl.check(old, t), Verdict::Send);
        for i in 0..20_000u32 {
            let _ = rl.check(net(i), t);
        }
        assert_eq!(
            rl.check(old, t),
            Verdict::Send,
            "its bucket survived the flood"
        );
        let later = t + SWEEP_EVERY;
        let _ = rl.check(net(99_999), later);
        assert!(
            rl.sweeps.load(Relaxed) <= 8,
            "{} sweeps",
            rl.sweeps.load(Relaxed)
        );
    }
}
