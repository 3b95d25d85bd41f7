//! Ethernet II frames (IEEE 802.3 clause 3). 802.1Q-tagged frames are viewed like any other:
//! their ethertype reads 0x8100 and the tag stays in the payload, untouched.

use super::WireError;
use std::fmt;
use std::str::FromStr;

/// A 48-bit MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// Group addresses (broadcast included) have the I/G bit set.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// A usable station address: not group, not all-zero.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast() && self.0 != [0; 6]
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The text was not six colon-separated hex octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacParseError;

impl fmt::Display for MacParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected a MAC address like 02:42:ac:11:00:02")
    }
}

impl std::error::Error for MacParseError {}

impl FromStr for MacAddr {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in out.iter_mut() {
            let part = parts.next().ok_or(MacParseError)?;
            if part.len() != 2 {
                return Err(MacParseError);
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| MacParseError)?;
        }
        if parts.next().is_some() {
            return Err(MacParseError);
        }
        Ok(MacAddr(out))
    }
}

pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    pub const IPV6: u16 = 0x86dd;
}

/// Field ranges of the header.
pub mod field {
    use std::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    /// Where the payload starts.
    pub const PAYLOAD: usize = 14;
    /// Within an 802.1Q tag (behind the TPID in `ETHERTYPE`): the inner ethertype.
    pub const VLAN_INNER_ETHERTYPE: Range<usize> = 16..18;
}

/// Length of the Ethernet II header (no FCS: TAP devices and VXLAN carry none).
pub const HEADER_LEN: usize = field::PAYLOAD;
/// Length of an 802.1Q tag (TPID 0x8100, then the tag control and the inner ethertype).
pub const VLAN_TAG_LEN: usize = 4;

/// A view of an Ethernet II frame.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Views `buffer` as a frame, checking that the header fits.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Frame { buffer })
    }

    pub fn dst(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::DST)
    }

    pub fn src(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::SRC)
    }

    pub fn ethertype(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        u16::from_be_bytes([b[0], b[1]])
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// The ethertype of the network layer and where it starts, behind at most one 802.1Q
    /// tag.
    pub fn network_layer(&self) -> Result<(u16, usize), WireError> {
        let et = self.ethertype();
        if et != ethertype::VLAN {
            return Ok((et, HEADER_LEN));
        }
        let inner = self
            .buffer
            .as_ref()
            .get(field::VLAN_INNER_ETHERTYPE)
            .ok_or(WireError::Truncated)?;
        Ok((
            u16::from_be_bytes([inner[0], inner[1]]),
            HEADER_LEN + VLAN_TAG_LEN,
        ))
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    pub fn set_dst(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&mac.0);
    }

    pub fn set_src(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&mac.0);
    }

    pub fn set_ethertype(&mut self, value: u16) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&value.to_be_bytes());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

fn mac_at(b: &[u8], at: std::ops::Range<usize>) -> MacAddr {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[at]);
    MacAddr(m)
}

/// An Ethernet II header, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub dst: MacAddr,
    pub src: MacAddr,
    pub ethertype: u16,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Repr {
        Repr {
            dst: frame.dst(),
            src: frame.src(),
            ethertype: frame.ethertype(),
        }
    }

    /// Writes the header into the frame's first [`HEADER_LEN`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Frame<T>) {
        frame.set_dst(self.dst);
        frame.set_src(self.src);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An ARP request as the kernel's vxlan put it on the wire in the testbed (inner frame).
    const ARP_FRAME: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x0a, 0xc8, 0x01, 0x0b, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x0a, 0xc8, 0x01, 0x0b, 0x0a, 0xc8,
        0x01, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0xc8, 0x02, 0x0b,
    ];

    #[test]
    fn deconstruct_frame() {
        let f = Frame::new_checked(&ARP_FRAME[..]).expect("fits");
        assert!(f.dst().is_broadcast());
        assert_eq!(f.src(), "02:00:0a:c8:01:0b".parse().expect("mac"));
        assert_eq!(f.ethertype(), ethertype::ARP);
        assert_eq!(f.payload().len(), 28);
    }

    #[test]
    fn construct_frame() {
        let mut buf = [0u8; 42];
        buf[14..].copy_from_slice(&ARP_FRAME[14..]);
        let repr = Repr {
            dst: MacAddr::BROADCAST,
            src: "02:00:0a:c8:01:0b".parse().expect("mac"),
            ethertype: ethertype::ARP,
        };
        repr.emit(&mut Frame::new_checked(&mut buf[..]).expect("fits"));
        assert_eq!(buf, ARP_FRAME);
        assert_eq!(
            Repr::parse(&Frame::new_checked(&buf[..]).expect("fits")),
            repr
        );
    }

    #[test]
    fn the_network_layer_is_found_behind_a_vlan_tag() {
        let f = Frame::new_checked(&ARP_FRAME[..]).expect("fits");
        assert_eq!(f.network_layer(), Ok((ethertype::ARP, HEADER_LEN)));
        let mut tagged = ARP_FRAME[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x64, 0x08, 0x06]); // VLAN 100, then ARP
        tagged.extend_from_slice(&ARP_FRAME[14..]);
        let f = Frame::new_checked(&tagged[..]).expect("fits");
        assert_eq!(f.ethertype(), ethertype::VLAN);
        assert_eq!(f.network_layer(), Ok((ethertype::ARP, 18)));
        let f = Frame::new_checked(&tagged[..16]).expect("fits");
        assert_eq!(f.network_layer(), Err(WireError::Truncated));
    }

    #[test]
    fn short_frames_are_truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Frame::new_checked(&ARP_FRAME[..len]).err(),
                Some(WireError::Truncated)
            );
        }
    }

    #[test]
    fn mac_text_round_trips_and_rejects_junk() {
        let m: MacAddr = "02:42:AC:11:00:02".parse().expect("mac");
        assert_eq!(m.to_string(), "02:42:ac:11:00:02");
        assert!(m.is_unicast());
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "zz:42:ac:11:00:02",
            "2:42:ac:11:00:02",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert!(
            "01:00:5e:00:00:01"
                .parse::<MacAddr>()
                .expect("mac")
                .is_multicast()
        );
    }
}
