//! The forwarding database of one overlay network: inner MAC → remote VTEP.
//!
//! Entries are learned from decapsulated frames (inner source MAC, outer source VTEP) and
//! expire `aging` after they were last seen; static entries come from the registry
//! (containers with a known MAC on a known remote host) and never expire. A static entry wins
//! over learning: a frame claiming a static MAC from another VTEP does not move it.
//!
//! **When full** (`capacity` entries), expired entries are swept first; if none is expired the
//! new MAC is not learned (counted by the caller) and frames to it are flooded, as the Linux
//! kernel's vxlan does when its `max` is reached. Existing entries are never evicted for a newcomer,
//! so a flood of random source MACs cannot push out the hosts that are talking.
//!
//! The table is allocated once at full capacity, so learning never allocates on the packet path.

use crate::wire::ethernet::MacAddr;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Default number of entries per network.
pub const DEFAULT_CAPACITY: usize = 16 * 1024;

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

#[derive(Debug)]
pub struct Fdb {
    entries: HashMap<MacAddr, Entry>,
    capacity: usize,
    aging: Duration,
}

impl Fdb {
    pub fn new(capacity: usize, aging: Duration) -> Fdb {
        Fdb {
            entries: HashMap::with_capacity(capacity),
            capacity,
            aging,
        }
    }

    fn is_live(&self, e: &Entry, now: Instant) -> bool {
        match e.kind {
            Kind::Static => true,
            Kind::Learned { last_seen } => now.saturating_duration_since(last_seen) < self.aging,
        }
    }

    /// The VTEP behind `mac`, unless unknown or expired.
    pub fn lookup(&self, mac: MacAddr, now: Instant) -> Option<SocketAddr> {
        self.entries
            .get(&mac)
            .filter(|e| self.is_live(e, now))
            .map(|e| e.vtep)
    }

    /// Records that `mac` was seen behind `vtep`.
    pub fn learn(&mut self, mac: MacAddr, vtep: SocketAddr, now: Instant) -> Learned {
        let live = self
            .entries
            .get(&mac)
            .map(|e| (e.kind, e.vtep, self.is_live(e, now)));
        let learned = Entry {
            vtep,
            kind: Kind::Learned { last_seen: now },
        };
        match live {
            Some((Kind::Static, _, _)) => Learned::Static,
            Some((_, old, alive)) => {
                self.entries.insert(mac, learned);
                if old == vtep || !alive {
                    Learned::Refreshed
                } else {
                    Learned::Moved
                }
            }
            None => {
                if self.entries.len() >= self.capacity {
                    self.expire(now);
                    if self.entries.len() >= self.capacity {
                        return Learned::Full;
                    }
                }
                self.entries.insert(mac, learned);
                Learned::New
            }
        }
    }

    /// Forgets a learned entry (its MAC was seen on the local side). Static entries stay.
    pub fn forget_learned(&mut self, mac: MacAddr) -> bool {
        if let Some(Entry {
            kind: Kind::Learned { .. },
            ..
        }) = self.entries.get(&mac)
        {
            self.entries.remove(&mac);
            return true;
        }
        false
    }

    /// Replaces every static entry with `entries`. Learned entries for those MACs give way.
    /// Static entries beyond the capacity are left out (and returned as a count).
    pub fn set_static(
        &mut self,
        entries: impl IntoIterator<Item = (MacAddr, SocketAddr)>,
    ) -> usize {
        self.entries.retain(|_, e| e.kind != Kind::Static);
        let mut left_out = 0;
        for (mac, vtep) in entries {
            if self.entries.len() >= self.capacity && !self.entries.contains_key(&mac) {
                left_out += 1;
                continue;
            }
            self.entries.insert(
                mac,
                Entry {
                    vtep,
                    kind: Kind::Static,
                },
            );
        }
        left_out
    }

    /// Removes every entry (learned or static) whose VTEP fails `keep`; returns how many.
    /// Used when a peer leaves: its MACs must flood again, not vanish into a dead VTEP.
    pub fn retain_vteps(&mut self, keep: impl Fn(SocketAddr) -> bool) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| keep(e.vtep));
        before - self.entries.len()
    }

    /// Removes expired learned entries; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.entries.len();
        let aging = self.aging;
        self.entries.retain(|_, e| match e.kind {
            Kind::Static => true,
            Kind::Learned { last_seen } => now.saturating_duration_since(last_seen) < aging,
        });
        before - self.entries.len()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry (for the admin API), expired ones included until swept.
    pub fn entries(&self) -> impl Iterator<Item = (&MacAddr, &Entry)> {
        self.entries.iter()
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
        let mut f = Fdb::new(8, Duration::from_secs(300));
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
        let mut f = Fdb::new(8, Duration::from_secs(10));
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
        let mut f = Fdb::new(8, Duration::from_secs(1));
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
        let mut f = Fdb::new(2, Duration::from_secs(10));
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
}
