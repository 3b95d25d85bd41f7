//! Upstream answers (UDP and TCP alike) before they are relayed or cached: arbitrary bytes as
//! the query and as the upstream's answer must be accepted only when they answer that query
//! (QR, the ID sent, the same question; RFC 5452), and the cache must store and give back
//! what it is handed, under the client's ID, without a panic. Input: 2-byte query length,
//! query, answer. Seeds: gateway/fuzz/seeds/dns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};
use vxgate_dns::cache::{Cache, Key};
use vxgate_dns::forward::is_answer_to;
use vxgate_dns::message::{self, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let qlen = usize::from(u16::from_be_bytes(*len)).min(rest.len());
    let (query, resp) = rest.split_at(qlen);
    let Ok(q) = message::parse_query(query) else {
        return;
    };
    let sent_id = message::header_id(resp).unwrap_or(0);
    for id in [sent_id, sent_id.wrapping_add(1)] {
        if !is_answer_to(resp, id, &q) {
            continue;
        }
        // what was accepted is a response, under the ID sent, for the same question
        assert!(resp.len() >= HEADER_LEN && resp[2] & 0x80 != 0);
        assert_eq!(message::header_id(resp), Some(id));
        let name = q.name();
        let got = &resp[HEADER_LEN..HEADER_LEN + name.len() + 4];
        assert!(got[..name.len()].eq_ignore_ascii_case(name));
        assert_eq!(&got[name.len()..name.len() + 2], &q.qtype.to_be_bytes());
        assert_eq!(&got[name.len() + 2..], &q.qclass.to_be_bytes());
    }
    if !is_answer_to(resp, sent_id, &q) {
        return;
    }
    // the cache: a stored answer comes back under the asker's ID, same length, and not after
    // it expired
    let mut cache = Cache::new(4);
    let key = Key {
        name: q.lower_name().to_vec(),
        qtype: q.qtype,
        qclass: q.qclass,
        dnssec_ok: false,
    };
    let now = Instant::now();
    if cache.put(key.clone(), resp, now) {
        let hit = cache.get(&key, 0xbeef, now).expect("just stored");
        assert_eq!(message::header_id(&hit), Some(0xbeef));
        assert_eq!(hit.len(), resp.len());
        assert!(
            cache
                .get(&key, 1, now + Duration::from_secs(3601))
                .is_none()
        );
    }
});
