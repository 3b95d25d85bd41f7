//! IPv4 header (RFC 791), read-only: what the overlay needs to hash a flow.

use super::WireError;
use std::net::Ipv4Addr;

pub const MIN_HEADER_LEN: usize = 20;

pub mod protocol {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

/// A view of an IPv4 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks version 4 and that the header (IHL) fits.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 4 {
            return Err(WireError::Malformed);
        }
        let ihl = usize::from(b[0] & 0x0f) * 4;
        if ihl < MIN_HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if b.len() < ihl {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buffer })
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[0] & 0x0f) * 4
    }

    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[9]
    }

    /// Whether this is a non-first fragment (its payload has no transport header).
    pub fn is_later_fragment(&self) -> bool {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[6], b[7]]) & 0x1fff != 0
    }

    pub fn src(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }

    pub fn dst(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }

    /// The bytes after the header (as captured; not trimmed to the total length).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
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
        let p = Packet::new_checked(&ICMP_HEADER[..]).expect("valid");
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.protocol(), protocol::ICMP);
        assert_eq!(p.src(), Ipv4Addr::new(10, 200, 1, 11));
        assert_eq!(p.dst(), Ipv4Addr::new(10, 200, 2, 11));
        assert!(!p.is_later_fragment());
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
            Packet::new_checked(&b[..]).err(),
            Some(WireError::Truncated)
        );
    }
}
