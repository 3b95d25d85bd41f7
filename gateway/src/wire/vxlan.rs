//! VXLAN header (RFC 7348 §5).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The I flag must be set on receive; every reserved bit is ignored on receive and zero on send.

use super::WireError;

pub const HEADER_LEN: usize = 8;

/// Field ranges of the header.
pub mod field {
    use std::ops::Range;
    pub const FLAGS: usize = 0;
    pub const VNI: Range<usize> = 4..7;
    /// Where the inner Ethernet frame starts.
    pub const PAYLOAD: usize = 8;
}

/// The I flag: the VNI is valid.
pub const FLAG_I: u8 = 0x08;
/// The IANA port (RFC 7348 §5).
pub const PORT: u16 = 4789;

/// A view of a VXLAN datagram (header + inner Ethernet frame).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Views `buffer` as VXLAN: the header must fit and the I flag must be set.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::FLAGS] & FLAG_I == 0 {
            return Err(WireError::Malformed);
        }
        Ok(Packet { buffer })
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The 24-bit VNI.
    pub fn vni(&self) -> u32 {
        let v = &self.buffer.as_ref()[field::VNI];
        u32::from_be_bytes([0, v[0], v[1], v[2]])
    }

    /// The inner Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

/// A VXLAN header, parsed: what vxgate reads of it is the VNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub vni: u32,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Repr {
        Repr { vni: packet.vni() }
    }

    /// Writes the header (I flag, the VNI, reserved bits zero) into `header`: the headroom
    /// in front of a frame, so the frame is never copied.
    pub fn emit(&self, header: &mut [u8; HEADER_LEN]) {
        let v = self.vni.to_be_bytes();
        *header = [0; HEADER_LEN];
        header[field::FLAGS] = FLAG_I;
        header[field::VNI].copy_from_slice(&v[1..]);
    }
}

/// Writes a VXLAN header for `vni` ([`Repr::emit`]).
pub fn emit_header(header: &mut [u8; HEADER_LEN], vni: u32) {
    Repr { vni }.emit(header);
}

#[cfg(test)]
mod tests {
    use super::*;

    // The first 8 bytes of a datagram that the kernel's vxlan (id 42, dstport 4789) sent in
    // the testbed, with reserved bits as the kernel writes them (zero).
    const KERNEL_HEADER: [u8; 8] = [0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x00];

    #[test]
    fn deconstruct_kernel_header() {
        let mut dgram = KERNEL_HEADER.to_vec();
        dgram.extend_from_slice(&[0xff; 14]);
        let p = Packet::new_checked(&dgram[..]).expect("valid");
        assert_eq!(p.vni(), 42);
        assert_eq!(p.payload().len(), 14);
    }

    #[test]
    fn construct_matches_kernel() {
        let mut h = [0xaa; HEADER_LEN];
        Repr { vni: 42 }.emit(&mut h);
        assert_eq!(h, KERNEL_HEADER);
        let p = Packet::new_checked(&h[..]).expect("valid");
        assert_eq!(Repr::parse(&p), Repr { vni: 42 });
        emit_header(&mut h, 0xff_ffff);
        assert_eq!(Packet::new_checked(&h[..]).expect("valid").vni(), 0xff_ffff);
    }

    #[test]
    fn reserved_bits_are_ignored_on_receive() {
        let h = [0xff, 0xff, 0xff, 0xff, 0x00, 0x01, 0x00, 0xff];
        let p = Packet::new_checked(&h[..]).expect("I flag set");
        assert_eq!(p.vni(), 256);
    }

    #[test]
    fn i_flag_clear_or_short_is_refused() {
        let mut h = KERNEL_HEADER;
        h[0] = 0;
        assert_eq!(
            Packet::new_checked(&h[..]).err(),
            Some(WireError::Malformed)
        );
        for len in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&KERNEL_HEADER[..len]).err(),
                Some(WireError::Truncated)
            );
        }
    }
}
