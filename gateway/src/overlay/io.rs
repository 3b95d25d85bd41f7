//! The overlay's socket and TAP helpers, shared by both datapaths: binding the underlay
//! sockets (the receive socket on `overlay.listen`, and a pool of send sockets whose source
//! ports in 49152–65535 are picked by the inner flow's hash, RFC 7348 §5), registering fds
//! with a datapath thread's runtime, and sends and TAP writes that wait while a buffer is
//! full.

use super::counters::{Counters, DropReason};
use super::error::Error;
use super::tap::Tap;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;

/// Send sockets, each with its own source port.
const SEND_PORTS: usize = 8;
const SOCKET_BUFFER: usize = 4 << 20;

/// Registers the TAPs and sockets with the calling thread's runtime.
#[allow(clippy::type_complexity)]
pub(super) fn register(
    taps: Vec<Tap>,
    recv: std::net::UdpSocket,
    senders: Vec<std::net::UdpSocket>,
) -> Result<(Vec<Arc<AsyncFd<Tap>>>, UdpSocket, Vec<UdpSocket>), Error> {
    let registered = register_taps(taps)?;
    let sockets = |source| Error::Register {
        what: "the underlay sockets".into(),
        source,
    };
    let recv = UdpSocket::from_std(recv).map_err(sockets)?;
    let senders: Vec<UdpSocket> = senders
        .into_iter()
        .map(UdpSocket::from_std)
        .collect::<io::Result<_>>()
        .map_err(sockets)?;
    Ok((registered, recv, senders))
}

/// Registers the TAPs with the current runtime.
pub(super) fn register_taps(taps: Vec<Tap>) -> Result<Vec<Arc<AsyncFd<Tap>>>, Error> {
    let mut registered = Vec::with_capacity(taps.len());
    for tap in taps {
        let name = tap.name().to_owned();
        // SAFETY: the Tap owns its fd for its whole life and always returns the same one.
        let tap = unsafe { AsyncFd::register(tap) }.map_err(|e| Error::Register {
            what: format!("TAP {name:?}"),
            source: e.into_parts().1,
        })?;
        registered.push(Arc::new(tap));
    }
    Ok(registered)
}

pub(super) fn bind_udp(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    // Root may exceed net.core.[rw]mem_max; otherwise take what the limit allows.
    if force_buffer(&s, libc::SO_RCVBUFFORCE).is_err() {
        let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    }
    if force_buffer(&s, libc::SO_SNDBUFFORCE).is_err() {
        let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

fn force_buffer(s: &Socket, option: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let size = SOCKET_BUFFER as libc::c_int;
    // SAFETY: setsockopt(2) with a pointer to a c_int and its size, on an open socket.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            std::ptr::addr_of!(size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Binds [`SEND_PORTS`] sockets on the listen address at free ports in 49152–65535, starting
/// at a place derived from the address so hosts differ.
pub(super) fn bind_send_pool(listen: SocketAddr) -> Result<Vec<std::net::UdpSocket>, Error> {
    const LOW: u32 = 49152;
    const SPAN: u32 = 65536 - LOW;
    let seed = listen
        .ip()
        .to_string()
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let mut out = Vec::with_capacity(SEND_PORTS);
    let mut tried = 0;
    while out.len() < SEND_PORTS && tried < SPAN {
        let port = LOW + (seed.wrapping_add(tried.wrapping_mul(997))) % SPAN;
        tried += 1;
        let addr = SocketAddr::new(listen.ip(), port as u16);
        match bind_udp(addr, false) {
            Ok(s) => out.push(s),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(source) => return Err(Error::BindSend { addr, source }),
        }
    }
    if out.is_empty() {
        return Err(Error::NoSourcePort { ip: listen.ip() });
    }
    Ok(out)
}

/// Sends `data` to `dst`, waiting while the socket buffer is full. Returns false (counted)
/// when the kernel refuses it.
pub(super) async fn send(
    sock: &UdpSocket,
    data: &[u8],
    dst: SocketAddr,
    counters: &Counters,
) -> bool {
    loop {
        match sock.try_send_to(data, dst) {
            Ok(_) => {
                counters.tx_to(dst, 1, data.len());
                return true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if sock.writable().await.is_err() {
                    counters.dropped(DropReason::Send);
                    return false;
                }
            }
            Err(e) => {
                counters.dropped(DropReason::Send);
                tracing::debug!(%dst, "overlay send failed: {e}");
                return false;
            }
        }
    }
}

pub(super) async fn write_tap(tap: &AsyncFd<Tap>, frame: &[u8]) -> io::Result<usize> {
    tap.async_io(Interest::WRITABLE, |t| t.write(frame)).await
}
