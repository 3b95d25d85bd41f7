//! A TAP device opened directly on `/dev/net/tun` (no packet-info header), non-blocking,
//! with its MTU set and its link up. An existing persistent TAP of that name is attached to;
//! otherwise the kernel creates one that lives as long as the fd.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `struct ifreq` as the TUN and SIOC*IF* ioctls read it: a name and a union whose first
/// member is a short (flags) or an int (MTU).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    value: libc::c_int,
    _pad: [u8; 20],
}

impl IfReq {
    fn new(name: &str) -> io::Result<IfReq> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad interface name {name:?}"),
            ));
        }
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            value: 0,
            _pad: [0; 20],
        };
        req.name[..bytes.len()].copy_from_slice(bytes);
        Ok(req)
    }
}

#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
}

impl Tap {
    /// Opens (or creates) TAP `name`, sets `mtu`, brings it up.
    pub fn open(name: &str, mtu: u16) -> io::Result<Tap> {
        let path = c"/dev/net/tun";
        // SAFETY: open(2) with a NUL-terminated path; the result is checked before use.
        let raw = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new, open fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReq::new(name)?;
        // IFF_TAP | IFF_NO_PI fit in the union's first short; flags are a c_short in ifreq.
        let flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        req.value = 0;
        // SAFETY: the union's first member is a c_short; write it in place.
        unsafe {
            std::ptr::write(
                std::ptr::addr_of_mut!(req.value).cast::<libc::c_short>(),
                flags,
            )
        };
        // SAFETY: TUNSETIFF reads an ifreq; `req` is a valid, initialised ifreq-sized struct.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let actual = CStr::from_bytes_until_nul(&req.name)
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_else(|_| name.to_owned());
        set_mtu_and_up(&actual, mtu)?;
        Ok(Tap { fd, name: actual })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame. `WouldBlock` when none is queued.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: reads at most buf.len() bytes into buf from our own open fd.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Writes one frame.
    pub fn write(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: writes frame.len() bytes from frame to our own open fd.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Sets an interface's MTU and the UP flag through an AF_INET control socket.
fn set_mtu_and_up(name: &str, mtu: u16) -> io::Result<()> {
    // SAFETY: socket(2); the fd is checked and then owned.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new, open fd that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut req = IfReq::new(name)?;
    req.value = libc::c_int::from(mtu);
    // SAFETY: SIOCSIFMTU reads ifr_mtu (an int at the union's start) from a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFMTU, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut req = IfReq::new(name)?;
    // SAFETY: SIOCGIFFLAGS writes ifr_flags (a short at the union's start) into a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: reading and writing the union's first member as the c_short the kernel wrote.
    unsafe {
        let flags = std::ptr::addr_of_mut!(req.value).cast::<libc::c_short>();
        *flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads ifr_flags from a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
