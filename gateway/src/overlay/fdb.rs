//! The forwarding database of one overlay network: inner MAC → remote VTEP.
//!
//! Entries are learned from decapsulated frames (inner source MAC, outer source VTEP) and
//! expire `aging` after they were last seen; static entries come from the registry
//! (containers with a known MAC on a known remote host) and never expire. A static entry wins
//! over learning: a frame claiming a static MAC from another VTEP does not move it.
//!
//! **No global lock.** Every datapath thread looks up and learns at once:
//! - static entries are a read-only map swapped whole when the registry changes
//!   ([`ArcSwap`]: a load is a few atomic operations, never a wait);
//! - learned entries sit in [`SHARDS`] independently locked maps, the shard picked by a keyed
//!   hash of the MAC. A lookup and the refresh of a known MAC take only the read side of one
//!   shard (the refresh is an atomic store, and only when the time moved by
//!   [`REFRESH`]), so frames of known flows never wait for each other. Only a new or moved
//!   MAC takes one shard's write side.
//!
//! **When full** (`capacity` entries, static ones counted first), a newcomer is refused in
//! O(1): it is not learned (counted by the caller) and frames to it are flooded, as the Linux
//! kernel's vxlan does when its `max` is reached. Existing entries are never evicted for a
//! newcomer, so a flood of random source MACs cannot push out the hosts that are talking.
//! Expired entries make room when swept: by [`Fdb::expire`] (once a second from the
//! switch's tick) and, when the table is full, by the first refused newcomer of each second.
//!
//! Each shard is allocated at start with room for its share, so learning does not allocate
//! on the packet path.

use crate::wire::ethernet::MacAddr;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// Default number of entries per network.
pub const DEFAULT_CAPACITY: usize = 16 * 1024;

/// Independently locked parts of the learned table.
pub const SHARDS: usize = 16;

/// A known MAC's last-seen time is stored again only when it moved by this much: a frame of
/// a known flow then usually only reads the shard (the kernel's vxlan does the same per jiffy).
pub const REFRESH: Duration = Duration::from_millis(100);

/// How often a full table may sweep for a newcomer.
const FULL_SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Learned { last_seen: Instant },
    Static,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub vtep: SocketAddr,
    pub kind: Kind,
}

/// What learning did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    New,
    Refreshed,
    /// The MAC was behind another VTEP and now is behind this one.
    Moved,
    /// A static entry names this MAC; unchanged.
    Static,
    /// The table is full; not learned.
    Full,
}

/// A learned entry: its VTEP, and when it was last seen (ms since the table's epoch).
#[derive(Debug)]
struct Slot {
    vtep: SocketAddr,
    seen: AtomicU64,
}

type Shard = HashMap<MacAddr, Slot>;

#[derive(Debug)]
pub struct Fdb {
    statics: ArcSwap<HashMap<MacAddr, SocketAddr>>,
    shards: Box<[RwLock<Shard>]>,
    /// Learned entries in all shards.
    learned: AtomicUsize,
    capacity: usize,
    aging_ms: u64,
    /// Times are stored as milliseconds since this instant (a day before the table was made,
    /// so instants taken just before it still count).
    epoch: Instant,
    /// When a full table last swept for a newcomer (ms since `epoch`, +1; 0: never).
    full_sweep: AtomicU64,
    /// Keys the shard choice, so a sender cannot aim every MAC at one shard.
    seed: u64,
}

impl Fdb {
    pub fn new(capacity: usize, aging: Duration) -> Fdb {
        let now = Instant::now();
        let share = capacity.div_ceil(SHARDS);
        Fdb {
            statics: ArcSwap::from_pointee(HashMap::new()),
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashMap::with_capacity(share)))
                .collect(),
            learned: AtomicUsize::new(0),
            capacity,
            aging_ms: u64::try_from(aging.as_millis()).unwrap_or(u64::MAX),
            epoch: now.checked_sub(Duration::from_secs(86_400)).unwrap_or(now),
            full_sweep: AtomicU64::new(0),
            seed: std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64),
        }
    }

    fn ms(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn alive(&self, seen: u64, now: u64) -> bool {
        now.saturating_sub(seen) < self.aging_ms
    }

    fn shard_of(&self, mac: MacAddr) -> usize {
        let mut k = [0u8; 8];
        k[..6].copy_from_slice(&mac.0);
        let h = (u64::from_le_bytes(k) ^ self.seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> 32) as usize % SHARDS
    }

    // A panic while a shard was locked cannot leave a map half-updated in a way that matters
    // more than stopping forwarding would.
    fn read(&self, i: usize) -> RwLockReadGuard<'_, Shard> {
        self.shards[i].read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, i: usize) -> RwLockWriteGuard<'_, Shard> {
        self.shards[i].write().unwrap_or_else(|p| p.into_inner())
    }

    /// The VTEP behind `mac`, unless unknown or expired.
    pub fn lookup(&self, mac: MacAddr, now: Instant) -> Option<SocketAddr> {
        if let Some(v) = self.statics.load().get(&mac) {
            return Some(*v);
        }
        let now = self.ms(now);
        self.read(self.shard_of(mac))
            .get(&mac)
            .filter(|s| self.alive(s.seen.load(Relaxed), now))
            .map(|s| s.vtep)
    }

    /// Records that `mac` was seen behind `vtep`.
    pub fn learn(&self, mac: MacAddr, vtep: SocketAddr, now: Instant) -> Learned {
        if self.statics.load().contains_key(&mac) {
            return Learned::Static;
        }
        let (i, t) = (self.shard_of(mac), self.ms(now));
        // the common case: a known MAC behind the same VTEP, under the read side only
        if let Some(s) = self.read(i).get(&mac)
            && s.vtep == vtep
        {
            if t.saturating_sub(s.seen.load(Relaxed)) >= REFRESH.as_millis() as u64 {
                s.seen.store(t, Relaxed);
            }
            return Learned::Refreshed;
        }
        {
            let mut shard = self.write(i);
            if let Some(s) = shard.get_mut(&mac) {
                let (old, alive) = (s.vtep, self.alive(*s.seen.get_mut(), t));
                s.vtep = vtep;
                *s.seen.get_mut() = t;
                return if old == vtep || !alive {
                    Learned::Refreshed
                } else {
                    Learned::Moved
                };
            }
            if self.reserve() {
                shard.insert(
                    mac,
                    Slot {
                        vtep,
                        seen: AtomicU64::new(t),
                    },
                );
                return Learned::New;
            }
        }
        // full: at most once a second, expired entries make room (no shard is held here)
        if !self.claim_full_sweep(t) || self.expire(now) == 0 || !self.reserve() {
            return Learned::Full;
        }
        let mut shard = self.write(i);
        if shard.contains_key(&mac) {
            self.learned.fetch_sub(1, Relaxed); // learned meanwhile by another queue
            return Learned::Refreshed;
        }
        shard.insert(
            mac,
            Slot {
                vtep,
                seen: AtomicU64::new(t),
            },
        );
        Learned::New
    }

    /// Takes room for one learned entry, if the table has any.
    fn reserve(&self) -> bool {
        let statics = self.statics.load().len();
        self.learned
            .fetch_update(Relaxed, Relaxed, |n| {
                (n + statics < self.capacity).then_some(n + 1)
            })
            .is_ok()
    }

    fn claim_full_sweep(&self, t: u64) -> bool {
        let last = self.full_sweep.load(Relaxed);
        let every = FULL_SWEEP_EVERY.as_millis() as u64;
        (last == 0 || t.saturating_sub(last - 1) >= every)
            && self
                .full_sweep
                .compare_exchange(last, t + 1, Relaxed, Relaxed)
                .is_ok()
    }

    /// Forgets a learned entry (its MAC was seen on the local side). Static entries stay.
    pub fn forget_learned(&self, mac: MacAddr) -> bool {
        let i = self.shard_of(mac);
        if !self.read(i).contains_key(&mac) {
            return false;
        }
        let removed = self.write(i).remove(&mac).is_some();
        if removed {
            self.learned.fetch_sub(1, Relaxed);
        }
        removed
    }

    /// Replaces every static entry with `entries`. Learned entries for those MACs give way.
    /// Static entries beyond the capacity are left out (and returned as a count).
    pub fn set_static(&self, entries: impl IntoIterator<Item = (MacAddr, SocketAddr)>) -> usize {
        let mut map = HashMap::new();
        let mut left_out = 0;
        for (mac, vtep) in entries {
            if map.len() >= self.capacity && !map.contains_key(&mac) {
                left_out += 1;
                continue;
            }
            map.insert(mac, vtep);
        }
        for mac in map.keys() {
            let i = self.shard_of(*mac);
            let learned = self.read(i).contains_key(mac);
            if learned && self.write(i).remove(mac).is_some() {
                self.learned.fetch_sub(1, Relaxed);
            }
        }
        self.statics.store(Arc::new(map));
        left_out
    }

    /// Removes every entry (learned or static) whose VTEP fails `keep`; returns how many.
    /// Used when a peer leaves: its MACs must flood again, not vanish into a dead VTEP.
    pub fn retain_vteps(&self, keep: impl Fn(SocketAddr) -> bool) -> usize {
        let statics = self.statics.load_full();
        let kept: HashMap<MacAddr, SocketAddr> = statics
            .iter()
            .filter(|(_, v)| keep(**v))
            .map(|(m, v)| (*m, *v))
            .collect();
        let mut removed = statics.len() - kept.len();
        if removed > 0 {
            self.statics.store(Arc::new(kept));
        }
        removed += self.retain_learned(|s, _| keep(s.vtep));
        removed
    }

    fn retain_learned(&self, keep: impl Fn(&Slot, u64) -> bool) -> usize {
        let mut removed = 0;
        for i in 0..SHARDS {
            let mut shard = self.write(i);
            let before = shard.len();
            shard.retain(|_, s| {
                let seen = *s.seen.get_mut();
                keep(s, seen)
            });
            removed += before - shard.len();
        }
        self.learned.fetch_sub(removed, Relaxed);
        removed
    }

    /// Removes expired learned entries; returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let now = self.ms(now);
        self.retain_learned(|_, seen| self.alive(seen, now))
    }

    /// Entries, static and learned (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.statics.load().len() + self.learned.load(Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry (for the admin API), expired ones included until swept. A copy: the
    /// datapath goes on meanwhile.
    pub fn entries(&self) -> Vec<(MacAddr, Entry)> {
        let mut out: Vec<(MacAddr, Entry)> = self
            .statics
            .load()
            .iter()
            .map(|(m, v)| {
                (
                    *m,
                    Entry {
                        vtep: *v,
                        kind: Kind::Static,
                    },
                )
            })
            .collect();
        for i in 0..SHARDS {
            out.extend(self.read(i).iter().map(|(m, s)| {
                let last_seen = self.epoch + Duration::from_millis(s.seen.load(Relaxed));
                (
                    *m,
                    Entry {
                        vtep: s.vtep,
                        kind: Kind::Learned { last_seen },
                    },
                )
            }));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }
    fn vtep(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 99, 0, n], 4789))
    }

    #[test]
    fn learned_entries_age_out() {
        let t0 = Instant::now();
        let f = Fdb::new(8, Duration::from_secs(300));
        assert_eq!(f.learn(mac(1), vtep(2), t0), Learned::New);
        assert_eq!(
            f.lookup(mac(1), t0 + Duration::from_secs(299)),
            Some(vtep(2))
        );
        assert_eq!(f.lookup(mac(1), t0 + Duration::from_secs(300)), None);
        assert_eq!(f.expire(t0 + Duration::from_secs(301)), 1);
        assert!(f.is_empty());
    }

    #[test]
    fn seeing_a_mac_again_refreshes_or_moves_it() {
        let t0 = Instant::now();
        let f = Fdb::new(8, Duration::from_secs(10));
        f.learn(mac(1), vtep(2), t0);
        assert_eq!(
            f.learn(mac(1), vtep(2), t0 + Duration::from_secs(8)),
            Learned::Refreshed
        );
        assert_eq!(
            f.lookup(mac(1), t0 + Duration::from_secs(15)),
            Some(vtep(2))
        );
        assert_eq!(
            f.learn(mac(1), vtep(3), t0 + Duration::from_secs(16)),
            Learned::Moved
        );
        assert_eq!(
            f.lookup(mac(1), t0 + Duration::from_secs(16)),
            Some(vtep(3))
        );
    }

    #[test]
    fn static_entries_win_and_never_expire() {
        let t0 = Instant::now();
        let f = Fdb::new(8, Duration::from_secs(1));
        f.learn(mac(1), vtep(3), t0);
        f.set_static([(mac(1), vtep(2))]);
        assert_eq!(f.learn(mac(1), vtep(3), t0), Learned::Static);
        assert_eq!(
            f.lookup(mac(1), t0 + Duration::from_secs(3600)),
            Some(vtep(2))
        );
        assert!(!f.forget_learned(mac(1)));
        f.set_static([]);
        assert_eq!(f.lookup(mac(1), t0), None);
    }

    #[test]
    fn when_full_expired_entries_go_first_then_newcomers_are_refused() {
        let t0 = Instant::now();
        let f = Fdb::new(2, Duration::from_secs(10));
        f.learn(mac(1), vtep(2), t0);
        f.learn(mac(2), vtep(2), t0 + Duration::from_secs(5));
        assert_eq!(
            f.learn(mac(3), vtep(2), t0 + Duration::from_secs(6)),
            Learned::Full
        );
        assert_eq!(
            f.lookup(mac(1), t0 + Duration::from_secs(6)),
            Some(vtep(2)),
            "not evicted"
        );
        // mac 1 has expired at t0+11: it makes room
        assert_eq!(
            f.learn(mac(3), vtep(2), t0 + Duration::from_secs(11)),
            Learned::New
        );
        assert_eq!(f.len(), 2);
    }
    #[test]
    fn a_full_table_sweeps_for_newcomers_at_most_once_a_second() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let f = Fdb::new(2, Duration::from_secs(10));
        f.learn(mac(1), vtep(2), at(0));
        f.learn(mac(2), vtep(2), at(5_000));
        // mac 1 has expired: the first newcomer's sweep makes room
        assert_eq!(f.learn(mac(3), vtep(2), at(10_500)), Learned::New);
        // nothing has expired: refused, and this second's sweep is used up
        assert_eq!(f.learn(mac(4), vtep(2), at(14_500)), Learned::Full);
        // mac 2 expired at 15 s, but within a second of the last sweep nothing is scanned
        assert_eq!(f.learn(mac(5), vtep(2), at(15_200)), Learned::Full);
        assert_eq!(f.len(), 2);
        assert_eq!(f.learn(mac(5), vtep(2), at(15_600)), Learned::New);
        assert_eq!(f.lookup(mac(3), at(15_600)), Some(vtep(2)));
        assert_eq!(f.lookup(mac(2), at(15_600)), None);
    }

    #[test]
    fn static_entries_count_first_and_learned_ones_give_way() {
        let t0 = Instant::now();
        let f = Fdb::new(3, Duration::from_secs(10));
        f.learn(mac(1), vtep(3), t0);
        f.learn(mac(2), vtep(3), t0);
        assert_eq!(f.set_static([(mac(2), vtep(2)), (mac(9), vtep(2))]), 0);
        // mac 2's learned entry gave way to the static one
        assert_eq!(f.len(), 3);
        assert_eq!(f.lookup(mac(2), t0), Some(vtep(2)));
        assert_eq!(f.learn(mac(4), vtep(3), t0), Learned::Full);
        let kinds: Vec<Kind> = f
            .entries()
            .into_iter()
            .filter(|(m, _)| *m == mac(2))
            .map(|(_, e)| e.kind)
            .collect();
        assert_eq!(kinds, [Kind::Static]);
        assert_eq!(f.retain_vteps(|v| v != vtep(2)), 2);
        assert_eq!(f.lookup(mac(2), t0), None);
        assert_eq!(f.len(), 1);
    }

    /// Queues learn at once: every MAC is learned once, the capacity holds exactly, and
    /// what was learned is found.
    #[test]
    fn threads_learning_at_once_keep_the_count_and_the_capacity() {
        let t0 = Instant::now();
        let f = Fdb::new(2_000, Duration::from_secs(300));
        let results: Vec<Vec<(MacAddr, Learned)>> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..4u8)
                .map(|t| {
                    let f = &f;
                    sc.spawn(move || {
                        (0..1_000u16)
                            .map(|n| {
                                let [hi, lo] = n.to_be_bytes();
                                let m = MacAddr([2, 0, t, 0, hi, lo]);
                                (m, f.learn(m, vtep(t + 1), t0))
                            })
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let all: Vec<&(MacAddr, Learned)> = results.iter().flatten().collect();
        let new = all.iter().filter(|(_, l)| *l == Learned::New).count();
        let full = all.iter().filter(|(_, l)| *l == Learned::Full).count();
        assert_eq!((new, full), (2_000, 2_000));
        assert_eq!(f.len(), 2_000);
        for (m, l) in all {
            let found = f.lookup(*m, t0).is_some();
            assert_eq!(found, *l == Learned::New, "{m}");
        }
        assert_eq!(f.expire(t0 + Duration::from_secs(301)), 2_000);
        assert!(f.is_empty());
    }
}
