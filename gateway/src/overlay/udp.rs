//! UDP segmentation and receive offloads (Linux ≥ 4.18 / 5.0) and batched receive, on raw
//! sockets: `sendmsg` with a `UDP_SEGMENT` control message sends many equal-sized datagrams
//! laid out back to back in one call; with `UDP_GRO` enabled, one `recvmsg` returns many
//! datagrams of one flow back to back with their size in a control message; `recvmmsg`
//! fills several buffers in one call where GRO does not apply.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
pub use vxgate_udp::{Slots, recv_slots, send_many};
use vxgate_udp::{from_c, to_c};

pub use super::batch::{MAX_GSO_BYTES, MAX_SEGMENTS};

// a run of segments leaves in one sendmmsg where GSO is off
const _: () = assert!(MAX_SEGMENTS <= vxgate_udp::MAX_BATCH);

fn setsockopt_int(fd: &impl AsRawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: setsockopt(2) with a pointer to an int and its size, on an open socket.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::addr_of!(value).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Turns on UDP GRO for a receiving socket.
pub fn enable_gro(sock: &impl AsRawFd) -> io::Result<()> {
    setsockopt_int(sock, libc::SOL_UDP, libc::UDP_GRO, 1)
}

/// Whether the kernel knows `UDP_SEGMENT` (asks for the socket's default segment size).
pub fn gso_supported(sock: &impl AsRawFd) -> bool {
    let mut v: i32 = 0;
    let mut len = size_of::<i32>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes into `v`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            std::ptr::addr_of_mut!(v).cast(),
            &mut len,
        )
    };
    rc == 0
}

/// Control-message space for one int (UDP_GRO) or one u16 (UDP_SEGMENT), aligned.
#[repr(C, align(8))]
struct Cmsg([u8; 64]);

/// Sends `data` to `dst` as datagrams of `segment` bytes (the last may be shorter) in one
/// call. `segment` = `data.len()` sends one plain datagram.
pub fn send_gso(
    sock: &impl AsRawFd,
    data: &[u8],
    dst: SocketAddr,
    segment: usize,
) -> io::Result<usize> {
    send_gso_iov(sock, &[io::IoSlice::new(data)], dst, segment)
}

/// Like [`send_gso`], the datagrams' bytes gathered from `parts` in order (headers from one
/// buffer, payload from another: no copy to join them). `segment` at least the total sends
/// one plain datagram.
pub fn send_gso_iov(
    sock: &impl AsRawFd,
    parts: &[io::IoSlice<'_>],
    dst: SocketAddr,
    segment: usize,
) -> io::Result<usize> {
    let (mut addr, addr_len) = to_c(dst);
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut cmsg = Cmsg([0; 64]);
    // SAFETY: msghdr is plain old data; all zeroes is valid and the fields are set below.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = std::ptr::addr_of_mut!(addr).cast();
    msg.msg_namelen = addr_len;
    // IoSlice is ABI-compatible with iovec on Unix (std guarantees it); sendmsg only reads
    msg.msg_iov = parts.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = parts.len() as _;
    if segment < total {
        // SAFETY: CMSG_SPACE is a pure computation.
        let space = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
        msg.msg_control = cmsg.0.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `space` bytes we own; CMSG_FIRSTHDR returns a pointer
        // inside it (non-null since space >= one header), and CMSG_DATA one inside that.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = libc::UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), segment as u16);
        }
    }
    // SAFETY: every pointer in msg refers to live memory of the stated length.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// One `recvmsg` into `buf`: (bytes, sender, GRO segment size if the kernel coalesced).
pub fn recv_gro(sock: &impl AsRawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, usize)> {
    // SAFETY: sockaddr_storage is plain old data.
    let mut addr: libc::sockaddr_storage = unsafe { zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cmsg = Cmsg([0; 64]);
    // SAFETY: as in send_gso.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = std::ptr::addr_of_mut!(addr).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    msg.msg_controllen = cmsg.0.len() as _;
    // SAFETY: every pointer in msg refers to live, writable memory of the stated length.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    let mut segment = n;
    // SAFETY: walking the control buffer the kernel filled, with the libc macros, reading
    // only headers they return and the int payload of a UDP_GRO message.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>());
                if v > 0 {
                    segment = v as usize;
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let from = from_c(&addr).ok_or_else(|| io::Error::other("unknown address family"))?;
    Ok((n, from, segment.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn gso_and_mmsg_sends_arrive_as_separate_datagrams_and_gro_or_mmsg_reads_them() {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let dst = rx.local_addr().expect("addr");
        if !gso_supported(&tx) {
            // CI runs on a kernel with UDP GSO: there a skip would hide a broken probe
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but UDP_SEGMENT is not supported: this test cannot run"
            );
            eprintln!("UDP_SEGMENT not supported by this kernel; nothing to test");
            return;
        }
        // 5 datagrams: 4 of 100 bytes and one of 30
        let data: Vec<u8> = (0..430).map(|i| (i % 256) as u8).collect();
        assert_eq!(send_gso(&tx, &data, dst, 100).expect("send"), 430);
        // and the same again without GSO, in one sendmmsg
        assert_eq!(send_many(&tx, &data, 100, dst).expect("sendmmsg"), 5);
        let mut slots = Slots::new(8);
        let mut buf = vec![0u8; 8 * 2048];
        let mut got = Vec::new();
        let start = std::time::Instant::now();
        while got.len() < 10 && start.elapsed() < std::time::Duration::from_secs(2) {
            let n = match recv_slots(&rx, &mut buf, 2048, &mut slots) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    0
                }
                Err(e) => panic!("{e}"),
            };
            for i in 0..n {
                let (len, from, truncated) = slots.get(i).expect("datagram");
                assert_eq!(from, tx.local_addr().expect("addr"));
                assert!(!truncated);
                got.push(buf[i * 2048..i * 2048 + len].to_vec());
            }
        }
        let lens: Vec<usize> = got.iter().map(Vec::len).collect();
        assert_eq!(lens, [100, 100, 100, 100, 30, 100, 100, 100, 100, 30]);
        assert_eq!(got[..5].concat(), data);
        assert_eq!(got[5..].concat(), data);
        // a datagram longer than its slot is reported cut
        tx.send_to(&[7u8; 3000], dst).expect("send");
        let mut n = 0;
        while n == 0 && start.elapsed() < std::time::Duration::from_secs(4) {
            n = recv_slots(&rx, &mut buf, 2048, &mut slots).unwrap_or(0);
        }
        assert_eq!(slots.get(0).map(|(l, _, t)| (l, t)), Some((2048, true)));

        // GRO: the same send read back in one go (or datagram by datagram where the
        // loopback path does not coalesce), segment size reported
        enable_gro(&rx).expect("UDP_GRO");
        send_gso(&tx, &data, dst, 100).expect("send");
        let mut buf = vec![0u8; 65_536];
        let mut total = Vec::new();
        while total.len() < 430 {
            match recv_gro(&rx, &mut buf) {
                Ok((n, _, seg)) => {
                    assert!(seg == 100 || seg == n, "segment {seg} of {n}");
                    total.extend_from_slice(&buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(total, data);
    }
}
