//! Offload formats and the software halves of TSO and GRO, without I/O.
//!
//! A TAP opened with `IFF_VNET_HDR` prefixes every frame with a [`VnetHdr`] (the legacy
//! 10-byte `virtio_net_hdr`, in host byte order). With TSO enabled on the TAP
//! (`TUNSETOFFLOAD`), a read can return a TCP "super-frame" of up to 64 KiB whose checksum is
//! left for the device: [`segment`] cuts it into MTU-sized frames with lengths, IDs,
//! sequence numbers, flags and checksums fixed, each written behind a prefix (the VXLAN
//! header) back to back, ready for one UDP GSO send. On the way in, [`TcpSegment::parse`] and
//! [`TcpSegment::follows`] decide whether consecutive received frames of one TCP flow can be
//! merged, and [`merged_header`] writes the header of the merged frame, which is handed to
//! the TAP with a GSO [`VnetHdr`] (the kernel then treats it as one large received packet,
//! as its own GRO would have).

use super::checksum::{add, fold};
use super::ethernet::{self, Frame, ethertype};
use super::ipv4::{self, protocol};
use super::tcp::{self, flags};
use super::{WireError, ipv6, udp};

/// Length of the legacy `struct virtio_net_hdr`.
pub const VNET_HDR_LEN: usize = 10;

/// Field ranges of the legacy `struct virtio_net_hdr` (host byte order).
pub mod vnet_field {
    use std::ops::Range;
    pub const FLAGS: usize = 0;
    pub const GSO_TYPE: usize = 1;
    pub const HDR_LEN: Range<usize> = 2..4;
    pub const GSO_SIZE: Range<usize> = 4..6;
    pub const CSUM_START: Range<usize> = 6..8;
    pub const CSUM_OFFSET: Range<usize> = 8..10;
}
/// `flags`: the checksum at `csum_start + csum_offset` is to be completed.
pub const F_NEEDS_CSUM: u8 = 1;
/// `gso_type` values.
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_ECN: u8 = 0x80;

/// `gso_type` for UDP segmentation (USO): Linux ≥ 6.2 takes it from a TAP.
pub const GSO_UDP_L4: u8 = 5;

/// `struct virtio_net_hdr` (legacy, host byte order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> Result<VnetHdr, WireError> {
        use vnet_field as f;
        let b = b.get(..VNET_HDR_LEN).ok_or(WireError::Truncated)?;
        let u = |r: std::ops::Range<usize>| u16::from_ne_bytes([b[r.start], b[r.start + 1]]);
        Ok(VnetHdr {
            flags: b[f::FLAGS],
            gso_type: b[f::GSO_TYPE],
            hdr_len: u(f::HDR_LEN),
            gso_size: u(f::GSO_SIZE),
            csum_start: u(f::CSUM_START),
            csum_offset: u(f::CSUM_OFFSET),
        })
    }

    pub fn emit(&self, b: &mut [u8; VNET_HDR_LEN]) {
        use vnet_field as f;
        b[f::FLAGS] = self.flags;
        b[f::GSO_TYPE] = self.gso_type;
        b[f::HDR_LEN].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[f::GSO_SIZE].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[f::CSUM_START].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[f::CSUM_OFFSET].copy_from_slice(&self.csum_offset.to_ne_bytes());
    }
}

/// Finishes a checksum the sender left to the device: the one's-complement sum from
/// `start` to the end, stored at `start + offset` (which holds the pseudo-header sum).
pub fn complete_checksum(frame: &mut [u8], start: usize, offset: usize) -> Result<(), WireError> {
    let at = start + offset;
    if at + 2 > frame.len() {
        return Err(WireError::Malformed);
    }
    let mut sum = !fold(add(0, &frame[start..]));
    // a UDP checksum of 0 means "none"; 0xffff is the same value in one's complement
    if sum == 0 && offset == udp::field::CHECKSUM.start {
        sum = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

/// Where the layers of an Ethernet / IPv4-or-IPv6 / TCP frame start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layers {
    l3: usize,
    l4: usize,
    /// End of the TCP header.
    hdr: usize,
    v6: bool,
    /// End of the IP packet (frames may carry padding after it).
    end: usize,
}

/// Finds the layers of a TCP frame. `l4_hint` (a vnet header's `csum_start`) is used for
/// IPv6, whose extension headers are not walked here.
fn layers(frame: &[u8], l4_hint: Option<usize>) -> Result<Layers, WireError> {
    layers_of(frame, l4_hint, protocol::TCP)
}

/// [`layers`] for TCP or UDP (`proto`), through the views of each format.
fn layers_of(frame: &[u8], l4_hint: Option<usize>, proto: u8) -> Result<Layers, WireError> {
    let (et, l3) = Frame::new_checked(frame)?.network_layer()?;
    let l3_bytes = &frame[l3..];
    let (l4, v6, end) = match et {
        ethertype::IPV4 => {
            let ip = ipv4::Packet::new_checked(l3_bytes)?;
            if ip.protocol() != proto || ip.is_fragment() {
                return Err(WireError::Malformed);
            }
            (l3 + ip.header_len(), false, l3 + ip.total_len())
        }
        ethertype::IPV6 => {
            let ip = ipv6::Packet::new_checked(l3_bytes)?;
            let l4 = match l4_hint {
                Some(h) if h >= l3 + ipv6::HEADER_LEN => h,
                _ if ip.next_header() == proto => l3 + ipv6::HEADER_LEN,
                _ => return Err(WireError::Malformed),
            };
            (l4, true, l3 + ipv6::HEADER_LEN + ip.payload_len())
        }
        _ => return Err(WireError::Malformed),
    };
    let l4_bytes = frame.get(l4..).ok_or(WireError::Truncated)?;
    let hdr = if proto == protocol::UDP {
        let u = udp::Packet::new_checked(l4_bytes)?;
        if end >= l4 && u.len() != end - l4 {
            return Err(WireError::Malformed);
        }
        l4 + udp::HEADER_LEN
    } else {
        l4 + tcp::Packet::new_checked(l4_bytes)?.header_len()
    };
    if end < hdr {
        return Err(WireError::Malformed);
    }
    if end > frame.len() {
        return Err(WireError::Truncated);
    }
    Ok(Layers {
        l3,
        l4,
        hdr,
        v6,
        end,
    })
}

/// Whether `frame` is an unfragmented IPv4 TCP frame (no VLAN tag) that segmentation can cut,
/// as a receiver must when a sender's GSO super-frame is larger than the TAP's MTU. Returns
/// the length of its headers (Ethernet + IP + TCP) and the IP total length.
pub fn segmentable_ipv4(frame: &[u8]) -> Result<(usize, usize), WireError> {
    let l = layers(frame, None)?;
    if l.v6 || l.l3 != ethernet::HEADER_LEN {
        return Err(WireError::Malformed);
    }
    Ok((l.hdr, l.end - l.l3))
}

/// The pseudo-header sum without the length (addresses and protocol TCP).
fn pseudo_sum(frame: &[u8], l: &Layers) -> u64 {
    pseudo_sum_of(frame, l, protocol::TCP)
}

fn pseudo_sum_of(frame: &[u8], l: &Layers, proto: u8) -> u64 {
    let ip = &frame[l.l3..];
    let addrs = if l.v6 {
        &ip[ipv6::field::ADDRS]
    } else {
        &ip[ipv4::field::ADDRS]
    };
    add(u64::from(proto), addrs)
}

/// What [`segment`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segmented {
    pub count: usize,
    /// Length of each datagram (prefix + frame) but possibly the last, which may be shorter.
    pub stride: usize,
    /// Bytes written to `out`.
    pub len: usize,
}

/// Cuts a TCP super-frame into frames of at most `mss` payload bytes. Each is written to
/// `out` as `prefix` + frame, back to back (the layout UDP GSO sends in one call).
/// `l4_hint` is the vnet header's `csum_start`. Fails, writing nothing useful, on frames
/// that are not TCP over IPv4/IPv6 or when `out` is too small.
pub fn segment(
    frame: &[u8],
    l4_hint: Option<usize>,
    mss: usize,
    prefix: &[u8],
    out: &mut [u8],
) -> Result<Segmented, WireError> {
    segment_with_room(frame, l4_hint, mss, (prefix, 0), out)
}

/// [`segment`], with `tail` bytes after each frame left as they are (room for what a
/// sealing in place appends); `stride` and `len` count them.
pub fn segment_with_room(
    frame: &[u8],
    l4_hint: Option<usize>,
    mss: usize,
    (prefix, tail): (&[u8], usize),
    out: &mut [u8],
) -> Result<Segmented, WireError> {
    let cut = Cut::new(frame, l4_hint, mss)?;
    let l = &cut.l;
    let payload_len = l.end - l.hdr;
    let room = prefix.len() + tail;
    let stride = room + l.hdr + mss.min(payload_len);
    let len = (room + l.hdr) * cut.count + payload_len;
    if out.len() < len {
        return Err(WireError::Truncated);
    }
    let mut at = 0;
    for i in 0..cut.count {
        let seg_len = prefix.len() + cut.segment_len(i);
        let seg = &mut out[at..at + seg_len];
        at += seg_len + tail;
        seg[..prefix.len()].copy_from_slice(prefix);
        cut.write(frame, i, &mut seg[prefix.len()..]);
    }
    Ok(Segmented {
        count: cut.count,
        stride,
        len,
    })
}

/// The segments of a super-frame cut by [`segment_headers`]: segment `i` is its headers,
/// `hdrs[i * hdr_len..(i + 1) * hdr_len]`, followed by `frame[payload(i)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers {
    pub count: usize,
    /// Prefix and frame headers of each segment.
    pub hdr_len: usize,
    mss: usize,
    start: usize,
    end: usize,
}

impl Headers {
    /// Where segment `i`'s payload lies in the frame.
    pub fn payload(&self, i: usize) -> std::ops::Range<usize> {
        (self.start + i * self.mss).min(self.end)..(self.start + (i + 1) * self.mss).min(self.end)
    }

    /// Length of each datagram but possibly the last (headers and `mss` payload bytes).
    pub fn stride(&self) -> usize {
        self.hdr_len + self.mss.min(self.end - self.start)
    }

    /// Bytes of all segments together.
    pub fn len(&self) -> usize {
        self.hdr_len * self.count + (self.end - self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Like [`segment`], without copying the payload: only each segment's headers (`prefix`
/// and the frame's headers, fixed up, checksums included) are written, to `hdrs`; the
/// payload is sent from where it lies (an iovec per part).
pub fn segment_headers(
    frame: &[u8],
    l4_hint: Option<usize>,
    mss: usize,
    prefix: &[u8],
    hdrs: &mut [u8],
) -> Result<Headers, WireError> {
    let cut = Cut::new(frame, l4_hint, mss)?;
    let (p, hdr) = (prefix.len(), cut.l.hdr);
    let hdr_len = p + hdr;
    if hdrs.len() < hdr_len * cut.count {
        return Err(WireError::Truncated);
    }
    for (i, h) in hdrs.chunks_exact_mut(hdr_len).take(cut.count).enumerate() {
        h[..p].copy_from_slice(prefix);
        cut.write_header(frame, i, &mut h[p..]);
    }
    Ok(Headers {
        count: cut.count,
        hdr_len,
        mss,
        start: hdr,
        end: cut.l.end,
    })
}

/// Like [`segment`], but builds one segment at a time in `scratch` (headers + `mss` bytes
/// suffice) and hands each to `emit`. Returns the number of segments.
pub fn segment_each(
    frame: &[u8],
    l4_hint: Option<usize>,
    mss: usize,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, WireError> {
    let cut = Cut::new(frame, l4_hint, mss)?;
    if scratch.len() < cut.l.hdr + mss {
        return Err(WireError::Malformed);
    }
    for i in 0..cut.count {
        let out = &mut scratch[..cut.segment_len(i)];
        cut.write(frame, i, out);
        emit(out);
    }
    Ok(cut.count)
}

/// How a TCP super-frame is cut: what every segment shares.
struct Cut {
    l: Layers,
    mss: usize,
    count: usize,
    pseudo: u64,
    id: u16,
    seq: u32,
    flags: u8,
}

impl Cut {
    fn new(frame: &[u8], l4_hint: Option<usize>, mss: usize) -> Result<Cut, WireError> {
        let l = layers(frame, l4_hint)?;
        if mss == 0 {
            return Err(WireError::Malformed);
        }
        let t = tcp::Packet::new_checked(&frame[l.l4..])?;
        let id = match l.v6 {
            true => 0, // IPv6 has no ID in its fixed header
            false => ipv4::Packet::new_checked(&frame[l.l3..])?.ident(),
        };
        Ok(Cut {
            mss,
            count: (l.end - l.hdr).div_ceil(mss).max(1),
            pseudo: pseudo_sum(frame, &l),
            id,
            seq: t.seq(),
            flags: t.flags(),
            l,
        })
    }

    fn chunk(&self, i: usize) -> std::ops::Range<usize> {
        let (start, end) = (self.l.hdr, self.l.end);
        (start + i * self.mss).min(end)..(start + (i + 1) * self.mss).min(end)
    }

    /// Length of segment `i` (headers and its payload).
    fn segment_len(&self, i: usize) -> usize {
        self.l.hdr + self.chunk(i).len()
    }

    /// Writes segment `i` of `frame` into `f` (exactly [`Cut::segment_len`] bytes).
    fn write(&self, frame: &[u8], i: usize, f: &mut [u8]) {
        let hdr = self.l.hdr;
        self.write_header(frame, i, &mut f[..hdr]);
        f[hdr..].copy_from_slice(&frame[self.chunk(i)]);
    }

    /// Writes the headers of segment `i` into `h` (exactly `l.hdr` bytes), its TCP checksum
    /// computed over these headers and the payload where it lies in `frame`.
    fn write_header(&self, frame: &[u8], i: usize, h: &mut [u8]) {
        let l = &self.l;
        let chunk = self.chunk(i);
        let seg_len = l.hdr + chunk.len();
        h.copy_from_slice(&frame[..l.hdr]);
        set_ip_len(h, l, seg_len - l.l3, Some(self.id.wrapping_add(i as u16)));
        let tcp_len = seg_len - l.l4;
        let Ok(mut t) = tcp::Packet::new_checked(&mut h[l.l4..]) else {
            return; // the header was checked when the cut was planned
        };
        t.set_seq(self.seq.wrapping_add((i * self.mss) as u32));
        let mut fl = self.flags;
        if i + 1 < self.count {
            fl &= !(flags::FIN | flags::PSH);
        }
        if i > 0 {
            fl &= !flags::CWR;
        }
        t.set_flags(fl);
        t.set_checksum(0);
        // the TCP header's length is a multiple of 4, so the payload's sum continues it
        let c = !fold(add(
            add(self.pseudo + tcp_len as u64, &h[l.l4..]),
            &frame[chunk],
        ));
        h[l.l4 + tcp::field::CHECKSUM.start..][..2].copy_from_slice(&c.to_be_bytes());
    }
}

/// Sets the IP length fields of the header in `h` for an IP packet of `ip_len` bytes (and
/// for IPv4 the ID, if given, and the header checksum).
fn set_ip_len(h: &mut [u8], l: &Layers, ip_len: usize, id: Option<u16>) {
    if l.v6 {
        if let Ok(mut ip) = ipv6::Packet::header_only(&mut h[l.l3..]) {
            ip.set_payload_len((ip_len - ipv6::HEADER_LEN) as u16);
        }
    } else if let Ok(mut ip) = ipv4::Packet::header_only(&mut h[l.l3..l.l4]) {
        ip.set_total_len(ip_len as u16);
        if let Some(id) = id {
            ip.set_ident(id);
        }
        ip.fill_checksum();
    }
}

/// Whether the IPv4 header of a frame with these layers verifies (IPv6 has no checksum).
fn ip_header_ok(frame: &[u8], l: &Layers) -> bool {
    l.v6 || ipv4::Packet::header_only(&frame[l.l3..l.l4]).is_ok_and(|ip| ip.verify_checksum())
}

/// A received TCP frame that may be merged with its neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment {
    l: Layers,
    seq: u32,
    flags: u8,
    /// TCP payload bytes.
    pub payload: usize,
}

impl TcpSegment {
    /// A frame is a merge candidate when it is unfragmented TCP over IPv4 (with a valid header
    /// checksum) or IPv6 without extension headers, carries data, has no flags but ACK and
    /// PSH, and its TCP checksum verifies (merged frames are not verified again).
    pub fn parse(frame: &[u8]) -> Option<TcpSegment> {
        let l = layers(frame, None).ok()?;
        if l.end != frame.len() {
            return None; // padding: keep it simple, do not merge
        }
        if !ip_header_ok(frame, &l) {
            return None;
        }
        let t = tcp::Packet::new_checked(&frame[l.l4..l.hdr]).ok()?;
        let fl = t.flags();
        let refused = flags::FIN | flags::SYN | flags::RST | flags::URG | flags::ECE | flags::CWR;
        if fl & refused != 0 || fl & flags::ACK == 0 {
            return None;
        }
        let payload = l.end - l.hdr;
        if payload == 0 {
            return None;
        }
        let tcp_len = (l.end - l.l4) as u64;
        if fold(add(pseudo_sum(frame, &l) + tcp_len, &frame[l.l4..l.end])) != 0xffff {
            return None;
        }
        Some(TcpSegment {
            l,
            seq: t.seq(),
            flags: fl,
            payload,
        })
    }

    /// Whether `next` continues the merged frame that starts with `first` (parsed as `self`)
    /// and so far holds `merged` payload bytes in segments of `first`'s size: same headers
    /// (but lengths, IPv4 ID and checksums, and PSH), the next sequence number, and no
    /// segment after a short one or after PSH.
    pub fn follows(
        &self,
        first: &[u8],
        last: &TcpSegment,
        merged: usize,
        next_frame: &[u8],
        next: &TcpSegment,
    ) -> bool {
        let (a, b) = (&self.l, &next.l);
        if *a != (Layers { end: a.end, ..*b }) || next_frame.len() - b.hdr != next.payload {
            return false;
        }
        if last.payload != self.payload
            || last.flags & flags::PSH != 0
            || next.payload > self.payload
        {
            return false;
        }
        if next.seq != self.seq.wrapping_add(merged as u32) {
            return false;
        }
        // headers equal except the fields that differ between segments
        use tcp::field as f;
        let same = |r: std::ops::Range<usize>| first[r.clone()] == next_frame[r];
        let at = |r: std::ops::Range<usize>| a.l4 + r.start..a.l4 + r.end;
        same_below_l4(a, first, next_frame)
            && same(at(f::PORTS))
            && same(at(f::ACK.start..f::FLAGS)) // ack, data offset
            // urgent pointer, options (timestamps too, as Linux's GRO)
            && same(a.l4 + f::URGENT.start..a.hdr)
            && (first[a.l4 + f::FLAGS] | flags::PSH) == (next_frame[b.l4 + f::FLAGS] | flags::PSH)
    }

    /// Header bytes (Ethernet + IP + TCP).
    pub fn header_len(&self) -> usize {
        self.l.hdr
    }
}

/// Whether two frames with the same layers have the same Ethernet header and IP header but
/// for the fields that differ between segments of one flow: lengths, the IPv4 ID and the
/// header checksum.
fn same_below_l4(a: &Layers, first: &[u8], next: &[u8]) -> bool {
    let same = |r: std::ops::Range<usize>| first[r.clone()] == next[r];
    let at = |r: std::ops::Range<usize>| a.l3 + r.start..a.l3 + r.end;
    let ip_same = if a.v6 {
        // version, class, flow label; next header, hop limit, addresses
        use ipv6::field as f;
        same(at(f::VER_TC_FLOW)) && same(a.l3 + f::NEXT_HEADER..a.l4)
    } else {
        // version/IHL/TOS, flags/fragment, TTL/protocol, addresses, options
        use ipv4::field as f;
        same(at(f::VER_IHL..f::TOTAL_LEN.start))
            && same(at(f::FLAGS_FRAG.start..f::CHECKSUM.start))
            && same(a.l3 + f::SRC.start..a.l4)
    };
    same(0..a.l3) && ip_same
}

/// Writes into `out` the header of the frame that merges `first` (parsed as `seg`) with
/// following segments: `total` payload bytes in all, the last segment's TCP flags and
/// window. Returns the header length and the vnet header for the TAP write (GSO when more
/// than one segment, with the checksum left to the kernel as `CHECKSUM_PARTIAL`).
pub fn merged_header(
    first: &[u8],
    seg: &TcpSegment,
    total: usize,
    segments: usize,
    last_frame: &[u8],
    out: &mut [u8],
) -> Result<(usize, VnetHdr), WireError> {
    let l = &seg.l;
    let h = out.get_mut(..l.hdr).ok_or(WireError::Truncated)?;
    h.copy_from_slice(&first[..l.hdr]);
    if segments <= 1 {
        return Ok((l.hdr, VnetHdr::default()));
    }
    let ip_len = l.hdr - l.l3 + total;
    if ip_len > 0xffff {
        return Err(WireError::Malformed);
    }
    set_ip_len(h, l, ip_len, None);
    let last = tcp::Packet::new_checked(&last_frame[l.l4..])?;
    let mut t = tcp::Packet::new_checked(&mut h[l.l4..])?;
    // the last segment's flags (PSH) and window
    t.set_flags(last.flags());
    t.set_window(last.window());
    // CHECKSUM_PARTIAL: the field holds the pseudo-header sum, not complemented
    let tcp_len = (ip_len - (l.l4 - l.l3)) as u64;
    t.set_checksum(fold(pseudo_sum(first, l) + tcp_len));
    let vnet = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if l.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
        hdr_len: l.hdr as u16,
        gso_size: seg.payload as u16,
        csum_start: l.l4 as u16,
        csum_offset: tcp::field::CHECKSUM.start as u16,
    };
    Ok((l.hdr, vnet))
}

/// A received UDP datagram that may be merged with its neighbours (same flow, same size)
/// into one USO frame for the TAP; the kernel cuts it back into the same datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpSegment {
    l: Layers,
    /// UDP payload bytes.
    pub payload: usize,
}

impl UdpSegment {
    /// A candidate is unfragmented UDP over IPv4 (valid header checksum) or IPv6 without
    /// extension headers, with data, whose checksum verifies (or, over IPv4, is absent).
    pub fn parse(frame: &[u8]) -> Option<UdpSegment> {
        let l = layers_of(frame, None, protocol::UDP).ok()?;
        if l.end != frame.len() || l.end == l.hdr || !ip_header_ok(frame, &l) {
            return None;
        }
        let stored = udp::Packet::new_checked(&frame[l.l4..]).ok()?.checksum();
        if stored == 0 {
            if l.v6 {
                return None; // IPv6 requires a checksum
            }
        } else {
            let len = (l.end - l.l4) as u64;
            if fold(add(
                pseudo_sum_of(frame, &l, protocol::UDP) + len,
                &frame[l.l4..l.end],
            )) != 0xffff
            {
                return None;
            }
        }
        Some(UdpSegment {
            l,
            payload: l.end - l.hdr,
        })
    }

    /// Whether `next` continues the run that starts with `first` (parsed as `self`) and ends
    /// with `last`: same headers but lengths, IPv4 ID and checksums, and every datagram the
    /// first one's size but possibly the last.
    pub fn follows(
        &self,
        first: &[u8],
        last: &UdpSegment,
        next_frame: &[u8],
        next: &UdpSegment,
    ) -> bool {
        let (a, b) = (&self.l, &next.l);
        if *a != (Layers { end: a.end, ..*b }) {
            return false;
        }
        if last.payload != self.payload || next.payload > self.payload {
            return false;
        }
        let ports = a.l4 + udp::field::PORTS.start..a.l4 + udp::field::PORTS.end;
        same_below_l4(a, first, next_frame) && first[ports.clone()] == next_frame[ports]
    }

    /// Header bytes (Ethernet + IP + UDP).
    pub fn header_len(&self) -> usize {
        self.l.hdr
    }
}

/// Writes into `out` the header of the USO frame that carries `count` datagrams of `first`'s
/// flow, `total` payload bytes in all. Returns the header length and the vnet header (plain
/// when `count` is 1).
pub fn merged_udp_header(
    first: &[u8],
    seg: &UdpSegment,
    total: usize,
    count: usize,
    out: &mut [u8],
) -> Result<(usize, VnetHdr), WireError> {
    let l = &seg.l;
    let h = out.get_mut(..l.hdr).ok_or(WireError::Truncated)?;
    h.copy_from_slice(&first[..l.hdr]);
    if count <= 1 {
        return Ok((l.hdr, VnetHdr::default()));
    }
    let udp_len = udp::HEADER_LEN + total;
    let ip_len = l.l4 - l.l3 + udp_len;
    if ip_len > 0xffff {
        return Err(WireError::Malformed);
    }
    set_ip_len(h, l, ip_len, None);
    let mut u = udp::Packet::header_only(&mut h[l.l4..])?;
    u.set_len(udp_len as u16);
    u.set_checksum(fold(
        pseudo_sum_of(first, l, protocol::UDP) + udp_len as u64,
    ));
    Ok((
        l.hdr,
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: l.hdr as u16,
            gso_size: seg.payload as u16,
            csum_start: l.l4 as u16,
            csum_offset: udp::field::CHECKSUM.start as u16,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::build::{Ip, Transport, frame};

    pub(super) fn v4(src: [u8; 4], dst: [u8; 4]) -> Ip {
        Ip::V4(ipv4::Repr {
            src: src.into(),
            dst: dst.into(),
            protocol: 0,
            payload_len: 0,
            ttl: 64,
            ident: 0x1234,
            dont_frag: true,
        })
    }

    pub(super) fn eth() -> ethernet::Repr {
        ethernet::Repr {
            dst: ethernet::MacAddr([2, 0, 0, 0, 0, 2]),
            src: ethernet::MacAddr([2, 0, 0, 0, 0, 1]),
            ethertype: 0,
        }
    }

    pub(super) fn tcp_repr(
        src_port: u16,
        dst_port: u16,
        seq: u32,
        flags: u8,
    ) -> tcp::Repr<'static> {
        tcp::Repr {
            src_port,
            dst_port,
            seq,
            ack: 7,
            flags,
            window: 500,
            options: &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
        }
    }

    fn v4_frame(payload_len: usize, flags: u8, seq: u32) -> Vec<u8> {
        let payload: Vec<u8> = (0..payload_len).map(|i| (i * 7 % 251) as u8).collect();
        let tcp = tcp_repr(40000, 80, seq, flags);
        frame(
            eth(),
            v4([10, 200, 1, 11], [10, 200, 2, 11]),
            Transport::Tcp(tcp),
            &payload,
        )
    }

    fn v6_frame(payload_len: usize) -> Vec<u8> {
        let payload: Vec<u8> = (0..payload_len).map(|i| (i % 253) as u8).collect();
        let ip = Ip::V6(ipv6::Repr {
            src: "fd00::1".parse().expect("addr"),
            dst: "fd00::2".parse().expect("addr"),
            next_header: 0,
            payload_len: 0,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        });
        let tcp = tcp::Repr {
            options: &[],
            ..tcp_repr(40000, 80, 100, flags::PSH | flags::ACK)
        };
        frame(eth(), ip, Transport::Tcp(tcp), &payload)
    }

    #[test]
    fn vnet_header_round_trips() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1398,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut b = [0u8; VNET_HDR_LEN];
        h.emit(&mut b);
        assert_eq!(VnetHdr::parse(&b), Ok(h));
        assert_eq!(VnetHdr::parse(&b[..9]), Err(WireError::Truncated));
    }

    /// Segment a super-frame, then merge the segments back: the payload and the headers come
    /// back, and every segment verifies on its own.
    #[test]
    fn segment_then_merge_round_trips() {
        let big = v4_frame(10_000, 0x18, 0xffff_f000);
        let prefix = [0xaa; 8];
        let mut out = vec![0u8; 20_000];
        let s = segment(&big, Some(34), 1398, &prefix, &mut out).expect("segment");
        assert_eq!(s.count, 8);
        assert_eq!(s.stride, 8 + 66 + 1398);
        let segs: Vec<&[u8]> = out[..s.len].chunks(s.stride).map(|c| &c[8..]).collect();
        assert!(out[..s.len].chunks(s.stride).all(|c| c[..8] == prefix));
        let parsed: Vec<TcpSegment> = segs
            .iter()
            .map(|f| TcpSegment::parse(f).expect("each segment verifies"))
            .collect();
        assert_eq!(parsed[7].payload, 10_000 - 7 * 1398);
        // PSH only on the last
        assert!(segs[..7].iter().all(|f| f[47] & flags::PSH == 0));
        assert_eq!(segs[7][47] & flags::PSH, flags::PSH);
        let first = &parsed[0];
        let mut merged = first.payload;
        for i in 1..8 {
            assert!(first.follows(segs[0], &parsed[i - 1], merged, segs[i], &parsed[i]));
            merged += parsed[i].payload;
        }
        let mut hdr = [0u8; 128];
        let (hl, vnet) = merged_header(segs[0], first, merged, 8, segs[7], &mut hdr).expect("hdr");
        assert_eq!(hl, 66);
        assert_eq!(vnet.gso_type, GSO_TCPV4);
        assert_eq!(vnet.gso_size, 1398);
        let mut rebuilt = hdr[..hl].to_vec();
        for s in &segs {
            rebuilt.extend_from_slice(&s[66..]);
        }
        assert_eq!(rebuilt[66..], big[66..], "payload");
        assert_eq!(rebuilt[14..18], big[14..18], "IP total length");
        assert_eq!(
            rebuilt[34..50],
            big[34..50],
            "ports, seq, ack, flags, window"
        );
        // completing the partial checksum gives the original's
        complete_checksum(&mut rebuilt, 34, 16).expect("complete");
        assert_eq!(rebuilt[50..52], big[50..52]);
    }

    #[test]
    fn what_must_not_merge_does_not() {
        let a = v4_frame(1000, 0x10, 1);
        let pa = TcpSegment::parse(&a).expect("a");
        let check =
            |b: &[u8]| TcpSegment::parse(b).is_some_and(|pb| pa.follows(&a, &pa, 1000, b, &pb));
        assert!(check(&v4_frame(1000, 0x10, 1001)));
        assert!(
            check(&v4_frame(500, 0x18, 1001)),
            "shorter, with PSH, may end it"
        );
        assert!(!check(&v4_frame(1000, 0x10, 1002)), "a gap");
        assert!(!check(&v4_frame(1001, 0x10, 1001)), "longer than the first");
        let mut other_port = v4_frame(1000, 0x10, 1001);
        other_port[37] = 81;
        assert!(
            TcpSegment::parse(&other_port).is_none(),
            "checksum now wrong"
        );
        let mut corrupt = v4_frame(1000, 0x10, 1001);
        corrupt[100] ^= 1;
        assert!(TcpSegment::parse(&corrupt).is_none(), "bad TCP checksum");
        assert!(
            TcpSegment::parse(&v4_frame(1000, 0x11, 1001)).is_none(),
            "FIN"
        );
        assert!(
            TcpSegment::parse(&v4_frame(1000, 0x12, 1001)).is_none(),
            "SYN"
        );
        assert!(
            TcpSegment::parse(&v4_frame(0, 0x10, 1001)).is_none(),
            "pure ACK"
        );
        // after a short segment, nothing follows
        let short = v4_frame(500, 0x10, 1001);
        let ps = TcpSegment::parse(&short).expect("short");
        let next = v4_frame(1000, 0x10, 1501);
        let pn = TcpSegment::parse(&next).expect("next");
        assert!(!pa.follows(&a, &ps, 1500, &next, &pn));
        // truncated and non-TCP frames are refused, never panic
        for n in 0..a.len() {
            let _ = TcpSegment::parse(&a[..n]);
            let _ = segment(&a[..n], Some(34), 100, &[], &mut [0u8; 4096]);
        }
    }

    #[test]
    fn ipv6_segments_carry_payload_lengths_and_checksums() {
        let big = v6_frame(3000);
        let mut out = vec![0u8; 8000];
        let s = segment(&big, Some(54), 1200, &[], &mut out).expect("segment");
        assert_eq!(s.count, 3);
        let segs: Vec<&[u8]> = out[..s.len].chunks(s.stride).collect();
        assert_eq!(u16::from_be_bytes([segs[0][18], segs[0][19]]), 20 + 1200);
        assert_eq!(u16::from_be_bytes([segs[2][18], segs[2][19]]), 20 + 600);
        for f in &segs {
            TcpSegment::parse(f).expect("verifies");
        }
    }

    fn udp_frame(payload: &[u8], id: u16, csum: bool) -> Vec<u8> {
        let Ip::V4(ip) = v4([10, 200, 1, 11], [10, 200, 2, 11]) else {
            unreachable!()
        };
        let ip = Ip::V4(ipv4::Repr {
            ident: id,
            dont_frag: false,
            ..ip
        });
        let repr = udp::Repr {
            src_port: 5000,
            dst_port: 5201,
            payload_len: 0,
        };
        frame(
            eth(),
            ip,
            Transport::Udp {
                repr,
                checksum: csum,
            },
            payload,
        )
    }

    #[test]
    fn udp_datagrams_of_one_flow_merge_into_a_uso_frame() {
        let a = udp_frame(&[1; 64], 1, true);
        let b = udp_frame(&[2; 64], 7, false);
        let c = udp_frame(&[3; 30], 9, true);
        let (pa, pb, pc) = (
            UdpSegment::parse(&a).expect("a"),
            UdpSegment::parse(&b).expect("b: no checksum is fine over IPv4"),
            UdpSegment::parse(&c).expect("c"),
        );
        assert!(pa.follows(&a, &pa, &b, &pb));
        assert!(pa.follows(&a, &pb, &c, &pc), "a shorter last one");
        assert!(!pa.follows(&a, &pc, &a, &pa), "nothing after a short one");
        let mut other = udp_frame(&[2; 64], 7, false);
        other[37] = 0x52; // another destination port
        let po = UdpSegment::parse(&other).expect("other");
        assert!(!pa.follows(&a, &pa, &other, &po));
        let mut bad = a.clone();
        bad[50] ^= 1;
        assert!(UdpSegment::parse(&bad).is_none(), "bad checksum");
        let mut out = [0u8; 128];
        let (hl, v) = merged_udp_header(&a, &pa, 64 + 64 + 30, 3, &mut out).expect("hdr");
        assert_eq!(hl, 42);
        assert_eq!(
            (v.gso_type, v.gso_size, v.csum_start, v.csum_offset),
            (GSO_UDP_L4, 64, 34, 6)
        );
        assert_eq!(u16::from_be_bytes([out[38], out[39]]), 8 + 158);
        assert_eq!(u16::from_be_bytes([out[16], out[17]]), 28 + 158);
        assert_eq!(fold(add(0, &out[14..34])), 0xffff, "IPv4 header checksum");
        for n in 0..a.len() {
            let _ = UdpSegment::parse(&a[..n]);
        }
    }

    #[test]
    fn a_partial_checksum_is_completed() {
        let mut f = v4_frame(300, 0x18, 9);
        let want = [f[50], f[51]];
        let l = layers(&f, None).expect("l");
        let partial = fold(pseudo_sum(&f, &l) + (f.len() - 34) as u64);
        f[50..52].copy_from_slice(&partial.to_be_bytes());
        complete_checksum(&mut f, 34, 16).expect("ok");
        assert_eq!([f[50], f[51]], want);
        assert!(complete_checksum(&mut f, 34, 400).is_err());
    }
}

#[cfg(test)]
mod receive_segmentation_tests {
    //! Cutting a received GSO super-frame for a TAP with a smaller MTU: the switch checks
    //! [`segmentable_ipv4`], the receive path cuts with [`segment_each`].
    use super::tests::{eth, tcp_repr, v4};
    use super::*;
    use crate::wire::build::{Transport, frame};
    use crate::wire::checksum::internet;

    fn segment(
        frame: &[u8],
        mss: usize,
        scratch: &mut [u8],
        emit: impl FnMut(&[u8]),
    ) -> Result<usize, WireError> {
        segmentable_ipv4(frame)?;
        segment_each(frame, None, mss, scratch, emit)
    }

    use flags::{CWR, FIN, PSH};

    fn big_frame(payload_len: usize, flags: u8) -> Vec<u8> {
        let payload: Vec<u8> = (0..payload_len).map(|i| (i % 251) as u8).collect();
        let tcp = tcp_repr(80, 40000, 0xffff_fff0, flags); // the sequence wraps
        frame(
            eth(),
            v4([10, 200, 2, 11], [10, 200, 1, 11]),
            Transport::Tcp(tcp),
            &payload,
        )
    }

    /// The TCP checksum computed independently of the code under test.
    fn tcp_checksum(src: [u8; 4], dst: [u8; 4], segment: &[u8]) -> u16 {
        let mut pseudo = [0u8; 12];
        pseudo[..4].copy_from_slice(&src);
        pseudo[4..8].copy_from_slice(&dst);
        pseudo[9] = protocol::TCP;
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

    /// A cut with room after each frame is the plain cut with that room inserted (left as it
    /// was), its stride and length counting it; the last segment, shorter, has it too.
    #[test]
    fn room_after_each_segment_is_left_as_it_was() {
        let vx = [8u8, 0, 0, 0, 0, 0, 42, 0];
        for (payload, mss) in [(10_001, 1397), (1_000, 1398)] {
            let frame = big_frame(payload, 0x18 | FIN);
            let mut plain = vec![0u8; 2 * 65_536];
            let p = super::segment(&frame, None, mss, &vx, &mut plain).expect("cut");
            let mut roomy = vec![0xEEu8; 2 * 65_536];
            let r = segment_with_room(&frame, None, mss, (&vx, 16), &mut roomy).expect("cut");
            assert_eq!(
                (r.count, r.stride, r.len),
                (p.count, p.stride + 16, p.len + 16 * p.count)
            );
            let mut want = Vec::new();
            for seg in plain[..p.len].chunks(p.stride) {
                want.extend_from_slice(seg);
                want.extend_from_slice(&[0xEE; 16]);
            }
            assert_eq!(&roomy[..r.len], want, "payload {payload}, mss {mss}");
            let mut small = vec![0u8; r.len - 1];
            assert!(segment_with_room(&frame, None, mss, (&vx, 16), &mut small).is_err());
        }
    }

    /// Headers-only cutting plus the payload where it lies gives the very bytes of the
    /// copying cut: odd and even sizes, with a prefix.
    #[test]
    fn headers_and_payload_in_place_make_the_copied_segments() {
        let vx = [8u8, 0, 0, 0, 0, 0, 42, 0];
        for (payload, mss) in [
            (10_000, 1398),
            (10_001, 1397),
            (1_000, 1398),
            (65_000, 1398),
        ] {
            let frame = big_frame(payload, 0x18 | FIN);
            let mut out = vec![0u8; 2 * 65_536];
            let copied = super::segment(&frame, None, mss, &vx, &mut out).expect("copy cut");
            let mut hdrs = vec![0u8; 64 * 1024];
            let h = segment_headers(&frame, None, mss, &vx, &mut hdrs).expect("headers cut");
            assert_eq!(h.count, copied.count);
            assert_eq!((h.stride(), h.len()), (copied.stride, copied.len));
            let mut joined = Vec::new();
            for i in 0..h.count {
                joined.extend_from_slice(&hdrs[i * h.hdr_len..(i + 1) * h.hdr_len]);
                joined.extend_from_slice(&frame[h.payload(i)]);
            }
            assert_eq!(joined, &out[..copied.len], "payload {payload}, mss {mss}");
            for seg in joined.chunks(copied.stride) {
                verify(&seg[8..]);
            }
        }
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
        f[23] = protocol::UDP;
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
