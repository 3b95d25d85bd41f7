//! The repair of "partial" TCP/UDP checksums in Ethernet frames carrying IPv4.
//!
//! A sender that offloads checksums (CHECKSUM_PARTIAL in Linux) leaves in the TCP/UDP
//! checksum field only the folded pseudo-header sum, for the NIC to finish. A real NIC does;
//! but a veth pair hands such packets to the other namespace unfinished, and the kernel's vxlan
//! passes them on, trusting the flag that travels with the buffer. A userspace VTEP receives
//! just the bytes, so it must finish the job or the container drops the packet.
//! [`complete_partial`] does that, and costs one pseudo-header sum per packet unless the field
//! does hold that sum.

use super::checksum::{add, fold};
use super::ethernet::{self, Frame, ethertype};
use super::{ipv4, tcp, udp};

/// What [`complete_partial`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partial {
    /// Not IPv4 TCP/UDP, a fragment, or a UDP checksum of zero: nothing to do.
    NotApplicable,
    /// The checksum field does not hold the pseudo-header sum: left as it is.
    Untouched,
    /// The field held the pseudo-header sum and the checksum did not verify: completed.
    Completed,
}

/// Finishes a partial TCP or UDP checksum in an Ethernet frame carrying IPv4.
pub fn complete_partial(frame: &mut [u8]) -> Partial {
    let Ok(f) = Frame::new_checked(&frame[..]) else {
        return Partial::NotApplicable;
    };
    if f.ethertype() != ethertype::IPV4 {
        return Partial::NotApplicable;
    }
    let Ok(ip) = ipv4::Packet::new_checked(f.payload()) else {
        return Partial::NotApplicable;
    };
    let (proto, ihl, total) = (ip.protocol(), ip.header_len(), ip.total_len());
    let field = match proto {
        ipv4::protocol::TCP => tcp::field::CHECKSUM.start,
        ipv4::protocol::UDP => udp::field::CHECKSUM.start,
        _ => return Partial::NotApplicable,
    };
    // new_checked held the total length to the frame
    if ip.is_fragment() || total < ihl + field + 2 {
        return Partial::NotApplicable; // fragments, or too short for the checksum field
    }
    let seg_len = total - ihl;
    let pseudo = ip.addr_sum() + u64::from(proto) + seg_len as u64;
    let start = ethernet::HEADER_LEN + ihl;
    let seg = &mut frame[start..start + seg_len];
    let stored = u16::from_be_bytes([seg[field], seg[field + 1]]);
    if proto == ipv4::protocol::UDP && stored == 0 {
        return Partial::NotApplicable; // no checksum (IPv4 allows it)
    }
    if stored != fold(pseudo) {
        return Partial::Untouched;
    }
    if fold(add(pseudo, seg)) == 0xffff {
        return Partial::Untouched; // a complete checksum that happens to equal the sum
    }
    // The field holds the pseudo-header sum: the sum over the segment with it in place is
    // the whole sum, as a NIC computes it from csum_start (the lengths were checked above)
    match super::offload::complete_checksum(&mut frame[..start + seg_len], start, field) {
        Ok(()) => Partial::Completed,
        Err(_) => Partial::NotApplicable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet/IPv4/TCP frame 10.200.1.11:40000 -> 10.200.2.11:80 with a payload.
    fn tcp_frame(payload: &[u8]) -> Vec<u8> {
        use crate::wire::build::{Ip, Transport, frame};
        let eth = ethernet::Repr {
            dst: ethernet::MacAddr([2, 0, 0, 0, 0, 2]),
            src: ethernet::MacAddr([2, 0, 0, 0, 0, 1]),
            ethertype: ethertype::IPV4,
        };
        let ip = Ip::V4(ipv4::Repr {
            src: [10, 200, 1, 11].into(),
            dst: [10, 200, 2, 11].into(),
            protocol: ipv4::protocol::TCP,
            payload_len: 0,
            ttl: 64,
            ident: 0,
            dont_frag: true,
        });
        let tcp = tcp::Repr {
            src_port: 40000,
            dst_port: 80,
            seq: 0,
            ack: 0,
            flags: tcp::flags::PSH | tcp::flags::ACK,
            window: 0,
            options: &[],
        };
        let mut f = frame(eth, ip, Transport::Tcp(tcp), payload);
        f[50..52].fill(0); // as a sender that leaves the checksum to offload writes it
        f
    }

    fn pseudo(f: &[u8]) -> u64 {
        let seg_len = f.len() - 34;
        add(0, &f[26..34]) + 6 + seg_len as u64
    }

    fn verifies(f: &[u8]) -> bool {
        fold(add(pseudo(f), &f[34..])) == 0xffff
    }

    #[test]
    fn a_partial_checksum_is_completed() {
        let mut f = tcp_frame(b"hello, overlay");
        let p = fold(pseudo(&f));
        f[34 + 16..34 + 18].copy_from_slice(&p.to_be_bytes());
        assert!(!verifies(&f));
        assert_eq!(complete_partial(&mut f), Partial::Completed);
        assert!(verifies(&f));
        // and a complete checksum is left alone
        let before = f.clone();
        assert_eq!(complete_partial(&mut f), Partial::Untouched);
        assert_eq!(f, before);
    }

    #[test]
    fn a_wrong_checksum_is_not_made_right() {
        let mut f = tcp_frame(b"corrupted");
        f[34 + 16] = 0x12;
        f[34 + 17] = 0x34;
        assert_eq!(complete_partial(&mut f), Partial::Untouched);
        assert!(!verifies(&f));
    }

    #[test]
    fn odd_lengths_fragments_and_junk_are_safe() {
        let mut f = tcp_frame(b"odd");
        let p = fold(pseudo(&f));
        f[34 + 16..34 + 18].copy_from_slice(&p.to_be_bytes());
        assert_eq!(complete_partial(&mut f), Partial::Completed);
        assert!(verifies(&f));
        let mut frag = tcp_frame(b"x");
        frag[14 + 7] = 1; // fragment offset
        assert_eq!(complete_partial(&mut frag), Partial::NotApplicable);
        let mut short = tcp_frame(b"");
        short[14 + 3] = 200; // total length beyond the frame
        assert_eq!(complete_partial(&mut short), Partial::NotApplicable);
        for n in 0..60 {
            let mut junk = vec![0x45u8; n];
            let _ = complete_partial(&mut junk);
        }
    }
}
