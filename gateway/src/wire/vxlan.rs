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
        if b[0] & FLAG_I == 0 {
            return Err(WireError::Malformed);
        }
        Ok(Packet { buffer })
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// The 24-bit VNI.
    pub fn vni(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([0, b[4], b[5], b[6]])
    }

    /// The inner Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

/// Writes a VXLAN header (I flag, `vni`, reserved bits zero) into `header`, which must be
/// [`HEADER_LEN`] bytes: the headroom in front of a frame, so the frame is never copied.
pub fn emit_header(header: &mut [u8; HEADER_LEN], vni: u32) {
    let v = vni.to_be_bytes();
    *header = [FLAG_I, 0, 0, 0, v[1], v[2], v[3], 0];
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
        emit_header(&mut h, 42);
        assert_eq!(h, KERNEL_HEADER);
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
