//! The receive-side merger (GRO) as a state machine: a flow of TCP segments built from the
//! input (IPv4 or IPv6, with or without timestamps; sizes, PSH, SYN, sequence gaps, port,
//! TTL and window changes chosen by the input) goes through the datapath's own merger,
//! `overlay::batch::Merger` (parse, follows, the 64-segment and 64 KiB bounds). Every merge
//! written must be the original segments again when the kernel cuts it: the merged frame,
//! segmented at its gso_size, gives the same count, payloads, sequence numbers and flags,
//! each with valid checksums.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vxgate::overlay::batch::{FRAME_MAX, GRO_MAX, Merged, Merger, Seg};
use vxgate::wire::build::{self, Ip, Transport};
use vxgate::wire::{ethernet, ipv4, ipv6, tcp};
use vxgate::wire::offload::{TcpSegment, segment_each};

struct Flow {
    v6: bool,
    ts: bool,
}

/// One Ethernet + IP + TCP frame with valid checksums, built through the wire formats'
/// `emit`.
fn frame(f: &Flow, seq: u32, flags: u8, sport: u16, ttl: u8, win: u16, payload: &[u8]) -> Vec<u8> {
    let eth = ethernet::Repr {
        dst: ethernet::MacAddr([2, 0, 0, 0, 0, 2]),
        src: ethernet::MacAddr([2, 0, 0, 0, 0, 1]),
        ethertype: 0,
    };
    let ip = if f.v6 {
        Ip::V6(ipv6::Repr {
            src: "fd00::1".parse().expect("addr"),
            dst: "fd00::2".parse().expect("addr"),
            next_header: 0,
            payload_len: 0,
            hop_limit: ttl,
            traffic_class: 0,
            flow_label: 0,
        })
    } else {
        Ip::V4(ipv4::Repr {
            src: [10, 0, 0, 1].into(),
            dst: [10, 0, 0, 2].into(),
            protocol: 0,
            payload_len: 0,
            ttl,
            ident: 0x1234,
            dont_frag: true,
        })
    };
    let options: &[u8] = if f.ts { &[1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9] } else { &[] };
    let tcp = tcp::Repr {
        src_port: sport,
        dst_port: 80,
        seq,
        ack: 1000,
        flags,
        window: win,
        options,
    };
    build::frame(eth, ip, Transport::Tcp(tcp), payload)
}

/// What the kernel does with a merged frame: cut it at gso_size. Checks it gives the
/// originals back (frame `k` of the flow lies at `ranges[k]` of `buf`).
fn check(m: &Merged<'_>, buf: &[u8], ranges: &[(usize, usize)], segs: &[TcpSegment]) {
    assert!(
        m.frames.len() <= GRO_MAX,
        "more than {GRO_MAX} frames merged"
    );
    let idx: Vec<usize> = m
        .frames
        .iter()
        .map(|r| {
            ranges
                .iter()
                .position(|x| x == r)
                .expect("a frame of the flow")
        })
        .collect();
    assert!(idx.windows(2).all(|w| w[1] == w[0] + 1), "frames in order");
    if idx.len() < 2 {
        return;
    }
    let mut out = vec![0u8; 256];
    let (hl, vnet) = m
        .header(buf, &mut out)
        .expect("a merge within bounds has a header");
    let mut merged = out[..hl].to_vec();
    for &(s, e) in m.frames {
        merged.extend_from_slice(&buf[s + hl..e]);
    }
    assert!(merged.len() <= FRAME_MAX, "merged frame over 64 KiB");
    assert_eq!(usize::from(vnet.gso_size), segs[idx[0]].payload);
    assert_eq!(usize::from(vnet.hdr_len), hl);
    let mut scratch = vec![0u8; FRAME_MAX];
    let mut cut = Vec::new();
    let n = segment_each(
        &merged,
        Some(usize::from(vnet.csum_start)),
        usize::from(vnet.gso_size),
        &mut scratch,
        |s| cut.push(s.to_vec()),
    )
    .expect("the merged frame can be cut");
    assert_eq!(n, idx.len(), "segment count");
    for (c, &i) in cut.iter().zip(&idx) {
        let (s, e) = ranges[i];
        let orig = &buf[s..e];
        let hl = segs[i].header_len();
        assert_eq!(&c[hl..], &orig[hl..], "payload of segment {i}");
        let again = TcpSegment::parse(c).expect("a re-cut segment verifies");
        assert_eq!(again.payload, segs[i].payload);
        // sequence number and flags (the window is the last segment's, as Linux's GRO)
        let t = tcp_start(c);
        assert_eq!(&c[t + 4..t + 8], &orig[t + 4..t + 8], "seq of segment {i}");
        assert_eq!(c[t + 13], orig[t + 13], "flags of segment {i}");
    }
}

fn tcp_start(frame: &[u8]) -> usize {
    if frame[12] == 0x86 { 14 + 40 } else { 14 + 20 }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let flow = Flow {
        v6: mode & 1 != 0,
        ts: mode & 2 != 0,
    };
    let mut seq = u32::from(mode).wrapping_mul(0x0101_0101).wrapping_sub(5000);
    let (mut frames, mut segs) = (Vec::new(), Vec::new());
    for d in rest.chunks_exact(3).take(200) {
        let len = 1 + usize::from(d[0]) * 6; // 1..1531 bytes
        let payload: Vec<u8> = (0..len).map(|j| (j as u8) ^ d[2]).collect();
        let mut flags = 0x10;
        if d[1] & 1 != 0 {
            flags |= 0x08; // PSH
        }
        if d[1] & 2 != 0 {
            flags |= 0x02; // SYN: never merged
        }
        if d[1] & 4 != 0 {
            seq = seq.wrapping_add(1); // a gap
        }
        let sport = if d[1] & 8 != 0 { 1235 } else { 1234 };
        let ttl = if d[1] & 16 != 0 { 63 } else { 64 };
        let win = if d[1] & 32 != 0 { 100 } else { 200 };
        let f = frame(&flow, seq, flags, sport, ttl, win, &payload);
        seq = seq.wrapping_add(len as u32);
        match TcpSegment::parse(&f) {
            Some(s) => {
                assert_eq!(flags & 0x02, 0, "a SYN was taken for merging");
                segs.push(s);
                frames.push(f);
            }
            None => assert_ne!(flags & 0x02, 0, "a valid data segment was refused"),
        }
    }
    // the flow back to back in one receive buffer, through the datapath's merger
    let mut ranges = Vec::with_capacity(frames.len());
    let mut buf = Vec::new();
    for f in &frames {
        ranges.push((buf.len(), buf.len() + f.len()));
        buf.extend_from_slice(f);
    }
    let mut merger = Merger::default();
    for (i, seg) in segs.iter().enumerate() {
        if let Some(m) = merger.push(0, Seg::Tcp(*seg), ranges[i], &buf) {
            check(&m, &buf, &ranges, &segs);
        }
    }
    if let Some(m) = merger.take() {
        check(&m, &buf, &ranges, &segs);
    }
});
