//! TAP → UDP on the offload datapath: frames read with their vnet header straight into the
//! send buffer behind room for the VXLAN header; TSO super-frames cut into segments back to
//! back and sent in GSO runs; equal-sized frames to one VTEP joined into one send
//! ([`RunJoiner`]).

use super::{BATCH, Features, WgSock};
use crate::overlay::batch::{self, FRAME_MAX, Run, RunJoiner};
use crate::overlay::counters::{Counters, DropReason};
use crate::overlay::error::Error;
use crate::overlay::io::{send, write_tap};
use crate::overlay::switch::{FromTap, Switch, flow_hash};
use crate::overlay::tap::Tap;
use crate::overlay::udp;
use crate::overlay::wg::{DATA_OFFSET, INNER_HEADERS, Sealed, TAG_LEN};
use crate::wire::offload::{self, F_NEEDS_CSUM, GSO_ECN, GSO_NONE, VNET_HDR_LEN, VnetHdr};
use crate::wire::vxlan;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;

/// One network's TAP → UDP state: buffers allocated once.
pub(super) struct Tx {
    net: usize,
    tap: Arc<AsyncFd<Tap>>,
    counters: Arc<Counters>,
    vx: [u8; vxlan::HEADER_LEN],
    vnet_on: bool,
    /// Room for a run of datagrams and one more frame read behind them.
    buf: Vec<u8>,
    /// Segmentation output: the payload once, plus per segment a VXLAN header and the
    /// frame's headers (at most 18 + 60 + 60 bytes), for segments of at least 88 bytes.
    segbuf: Vec<u8>,
    vnet: [u8; VNET_HDR_LEN],
    reply: [u8; 64],
    runs: RunJoiner,
    /// With encryption: sealed datagrams, back to back for one GSO send.
    sealed: Vec<u8>,
}

/// What one TAP read gave.
enum Read {
    /// A frame of `len` bytes behind the headroom, with its vnet header.
    Frame(VnetHdr, usize),
    /// Read but unusable (counted).
    Dropped,
    Again,
    Empty,
}

impl Tx {
    pub(super) fn new(
        net: usize,
        tap: Arc<AsyncFd<Tap>>,
        switch: &Switch,
        features: &Features,
    ) -> Tx {
        let (vni, counters) = (switch.vni(net), switch.counters(net).clone());
        let mut vx = [0u8; vxlan::HEADER_LEN];
        vxlan::emit_header(&mut vx, vni);
        Tx {
            net,
            tap,
            counters,
            vx,
            vnet_on: features.tap_tso,
            buf: vec![0u8; 4 * (FRAME_MAX + vxlan::HEADER_LEN)],
            segbuf: vec![0u8; 4 * FRAME_MAX],
            vnet: [0u8; VNET_HDR_LEN],
            reply: [0u8; 64],
            runs: RunJoiner::default(),
            sealed: Vec::new(),
        }
    }

    /// Cuts the TSO super-frame at `at..end` with room for WireGuard's header and the inner
    /// headers in front of each segment and for the tag behind it, seals the segments there
    /// for each WireGuard peer in `dsts` (the super-frame cut again for every peer after the
    /// first) and sends them from WireGuard's socket in GSO runs; plain `dsts` go as
    /// [`Tx::send_super_frame`] sends them, where plain VXLAN is allowed.
    async fn send_super_frame_sealed(
        &mut self,
        (at, end): (usize, usize),
        hdr: &VnetHdr,
        dsts: &[SocketAddr],
        plain: Option<&UdpSocket>,
        wg: &WgSock,
        features: &Features,
    ) {
        if self.sealed.is_empty() {
            self.sealed = vec![0u8; 2 * FRAME_MAX];
        }
        let mut prefix = [0u8; DATA_OFFSET + INNER_HEADERS + vxlan::HEADER_LEN];
        prefix[DATA_OFFSET + INNER_HEADERS..].copy_from_slice(&self.vx);
        let (csum_start, mss) = (usize::from(hdr.csum_start), usize::from(hdr.gso_size));
        let cut = |buf: &[u8], out: &mut [u8]| {
            offload::segment_with_room(
                &buf[at..end],
                Some(csum_start),
                mss,
                (&prefix, TAG_LEN),
                out,
            )
        };
        let Ok(seg) = cut(&self.buf, &mut self.segbuf[..]) else {
            return self.counters.dropped(DropReason::BadOffload);
        };
        self.counters.tso_frames.fetch_add(1, Relaxed);
        // whether `segbuf` holds the cut as it was made (not sealed, not overwritten)
        let mut fresh = true;
        let sport = flow_hash(&self.buf[at..end]) as u16 | 0xc000;
        for dst in dsts {
            if !wg.crypto.is_peer(*dst) {
                match plain {
                    Some(sock) if wg.crypto.allow_plaintext => {
                        // cuts into `segbuf` too
                        fresh = false;
                        self.send_super_frame((at, end), hdr, &[*dst], sock, features)
                            .await;
                    }
                    _ => {
                        wg.crypto
                            .counters
                            .plaintext_dropped
                            .fetch_add(seg.count as u64, Relaxed);
                    }
                }
                continue;
            }
            // the same frame cut the same way: it cannot fail the second time
            if !fresh && cut(&self.buf, &mut self.segbuf[..]).is_err() {
                continue;
            }
            fresh = false;
            let mut control = Vec::new();
            let sealed = wg.crypto.seal_segments(
                *dst,
                sport,
                (&mut self.segbuf[..seg.len], seg.stride),
                &mut self.sealed[..],
                &mut |m, to| control.push((m.to_vec(), to)),
            );
            for (m, to) in control {
                send(&wg.sock, &m, to, &self.counters).await;
            }
            if let Some((endpoint, len)) = sealed
                && len > 0
            {
                let data = &self.segbuf[..len];
                send_segments(
                    &wg.sock,
                    data,
                    seg.stride,
                    endpoint,
                    features,
                    &self.counters,
                )
                .await;
            }
        }
    }

    /// Seals the VXLAN datagram at `buf[at - 8..end]` (the inner headers' room before it)
    /// for each WireGuard peer in `dsts` and sends it from WireGuard's socket; plain `dsts`
    /// get it plain where that is allowed.
    async fn send_one_sealed(
        &mut self,
        (at, end): (usize, usize),
        dsts: &[SocketAddr],
        plain: Option<&UdpSocket>,
        wg: &WgSock,
    ) {
        if self.sealed.is_empty() {
            self.sealed = vec![0u8; 2 * FRAME_MAX];
        }
        let start = at - vxlan::HEADER_LEN - INNER_HEADERS;
        let sport = flow_hash(&self.buf[at..end]) as u16 | 0xc000;
        for dst in dsts {
            match wg
                .crypto
                .seal(*dst, sport, &mut self.buf[start..end], &mut self.sealed)
            {
                Sealed::Send(msg, endpoint) => {
                    send(&wg.sock, msg, endpoint, &self.counters).await;
                }
                Sealed::Nothing => {}
                Sealed::NotAPeer => match plain {
                    Some(sock) if wg.crypto.allow_plaintext => {
                        send(
                            sock,
                            &self.buf[at - vxlan::HEADER_LEN..end],
                            *dst,
                            &self.counters,
                        )
                        .await;
                    }
                    _ => {
                        wg.crypto.counters.plaintext_dropped.fetch_add(1, Relaxed);
                    }
                },
            }
        }
    }

    /// Reads one frame into `buf[at..]`.
    fn read(&mut self, at: usize) -> Result<Read, Error> {
        let (vnet_on, vnet) = (self.vnet_on, &mut self.vnet);
        let window = &mut self.buf[at..at + FRAME_MAX];
        let read = self.tap.try_io(Interest::READABLE, |t| {
            if vnet_on {
                t.read_split(&mut vnet[..], window)
            } else {
                t.read(window)
            }
        });
        let n = match read {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Read::Empty),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Read::Again),
            Err(e) => {
                return Err(Error::Io {
                    what: "read from TAP",
                    name: self.tap.get_ref().name().to_owned(),
                    source: e,
                });
            }
            Ok(n) => n,
        };
        if !vnet_on {
            return Ok(Read::Frame(VnetHdr::default(), n));
        }
        match (VnetHdr::parse(&vnet[..]), n.checked_sub(VNET_HDR_LEN)) {
            (Ok(h), Some(len)) => Ok(Read::Frame(h, len)),
            _ => {
                self.counters.dropped(DropReason::ShortTapFrame);
                Ok(Read::Dropped)
            }
        }
    }

    /// Writes a suppressed ARP's reply back to the TAP.
    async fn reply(&self, len: usize) {
        let reply = &self.reply[..len];
        let res = if self.vnet_on {
            let zero = [0u8; VNET_HDR_LEN];
            self.tap
                .get_ref()
                .write_vectored(&[IoSlice::new(&zero), IoSlice::new(reply)])
        } else {
            write_tap(&self.tap, reply).await
        };
        if let Err(e) = res {
            self.counters.dropped(DropReason::TapWrite);
            tracing::debug!("overlay: ARP reply to TAP: {e}");
        }
    }

    /// Cuts the TSO super-frame at `at..end` and sends its segments in GSO runs to `dsts`.
    /// With GSO, only the segments' headers are written (to `segbuf`) and the payload goes
    /// out from where the TAP read put it; without, each segment is built whole.
    async fn send_super_frame(
        &mut self,
        (at, end): (usize, usize),
        hdr: &VnetHdr,
        dsts: &[SocketAddr],
        sock: &UdpSocket,
        features: &Features,
    ) {
        if features.udp_gso.load(Relaxed) {
            let frame = &self.buf[at..end];
            match offload::segment_headers(
                frame,
                Some(usize::from(hdr.csum_start)),
                usize::from(hdr.gso_size),
                &self.vx,
                &mut self.segbuf[..],
            ) {
                Ok(h) => {
                    self.counters.tso_frames.fetch_add(1, Relaxed);
                    for dst in dsts {
                        send_in_place(
                            sock,
                            frame,
                            &self.segbuf,
                            &h,
                            *dst,
                            features,
                            &self.counters,
                        )
                        .await;
                    }
                }
                Err(_) => self.counters.dropped(DropReason::BadOffload),
            }
            return;
        }
        match offload::segment(
            &self.buf[at..end],
            Some(usize::from(hdr.csum_start)),
            usize::from(hdr.gso_size),
            &self.vx,
            &mut self.segbuf[..],
        ) {
            Ok(s) => {
                self.counters.tso_frames.fetch_add(1, Relaxed);
                for dst in dsts {
                    let data = &self.segbuf[..s.len];
                    send_segments(sock, data, s.stride, *dst, features, &self.counters).await;
                }
            }
            Err(_) => self.counters.dropped(DropReason::BadOffload),
        }
    }
}

/// Reads what the TAP has queued (at most [`BATCH`] frames) and sends it. Returns the number
/// of frames read.
pub(super) async fn tx_drain(
    st: &mut Tx,
    switch: &Switch,
    senders: &[UdpSocket],
    wg: Option<&WgSock>,
    features: &Features,
) -> Result<usize, Error> {
    let mut handled = 0;
    let mut pos = 0usize;
    // with encryption every frame is read behind room for the inner headers too, and sealed
    // on its own (a TSO frame's segments are sealed and sent together)
    let room = vxlan::HEADER_LEN + if wg.is_some() { INNER_HEADERS } else { 0 };
    for _ in 0..BATCH {
        if pos + room + FRAME_MAX > st.buf.len() {
            send_pending(st.runs.take(), &st.buf, senders, features, &st.counters).await;
            pos = 0;
        }
        let at = pos + room;
        let (hdr, len) = match st.read(at)? {
            Read::Frame(h, len) => (h, len),
            Read::Dropped => {
                handled += 1;
                continue;
            }
            Read::Again => continue,
            Read::Empty => break,
        };
        handled += 1;
        let end = at + len;
        let decision = switch.from_tap(st.net, &st.buf[at..end], Instant::now(), &mut st.reply);
        let peers = (decision == FromTap::Flood).then(|| switch.peers());
        let one;
        let dsts: &[SocketAddr] = match (&decision, &peers) {
            (FromTap::Unicast(v), _) => {
                one = [*v];
                &one
            }
            (FromTap::Flood, Some(p)) => p,
            (FromTap::Reply(len), _) => {
                st.reply(*len).await;
                continue;
            }
            _ => continue,
        };
        let sock = flow_hash(&st.buf[at..end]) as usize % senders.len().max(1);
        let tso = hdr.gso_type & !GSO_ECN != GSO_NONE;
        if !tso
            && hdr.flags & F_NEEDS_CSUM != 0
            && offload::complete_checksum(
                &mut st.buf[at..end],
                usize::from(hdr.csum_start),
                usize::from(hdr.csum_offset),
            )
            .is_err()
        {
            st.counters.dropped(DropReason::BadOffload);
            continue;
        }
        if let Some(wg) = wg {
            let plain = senders.get(sock);
            if tso {
                st.send_super_frame_sealed((at, end), &hdr, dsts, plain, wg, features)
                    .await;
            } else {
                st.buf[at - vxlan::HEADER_LEN..at].copy_from_slice(&st.vx);
                st.send_one_sealed((at, end), dsts, plain, wg).await;
            }
            continue;
        }
        if tso {
            // a TSO super-frame: what is pending leaves first, then its segments
            send_pending(st.runs.take(), &st.buf, senders, features, &st.counters).await;
            pos = 0;
            st.send_super_frame((at, end), &hdr, dsts, &senders[sock], features)
                .await;
            continue;
        }
        st.buf[pos..at].copy_from_slice(&st.vx);
        // a run of equal-sized datagrams to one VTEP leaves in one call: one GSO send, or one
        // sendmmsg where GSO is off (send_run decides)
        if let FromTap::Unicast(vtep) = decision {
            let done = st.runs.push(pos, end, vtep, sock);
            send_pending(done, &st.buf, senders, features, &st.counters).await;
            pos = end;
            continue;
        }
        // flood: in order, one datagram per peer
        send_pending(st.runs.take(), &st.buf, senders, features, &st.counters).await;
        for dst in dsts {
            send(&senders[sock], &st.buf[pos..end], *dst, &st.counters).await;
        }
        pos = 0;
    }
    send_pending(st.runs.take(), &st.buf, senders, features, &st.counters).await;
    Ok(handled)
}

/// What a GSO send came to.
enum Gso {
    Sent,
    /// Not sent: GSO is off now (the kernel refused it) or the socket failed; send the
    /// datagrams one by one.
    OneByOne,
    /// Not sent, and not to be tried again (counted by the caller).
    Failed,
}

/// Tries one GSO send (`send`), waiting while the socket is full. A kernel or device that
/// refuses GSO (EIO: the underlay has no checksum offload) turns it off for good.
async fn gso_send(
    sock: &UdpSocket,
    send: impl Fn() -> io::Result<usize>,
    dst: SocketAddr,
    features: &Features,
) -> Gso {
    loop {
        match sock.try_io(Interest::WRITABLE, &send) {
            Ok(_) => return Gso::Sent,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if sock.writable().await.is_err() {
                    return Gso::OneByOne;
                }
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
                ) =>
            {
                if features.udp_gso.swap(false, Relaxed) {
                    tracing::warn!(
                        "overlay: the kernel refused a UDP GSO send ({e}); the underlay \
                         likely has no checksum offload. Sending datagrams one by one from now on"
                    );
                }
                return Gso::OneByOne;
            }
            Err(e) => {
                tracing::debug!(%dst, "overlay GSO send failed: {e}");
                return Gso::Failed;
            }
        }
    }
}

/// While GSO is on, sends `count` datagrams (`bytes` in all) in one GSO send and counts
/// them, sent or dropped: true when done, false when they are to go one by one.
async fn gso_counted(
    sock: &UdpSocket,
    send: impl Fn() -> io::Result<usize>,
    (count, bytes): (usize, usize),
    dst: SocketAddr,
    features: &Features,
    counters: &Counters,
) -> bool {
    if !features.udp_gso.load(Relaxed) {
        return false;
    }
    match gso_send(sock, send, dst, features).await {
        Gso::Sent => {
            counters.tx_to(dst, count, bytes);
            counters.gso_sends.fetch_add(1, Relaxed);
            true
        }
        Gso::Failed => {
            for _ in 0..count {
                counters.dropped(DropReason::Send);
            }
            true
        }
        Gso::OneByOne => false,
    }
}

/// Sends `data` (datagrams of `seg` bytes back to back, `count` of them) to `dst`: one GSO
/// send while GSO works, else one send per datagram.
async fn send_run(
    sock: &UdpSocket,
    data: &[u8],
    seg: usize,
    count: usize,
    dst: SocketAddr,
    features: &Features,
    counters: &Counters,
) {
    let send = || udp::send_gso(sock, data, dst, seg);
    if count > 1 && gso_counted(sock, send, (count, data.len()), dst, features, counters).await {
        return;
    }
    // one sendmmsg per run (GSO off or refused)
    let mut rest = data;
    while !rest.is_empty() {
        match sock.try_io(Interest::WRITABLE, || udp::send_many(sock, rest, seg, dst)) {
            // sendmmsg sends at least one message or fails; 0 would mean no progress
            Ok(0) => break,
            Ok(n) => {
                let bytes = (n * seg).min(rest.len());
                counters.tx_to(dst, n, bytes);
                rest = &rest[bytes..];
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if sock.writable().await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::debug!(%dst, "overlay send failed: {e}");
                break;
            }
        }
    }
    for _ in 0..rest.len().div_ceil(seg) {
        counters.dropped(DropReason::Send);
    }
}

/// Sends a run of datagrams that lie in `buf`.
async fn send_pending(
    run: Option<Run>,
    buf: &[u8],
    senders: &[UdpSocket],
    features: &Features,
    counters: &Counters,
) {
    if let Some(p) = run {
        let data = &buf[p.start..p.end];
        send_run(
            &senders[p.sock],
            data,
            p.seg,
            p.count,
            p.dst,
            features,
            counters,
        )
        .await;
    }
}

/// Sends the segments cut by [`offload::segment_headers`] to `dst` in GSO-sized runs, each
/// datagram gathered from its headers (in `hdrs`) and its payload (in `frame`).
async fn send_in_place(
    sock: &UdpSocket,
    frame: &[u8],
    hdrs: &[u8],
    h: &offload::Headers,
    dst: SocketAddr,
    features: &Features,
    counters: &Counters,
) {
    let stride = h.stride();
    for (run, count) in batch::gso_runs(h.len(), stride) {
        let first = run.start / stride;
        let mut iov = [IoSlice::new(&[]); 2 * batch::MAX_SEGMENTS];
        for k in 0..count {
            let i = first + k;
            iov[2 * k] = IoSlice::new(&hdrs[i * h.hdr_len..(i + 1) * h.hdr_len]);
            iov[2 * k + 1] = IoSlice::new(&frame[h.payload(i)]);
        }
        let iov = &iov[..2 * count];
        let send = || udp::send_gso_iov(sock, iov, dst, stride);
        if count > 1 && gso_counted(sock, send, (count, run.len()), dst, features, counters).await {
            continue;
        }
        // one datagram per send: its headers and payload gathered
        for parts in iov.chunks(2) {
            let one = || udp::send_gso_iov(sock, parts, dst, usize::MAX);
            loop {
                match sock.try_io(Interest::WRITABLE, one) {
                    Ok(n) => counters.tx_to(dst, 1, n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if sock.writable().await.is_ok() {
                            continue;
                        }
                        counters.dropped(DropReason::Send);
                    }
                    Err(_) => counters.dropped(DropReason::Send),
                }
                break;
            }
        }
    }
}

/// Sends segmented datagrams (`stride` bytes each but the last) in GSO-sized runs.
async fn send_segments(
    sock: &UdpSocket,
    data: &[u8],
    stride: usize,
    dst: SocketAddr,
    features: &Features,
    counters: &Counters,
) {
    for (run, count) in batch::gso_runs(data.len(), stride) {
        send_run(sock, &data[run], stride, count, dst, features, counters).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// A GSO send the kernel refuses (here: a socket without UDP checksums, which GSO
    /// needs) turns GSO off and the datagrams still go out, one per send.
    #[tokio::test]
    async fn a_refused_gso_send_falls_back_to_single_datagrams() {
        use std::os::fd::AsRawFd;
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let tx = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        if !udp::gso_supported(&tx) {
            eprintln!("no UDP_SEGMENT on this kernel; the fallback is the only path");
        }
        let one: libc::c_int = 1;
        // SAFETY: setsockopt(2) with a pointer to an int on an open socket.
        let rc = unsafe {
            libc::setsockopt(
                tx.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                std::ptr::addr_of!(one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        let features = Features {
            tap_tso: true,
            tap_uso: false,
            queues: 1,
            udp_gso: AtomicBool::new(true),
            udp_gro: false,
        };
        let counters = Counters::default();
        let data: Vec<u8> = (0..250u32).map(|i| i as u8).collect();
        let dst = rx.local_addr().expect("addr");
        send_run(&tx, &data, 100, 3, dst, &features, &counters).await;
        assert!(!features.udp_gso.load(Relaxed), "GSO turned off");
        assert_eq!(counters.tx_packets.load(Relaxed), 3);
        assert_eq!(counters.gso_sends.load(Relaxed), 0);
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .expect("timeout");
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        for _ in 0..3 {
            let n = rx.recv(&mut buf).expect("datagram");
            got.push(buf[..n].to_vec());
        }
        assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [100, 100, 50]);
        assert_eq!(got.concat(), data);
        // later runs go out one by one without trying GSO again
        send_run(&tx, &data, 100, 3, dst, &features, &counters).await;
        assert_eq!(counters.tx_packets.load(Relaxed), 6);
    }
}
