//! A bounded cache of upstream answers, honouring TTLs (positive answers: the smallest TTL
//! of the answer section; negative ones: the SOA's TTL and MINIMUM, RFC 2308 §5). No I/O;
//! time is passed in.
//!
//! Entries keep the response bytes; a hit returns them with every TTL lowered by the time
//! spent in the cache. When full, expired entries go first, then the entry closest to expiry.

use crate::message::{self, RecordAt, rcode, rtype};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Longest time anything stays cached.
pub const MAX_TTL: u32 = 3600;

/// What a cached answer is keyed by: lower-cased question name, type, class, DO bit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub name: Vec<u8>,
    pub qtype: u16,
    pub qclass: u16,
    pub dnssec_ok: bool,
}

#[derive(Debug)]
struct Entry {
    response: Vec<u8>,
    records: Vec<RecordAt>,
    stored: Instant,
    expires: Instant,
}

#[derive(Debug)]
pub struct Cache {
    entries: HashMap<Key, Entry>,
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
            entries: HashMap::new(),
            capacity,
        }
    }

    /// A cached response for `key` with TTLs aged, its ID set to `id`.
    pub fn get(&mut self, key: &Key, id: u16, now: Instant) -> Option<Vec<u8>> {
        let e = self.entries.get(key)?;
        if now >= e.expires {
            self.entries.remove(key);
            return None;
        }
        let age = now.saturating_duration_since(e.stored).as_secs() as u32;
        let mut out = e.response.clone();
        out[..2].copy_from_slice(&id.to_be_bytes());
        for r in &e.records {
            if r.rtype == rtype::OPT {
                continue; // its "TTL" holds flags
            }
            let t = &mut out[r.ttl_at..r.ttl_at + 4];
            let ttl = u32::from_be_bytes([t[0], t[1], t[2], t[3]]).saturating_sub(age);
            t.copy_from_slice(&ttl.to_be_bytes());
        }
        Some(out)
    }

    /// Stores a response if its TTL allows; returns whether it did.
    pub fn put(&mut self, key: Key, response: &[u8], now: Instant) -> bool {
        let Some(records) = message::records(response) else {
            return false;
        };
        let Some(ttl) = cache_ttl(response, &records) else {
            return false;
        };
        if ttl == 0 || self.capacity == 0 {
            return false;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, e| e.expires > now);
            if self.entries.len() >= self.capacity
                && let Some(victim) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone())
            {
                self.entries.remove(&victim);
            }
        }
        let expires = now + Duration::from_secs(u64::from(ttl));
        self.entries.insert(
            key,
            Entry {
                response: response.to_vec(),
                records,
                stored: now,
                expires,
            },
        );
        true
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
}
