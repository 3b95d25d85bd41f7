//! Batched UDP syscalls on raw sockets, shared by the DNS server and the overlay:
//! `recvmmsg` fills several slots of one buffer in one call ([`recv_slots`]); `sendmmsg`
//! sends several datagrams in one call, cut from one buffer to one destination
//! ([`send_many`]) or each with its own destination ([`send_each`]).

use std::io;
use std::mem::{MaybeUninit, size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

/// Datagrams per `sendmmsg` at most.
pub const MAX_BATCH: usize = 64;

/// A socket address in the C layout, and its length.
pub fn to_c(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
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

/// The socket address in C layout `ss`, if it is IPv4 or IPv6.
pub fn from_c(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
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

/// Message headers for [`recv_slots`], allocated once.
pub struct Slots {
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in the headers are only written and read by `recv_slots`, which
// sets every one (to `Slots`' own vectors and the caller's buffer) before the call that uses
// them; between calls they are never dereferenced, so moving `Slots` to another thread is safe.
unsafe impl Send for Slots {}

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
/// [`MAX_BATCH`] of them in one `sendmmsg`. Returns how many datagrams were sent.
pub fn send_many(
    sock: &impl AsRawFd,
    data: &[u8],
    segment: usize,
    dst: SocketAddr,
) -> io::Result<usize> {
    let mut msgs = [(&[][..], dst); MAX_BATCH];
    let mut k = 0;
    for (m, chunk) in msgs.iter_mut().zip(data.chunks(segment.max(1))) {
        m.0 = chunk;
        k += 1;
    }
    send_each(sock, &msgs[..k])
}

/// Sends each `(datagram, destination)` of `msgs` (at most [`MAX_BATCH`]) in one
/// `sendmmsg`. Returns how many were sent: they leave in order, so the rest are the last ones.
pub fn send_each(sock: &impl AsRawFd, msgs: &[(&[u8], SocketAddr)]) -> io::Result<usize> {
    let k = msgs.len().min(MAX_BATCH);
    if k == 0 {
        return Ok(0);
    }
    // SAFETY: plain old data; all zeroes is valid and the used entries are set below.
    let mut addrs: [(libc::sockaddr_storage, libc::socklen_t); MAX_BATCH] = unsafe { zeroed() };
    let mut iovs = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_BATCH];
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { zeroed() };
    for (i, (data, dst)) in msgs.iter().take(k).enumerate() {
        addrs[i] = to_c(*dst);
        iovs[i] = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
    }
    for i in 0..k {
        hdrs[i].msg_hdr.msg_name = std::ptr::addr_of_mut!(addrs[i].0).cast();
        hdrs[i].msg_hdr.msg_namelen = addrs[i].1;
        hdrs[i].msg_hdr.msg_iov = std::ptr::addr_of_mut!(iovs[i]);
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first k headers point at live iovecs over `msgs` and at `addrs`.
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

    fn recv_all(rx: &UdpSocket, want: usize, stride: usize) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut slots = Slots::new(8);
        let mut buf = vec![0u8; 8 * stride];
        let mut got = Vec::new();
        let start = std::time::Instant::now();
        while got.len() < want && start.elapsed() < std::time::Duration::from_secs(2) {
            let n = match recv_slots(rx, &mut buf, stride, &mut slots) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    0
                }
                Err(e) => panic!("{e}"),
            };
            for i in 0..n {
                let (len, from, truncated) = slots.get(i).expect("datagram");
                assert!(!truncated);
                got.push((buf[i * stride..i * stride + len].to_vec(), from));
            }
        }
        got
    }

    #[test]
    fn mmsg_sends_arrive_whole_and_recvmmsg_reads_them() {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let dst = rx.local_addr().expect("addr");
        let data: Vec<u8> = (0..430).map(|i| (i % 256) as u8).collect();
        assert_eq!(send_many(&tx, &data, 100, dst).expect("sendmmsg"), 5);
        let got = recv_all(&rx, 5, 2048);
        let lens: Vec<usize> = got.iter().map(|(d, _)| d.len()).collect();
        assert_eq!(lens, [100, 100, 100, 100, 30]);
        assert!(
            got.iter()
                .all(|(_, from)| *from == tx.local_addr().expect("addr"))
        );
        let joined: Vec<u8> = got.into_iter().flat_map(|(d, _)| d).collect();
        assert_eq!(joined, data);
        // a datagram longer than its slot is reported cut
        tx.send_to(&[7u8; 3000], dst).expect("send");
        let mut slots = Slots::new(8);
        let mut buf = vec![0u8; 8 * 2048];
        let (mut n, start) = (0, std::time::Instant::now());
        while n == 0 && start.elapsed() < std::time::Duration::from_secs(2) {
            n = recv_slots(&rx, &mut buf, 2048, &mut slots).unwrap_or(0);
        }
        assert_eq!(slots.get(0).map(|(l, _, t)| (l, t)), Some((2048, true)));
    }

    #[test]
    fn send_each_reaches_every_destination_with_its_own_datagram() {
        let a = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let b = UdpSocket::bind("[::1]:0").or_else(|_| UdpSocket::bind("127.0.0.1:0"));
        let b = b.expect("bind");
        let tx4 = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let (da, db) = (a.local_addr().expect("addr"), b.local_addr().expect("addr"));
        let tx = if db.is_ipv6() {
            UdpSocket::bind("[::]:0").expect("bind a dual-stack socket")
        } else {
            tx4
        };
        let to = |d: SocketAddr| match (d, tx.local_addr().expect("addr")) {
            (SocketAddr::V4(v4), SocketAddr::V6(_)) => {
                SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
            }
            _ => d,
        };
        let msgs: Vec<(&[u8], SocketAddr)> = vec![
            (b"one", to(da)),
            (b"two", to(db)),
            (b"three", to(da)),
            (&[], to(db)),
        ];
        assert_eq!(send_each(&tx, &msgs).expect("sendmmsg"), 4);
        assert_eq!(send_each(&tx, &[]).expect("nothing"), 0);
        let at_a: Vec<Vec<u8>> = recv_all(&a, 2, 512).into_iter().map(|(d, _)| d).collect();
        let at_b: Vec<Vec<u8>> = recv_all(&b, 2, 512).into_iter().map(|(d, _)| d).collect();
        assert_eq!(at_a, [b"one".to_vec(), b"three".to_vec()]);
        assert_eq!(at_b, [b"two".to_vec(), Vec::new()]);
        // addresses convert both ways
        for addr in [da, db, "[fe80::1%2]:53".parse().expect("addr")] {
            let (ss, _) = to_c(addr);
            assert_eq!(from_c(&ss), Some(addr));
        }
    }
}
