//! The offload paths on arbitrary bytes: received frames checked for merging (TCP and UDP),
//! merged headers written, and super-frames cut as a TAP's vnet header asks (offsets and
//! segment size taken from the input). Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vxgate::wire::offload::{
    TcpSegment, UdpSegment, VnetHdr, merged_header, merged_udp_header, segment,
};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    // a vnet header's worth of control, then two frames
    let hint = usize::from(data[0]);
    let mss = usize::from(u16::from_be_bytes([data[1], data[2]]));
    let split = usize::from(data[3]) * data.len() / 256;
    let body = &data[4..];
    let (a, b) = body.split_at(split.min(body.len()));
    let _ = VnetHdr::parse(body);
    let mut out = vec![0u8; 4 * 65_536];
    for f in [a, b, body] {
        let _ = segment(f, Some(hint), mss, &[0x08, 0, 0, 0, 0, 0, 42, 0], &mut out);
        let _ = segment(f, None, mss.max(1), &[], &mut out);
    }
    let mut hdr = [0u8; 512];
    if let (Some(pa), Some(pb)) = (TcpSegment::parse(a), TcpSegment::parse(b)) {
        let _ = pa.follows(a, &pa, pa.payload, b, &pb);
        let _ = merged_header(a, &pa, pa.payload + pb.payload, 2, b, &mut hdr);
        let _ = merged_header(a, &pa, usize::MAX / 4, 64, b, &mut hdr);
    }
    if let (Some(pa), Some(pb)) = (UdpSegment::parse(a), UdpSegment::parse(b)) {
        let _ = pa.follows(a, &pa, b, &pb);
        let _ = merged_udp_header(a, &pa, pa.payload + pb.payload, 2, &mut hdr);
        let _ = merged_udp_header(a, &pa, usize::MAX / 4, 64, &mut hdr);
    }
});
