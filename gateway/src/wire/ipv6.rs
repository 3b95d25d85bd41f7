//! IPv6 fixed header (RFC 8200 §3). Extension headers are not walked here: a caller that
//! needs the transport header finds it through `next_header`, or is told where it starts
//! (a vnet header's `csum_start`).

use super::{WireError, checksum};
use std::net::Ipv6Addr;

pub const HEADER_LEN: usize = 40;

/// Field ranges of the fixed header.
pub mod field {
    use std::ops::Range;
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
    /// Source and destination together: what the TCP/UDP pseudo-header sums.
    pub const ADDRS: Range<usize> = 8..40;
}

/// A view of an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks version 6 and that the fixed header fits.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(WireError::Malformed);
        }
        Ok(Packet { buffer })
    }

    fn word(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VER_TC_FLOW];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    pub fn traffic_class(&self) -> u8 {
        (self.word() >> 20) as u8
    }

    pub fn flow_label(&self) -> u32 {
        self.word() & 0x000f_ffff
    }

    /// Bytes after the fixed header (extension headers included).
    pub fn payload_len(&self) -> usize {
        let b = &self.buffer.as_ref()[field::PAYLOAD_LEN];
        usize::from(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    pub fn src(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        Ipv6Addr::from(a)
    }

    pub fn dst(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        Ipv6Addr::from(a)
    }

    /// The one's-complement sum of the addresses, for a TCP/UDP pseudo-header.
    pub fn addr_sum(&self) -> u64 {
        checksum::add(0, &self.buffer.as_ref()[field::ADDRS])
    }

    /// The bytes after the fixed header (as captured).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::PAYLOAD_LEN].copy_from_slice(&len.to_be_bytes());
    }

    pub fn set_hop_limit(&mut self, hops: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hops;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A TCP SYN's IPv6 header, fd00::1 -> fd00::2, traffic class 0x28, flow label 0x12345.
    const HEADER: [u8; 40] = [
        0x62, 0x81, 0x23, 0x45, 0x00, 0x28, 0x06, 0x40, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 1, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
    ];

    #[test]
    fn deconstruct_header() {
        let p = Packet::new_checked(&HEADER[..]).expect("valid");
        assert_eq!(p.traffic_class(), 0x28);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 40);
        assert_eq!(p.next_header(), 6);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src(), "fd00::1".parse::<Ipv6Addr>().expect("addr"));
        assert_eq!(p.dst(), "fd00::2".parse::<Ipv6Addr>().expect("addr"));
        assert_eq!(
            checksum::fold(p.addr_sum()),
            0xfa04,
            "fd00 + 1 + fd00 + 2, carry folded"
        );
    }

    #[test]
    fn construct_header() {
        let mut b = HEADER;
        let mut p = Packet::new_checked(&mut b[..]).expect("valid");
        p.set_payload_len(1220);
        p.set_hop_limit(63);
        assert_eq!(&b[4..8], &[0x04, 0xc4, 0x06, 63]);
        assert_eq!(&b[..4], &HEADER[..4], "version, class and label untouched");
    }

    #[test]
    fn bad_headers_are_refused() {
        assert_eq!(
            Packet::new_checked(&HEADER[..39]).err(),
            Some(WireError::Truncated)
        );
        let mut b = HEADER;
        b[0] = 0x45;
        assert_eq!(
            Packet::new_checked(&b[..]).err(),
            Some(WireError::Malformed)
        );
    }
}
