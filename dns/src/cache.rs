//! A bounded cache of upstream answers, honouring TTLs (positive answers: the smallest TTL
//! of the answer section; negative ones: the SOA's TTL and MINIMUM, RFC 2308 §5). No I/O;
//! time is passed in.
//!
//! Entries keep the response bytes; a hit returns them with every TTL lowered by the time
//! spent in the cache. When full, a CLOCK hand picks the entry to replace in O(1) amortized
//! (the scan of every entry per insert it replaced took half of a busy forwarder's CPU): an
//! expired entry at once, an entry hit since the hand last passed gets one more round, any
//! other goes.
//!
//! [`Sharded`] splits the entries over [`SHARDS`] caches, each behind its own lock, picked by
//! the key's hash: the UDP workers on every core look up and store without taking one lock
//! in turn.

use crate::message::{self, RecordAt, rcode, rtype};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shards of a [`Sharded`] cache.
pub const SHARDS: usize = 16;

/// A cache of `capacity` entries in all, split over [`SHARDS`] locks by the key's hash.
#[derive(Debug)]
pub struct Sharded {
    shards: Box<[Mutex<Cache>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Sharded {
    /// `capacity` entries in all (each shard holds its share, rounded up).
    pub fn new(capacity: usize) -> Sharded {
        let each = capacity.div_ceil(SHARDS);
        Sharded {
            shards: (0..SHARDS).map(|_| Mutex::new(Cache::new(each))).collect(),
            hasher: Default::default(),
        }
    }

    fn shard(&self, key: &dyn AsKey) -> std::sync::MutexGuard<'_, Cache> {
        let i = self.hasher.hash_one(key) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`Cache::get`] in the key's shard.
    pub fn get(&self, key: &dyn AsKey, id: u16, now: Instant) -> Option<Vec<u8>> {
        self.shard(key).get(key, id, now)
    }

    /// [`Cache::get_into`] in the key's shard.
    pub fn get_into(&self, key: &dyn AsKey, id: u16, now: Instant, out: &mut Vec<u8>) -> bool {
        self.shard(key).get_into(key, id, now, out)
    }

    /// [`Cache::put`] in the key's shard.
    pub fn put(&self, key: Key, response: &[u8], now: Instant) -> bool {
        self.shard(&key as &dyn AsKey).put(key, response, now)
    }

    /// Entries in all shards.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Longest time anything stays cached.
pub const MAX_TTL: u32 = 3600;

/// What a cached answer is keyed by: lower-cased question name, type, class, DO bit.
#[derive(Debug, Clone)]
pub struct Key {
    pub name: Vec<u8>,
    pub qtype: u16,
    pub qclass: u16,
    pub dnssec_ok: bool,
}

/// A key's parts as lookups hash and compare them: an owned [`Key`] (stored) or a
/// [`KeyRef`] borrowed from a query, so a lookup builds no key (a hit allocates nothing).
pub trait AsKey {
    fn parts(&self) -> (&[u8], u16, u16, bool);
}

/// A key borrowed from a query's name.
#[derive(Debug, Clone, Copy)]
pub struct KeyRef<'a> {
    pub name: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
    pub dnssec_ok: bool,
}

impl AsKey for Key {
    fn parts(&self) -> (&[u8], u16, u16, bool) {
        (&self.name, self.qtype, self.qclass, self.dnssec_ok)
    }
}

impl AsKey for KeyRef<'_> {
    fn parts(&self) -> (&[u8], u16, u16, bool) {
        (self.name, self.qtype, self.qclass, self.dnssec_ok)
    }
}

// Key and dyn AsKey hash and compare alike (both through `parts`), as HashMap's Borrow needs.
impl std::hash::Hash for dyn AsKey + '_ {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.parts().hash(h);
    }
}

impl PartialEq for dyn AsKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn AsKey + '_ {}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.parts().hash(h);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for Key {}

impl<'a> std::borrow::Borrow<dyn AsKey + 'a> for Key {
    fn borrow(&self) -> &(dyn AsKey + 'a) {
        self
    }
}

#[derive(Debug)]
struct Entry {
    key: Key,
    response: Vec<u8>,
    records: Vec<RecordAt>,
    stored: Instant,
    expires: Instant,
    /// Hit since the CLOCK hand last passed.
    referenced: bool,
}

#[derive(Debug)]
pub struct Cache {
    /// Key → its slot.
    index: HashMap<Key, usize>,
    /// The CLOCK's ring; `None`: a slot freed by an expiry.
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
    hand: usize,
    capacity: usize,
}

/// How long a response may be cached, or None if not at all.
pub fn cache_ttl(response: &[u8], records: &[RecordAt]) -> Option<u32> {
    let rc = message::rcode_of(response)?;
    let answers: Vec<&RecordAt> = records.iter().filter(|r| r.section == 1).collect();
    let ttl_of = |r: &RecordAt| {
        let t = &response[r.ttl_at..r.ttl_at + 4];
        u32::from_be_bytes([t[0], t[1], t[2], t[3]])
    };
    let negative = rc == rcode::NXDOMAIN || (rc == rcode::NOERROR && answers.is_empty());
    let ttl = if negative {
        let soa = records
            .iter()
            .find(|r| r.section == 2 && r.rtype == rtype::SOA)?;
        ttl_of(soa).min(message::soa_minimum(response, soa.rdata)?)
    } else if rc == rcode::NOERROR {
        answers.iter().map(|r| ttl_of(r)).min()?
    } else {
        return None; // SERVFAIL, REFUSED, …: ask again next time
    };
    Some(ttl.min(MAX_TTL))
}

impl Cache {
    pub fn new(capacity: usize) -> Cache {
        Cache {
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
            capacity,
        }
    }

    /// A cached response for `key` with TTLs aged, its ID set to `id`.
    pub fn get(&mut self, key: &dyn AsKey, id: u16, now: Instant) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        self.get_into(key, id, now, &mut out).then_some(out)
    }

    /// [`Cache::get`] written into `out` (a reused buffer: no allocation once it is big
    /// enough); whether there was one.
    pub fn get_into(&mut self, key: &dyn AsKey, id: u16, now: Instant, out: &mut Vec<u8>) -> bool {
        let Some(&at) = self.index.get(key) else {
            return false;
        };
        let Some(e) = self.slots[at].as_mut() else {
            return false;
        };
        if now >= e.expires {
            self.remove_at(at);
            return false;
        }
        e.referenced = true;
        let age = now.saturating_duration_since(e.stored).as_secs() as u32;
        out.clear();
        out.extend_from_slice(&e.response);
        out[..2].copy_from_slice(&id.to_be_bytes());
        for r in &e.records {
            if r.rtype == rtype::OPT {
                continue; // its "TTL" holds flags
            }
            let t = &mut out[r.ttl_at..r.ttl_at + 4];
            let ttl = u32::from_be_bytes([t[0], t[1], t[2], t[3]]).saturating_sub(age);
            t.copy_from_slice(&ttl.to_be_bytes());
        }
        true
    }

    /// Empties a slot and lists it as free.
    fn remove_at(&mut self, at: usize) {
        if self.clear(at) {
            self.free.push(at);
        }
    }

    /// Empties a slot (its key leaves the index); whether it held an entry.
    fn clear(&mut self, at: usize) -> bool {
        match self.slots[at].take() {
            Some(e) => {
                self.index.remove(&e.key);
                true
            }
            None => false,
        }
    }

    /// The slot a new entry goes to: a free one, a new one below capacity, or the CLOCK's
    /// victim (at most two turns of the hand: the first clears every reference bit).
    fn slot_for_new(&mut self, now: Instant) -> usize {
        if let Some(at) = self.free.pop() {
            return at;
        }
        if self.slots.len() < self.capacity {
            self.slots.push(None);
            return self.slots.len() - 1;
        }
        loop {
            let at = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            match self.slots[at].as_mut() {
                None => return at,
                Some(e) if e.referenced && e.expires > now => e.referenced = false,
                Some(_) => {
                    self.clear(at);
                    return at;
                }
            }
        }
    }

    /// Stores a response if its TTL allows; returns whether it did. A truncated (TC) answer
    /// is never stored: it is a part of the answer, and served from the cache it would be all
    /// a TCP client ever got.
    pub fn put(&mut self, key: Key, response: &[u8], now: Instant) -> bool {
        if response.get(2).is_some_and(|flags| flags & 0x02 != 0) {
            return false;
        }
        let Some(records) = message::records(response) else {
            return false;
        };
        let Some(ttl) = cache_ttl(response, &records) else {
            return false;
        };
        if ttl == 0 || self.capacity == 0 {
            return false;
        }
        let at = match self.index.get(&key) {
            Some(&at) => at,
            None => {
                let at = self.slot_for_new(now);
                self.index.insert(key.clone(), at);
                at
            }
        };
        self.slots[at] = Some(Entry {
            key,
            response: response.to_vec(),
            records,
            stored: now,
            expires: now + Duration::from_secs(u64::from(ttl)),
            referenced: false,
        });
        true
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use std::str::FromStr;

    fn name(s: &str) -> Name {
        Name::from_str(s).expect("name")
    }

    fn response(rc: ResponseCode, answers: &[(u32, [u8; 4])], soa: Option<(u32, u32)>) -> Vec<u8> {
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.metadata.response_code = rc;
        m.add_query(Query::query(name("www.example.org."), RecordType::A));
        for (ttl, ip) in answers {
            m.add_answer(Record::from_rdata(
                name("www.example.org."),
                *ttl,
                RData::A(A::from(std::net::Ipv4Addr::from(*ip))),
            ));
        }
        if let Some((ttl, minimum)) = soa {
            let soa = SOA::new(
                name("ns.example.org."),
                name("h.example.org."),
                1,
                2,
                3,
                4,
                minimum,
            );
            m.add_authority(Record::from_rdata(
                name("example.org."),
                ttl,
                RData::SOA(soa),
            ));
        }
        m.to_vec().expect("encode")
    }

    fn key() -> Key {
        Key {
            name: b"\x03www\x07example\x03org\x00".to_vec(),
            qtype: 1,
            qclass: 1,
            dnssec_ok: false,
        }
    }

    #[test]
    fn a_borrowed_key_finds_what_an_owned_key_stored() {
        let t0 = Instant::now();
        let sharded = Sharded::new(64);
        let resp = response(ResponseCode::NoError, &[(300, [1, 2, 3, 4])], None);
        assert!(sharded.put(key(), &resp, t0));
        let k = key();
        let borrowed = KeyRef {
            name: &k.name,
            qtype: k.qtype,
            qclass: k.qclass,
            dnssec_ok: k.dnssec_ok,
        };
        let mut out = Vec::new();
        assert!(
            sharded.get_into(&borrowed, 7, t0, &mut out),
            "same parts: a hit"
        );
        assert_eq!(out[..2], 7u16.to_be_bytes());
        assert_eq!(out[2..], resp[2..]);
        // each part is part of the key
        let other_name = b"\x03www\x07example\x03net\x00";
        for miss in [
            KeyRef {
                name: other_name,
                ..borrowed
            },
            KeyRef {
                qtype: 28,
                ..borrowed
            },
            KeyRef {
                qclass: 3,
                ..borrowed
            },
            KeyRef {
                dnssec_ok: true,
                ..borrowed
            },
        ] {
            assert!(sharded.get(&miss, 7, t0).is_none(), "{miss:?}");
        }
    }

    #[test]
    fn positive_answers_live_for_their_smallest_ttl_and_age() {
        let t0 = Instant::now();
        let mut c = Cache::new(10);
        assert!(c.put(
            key(),
            &response(
                ResponseCode::NoError,
                &[(300, [1, 2, 3, 4]), (60, [1, 2, 3, 5])],
                None
            ),
            t0
        ));
        let hit = c
            .get(&key(), 99, t0 + Duration::from_secs(10))
            .expect("hit");
        let m = Message::from_vec(&hit).expect("parse");
        assert_eq!(m.metadata.id, 99);
        let ttls: Vec<u32> = m.answers.iter().map(|r| r.ttl).collect();
        assert_eq!(ttls, vec![290, 50]);
        assert!(
            c.get(&key(), 1, t0 + Duration::from_secs(60)).is_none(),
            "expired"
        );
    }

    #[test]
    fn negative_answers_use_the_soa_rfc2308() {
        let t0 = Instant::now();
        let mut c = Cache::new(10);
        assert!(c.put(
            key(),
            &response(ResponseCode::NXDomain, &[], Some((900, 30))),
            t0
        ));
        assert!(c.get(&key(), 1, t0 + Duration::from_secs(29)).is_some());
        assert!(c.get(&key(), 1, t0 + Duration::from_secs(30)).is_none());
        // without an SOA a negative answer is not cached; nor is SERVFAIL
        assert!(!c.put(key(), &response(ResponseCode::NXDomain, &[], None), t0));
        assert!(!c.put(key(), &response(ResponseCode::ServFail, &[], None), t0));
        assert!(!c.put(key(), &[1, 2, 3], t0));
    }

    #[test]
    fn the_cache_is_bounded() {
        let t0 = Instant::now();
        let mut c = Cache::new(2);
        for i in 0..5u8 {
            let mut k = key();
            k.name[1] = b'a' + i;
            c.put(
                k,
                &response(
                    ResponseCode::NoError,
                    &[(100 + u32::from(i), [1, 2, 3, i])],
                    None,
                ),
                t0,
            );
        }
        assert_eq!(c.len(), 2);
    }

    fn named(i: u32) -> Key {
        let mut k = key();
        k.name = message::name_from_text(&format!("n{i}.example.org")).expect("name");
        k
    }

    #[test]
    fn a_full_cache_keeps_what_is_asked_for_and_replaces_the_rest() {
        let t0 = Instant::now();
        let answer = response(ResponseCode::NoError, &[(300, [1, 2, 3, 4])], None);
        let mut c = Cache::new(100);
        for i in 0..100 {
            assert!(c.put(named(i), &answer, t0));
        }
        // ten names are hit; a thousand new ones come in
        for i in 0..10 {
            assert!(c.get(&named(i), 1, t0).is_some());
        }
        for i in 1000..1050 {
            assert!(c.put(named(i), &answer, t0));
            for h in 0..10 {
                assert!(
                    c.get(&named(h), 1, t0).is_some(),
                    "hit name {h} was evicted"
                );
            }
        }
        assert_eq!(c.len(), 100);
        assert!(c.get(&named(1049), 1, t0).is_some(), "the newest is kept");
        let old = (10..100)
            .filter(|i| c.get(&named(*i), 1, t0).is_some())
            .count();
        assert!(
            old <= 40,
            "{old} of the 90 never-asked old names survived 50 inserts"
        );
        // an expired entry's slot is reused, nothing grows past capacity
        let later = t0 + Duration::from_secs(301);
        for i in 2000..2300 {
            assert!(c.put(named(i), &answer, later));
        }
        assert_eq!(c.len(), 100);
        assert_eq!(c.slots.len(), 100);
        assert!(c.get(&named(5), 1, later).is_none(), "expired");
    }

    #[test]
    fn a_sharded_cache_spreads_its_entries_and_stays_bounded() {
        let t0 = Instant::now();
        let answer = response(ResponseCode::NoError, &[(300, [1, 2, 3, 4])], None);
        let c = Sharded::new(SHARDS * 10);
        for i in 0..SHARDS as u32 * 100 {
            assert!(c.put(named(i), &answer, t0));
        }
        assert_eq!(c.len(), SHARDS * 10, "each shard holds its share, no more");
        let used = c
            .shards
            .iter()
            .filter(|s| s.lock().expect("shard").len() == 10)
            .count();
        assert_eq!(used, SHARDS, "every shard is filled");
        // what went in comes out of the same shard, aged and under the asker's ID
        let last = named(SHARDS as u32 * 100 - 1);
        let hit = c
            .get(&last, 42, t0 + Duration::from_secs(1))
            .expect("the newest is kept");
        let m = Message::from_vec(&hit).expect("parse");
        assert_eq!(m.metadata.id, 42);
        assert_eq!(m.answers[0].ttl, 299);
        assert!(Sharded::new(0).is_empty());
        assert!(
            !Sharded::new(0).put(named(1), &answer, t0),
            "no room, not stored"
        );
    }
}
