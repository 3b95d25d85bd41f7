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

#[cfg(test)]
mod tests {
    use super::*;

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
