//! UDP header (RFC 768).

use super::WireError;

pub const HEADER_LEN: usize = 8;

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
    /// Checks that the header fits, that the length field covers it and that the datagram
    /// lies within the buffer (`payload()` ends at the length).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::header_only(buffer)?;
        if p.buffer.as_ref().len() < p.len() {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }

    /// A view of the header alone (its payload elsewhere: a header rewritten in a side
    /// buffer): checks that the header fits and that the length field covers it.
    pub fn header_only(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if usize::from(u16::from_be_bytes([b[4], b[5]])) < HEADER_LEN {
            return Err(WireError::Malformed);
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

    /// The bytes after the header, up to the length field.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[HEADER_LEN..self.len().min(b.len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    pub fn set_checksum(&mut self, sum: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
    }

    /// Computes and stores the checksum over the datagram and `pseudo` (the IP layer's
    /// pseudo-header sum); a computed 0 is sent as 0xffff (RFC 768).
    pub fn fill_checksum(&mut self, pseudo: u64) {
        self.set_checksum(0);
        let len = self.len().min(self.buffer.as_ref().len());
        let sum =
            !super::checksum::fold(super::checksum::add(pseudo, &self.buffer.as_ref()[..len]));
        self.set_checksum(if sum == 0 { 0xffff } else { sum });
    }
}

/// A UDP header, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    /// Bytes after the header.
    pub payload_len: usize,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        Repr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            payload_len: p.len() - HEADER_LEN,
        }
    }

    /// Writes the header (checksum 0: see [`Packet::fill_checksum`]) into the start of `b`.
    pub fn emit(&self, b: &mut [u8]) -> Result<(), WireError> {
        let len = u16::try_from(HEADER_LEN + self.payload_len).map_err(|_| WireError::Malformed)?;
        let h = b.get_mut(..HEADER_LEN).ok_or(WireError::Truncated)?;
        h[field::SRC_PORT].copy_from_slice(&self.src_port.to_be_bytes());
        h[field::DST_PORT].copy_from_slice(&self.dst_port.to_be_bytes());
        h[field::LENGTH].copy_from_slice(&len.to_be_bytes());
        h[field::CHECKSUM].fill(0);
        Ok(())
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
        let u = Packet::header_only(&DATAGRAM[..]).expect("valid");
        assert_eq!((u.src_port(), u.dst_port()), (40001, 53));
        assert_eq!(u.len(), 37);
        assert!(!u.is_empty());
        assert_eq!(u.checksum(), 0x1f2e);
        assert_eq!(u.payload(), &[0xbe, 0xef, 0x01, 0x00]);
    }

    #[test]
    fn construct_datagram() {
        let mut b = DATAGRAM;
        let mut u = Packet::header_only(&mut b[..]).expect("valid");
        u.set_len(1480);
        u.set_checksum(0);
        assert_eq!(&b[4..8], &[0x05, 0xc8, 0, 0]);
        assert_eq!(&b[..4], &DATAGRAM[..4]);
    }

    #[test]
    fn the_length_field_is_held_to_the_buffer() {
        // 37 bytes said, 12 here
        assert_eq!(
            Packet::new_checked(&DATAGRAM[..]).err(),
            Some(WireError::Truncated)
        );
        let mut b = DATAGRAM;
        b[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            Packet::header_only(&b[..]).err(),
            Some(WireError::Malformed)
        );
        b[4..6].copy_from_slice(&10u16.to_be_bytes()); // 2 payload bytes, 2 of padding
        assert_eq!(
            Packet::new_checked(&b[..]).expect("valid").payload(),
            &[0xbe, 0xef]
        );
    }

    #[test]
    fn repr_and_checksum_through_emit() {
        let repr = Repr {
            src_port: 40001,
            dst_port: 53,
            payload_len: 4,
        };
        let mut b = [0xaa; 12];
        repr.emit(&mut b).expect("fits");
        b[8..].copy_from_slice(&[0xbe, 0xef, 0x01, 0x00]);
        let mut u = Packet::new_checked(&mut b[..]).expect("valid");
        assert_eq!(Repr::parse(&u), repr);
        u.fill_checksum(0x1234);
        let c = u.checksum();
        assert_eq!(
            super::super::checksum::fold(super::super::checksum::add(0x1234, &b)),
            0xffff,
            "the datagram with its checksum sums to all ones ({c:#x})"
        );
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
