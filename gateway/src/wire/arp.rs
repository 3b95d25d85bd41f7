//! ARP for IPv4 over Ethernet (RFC 826): the only kind vxgate reads or writes.

use super::WireError;
use super::ethernet::MacAddr;
use std::net::Ipv4Addr;

pub const PACKET_LEN: usize = 28;

/// Field ranges of an Ethernet/IPv4 ARP packet.
pub mod field {
    use std::ops::Range;
    /// Hardware type, protocol type, their lengths: `00 01 08 00 06 04` for Ethernet/IPv4.
    pub const TYPES: Range<usize> = 0..6;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// What [`field::TYPES`] holds for Ethernet and IPv4.
const ETHERNET_IPV4: [u8; 6] = [0x00, 0x01, 0x08, 0x00, 6, 4];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Request,
    Reply,
}

/// A parsed Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub operation: Operation,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl Repr {
    /// Parses an ARP payload (after the Ethernet header). Other hardware or protocol types
    /// and other operations are `Malformed` for vxgate's purposes.
    pub fn parse(b: &[u8]) -> Result<Repr, WireError> {
        if b.len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::TYPES] != ETHERNET_IPV4 {
            return Err(WireError::Malformed);
        }
        let operation = match u16::from_be_bytes([b[field::OPER.start], b[field::OPER.start + 1]]) {
            1 => Operation::Request,
            2 => Operation::Reply,
            _ => return Err(WireError::Malformed),
        };
        let mac = |at: std::ops::Range<usize>| {
            let mut m = [0u8; 6];
            m.copy_from_slice(&b[at]);
            MacAddr(m)
        };
        let ip = |at: std::ops::Range<usize>| {
            let mut a = [0u8; 4];
            a.copy_from_slice(&b[at]);
            Ipv4Addr::from(a)
        };
        Ok(Repr {
            operation,
            sender_mac: mac(field::SHA),
            sender_ip: ip(field::SPA),
            target_mac: mac(field::THA),
            target_ip: ip(field::TPA),
        })
    }

    /// Writes the packet into the first [`PACKET_LEN`] bytes of `b`.
    pub fn emit(&self, b: &mut [u8]) -> Result<(), WireError> {
        let b = b.get_mut(..PACKET_LEN).ok_or(WireError::Truncated)?;
        b[field::TYPES].copy_from_slice(&ETHERNET_IPV4);
        let op: u16 = match self.operation {
            Operation::Request => 1,
            Operation::Reply => 2,
        };
        b[field::OPER].copy_from_slice(&op.to_be_bytes());
        b[field::SHA].copy_from_slice(&self.sender_mac.0);
        b[field::SPA].copy_from_slice(&self.sender_ip.octets());
        b[field::THA].copy_from_slice(&self.target_mac.0);
        b[field::TPA].copy_from_slice(&self.target_ip.octets());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Who has 10.200.2.11? Tell 10.200.1.11 — from a container in the testbed.
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x0a, 0xc8, 0x01, 0x0b, 0x0a,
        0xc8, 0x01, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0xc8, 0x02, 0x0b,
    ];

    #[test]
    fn deconstruct_request() {
        let r = Repr::parse(&REQUEST).expect("valid");
        assert_eq!(r.operation, Operation::Request);
        assert_eq!(r.sender_ip, Ipv4Addr::new(10, 200, 1, 11));
        assert_eq!(r.sender_mac.to_string(), "02:00:0a:c8:01:0b");
        assert_eq!(r.target_ip, Ipv4Addr::new(10, 200, 2, 11));
    }

    #[test]
    fn construct_round_trips() {
        let r = Repr::parse(&REQUEST).expect("valid");
        let mut out = [0u8; PACKET_LEN];
        r.emit(&mut out).expect("fits");
        assert_eq!(out, REQUEST);
        assert_eq!(r.emit(&mut [0u8; 27]), Err(WireError::Truncated));
    }

    #[test]
    fn other_kinds_are_refused() {
        let mut b = REQUEST;
        b[7] = 3; // RARP request
        assert_eq!(Repr::parse(&b), Err(WireError::Malformed));
        let mut b = REQUEST;
        b[2] = 0x86; // IPv6 protocol type
        assert_eq!(Repr::parse(&b), Err(WireError::Malformed));
        assert_eq!(Repr::parse(&REQUEST[..27]), Err(WireError::Truncated));
    }
}
