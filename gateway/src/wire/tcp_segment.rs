//! Software TCP segmentation for IPv4 (what a NIC's TSO does): one large Ethernet/IPv4/TCP
//! frame becomes frames that each carry at most `mss` bytes of TCP payload, with IP lengths,
//! IDs and checksums and TCP sequence numbers, flags and checksums fixed.
//!
//! A veth pair in front of a userspace VTEP can hand it a VXLAN datagram whose inner frame is
//! such a GSO "super-frame" (up to 64 KiB); the TAP only takes frames up to its MTU.

use super::WireError;
use super::ethernet::{self, Frame, ethertype};
use super::ipv4;

/// Whether `frame` is an IPv4 TCP frame that segmentation can handle: unfragmented, lengths
/// consistent. Returns the header length (Ethernet + IP + TCP) and the IP total length.
pub fn check(frame: &[u8]) -> Result<(usize, usize), WireError> {
    let f = Frame::new_checked(frame)?;
    if f.ethertype() != ethertype::IPV4 {
        return Err(WireError::Malformed);
    }
    let ip = ipv4::Packet::new_checked(f.payload())?;
    if ip.protocol() != ipv4::protocol::TCP || ip.is_later_fragment() || f.payload()[6] & 0x20 != 0
    {
        return Err(WireError::Malformed);
    }
    let ihl = ip.header_len();
    let total = usize::from(u16::from_be_bytes([f.payload()[2], f.payload()[3]]));
    let tcp = ip.payload();
    if tcp.len() < 20 {
        return Err(WireError::Truncated);
    }
    let thl = usize::from(tcp[12] >> 4) * 4;
    if thl < 20 || total < ihl + thl {
        return Err(WireError::Malformed);
    }
    if total > f.payload().len() {
        return Err(WireError::Truncated);
    }
    Ok((ethernet::HEADER_LEN + ihl + thl, total))
}

/// Cuts `frame` into segments of at most `mss` payload bytes, each built in `scratch` (which
/// must hold the headers plus `mss`) and handed to `emit`. Returns the number of segments.
pub fn segment(
    frame: &[u8],
    mss: usize,
    scratch: &mut [u8],
    emit: impl FnMut(&[u8]),
) -> Result<usize, WireError> {
    check(frame)?;
    super::offload::segment_each(frame, None, mss, scratch, emit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::internet;

    const FIN: u8 = 0x01;
    const PSH: u8 = 0x08;
    const CWR: u8 = 0x80;

    fn big_frame(payload_len: usize, flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 32];
        f[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
        let total = (20 + 32 + payload_len) as u16;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[18..20].copy_from_slice(&0x1234u16.to_be_bytes());
        f[20] = 0x40;
        f[22] = 64;
        f[23] = ipv4::protocol::TCP;
        f[26..30].copy_from_slice(&[10, 200, 2, 11]);
        f[30..34].copy_from_slice(&[10, 200, 1, 11]);
        f[34..36].copy_from_slice(&80u16.to_be_bytes());
        f[36..38].copy_from_slice(&40000u16.to_be_bytes());
        f[38..42].copy_from_slice(&0xffff_fff0u32.to_be_bytes()); // wraps
        f[46] = 0x80; // 32-byte TCP header (timestamps)
        f[47] = flags;
        f.extend((0..payload_len).map(|i| (i % 251) as u8));
        f
    }

    /// The TCP checksum computed independently of the code under test.
    fn tcp_checksum(src: [u8; 4], dst: [u8; 4], segment: &[u8]) -> u16 {
        let mut pseudo = [0u8; 12];
        pseudo[..4].copy_from_slice(&src);
        pseudo[4..8].copy_from_slice(&dst);
        pseudo[9] = ipv4::protocol::TCP;
        pseudo[10..12].copy_from_slice(&(segment.len() as u16).to_be_bytes());
        let a = !internet(&pseudo);
        let b = !internet(segment);
        let sum = u32::from(a) + u32::from(b);
        !((sum & 0xffff) as u16).wrapping_add((sum >> 16) as u16)
    }

    fn verify(seg: &[u8]) {
        let ip = &seg[14..34];
        assert_eq!(internet(ip), 0, "IP header checksum");
        let tcp = &seg[34..];
        let src = [ip[12], ip[13], ip[14], ip[15]];
        let dst = [ip[16], ip[17], ip[18], ip[19]];
        let mut copy = tcp.to_vec();
        let stored = u16::from_be_bytes([copy[16], copy[17]]);
        copy[16..18].fill(0);
        assert_eq!(tcp_checksum(src, dst, &copy), stored, "TCP checksum");
    }

    #[test]
    fn a_super_frame_becomes_mss_sized_segments() {
        let payload = 10_000;
        let frame = big_frame(payload, 0x18 | CWR | FIN);
        let mss = 1450 - 20 - 32;
        let mut scratch = vec![0u8; 2048];
        let mut segs: Vec<Vec<u8>> = Vec::new();
        let n = segment(&frame, mss, &mut scratch, |s| segs.push(s.to_vec())).expect("segments");
        assert_eq!(n, payload.div_ceil(mss));
        assert_eq!(segs.len(), n);
        let mut rebuilt = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            verify(s);
            assert!(s.len() <= 14 + 1450);
            let total = u16::from_be_bytes([s[16], s[17]]) as usize;
            assert_eq!(total, s.len() - 14);
            assert_eq!(u16::from_be_bytes([s[18], s[19]]), 0x1234 + i as u16);
            let seq = u32::from_be_bytes([s[38], s[39], s[40], s[41]]);
            assert_eq!(seq, 0xffff_fff0u32.wrapping_add((i * mss) as u32));
            let last = i == n - 1;
            assert_eq!(s[47] & FIN != 0, last);
            assert_eq!(s[47] & PSH != 0, last);
            assert_eq!(s[47] & CWR != 0, i == 0);
            assert_eq!(&s[34 + 20..34 + 32], &frame[54..66], "options copied");
            rebuilt.extend_from_slice(&s[66..]);
        }
        assert_eq!(rebuilt, &frame[66..]);
    }

    #[test]
    fn refuses_what_it_cannot_segment() {
        let mut scratch = vec![0u8; 2048];
        let mut f = big_frame(3000, 0x10);
        f[23] = ipv4::protocol::UDP;
        assert!(segment(&f, 1000, &mut scratch, |_| {}).is_err());
        let mut f = big_frame(3000, 0x10);
        f[20] |= 0x20; // more fragments
        assert!(segment(&f, 1000, &mut scratch, |_| {}).is_err());
        let f = big_frame(3000, 0x10);
        assert!(
            segment(&f[..2000], 1000, &mut scratch, |_| {}).is_err(),
            "total beyond frame"
        );
        assert!(
            segment(&f, 4000, &mut scratch, |_| {}).is_err(),
            "scratch too small"
        );
        for n in 0..80 {
            let _ = segment(&f[..n], 100, &mut scratch, |_| {});
        }
    }
}
