//! DNS queries on the wire (RFC 1035 §4.1, EDNS(0) RFC 6891): a parser for incoming queries
//! that never allocates and never panics, and the pieces of a response writer.
//!
//! Only what an authoritative/forwarding server needs from a query is read: the header, the
//! one question (names may use compression pointers, followed with a hop limit so loops end),
//! and an OPT record in the additional section. Everything else is checked for length only.

/// Largest name on the wire (RFC 1035 §2.3.4).
pub const MAX_NAME: usize = 255;
pub const HEADER_LEN: usize = 12;
/// Payload size vxgate advertises in its OPT record (the DNS flag day 2020 value).
pub const ADVERTISED_UDP: u16 = 1232;

pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const ANY: u16 = 255;
}

pub const CLASS_IN: u16 = 1;

pub mod rcode {
    pub const NOERROR: u8 = 0;
    pub const FORMERR: u8 = 1;
    pub const SERVFAIL: u8 = 2;
    pub const NXDOMAIN: u8 = 3;
    pub const NOTIMP: u8 = 4;
    pub const REFUSED: u8 = 5;
    /// Extended (EDNS) rcode 16: the upper 8 bits go in the OPT record.
    pub const BADVERS: u16 = 16;
}

/// Why a message could not be read as a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryError {
    /// Shorter than a header: nothing to answer to.
    NoHeader,
    /// A response (QR set): never answered, so two servers cannot loop.
    IsResponse,
    /// Header readable, the rest is not (bad name, truncated record, QDCOUNT ≠ 1, two OPTs…):
    /// answer FORMERR.
    Malformed,
}

/// The EDNS(0) part of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    pub udp_size: u16,
    pub version: u8,
    pub dnssec_ok: bool,
}

/// A parsed query. The question name is kept as it came (for the echo, case preserved) and
/// lower-cased (for lookups), both in uncompressed wire form.
#[derive(Debug, Clone)]
pub struct Query {
    pub id: u16,
    pub opcode: u8,
    pub recursion_desired: bool,
    pub checking_disabled: bool,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
    name: [u8; MAX_NAME],
    lower: [u8; MAX_NAME],
    name_len: usize,
}

impl Query {
    /// The question name in wire form, as sent.
    pub fn name(&self) -> &[u8] {
        &self.name[..self.name_len]
    }

    /// The question name in wire form, ASCII lower-cased.
    pub fn lower_name(&self) -> &[u8] {
        &self.lower[..self.name_len]
    }

    /// The largest UDP response this client takes: 512 without EDNS (RFC 1035 §4.2.1),
    /// else its advertised size, at least 512 and at most 4096.
    pub fn max_udp(&self) -> usize {
        match self.edns {
            None => 512,
            Some(e) => usize::from(e.udp_size).clamp(512, 4096),
        }
    }
}

/// Reads a query. On `Malformed`, [`header_id`] still gives what a FORMERR needs.
pub fn parse_query(msg: &[u8]) -> Result<Query, QueryError> {
    if msg.len() < HEADER_LEN {
        return Err(QueryError::NoHeader);
    }
    let flags = u16::from_be_bytes([msg[2], msg[3]]);
    if flags & 0x8000 != 0 {
        return Err(QueryError::IsResponse);
    }
    let count = |at: usize| u16::from_be_bytes([msg[at], msg[at + 1]]);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    if qd != 1 {
        return Err(QueryError::Malformed);
    }
    let mut q = Query {
        id: u16::from_be_bytes([msg[0], msg[1]]),
        opcode: ((flags >> 11) & 0x0f) as u8,
        recursion_desired: flags & 0x0100 != 0,
        checking_disabled: flags & 0x0010 != 0,
        qtype: 0,
        qclass: 0,
        edns: None,
        name: [0; MAX_NAME],
        lower: [0; MAX_NAME],
        name_len: 0,
    };
    let mut at = read_name(msg, HEADER_LEN, &mut q.name, &mut q.name_len)?;
    for (i, b) in q.name[..q.name_len].iter().enumerate() {
        q.lower[i] = b.to_ascii_lowercase();
    }
    let fixed = msg.get(at..at + 4).ok_or(QueryError::Malformed)?;
    q.qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    q.qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    at += 4;
    // Answer and authority records are unusual in a query; step over them.
    for _ in 0..(u32::from(an) + u32::from(ns)) {
        at = skip_record(msg, at)?.0;
    }
    for _ in 0..ar {
        let (next, rtype, start) = skip_record(msg, at)?;
        if rtype == rtype::OPT {
            // owner must be the root; at most one OPT (RFC 6891 §6.1.1)
            if q.edns.is_some() || msg.get(at) != Some(&0) {
                return Err(QueryError::Malformed);
            }
            let r = &msg[start..];
            q.edns = Some(Edns {
                udp_size: u16::from_be_bytes([r[2], r[3]]),
                version: r[5],
                dnssec_ok: r[6] & 0x80 != 0,
            });
        }
        at = next;
    }
    if at != msg.len() {
        return Err(QueryError::Malformed); // trailing bytes
    }
    Ok(q)
}

/// The ID of a message with at least a header.
pub fn header_id(msg: &[u8]) -> Option<u16> {
    msg.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

/// Reads a (possibly compressed) name at `at` into `out` in uncompressed wire form; returns
/// the offset just after the name's bytes at `at`.
fn read_name(
    msg: &[u8],
    mut at: usize,
    out: &mut [u8; MAX_NAME],
    len: &mut usize,
) -> Result<usize, QueryError> {
    let mut end = None;
    let mut hops = 0;
    *len = 0;
    loop {
        let b = *msg.get(at).ok_or(QueryError::Malformed)?;
        match b & 0xc0 {
            0x00 => {
                let l = usize::from(b);
                if *len + 1 + l > MAX_NAME {
                    return Err(QueryError::Malformed);
                }
                let label = msg.get(at..at + 1 + l).ok_or(QueryError::Malformed)?;
                out[*len..*len + 1 + l].copy_from_slice(label);
                *len += 1 + l;
                at += 1 + l;
                if l == 0 {
                    return Ok(end.unwrap_or(at));
                }
            }
            0xc0 => {
                let lo = *msg.get(at + 1).ok_or(QueryError::Malformed)?;
                end.get_or_insert(at + 2);
                hops += 1;
                // a pointer must point backwards; 64 hops is more than any real name needs
                let target = usize::from(u16::from_be_bytes([b & 0x3f, lo]));
                if hops > 64 || target >= at {
                    return Err(QueryError::Malformed);
                }
                at = target;
            }
            _ => return Err(QueryError::Malformed), // 0x40/0x80: extended labels
        }
    }
}

/// Steps over one resource record; returns (next offset, type, offset of its type field).
fn skip_record(msg: &[u8], at: usize) -> Result<(usize, u16, usize), QueryError> {
    let mut scratch = [0u8; MAX_NAME];
    let mut len = 0;
    let start = read_name(msg, at, &mut scratch, &mut len)?;
    let fixed = msg.get(start..start + 10).ok_or(QueryError::Malformed)?;
    let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    let next = start + 10 + rdlen;
    if next > msg.len() {
        return Err(QueryError::Malformed);
    }
    Ok((next, rtype, start))
}

/// Text form of a wire name, for logs and tests ("web.example.com.").
pub fn name_to_text(wire: &[u8]) -> String {
    let mut out = String::new();
    let mut at = 0;
    while let Some(&l) = wire.get(at) {
        if l == 0 {
            break;
        }
        let label = wire
            .get(at + 1..at + 1 + usize::from(l))
            .unwrap_or_default();
        out.push_str(&String::from_utf8_lossy(label));
        out.push('.');
        at += 1 + usize::from(l);
    }
    if out.is_empty() { ".".into() } else { out }
}

/// Wire form of a text name ("web.example.com" → 3web7example3com0), case kept.
/// Returns None for names that break the label or length rules.
pub fn name_from_text(text: &str) -> Option<Vec<u8>> {
    let text = text.strip_suffix('.').unwrap_or(text);
    let mut out = Vec::with_capacity(text.len() + 2);
    if !text.is_empty() {
        for label in text.split('.') {
            if label.is_empty() || label.len() > 63 {
                return None;
            }
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    (out.len() <= MAX_NAME).then_some(out)
}

/// Writes a response header: `id`, QR, the query's opcode, RD and CD echoed, AA as asked,
/// RA set (vxgate forwards for allowed clients), and the section counts.
#[allow(clippy::too_many_arguments)]
pub fn write_header(
    out: &mut Vec<u8>,
    id: u16,
    q: Option<&Query>,
    aa: bool,
    tc: bool,
    rcode: u8,
    counts: [u16; 4],
) {
    let mut flags: u16 = 0x8000 | 0x0080; // QR, RA
    if let Some(q) = q {
        flags |= u16::from(q.opcode & 0x0f) << 11;
        if q.recursion_desired {
            flags |= 0x0100;
        }
        if q.checking_disabled {
            flags |= 0x0010;
        }
    }
    if aa {
        flags |= 0x0400;
    }
    if tc {
        flags |= 0x0200;
    }
    flags |= u16::from(rcode & 0x0f);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    for c in counts {
        out.extend_from_slice(&c.to_be_bytes());
    }
}

/// Writes the question section (the name as the client sent it).
pub fn write_question(out: &mut Vec<u8>, q: &Query) {
    out.extend_from_slice(q.name());
    out.extend_from_slice(&q.qtype.to_be_bytes());
    out.extend_from_slice(&q.qclass.to_be_bytes());
}

/// Writes vxgate's OPT record (advertised size, the extended rcode's upper bits).
pub fn write_opt(out: &mut Vec<u8>, extended_rcode: u16) {
    out.push(0); // root
    out.extend_from_slice(&rtype::OPT.to_be_bytes());
    out.extend_from_slice(&ADVERTISED_UDP.to_be_bytes());
    out.push((extended_rcode >> 4) as u8);
    out.extend_from_slice(&[0, 0, 0]); // version 0, no flags
    out.extend_from_slice(&[0, 0]); // no options
}

/// Sets the ARCOUNT (or another count: 0 QD, 1 AN, 2 NS, 3 AR) of a written message.
pub fn set_count(out: &mut [u8], section: usize, n: u16) {
    let at = 4 + 2 * section;
    out[at..at + 2].copy_from_slice(&n.to_be_bytes());
}

/// A minimal error response: header, the question if the query was readable, OPT if it had
/// one.
pub fn error_response(out: &mut Vec<u8>, id: u16, q: Option<&Query>, rcode: u8) {
    out.clear();
    let qd = u16::from(q.is_some());
    let ar = u16::from(q.is_some_and(|q| q.edns.is_some()));
    write_header(out, id, q, false, false, rcode, [qd, 0, 0, ar]);
    if let Some(q) = q {
        write_question(out, q);
        if q.edns.is_some() {
            write_opt(out, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
        let mut m = vec![
            0x12,
            0x34,
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
        m.extend_from_slice(&CLASS_IN.to_be_bytes());
        if let Some(size) = edns {
            m.push(0);
            m.extend_from_slice(&rtype::OPT.to_be_bytes());
            m.extend_from_slice(&size.to_be_bytes());
            m.extend_from_slice(&[0, 0, 0x80, 0, 0, 0]);
        }
        m
    }

    #[test]
    fn parses_a_query_with_edns() {
        let q = parse_query(&query("Web.Example.com", rtype::A, Some(4096))).expect("query");
        assert_eq!(q.id, 0x1234);
        assert!(q.recursion_desired);
        assert_eq!(q.qtype, rtype::A);
        assert_eq!(name_to_text(q.name()), "Web.Example.com.");
        assert_eq!(
            q.lower_name(),
            &name_from_text("web.example.com").expect("n")[..]
        );
        assert_ne!(q.name(), q.lower_name());
        let e = q.edns.expect("edns");
        assert_eq!((e.udp_size, e.version, e.dnssec_ok), (4096, 0, true));
        assert_eq!(q.max_udp(), 4096);
        let plain = parse_query(&query("a.example.com", rtype::A, None)).expect("query");
        assert_eq!(plain.max_udp(), 512);
        let tiny = parse_query(&query("a.example.com", rtype::A, Some(100))).expect("query");
        assert_eq!(tiny.max_udp(), 512);
    }

    #[test]
    fn every_prefix_of_a_query_is_refused_until_whole() {
        let full = query("web.example.com", rtype::AAAA, Some(1232));
        for n in 0..full.len() {
            let r = parse_query(&full[..n]);
            if n < HEADER_LEN {
                assert_eq!(r.err(), Some(QueryError::NoHeader), "prefix {n}");
            } else {
                assert_eq!(r.err(), Some(QueryError::Malformed), "prefix {n}");
            }
        }
        assert!(parse_query(&full).is_ok());
    }

    #[test]
    fn compression_loops_and_bad_counts_are_malformed() {
        // question name is a pointer to itself
        let mut m = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1];
        assert_eq!(parse_query(&m).err(), Some(QueryError::Malformed));
        m[13] = 14; // forward pointer
        assert_eq!(parse_query(&m).err(), Some(QueryError::Malformed));
        let mut two = query("a.example.com", rtype::A, None);
        two[5] = 2;
        assert_eq!(parse_query(&two).err(), Some(QueryError::Malformed));
        let mut none = query("a.example.com", rtype::A, None);
        none[5] = 0;
        assert_eq!(parse_query(&none).err(), Some(QueryError::Malformed));
        let mut resp = query("a.example.com", rtype::A, None);
        resp[2] |= 0x80;
        assert_eq!(parse_query(&resp).err(), Some(QueryError::IsResponse));
        let mut trailing = query("a.example.com", rtype::A, None);
        trailing.push(0);
        assert_eq!(parse_query(&trailing).err(), Some(QueryError::Malformed));
        // a label type 0x40 (extended) is not a name we read
        let mut ext = query("a.example.com", rtype::A, None);
        ext[12] = 0x41;
        assert_eq!(parse_query(&ext).err(), Some(QueryError::Malformed));
    }

    #[test]
    fn two_opt_records_are_malformed() {
        let mut m = query("a.example.com", rtype::A, Some(1232));
        let opt = m[m.len() - 11..].to_vec();
        m.extend(opt);
        m[11] = 2;
        assert_eq!(parse_query(&m).err(), Some(QueryError::Malformed));
    }

    #[test]
    fn text_names_round_trip() {
        let w = name_from_text("Web.example.COM.").expect("name");
        assert_eq!(name_to_text(&w), "Web.example.COM.");
        assert_eq!(name_from_text("").expect("root"), vec![0]);
        assert!(name_from_text("a..b").is_none());
        assert!(name_from_text(&"a".repeat(64)).is_none());
    }
}

/// A resource record located in a message: its type, where its TTL is, its rdata range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordAt {
    pub section: usize,
    pub rtype: u16,
    pub ttl_at: usize,
    pub rdata: (usize, usize),
}

/// Every record of a (response) message after its questions, in order; None if the message
/// does not parse that far.
pub fn records(msg: &[u8]) -> Option<Vec<RecordAt>> {
    if msg.len() < HEADER_LEN {
        return None;
    }
    let count = |at: usize| usize::from(u16::from_be_bytes([msg[at], msg[at + 1]]));
    let mut at = HEADER_LEN;
    let mut scratch = [0u8; MAX_NAME];
    let mut len = 0;
    for _ in 0..count(4) {
        at = read_name(msg, at, &mut scratch, &mut len).ok()? + 4;
    }
    let mut out = Vec::new();
    for (section, n) in [(1, count(6)), (2, count(8)), (3, count(10))] {
        for _ in 0..n {
            let (next, rtype, start) = skip_record(msg, at).ok()?;
            out.push(RecordAt {
                section,
                rtype,
                ttl_at: start + 4,
                rdata: (start + 10, next),
            });
            at = next;
        }
    }
    (at <= msg.len()).then_some(out)
}

/// The SOA MINIMUM field of an SOA record's rdata (after two names).
pub fn soa_minimum(msg: &[u8], rdata: (usize, usize)) -> Option<u32> {
    let mut scratch = [0u8; MAX_NAME];
    let mut len = 0;
    let at = read_name(msg, rdata.0, &mut scratch, &mut len).ok()?;
    let at = read_name(msg, at, &mut scratch, &mut len).ok()?;
    let m = msg.get(at + 16..at + 20)?;
    (at + 20 == rdata.1).then(|| u32::from_be_bytes([m[0], m[1], m[2], m[3]]))
}

/// The type of a message's first question, without parsing the rest.
pub fn qtype_of(msg: &[u8]) -> Option<u16> {
    let mut at = HEADER_LEN;
    loop {
        let l = *msg.get(at)?;
        if l == 0 {
            break;
        }
        if l & 0xc0 != 0 {
            at += 1; // a pointer ends the name after its second byte
            break;
        }
        at += 1 + usize::from(l);
    }
    let t = msg.get(at + 1..at + 3)?;
    Some(u16::from_be_bytes([t[0], t[1]]))
}

/// The response code of a message (header part only).
pub fn rcode_of(msg: &[u8]) -> Option<u8> {
    msg.get(3).map(|b| b & 0x0f)
}
