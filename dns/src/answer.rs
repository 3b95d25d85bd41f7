//! Answering one query from a [`Zone`]: a pure function from bytes to bytes (and a decision
//! to forward). No I/O, no clock; randomness for record order comes from the caller's [`Rng`].
//!
//! - in-zone names: AA, answers or NXDOMAIN/NODATA with the SOA in authority (RFC 2308);
//! - names outside the zone: [`Action::Forward`] (the server decides whether this client may
//!   recurse); in-zone misses are never forwarded;
//! - malformed queries: FORMERR; other opcodes: NOTIMP; EDNS version > 0: BADVERS;
//!   responses sent as queries and runts: dropped;
//! - an answer that does not fit the transport: TC with no records (RFC 2181 §9).

use crate::message::{self, Query, QueryError, rcode, rtype};
use crate::zone::{Lookup, Node, Zone};

/// What the server should do with a message.
#[derive(Debug)]
// a Box for the query was an allocation per forwarded query, cache hits included
#[allow(clippy::large_enum_variant)]
pub enum Action {
    /// Send `out` back.
    Reply,
    /// Not in the zone: forward (if the client may recurse), else REFUSED. The query is
    /// carried inline (about 550 bytes, moved, not allocated): a cached answer to it then
    /// costs no allocation.
    Forward(Query),
    /// Say nothing (runt, or a response).
    Drop,
}

/// xorshift64*: a small, fast generator for record order (not for anything secret).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Answers `msg` into `out` (cleared first). `max_len` is the transport's limit: the client's
/// EDNS size over UDP ([`Query::max_udp`] is applied here), 65535 over TCP (`tcp`).
pub fn answer(zone: &Zone, msg: &[u8], tcp: bool, rng: &mut Rng, out: &mut Vec<u8>) -> Action {
    out.clear();
    let q = match message::parse_query(msg) {
        Ok(q) => q,
        Err(QueryError::NoHeader | QueryError::IsResponse) => return Action::Drop,
        Err(QueryError::Malformed) => {
            let id = message::header_id(msg).unwrap_or(0);
            message::error_response(out, id, None, rcode::FORMERR);
            return Action::Reply;
        }
    };
    if q.opcode != 0 {
        message::error_response(out, q.id, Some(&q), rcode::NOTIMP);
        return Action::Reply;
    }
    if q.edns.is_some_and(|e| e.version > 0) {
        // BADVERS: header rcode holds the low 4 bits (0), the OPT record the rest
        message::write_header(out, q.id, Some(&q), false, false, 0, [1, 0, 0, 1]);
        message::write_question(out, &q);
        message::write_opt(out, rcode::BADVERS);
        return Action::Reply;
    }
    let limit = if tcp { 65_535 } else { q.max_udp() };
    let per_type = if tcp {
        usize::MAX
    } else {
        zone.max_udp_records
    };
    match zone.lookup(q.lower_name()) {
        Lookup::Outside => Action::Forward(q),
        _ if q.qclass != message::CLASS_IN && q.qclass != 255 => {
            message::error_response(out, q.id, Some(&q), rcode::REFUSED);
            Action::Reply
        }
        Lookup::Reverse(ptrs) => {
            let mut b = Builder::start(out, &q);
            if matches!(q.qtype, rtype::PTR | rtype::ANY) {
                for p in ptrs.iter().take(per_type) {
                    b.record(rtype::PTR, zone.ttl, p);
                }
            }
            b.finish(rcode::NOERROR, limit);
            Action::Reply
        }
        Lookup::NxDomain => {
            let suffix_at = zone.suffix_offset(q.lower_name()).unwrap_or(0);
            let mut b = Builder::start(out, &q);
            b.soa_authority(zone, suffix_at);
            b.finish(rcode::NXDOMAIN, limit);
            Action::Reply
        }
        Lookup::Found { node, suffix_at } => {
            let mut b = Builder::start(out, &q);
            let n = b.answers(zone, node, q.qtype, per_type, rng);
            if n == 0 {
                b.soa_authority(zone, suffix_at); // NODATA
            }
            b.finish(rcode::NOERROR, limit);
            Action::Reply
        }
    }
}

/// Writes a response in place: header (counts patched at the end), question, records whose
/// owner is a pointer into the question name.
struct Builder<'a> {
    out: &'a mut Vec<u8>,
    q: &'a Query,
    counts: [u16; 4],
}

/// Offset of the question name in every response: right after the header.
const QNAME_AT: usize = message::HEADER_LEN;

impl<'a> Builder<'a> {
    fn start(out: &'a mut Vec<u8>, q: &'a Query) -> Builder<'a> {
        out.clear();
        message::write_header(out, q.id, Some(q), true, false, 0, [1, 0, 0, 0]);
        message::write_question(out, q);
        Builder {
            out,
            q,
            counts: [1, 0, 0, 0],
        }
    }

    fn rr(&mut self, owner_at: usize, rtype: u16, ttl: u32, rdata: &[u8]) {
        let ptr = 0xc000 | (owner_at as u16);
        self.out.extend_from_slice(&ptr.to_be_bytes());
        self.out.extend_from_slice(&rtype.to_be_bytes());
        self.out.extend_from_slice(&message::CLASS_IN.to_be_bytes());
        self.out.extend_from_slice(&ttl.to_be_bytes());
        self.out
            .extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        self.out.extend_from_slice(rdata);
    }

    /// An answer record owned by the question name.
    fn record(&mut self, rtype: u16, ttl: u32, rdata: &[u8]) {
        self.rr(QNAME_AT, rtype, ttl, rdata);
        self.counts[1] += 1;
    }

    /// The node's records of `qtype` (all of them for ANY), shuffled, at most `per_type` of
    /// each type (a random subset when there are more).
    fn answers(
        &mut self,
        zone: &Zone,
        node: &Node,
        qtype: u16,
        per_type: usize,
        rng: &mut Rng,
    ) -> u16 {
        let any = qtype == rtype::ANY;
        if any || qtype == rtype::A {
            for i in Shuffle::new(node.a.len(), rng).take(per_type) {
                self.record(rtype::A, zone.ttl, &node.a[i]);
            }
        }
        if any || qtype == rtype::AAAA {
            for i in Shuffle::new(node.aaaa.len(), rng).take(per_type) {
                self.record(rtype::AAAA, zone.ttl, &node.aaaa[i]);
            }
        }
        if any || qtype == rtype::SRV {
            for i in Shuffle::new(node.srv.len(), rng).take(per_type) {
                self.record(rtype::SRV, zone.ttl, &node.srv[i]);
            }
        }
        if node.apex && (any || qtype == rtype::SOA) {
            self.record(rtype::SOA, zone.ttl, &zone.soa_rdata);
        }
        if node.apex && (any || qtype == rtype::NS) {
            self.record(rtype::NS, zone.ttl, &zone.ns_rdata);
        }
        self.counts[1]
    }

    /// The SOA in the authority section, owned by the apex inside the question name; its TTL
    /// is the negative-caching TTL (RFC 2308 §5).
    fn soa_authority(&mut self, zone: &Zone, suffix_at: usize) {
        self.rr(QNAME_AT + suffix_at, rtype::SOA, zone.ttl, &zone.soa_rdata);
        self.counts[2] += 1;
    }

    fn finish(self, rc: u8, limit: usize) {
        let Builder { out, q, mut counts } = self;
        if q.edns.is_some() {
            message::write_opt(out, 0);
            counts[3] = 1;
        }
        if out.len() > limit {
            // TC: header, question and OPT only; the client asks again over TCP
            out.clear();
            message::write_header(out, q.id, Some(q), true, true, rc, [1, 0, 0, counts[3]]);
            message::write_question(out, q);
            if q.edns.is_some() {
                message::write_opt(out, 0);
            }
            return;
        }
        let flags = u16::from_be_bytes([out[2], out[3]]) | u16::from(rc);
        out[2..4].copy_from_slice(&flags.to_be_bytes());
        for (section, n) in counts.iter().enumerate() {
            message::set_count(out, section, *n);
        }
    }
}

/// A random permutation of 0..n without allocating (n ≤ 256; larger lists are rotated by a
/// random offset instead).
struct Shuffle {
    order: [u8; 256],
    n: usize,
    rotate: usize,
    i: usize,
}

impl Shuffle {
    fn new(n: usize, rng: &mut Rng) -> Shuffle {
        let mut order = [0u8; 256];
        let mut rotate = 0;
        if n <= 256 {
            for (i, o) in order.iter_mut().enumerate().take(n) {
                *o = i as u8;
            }
            for i in (1..n).rev() {
                let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
        } else {
            rotate = (rng.next_u64() % n as u64) as usize;
        }
        Shuffle {
            order,
            n,
            rotate,
            i: 0,
        }
    }
}

impl Iterator for Shuffle {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        if self.i >= self.n {
            return None;
        }
        let i = self.i;
        self.i += 1;
        Some(if self.n <= 256 {
            usize::from(self.order[i])
        } else {
            (i + self.rotate) % self.n
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::name_from_text;
    use crate::zone::{ZoneContainer, ZoneSettings};
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::{RData, RecordType};

    fn zone(n: usize) -> Zone {
        let mut cs = vec![ZoneContainer {
            name: "api-1".into(),
            ip: "10.0.1.1".parse().expect("ip"),
            port: 8080,
            service: Some("api".into()),
            serving: true,
        }];
        for i in 0..n {
            cs.push(ZoneContainer {
                name: format!("web-{i}"),
                ip: format!("10.0.0.{}", i + 1).parse().expect("ip"),
                port: 80,
                service: Some("web".into()),
                serving: true,
            });
        }
        let s = ZoneSettings {
            zone: "example.com".into(),
            ttl: 5,
            ns_addrs: vec!["10.200.1.1".parse().expect("ip")],
            max_udp_records: crate::zone::MAX_UDP_RECORDS,
        };
        Zone::build(&s, 42, &cs).expect("zone")
    }

    fn query(name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
        let mut m = vec![
            0xab,
            0xcd,
            0x01,
            0x00,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            u8::from(edns.is_some()),
        ];
        m.extend(name_from_text(name).expect("name"));
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        if let Some(size) = edns {
            m.extend_from_slice(&[0, 0, 41]);
            m.extend_from_slice(&size.to_be_bytes());
            m.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        m
    }

    fn ask(z: &Zone, msg: &[u8], tcp: bool) -> Message {
        let mut out = Vec::new();
        let mut rng = Rng::new(7);
        assert!(matches!(
            answer(z, msg, tcp, &mut rng, &mut out),
            Action::Reply
        ));
        Message::from_vec(&out).expect("hickory parses our response")
    }

    #[test]
    fn service_name_answers_every_serving_container_with_aa() {
        let z = zone(3);
        let m = ask(&z, &query("WEB.example.com", rtype::A, None), false);
        assert_eq!(m.metadata.id, 0xabcd);
        assert!(m.metadata.authoritative);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.len(), 3);
        assert!(m.answers.iter().all(|r| r.ttl == 5));
        assert_eq!(
            m.queries[0].name().to_string(),
            "WEB.example.com.",
            "question echoed as sent"
        );
    }

    #[test]
    fn record_order_is_shuffled_per_response() {
        let z = zone(8);
        let mut rng = Rng::new(1);
        let mut orders = std::collections::HashSet::new();
        for _ in 0..20 {
            let mut out = Vec::new();
            answer(
                &z,
                &query("web.example.com", rtype::A, None),
                false,
                &mut rng,
                &mut out,
            );
            let m = Message::from_vec(&out).expect("parse");
            let order: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
            orders.insert(order);
        }
        assert!(
            orders.len() > 10,
            "only {} distinct orders in 20 answers",
            orders.len()
        );
    }

    #[test]
    fn nxdomain_and_nodata_carry_the_soa_rfc2308() {
        let z = zone(1);
        let m = ask(&z, &query("nope.example.com", rtype::A, None), false);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.metadata.authoritative);
        assert_eq!(m.answers.len(), 0);
        assert_eq!(m.authorities.len(), 1);
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(m.authorities[0].name.to_string(), "example.com.");
        let m = ask(&z, &query("web.example.com", rtype::AAAA, None), false);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!((m.answers.len(), m.authorities.len()), (0, 1), "NODATA");
    }

    #[test]
    fn srv_soa_ns_and_ptr() {
        let z = zone(2);
        let m = ask(
            &z,
            &query("_http._tcp.api.example.com", rtype::SRV, None),
            false,
        );
        let RData::SRV(srv) = &m.answers[0].data else {
            panic!("srv")
        };
        assert_eq!(
            (srv.port, srv.target.to_string().as_str()),
            (8080, "api-1.example.com.")
        );
        let m = ask(&z, &query("example.com", rtype::SOA, None), false);
        let RData::SOA(soa) = &m.answers[0].data else {
            panic!("soa")
        };
        assert_eq!(soa.serial, 42);
        assert_eq!(soa.minimum, 5);
        let m = ask(&z, &query("example.com", rtype::NS, None), false);
        assert_eq!(m.answers[0].data.to_string(), "ns.example.com.");
        let m = ask(&z, &query("1.1.0.10.in-addr.arpa", rtype::PTR, None), false);
        assert_eq!(m.answers[0].data.to_string(), "api-1.example.com.");
    }

    #[test]
    fn outside_names_are_forwarded_in_zone_misses_never() {
        let z = zone(1);
        let mut out = Vec::new();
        let mut rng = Rng::new(1);
        assert!(matches!(
            answer(
                &z,
                &query("example.org", rtype::A, None),
                false,
                &mut rng,
                &mut out
            ),
            Action::Forward(_)
        ));
        assert!(matches!(
            answer(
                &z,
                &query("x.y.example.com", rtype::A, None),
                false,
                &mut rng,
                &mut out
            ),
            Action::Reply
        ));
    }

    #[test]
    fn big_answers_set_tc_over_udp_and_come_whole_over_tcp() {
        let z = zone(100);
        let m = ask(&z, &query("web.example.com", rtype::A, None), false);
        assert!(m.metadata.truncation);
        assert!(m.answers.is_empty());
        let m = ask(&z, &query("web.example.com", rtype::A, None), true);
        assert_eq!(m.answers.len(), 100, "TCP answers carry every record");
        assert!(!m.metadata.truncation);
    }

    #[test]
    fn udp_answers_carry_at_most_max_udp_records_of_a_type_chosen_at_random() {
        let z = zone(100);
        let q = query("web.example.com", rtype::A, Some(4096));
        let mut rng = Rng::new(3);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let mut out = Vec::new();
            answer(&z, &q, false, &mut rng, &mut out);
            let m = Message::from_vec(&out).expect("parse");
            assert!(!m.metadata.truncation, "32 A records fit in 4096");
            assert_eq!(m.answers.len(), crate::zone::MAX_UDP_RECORDS);
            // 12 header + 21 question + 32 * 16 + 11 OPT: about 12x a 44-byte query
            assert!(out.len() <= 560, "{} bytes", out.len());
            seen.extend(m.answers.iter().map(|r| r.data.to_string()));
        }
        assert!(
            seen.len() > 90,
            "20 answers named only {} of 100",
            seen.len()
        );
        let m = ask(
            &z,
            &query("_http._tcp.web.example.com", rtype::SRV, Some(4096)),
            false,
        );
        assert_eq!(m.answers.len(), crate::zone::MAX_UDP_RECORDS, "SRV too");
        // a zone with a larger cap answers more
        let mut big = zone(100);
        big.max_udp_records = 1000;
        let m = ask(&big, &q, false);
        assert_eq!(m.answers.len(), 100);
    }

    #[test]
    fn bad_queries_get_formerr_notimp_badvers_or_silence() {
        let z = zone(1);
        let mut out = Vec::new();
        let mut rng = Rng::new(1);
        let mut bad = query("web.example.com", rtype::A, None);
        bad.truncate(bad.len() - 1);
        let m = ask(&z, &bad, false);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        let mut notify = query("web.example.com", rtype::A, None);
        notify[2] = 4 << 3; // opcode NOTIFY
        assert_eq!(
            ask(&z, &notify, false).metadata.response_code,
            ResponseCode::NotImp
        );
        let mut v1 = query("web.example.com", rtype::A, Some(1232));
        let len = v1.len();
        v1[len - 5] = 1; // EDNS version 1
        let m = ask(&z, &v1, false);
        // 16 is BADVERS in an OPT context (RFC 6891); hickory names it BADSIG (RFC 8945)
        assert_eq!(u16::from(m.metadata.response_code), rcode::BADVERS);
        let mut response = query("web.example.com", rtype::A, None);
        response[2] |= 0x80;
        assert!(matches!(
            answer(&z, &response, false, &mut rng, &mut out),
            Action::Drop
        ));
        assert!(matches!(
            answer(&z, &[1, 2, 3], false, &mut rng, &mut out),
            Action::Drop
        ));
        let mut chaos = query("web.example.com", rtype::A, None);
        let l = chaos.len();
        chaos[l - 1] = 3; // class CH
        assert_eq!(
            ask(&z, &chaos, false).metadata.response_code,
            ResponseCode::Refused
        );
    }

    #[test]
    fn edns_is_echoed() {
        let z = zone(1);
        let m = ask(&z, &query("web.example.com", rtype::A, Some(1232)), false);
        assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(1232));
    }
}
