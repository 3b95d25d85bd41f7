//! TCP header (RFC 9293 §3.1): ports, sequence and acknowledgment numbers, data offset,
//! flags, window, checksum, urgent pointer, options.

use super::WireError;

pub const MIN_HEADER_LEN: usize = 20;

/// The flag bits of byte 13.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// Field ranges.
pub mod field {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    /// Both ports: what identifies the flow beside the addresses.
    pub const PORTS: Range<usize> = 0..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const ACK: Range<usize> = 8..12;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
}

/// A view of a TCP segment (header and payload).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks that the fixed header fits, that the data offset is at least 5 words, and that
    /// the whole header (options included) fits.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let hl = usize::from(b[field::DATA_OFFSET] >> 4) * 4;
        if hl < MIN_HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if b.len() < hl {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buffer })
    }

    fn u16_at(&self, r: std::ops::Range<usize>) -> u16 {
        let b = &self.buffer.as_ref()[r];
        u16::from_be_bytes([b[0], b[1]])
    }

    fn u32_at(&self, r: std::ops::Range<usize>) -> u32 {
        let b = &self.buffer.as_ref()[r];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    pub fn src_port(&self) -> u16 {
        self.u16_at(field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        self.u16_at(field::DST_PORT)
    }

    pub fn seq(&self) -> u32 {
        self.u32_at(field::SEQ)
    }

    pub fn ack(&self) -> u32 {
        self.u32_at(field::ACK)
    }

    /// Header length in bytes (the data offset), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * 4
    }

    /// The flag bits ([`flags`]).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn window(&self) -> u16 {
        self.u16_at(field::WINDOW)
    }

    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }

    pub fn urgent(&self) -> u16 {
        self.u16_at(field::URGENT)
    }

    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_seq(&mut self, seq: u32) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&seq.to_be_bytes());
    }

    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    pub fn set_window(&mut self, window: u16) {
        self.buffer.as_mut()[field::WINDOW].copy_from_slice(&window.to_be_bytes());
    }

    pub fn set_checksum(&mut self, sum: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
    }

    /// Computes and stores the checksum over the whole buffer (header and payload) and
    /// `pseudo` (the IP layer's pseudo-header sum).
    pub fn fill_checksum(&mut self, pseudo: u64) {
        self.set_checksum(0);
        let sum = !super::checksum::fold(super::checksum::add(pseudo, self.buffer.as_ref()));
        self.set_checksum(sum);
    }
}

/// A TCP header, parsed (the options as bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// At most 40 bytes, a multiple of 4.
    pub options: &'a [u8],
}

impl<'a> Repr<'a> {
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &'a Packet<&'a T>) -> Repr<'a> {
        let b: &'a [u8] = p.buffer.as_ref();
        Repr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq: p.seq(),
            ack: p.ack(),
            flags: p.flags(),
            window: p.window(),
            options: &b[MIN_HEADER_LEN..p.header_len()],
        }
    }

    pub fn header_len(&self) -> usize {
        MIN_HEADER_LEN + self.options.len()
    }

    /// Writes the header and its options (checksum 0: see [`Packet::fill_checksum`]) into
    /// the start of `b`.
    pub fn emit(&self, b: &mut [u8]) -> Result<(), WireError> {
        if self.options.len() > 40 || self.options.len() % 4 != 0 {
            return Err(WireError::Malformed);
        }
        let h = b.get_mut(..self.header_len()).ok_or(WireError::Truncated)?;
        h.fill(0);
        h[field::SRC_PORT].copy_from_slice(&self.src_port.to_be_bytes());
        h[field::DST_PORT].copy_from_slice(&self.dst_port.to_be_bytes());
        h[field::SEQ].copy_from_slice(&self.seq.to_be_bytes());
        h[field::ACK].copy_from_slice(&self.ack.to_be_bytes());
        h[field::DATA_OFFSET] = ((self.header_len() / 4) as u8) << 4;
        h[field::FLAGS] = self.flags;
        h[field::WINDOW].copy_from_slice(&self.window.to_be_bytes());
        h[MIN_HEADER_LEN..].copy_from_slice(self.options);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A data segment 40000 -> 80, seq 0xfffffff0, ack 7, 32-byte header with timestamps,
    // PSH|ACK, window 502, then 3 payload bytes.
    const SEGMENT: [u8; 35] = [
        0x9c, 0x40, 0x00, 0x50, 0xff, 0xff, 0xff, 0xf0, 0x00, 0x00, 0x00, 0x07, 0x80, 0x18, 0x01,
        0xf6, 0xab, 0xcd, 0x00, 0x00, 0x01, 0x01, 0x08, 0x0a, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
        0x00, 0x02, b'a', b'b', b'c',
    ];

    #[test]
    fn deconstruct_segment() {
        let t = Packet::new_checked(&SEGMENT[..]).expect("valid");
        assert_eq!((t.src_port(), t.dst_port()), (40000, 80));
        assert_eq!(t.seq(), 0xffff_fff0);
        assert_eq!(t.ack(), 7);
        assert_eq!(t.header_len(), 32);
        assert_eq!(t.flags(), flags::PSH | flags::ACK);
        assert_eq!(t.window(), 502);
        assert_eq!(t.checksum(), 0xabcd);
        assert_eq!(t.urgent(), 0);
        assert_eq!(t.options(), &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(t.payload(), b"abc");
    }

    #[test]
    fn construct_segment() {
        let mut b = SEGMENT;
        let mut t = Packet::new_checked(&mut b[..]).expect("valid");
        t.set_seq(0x0000_0010);
        t.set_flags(flags::ACK | flags::FIN);
        t.set_window(0x1234);
        t.set_checksum(0);
        assert_eq!(&b[4..8], &[0, 0, 0, 0x10]);
        assert_eq!(b[13], 0x11);
        assert_eq!(&b[14..18], &[0x12, 0x34, 0, 0]);
        assert_eq!(&b[18..], &SEGMENT[18..], "the rest untouched");
    }

    #[test]
    fn repr_round_trips_through_emit() {
        let p = Packet::new_checked(&SEGMENT[..]).expect("valid");
        let repr = Repr::parse(&p);
        assert_eq!(repr.options.len(), 12);
        let mut b = [0xaa; 35];
        repr.emit(&mut b).expect("fits");
        b[32..].copy_from_slice(b"abc");
        b[16..18].copy_from_slice(&[0xab, 0xcd]);
        assert_eq!(b, SEGMENT);
        assert_eq!(repr.emit(&mut b[..31]), Err(WireError::Truncated));
        let odd = Repr {
            options: &[1, 1, 1],
            ..repr
        };
        assert_eq!(odd.emit(&mut b), Err(WireError::Malformed));
    }

    #[test]
    fn bad_headers_are_refused() {
        for n in 0..MIN_HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&SEGMENT[..n]).err(),
                Some(WireError::Truncated)
            );
        }
        assert_eq!(
            Packet::new_checked(&SEGMENT[..31]).err(),
            Some(WireError::Truncated),
            "options cut"
        );
        let mut b = SEGMENT;
        b[12] = 0x40; // 16-byte header
        assert_eq!(
            Packet::new_checked(&b[..]).err(),
            Some(WireError::Malformed)
        );
    }
}
