//! UDP header (RFC 768).

use super::WireError;

pub const HEADER_LEN: usize = 8;
/// Where the checksum lies in the header (a vnet header's `csum_offset` for UDP).
pub const CHECKSUM_OFFSET: usize = 6;

/// Field ranges.
pub mod field {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    /// Both ports: what identifies the flow beside the addresses.
    pub const PORTS: Range<usize> = 0..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// A view of a UDP datagram (header and payload).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks that the header fits.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buffer })
    }

    fn u16_at(&self, r: std::ops::Range<usize>) -> u16 {
        let b = &self.buffer.as_ref()[r];
        u16::from_be_bytes([b[0], b[1]])
    }

    pub fn src_port(&self) -> u16 {
        self.u16_at(field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        self.u16_at(field::DST_PORT)
    }

    /// The length field: header and payload, in bytes.
    pub fn len(&self) -> usize {
        usize::from(self.u16_at(field::LENGTH))
    }

    /// Whether the length field says there is no payload.
    pub fn is_empty(&self) -> bool {
        self.len() <= HEADER_LEN
    }

    /// The checksum; 0 means none (allowed over IPv4 only).
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    pub fn set_checksum(&mut self, sum: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A DNS query's UDP header, 40001 -> 53, 37 bytes, checksum 0x1f2e, and its first bytes.
    const DATAGRAM: [u8; 12] = [
        0x9c, 0x41, 0x00, 0x35, 0x00, 0x25, 0x1f, 0x2e, 0xbe, 0xef, 0x01, 0x00,
    ];

    #[test]
    fn deconstruct_datagram() {
        let u = Packet::new_checked(&DATAGRAM[..]).expect("valid");
        assert_eq!((u.src_port(), u.dst_port()), (40001, 53));
        assert_eq!(u.len(), 37);
        assert!(!u.is_empty());
        assert_eq!(u.checksum(), 0x1f2e);
        assert_eq!(u.payload(), &[0xbe, 0xef, 0x01, 0x00]);
    }

    #[test]
    fn construct_datagram() {
        let mut b = DATAGRAM;
        let mut u = Packet::new_checked(&mut b[..]).expect("valid");
        u.set_len(1480);
        u.set_checksum(0);
        assert_eq!(&b[4..8], &[0x05, 0xc8, 0, 0]);
        assert_eq!(&b[..4], &DATAGRAM[..4]);
    }

    #[test]
    fn short_datagrams_are_truncated() {
        for n in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&DATAGRAM[..n]).err(),
                Some(WireError::Truncated)
            );
        }
    }
}
