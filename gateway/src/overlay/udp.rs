//! UDP segmentation and receive offloads (Linux ≥ 4.18 / 5.0) and batched receive, on raw
//! sockets: `sendmsg` with a `UDP_SEGMENT` control message sends many equal-sized datagrams
//! laid out back to back in one call; with `UDP_GRO` enabled, one `recvmsg` returns many
//! datagrams of one flow back to back with their size in a control message; `recvmmsg`
//! fills several buffers in one call where GRO does not apply.

use std::io;
use std::mem::{MaybeUninit, size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

pub use super::batch::{MAX_GSO_BYTES, MAX_SEGMENTS};

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

/// A socket address in the C layout, and its length.
fn to_c(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            unsafe { std::ptr::write(std::ptr::addr_of_mut!(ss).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            unsafe { std::ptr::write(std::ptr::addr_of_mut!(ss).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn from_c(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in = unsafe { &*std::ptr::addr_of!(*ss).cast() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 = unsafe { &*std::ptr::addr_of!(*ss).cast() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
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
    let (mut addr, addr_len) = to_c(dst);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut cmsg = Cmsg([0; 64]);
    // SAFETY: msghdr is plain old data; all zeroes is valid and the fields are set below.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = std::ptr::addr_of_mut!(addr).cast();
    msg.msg_namelen = addr_len;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if segment < data.len() {
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

/// Message headers for [`recv_slots`], allocated once.
pub struct Slots {
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Slots {
    pub fn new(count: usize) -> Slots {
        Slots {
            // SAFETY: plain old data; all zeroes is a valid value.
            addrs: (0..count).map(|_| unsafe { zeroed() }).collect(),
            iovs: (0..count)
                .map(|_| libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            // SAFETY: as above.
            hdrs: (0..count)
                .map(|_| unsafe { MaybeUninit::zeroed().assume_init() })
                .collect(),
        }
    }

    /// Datagram `i` of the last [`recv_slots`]: its length, sender, and whether it was
    /// longer than its slot (and so cut).
    pub fn get(&self, i: usize) -> Option<(usize, SocketAddr, bool)> {
        let h = self.hdrs.get(i)?;
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        Some((h.msg_len as usize, from_c(&self.addrs[i])?, truncated))
    }
}

/// Receives up to `slots` datagrams in one `recvmmsg`, datagram `i` into
/// `buf[i * stride..(i + 1) * stride]`. Returns how many arrived.
pub fn recv_slots(
    sock: &impl AsRawFd,
    buf: &mut [u8],
    stride: usize,
    slots: &mut Slots,
) -> io::Result<usize> {
    let count = slots.hdrs.len().min(buf.len() / stride.max(1));
    let base = buf.as_mut_ptr();
    for i in 0..count {
        slots.iovs[i] = libc::iovec {
            // SAFETY: i * stride + stride <= buf.len(), so the pointer stays inside `buf`.
            iov_base: unsafe { base.add(i * stride) }.cast(),
            iov_len: stride,
        };
        let h = &mut slots.hdrs[i];
        h.msg_hdr.msg_name = std::ptr::addr_of_mut!(slots.addrs[i]).cast();
        h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        h.msg_hdr.msg_iov = std::ptr::addr_of_mut!(slots.iovs[i]);
        h.msg_hdr.msg_iovlen = 1;
        h.msg_hdr.msg_flags = 0;
        h.msg_len = 0;
    }
    // SAFETY: the first `count` headers point at live iovecs, addresses and parts of `buf`.
    let n = unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            slots.hdrs.as_mut_ptr(),
            count as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Sends `data` to `dst` as datagrams of `segment` bytes (the last may be shorter), up to
/// [`MAX_SEGMENTS`] of them in one `sendmmsg`. Returns how many datagrams were sent.
pub fn send_many(
    sock: &impl AsRawFd,
    data: &[u8],
    segment: usize,
    dst: SocketAddr,
) -> io::Result<usize> {
    let (mut addr, addr_len) = to_c(dst);
    let mut iovs = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_SEGMENTS];
    // SAFETY: plain old data; all zeroes is valid and the used entries are set below.
    let mut hdrs: [libc::mmsghdr; MAX_SEGMENTS] = unsafe { zeroed() };
    let mut k = 0;
    for (i, chunk) in data.chunks(segment.max(1)).take(MAX_SEGMENTS).enumerate() {
        iovs[i] = libc::iovec {
            iov_base: chunk.as_ptr() as *mut libc::c_void,
            iov_len: chunk.len(),
        };
        k = i + 1;
    }
    for i in 0..k {
        hdrs[i].msg_hdr.msg_name = std::ptr::addr_of_mut!(addr).cast();
        hdrs[i].msg_hdr.msg_namelen = addr_len;
        hdrs[i].msg_hdr.msg_iov = std::ptr::addr_of_mut!(iovs[i]);
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first k headers point at live iovecs over `data` and at `addr`.
    let n = unsafe {
        libc::sendmmsg(
            sock.as_raw_fd(),
            hdrs.as_mut_ptr(),
            k as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
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
