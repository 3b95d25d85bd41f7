//! IPv4 header (RFC 791): every field of the fixed header, read and written in place.

use super::{WireError, checksum};
use std::net::Ipv4Addr;

pub const MIN_HEADER_LEN: usize = 20;

pub mod protocol {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

/// Field ranges of the fixed header (RFC 791 §3.1).
pub mod field {
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const TOTAL_LEN: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLAGS_FRAG: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
    /// Source and destination together: what the TCP/UDP pseudo-header sums.
    pub const ADDRS: Range<usize> = 12..20;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET: u16 = 0x1fff;

/// A view of an IPv4 packet: `new_checked` validates the version, the header length (IHL)
/// and the total length against the buffer; getters read the header, setters write it.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks version 4, that the header (IHL) fits, and that the total length covers the
    /// header and lies within the buffer (a frame may carry padding after it: `payload()`
    /// ends at the total length).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::header_only(buffer)?;
        if p.buffer.as_ref().len() < p.total_len() {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }

    /// A view of the header alone (its payload elsewhere: a header rewritten in a side
    /// buffer): checks version 4, that the header fits and that the total length covers it,
    /// not that the payload is here (`payload()` is what of it is).
    pub fn header_only(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::Malformed);
        }
        let ihl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if ihl < MIN_HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if b.len() < ihl {
            return Err(WireError::Truncated);
        }
        if usize::from(u16::from_be_bytes([b[2], b[3]])) < ihl {
            return Err(WireError::Malformed);
        }
        Ok(Packet { buffer })
    }

    fn u16_at(&self, r: std::ops::Range<usize>) -> u16 {
        let b = &self.buffer.as_ref()[r];
        u16::from_be_bytes([b[0], b[1]])
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// DSCP and ECN (the old TOS byte).
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// The total length field: header and payload, in bytes.
    pub fn total_len(&self) -> usize {
        usize::from(self.u16_at(field::TOTAL_LEN))
    }

    pub fn ident(&self) -> u16 {
        self.u16_at(field::IDENT)
    }

    pub fn dont_frag(&self) -> bool {
        self.u16_at(field::FLAGS_FRAG) & FLAG_DF != 0
    }

    pub fn more_frags(&self) -> bool {
        self.u16_at(field::FLAGS_FRAG) & FLAG_MF != 0
    }

    /// The fragment offset, in 8-byte units.
    pub fn frag_offset(&self) -> u16 {
        self.u16_at(field::FLAGS_FRAG) & FRAG_OFFSET
    }

    /// Whether this is a non-first fragment (its payload has no transport header).
    pub fn is_later_fragment(&self) -> bool {
        self.frag_offset() != 0
    }

    /// Whether this is any fragment (more to come, or not the first).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.is_later_fragment()
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }

    /// Whether the header checksum verifies (RFC 1071: the sum over the header is all ones).
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::add(0, self.header())) == 0xffff
    }

    pub fn src(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    pub fn dst(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The one's-complement sum of the addresses, for a TCP/UDP pseudo-header.
    pub fn addr_sum(&self) -> u64 {
        checksum::add(0, &self.buffer.as_ref()[field::ADDRS])
    }

    /// The header, options included.
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// The bytes after the header, up to the total length (padding left out).
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[self.header_len()..self.total_len().min(b.len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_total_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::TOTAL_LEN].copy_from_slice(&len.to_be_bytes());
    }

    pub fn set_ident(&mut self, id: u16) {
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&id.to_be_bytes());
    }

    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    pub fn set_checksum(&mut self, sum: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
    }

    /// Computes and stores the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::internet(self.header());
        self.set_checksum(sum);
    }
}

/// An IPv4 header without options, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    /// Bytes after the header.
    pub payload_len: usize,
    pub ttl: u8,
    pub ident: u16,
    pub dont_frag: bool,
}

impl Repr {
    /// The header's fields (fragments are the caller's to refuse; options are skipped).
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        Repr {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            payload_len: p.total_len() - p.header_len(),
            ttl: p.ttl(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
        }
    }

    /// Writes a 20-byte header, its checksum filled, into the start of `b`.
    pub fn emit(&self, b: &mut [u8]) -> Result<(), WireError> {
        let total =
            u16::try_from(MIN_HEADER_LEN + self.payload_len).map_err(|_| WireError::Malformed)?;
        let h = b.get_mut(..MIN_HEADER_LEN).ok_or(WireError::Truncated)?;
        h.fill(0);
        h[field::VER_IHL] = 0x45;
        h[field::TOTAL_LEN].copy_from_slice(&total.to_be_bytes());
        h[field::IDENT].copy_from_slice(&self.ident.to_be_bytes());
        let frag = if self.dont_frag { FLAG_DF } else { 0 };
        h[field::FLAGS_FRAG].copy_from_slice(&frag.to_be_bytes());
        h[field::TTL] = self.ttl;
        h[field::PROTOCOL] = self.protocol;
        h[field::SRC].copy_from_slice(&self.src.octets());
        h[field::DST].copy_from_slice(&self.dst.octets());
        Packet::header_only(h)?.fill_checksum();
        Ok(())
    }

    /// The one's-complement sum of the TCP/UDP pseudo-header for this packet.
    pub fn pseudo_sum(&self) -> u64 {
        let mut a = [0u8; 8];
        a[..4].copy_from_slice(&self.src.octets());
        a[4..].copy_from_slice(&self.dst.octets());
        checksum::add(u64::from(self.protocol) + self.payload_len as u64, &a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ICMP echo request header, 10.200.1.11 -> 10.200.2.11, DF set, from the testbed.
    const ICMP_HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x54, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, 0x0a, 0xc8, 0x01,
        0x0b, 0x0a, 0xc8, 0x02, 0x0b,
    ];

    #[test]
    fn deconstruct_header() {
        let p = Packet::header_only(&ICMP_HEADER[..]).expect("valid");
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.protocol(), protocol::ICMP);
        assert_eq!(p.src(), Ipv4Addr::new(10, 200, 1, 11));
        assert_eq!(p.dst(), Ipv4Addr::new(10, 200, 2, 11));
        assert!(!p.is_later_fragment());
        assert_eq!(p.dscp_ecn(), 0);
        assert_eq!(p.total_len(), 84);
        assert_eq!(p.ident(), 0x1c46);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert!(!p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.checksum(), 0);
        assert!(
            !p.verify_checksum(),
            "the capture's checksum was left to the NIC"
        );
        assert_eq!(p.header(), &ICMP_HEADER[..]);
        assert!(p.payload().is_empty());
    }

    #[test]
    fn new_checked_holds_the_total_length_to_the_buffer() {
        // the capture is the header alone: its total length (84) says more follows
        assert_eq!(
            Packet::new_checked(&ICMP_HEADER[..]).err(),
            Some(WireError::Truncated)
        );
        let mut whole = ICMP_HEADER.to_vec();
        whole.extend_from_slice(&[7; 64]);
        assert_eq!(
            Packet::new_checked(&whole[..])
                .expect("whole")
                .payload()
                .len(),
            64
        );
        whole.extend_from_slice(&[0; 6]); // Ethernet padding
        assert_eq!(
            Packet::new_checked(&whole[..]).expect("padded").payload(),
            &[7; 64][..]
        );
        let mut short = ICMP_HEADER;
        short[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            Packet::header_only(&short[..]).err(),
            Some(WireError::Malformed)
        );
    }

    #[test]
    fn repr_round_trips_through_emit() {
        let repr = Repr {
            src: Ipv4Addr::new(10, 200, 1, 11),
            dst: Ipv4Addr::new(10, 200, 2, 11),
            protocol: protocol::ICMP,
            payload_len: 64,
            ttl: 64,
            ident: 0x1c46,
            dont_frag: true,
        };
        let mut b = vec![0u8; 84];
        repr.emit(&mut b).expect("fits");
        assert_eq!(&b[..10], &ICMP_HEADER[..10], "the captured header's bytes");
        assert_eq!(&b[12..20], &ICMP_HEADER[12..20]);
        let p = Packet::new_checked(&b[..]).expect("valid");
        assert!(p.verify_checksum());
        assert_eq!(Repr::parse(&p), repr);
        assert_eq!(repr.emit(&mut b[..19]), Err(WireError::Truncated));
    }

    #[test]
    fn construct_header() {
        let mut b = ICMP_HEADER;
        let mut p = Packet::header_only(&mut b[..]).expect("valid");
        p.set_total_len(1420);
        p.set_ident(0xbeef);
        p.set_ttl(63);
        p.fill_checksum();
        assert_eq!(p.total_len(), 1420);
        assert_eq!(p.ident(), 0xbeef);
        assert_eq!(p.ttl(), 63);
        assert!(p.verify_checksum());
        // the same bytes, written by hand: 0x058c = 1420, ident, TTL, checksum
        assert_eq!(&b[2..6], &[0x05, 0x8c, 0xbe, 0xef]);
        assert_eq!(b[8], 63);
        assert_eq!(
            checksum::internet(&b),
            0,
            "a header with its checksum sums to zero"
        );
    }

    #[test]
    fn fragments_are_told_apart() {
        let mut b = ICMP_HEADER;
        b[6] = 0x20; // MF, offset 0: the first fragment
        let p = Packet::header_only(&b[..]).expect("valid");
        assert!(p.more_frags() && p.is_fragment() && !p.is_later_fragment());
        b[6] = 0x00;
        b[7] = 0xb9; // offset 185 (1480 bytes)
        let p = Packet::header_only(&b[..]).expect("valid");
        assert_eq!(p.frag_offset(), 185);
        assert!(p.is_fragment() && p.is_later_fragment() && !p.more_frags());
    }

    #[test]
    fn bad_headers_are_refused() {
        assert_eq!(
            Packet::new_checked(&ICMP_HEADER[..19]).err(),
            Some(WireError::Truncated)
        );
        let mut b = ICMP_HEADER;
        b[0] = 0x65;
        assert_eq!(
            Packet::new_checked(&b[..]).err(),
            Some(WireError::Malformed)
        );
        b[0] = 0x44; // IHL 16 bytes
        assert_eq!(
            Packet::new_checked(&b[..]).err(),
            Some(WireError::Malformed)
        );
        b[0] = 0x46; // IHL 24 bytes, only 20 present
        assert_eq!(
            Packet::header_only(&b[..]).err(),
            Some(WireError::Truncated)
        );
    }
}
