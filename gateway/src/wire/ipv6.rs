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
    /// Checks version 6, that the fixed header fits and that the payload length lies within
    /// the buffer (a frame may carry padding after it: `payload()` ends at the length).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::header_only(buffer)?;
        if p.buffer.as_ref().len() < HEADER_LEN + p.payload_len() {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }

    /// A view of the fixed header alone (its payload elsewhere: a header rewritten in a side
    /// buffer): checks version 6 and that the header fits.
    pub fn header_only(buffer: T) -> Result<Self, WireError> {
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

    /// The bytes after the fixed header, up to the payload length (padding left out).
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[HEADER_LEN..(HEADER_LEN + self.payload_len()).min(b.len())]
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

/// An IPv6 fixed header, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub payload_len: usize,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        Repr {
            src: p.src(),
            dst: p.dst(),
            next_header: p.next_header(),
            payload_len: p.payload_len(),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
        }
    }

    /// Writes the fixed header into the start of `b`.
    pub fn emit(&self, b: &mut [u8]) -> Result<(), WireError> {
        let len = u16::try_from(self.payload_len).map_err(|_| WireError::Malformed)?;
        let h = b.get_mut(..HEADER_LEN).ok_or(WireError::Truncated)?;
        let word =
            (6u32 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0xf_ffff);
        h[field::VER_TC_FLOW].copy_from_slice(&word.to_be_bytes());
        h[field::PAYLOAD_LEN].copy_from_slice(&len.to_be_bytes());
        h[field::NEXT_HEADER] = self.next_header;
        h[field::HOP_LIMIT] = self.hop_limit;
        h[field::SRC].copy_from_slice(&self.src.octets());
        h[field::DST].copy_from_slice(&self.dst.octets());
        Ok(())
    }

    /// The one's-complement sum of the TCP/UDP pseudo-header (RFC 8200 §8.1) for this
    /// packet's upper layer, when it follows the fixed header.
    pub fn pseudo_sum(&self) -> u64 {
        let mut a = [0u8; 32];
        a[..16].copy_from_slice(&self.src.octets());
        a[16..].copy_from_slice(&self.dst.octets());
        checksum::add(u64::from(self.next_header) + self.payload_len as u64, &a)
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
        let p = Packet::header_only(&HEADER[..]).expect("valid");
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
        let mut p = Packet::header_only(&mut b[..]).expect("valid");
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
        // the payload length (40) says more follows than the buffer holds
        assert_eq!(
            Packet::new_checked(&HEADER[..]).err(),
            Some(WireError::Truncated)
        );
        let mut whole = HEADER.to_vec();
        whole.extend_from_slice(&[9; 46]); // 40 bytes of payload, 6 of padding
        assert_eq!(
            Packet::new_checked(&whole[..]).expect("whole").payload(),
            &[9; 40][..]
        );
    }

    #[test]
    fn repr_round_trips_through_emit() {
        let p = Packet::header_only(&HEADER[..]).expect("valid");
        let repr = Repr::parse(&p);
        let mut b = [0xaa; 40];
        repr.emit(&mut b).expect("fits");
        assert_eq!(b, HEADER);
        assert_eq!(repr.emit(&mut b[..39]), Err(WireError::Truncated));
    }
}
