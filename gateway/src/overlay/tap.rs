//! A TAP device opened directly on `/dev/net/tun` (no packet-info header), non-blocking,
//! with its MTU set and its link up. An existing persistent TAP of that name is attached to;
//! otherwise the kernel creates one that lives as long as the fd.
//!
//! [`Tap::open_with`] can ask for `IFF_VNET_HDR` (every frame carries a 10-byte
//! `virtio_net_hdr`) with checksum and TSO offloads (`TUNSETOFFLOAD`), and for
//! `IFF_MULTI_QUEUE` (one fd per queue; the kernel keeps a flow on one queue).

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

// the kernel copies sizeof(struct ifreq) bytes in and out of this struct: its layout is pinned
const _: () = assert!(std::mem::size_of::<IfReq>() == std::mem::size_of::<libc::ifreq>());
const _: () = assert!(std::mem::size_of::<IfReq>() == 40);

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

/// How to open a TAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TapOptions {
    /// `IFF_VNET_HDR` and `TUNSETOFFLOAD` (checksum, TSO4, TSO6).
    pub offload: bool,
    /// `IFF_MULTI_QUEUE`.
    pub multi_queue: bool,
}

/// `TUN_F_*` offloads this datapath handles: checksums and TCP segmentation.
const OFFLOADS: libc::c_uint = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;

impl Tap {
    /// Opens (or creates) TAP `name`, sets `mtu`, brings it up.
    pub fn open(name: &str, mtu: u16) -> io::Result<Tap> {
        Tap::open_with(name, mtu, TapOptions::default())
    }

    /// The `IFF_*` flags this kernel's TUN driver supports (`TUNGETFEATURES`).
    pub fn features() -> io::Result<libc::c_int> {
        let fd = open_tun()?;
        let mut features: libc::c_uint = 0;
        // SAFETY: TUNGETFEATURES writes an unsigned int through the pointer.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETFEATURES, &mut features) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(features as libc::c_int)
    }

    /// Opens one queue of TAP `name` with `options`. With `multi_queue`, call it once per
    /// queue; the device must have been created multi-queue (or not exist yet).
    pub fn open_with(name: &str, mtu: u16, options: TapOptions) -> io::Result<Tap> {
        let fd = open_tun()?;
        let mut req = IfReq::new(name)?;
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
        if options.offload {
            flags |= libc::IFF_VNET_HDR;
        }
        if options.multi_queue {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        req.value = 0;
        // SAFETY: the union's first member is a c_short; write it in place.
        unsafe {
            std::ptr::write(
                std::ptr::addr_of_mut!(req.value).cast::<libc::c_short>(),
                flags as libc::c_short,
            )
        };
        // SAFETY: TUNSETIFF reads an ifreq; `req` is a valid, initialised ifreq-sized struct.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        if options.offload {
            // SAFETY: TUNSETOFFLOAD takes the offload bits as its integer argument.
            if unsafe {
                libc::ioctl(
                    fd.as_raw_fd(),
                    libc::TUNSETOFFLOAD,
                    OFFLOADS as libc::c_ulong,
                )
            } < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        let actual = CStr::from_bytes_until_nul(&req.name)
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_else(|_| name.to_owned());
        set_mtu_and_up(&actual, mtu)?;
        Ok(Tap { fd, name: actual })
    }

    /// Whether the kernel knows UDP segmentation offload on TAPs (`TUN_F_USO4/6`, Linux ≥
    /// 6.2), which also means it takes USO frames written to it. The TAP's offloads are left
    /// as [`Tap::open_with`] set them, so reads never return USO frames.
    pub fn probe_uso(&self) -> bool {
        let with = OFFLOADS | libc::TUN_F_USO4 | libc::TUN_F_USO6;
        // SAFETY: TUNSETOFFLOAD takes the offload bits as its integer argument.
        let ok = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                with as libc::c_ulong,
            )
        } == 0;
        // SAFETY: as above.
        unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                OFFLOADS as libc::c_ulong,
            )
        };
        ok
    }

    /// Reads one frame with its vnet header split off into `hdr`. Returns the total length
    /// (header included).
    pub fn read_split(&self, hdr: &mut [u8], buf: &mut [u8]) -> io::Result<usize> {
        let iov = [
            libc::iovec {
                iov_base: hdr.as_mut_ptr().cast(),
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            },
        ];
        // SAFETY: readv(2) writes into the two buffers we own, at most their lengths.
        let n = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Writes one frame gathered from `parts` (a vnet header and the frame's pieces).
    pub fn write_vectored(&self, parts: &[io::IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: IoSlice is ABI-compatible with iovec; writev(2) reads parts.len() of them,
        // each valid for its length, from our own open fd.
        let n = unsafe {
            libc::writev(
                self.fd.as_raw_fd(),
                parts.as_ptr().cast::<libc::iovec>(),
                parts.len() as libc::c_int,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
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

fn open_tun() -> io::Result<OwnedFd> {
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
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
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

/// `SIOCBRADDIF` from linux/sockios.h (not in the libc crate).
const SIOCBRADDIF: libc::Ioctl = 0x89a2;

/// The index of a network interface in this namespace, if it exists.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: if_nametoindex reads a NUL-terminated string and returns 0 when there is none.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

/// Makes interface `port` a port of the Linux bridge `bridge` (what `ip link set PORT master
/// BRIDGE` does, through the bridge's SIOCBRADDIF ioctl). EBUSY: `port` is already a port of
/// some bridge.
pub fn attach_to_bridge(port: &str, bridge: &str) -> io::Result<()> {
    let index = ifindex(port)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface {port:?}")))?;
    // SAFETY: socket(2); the fd is checked and then owned.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new, open fd that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut req = IfReq::new(bridge)?;
    req.value = libc::c_int::try_from(index)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index out of range"))?;
    // SAFETY: SIOCBRADDIF reads ifr_ifindex (an int at the union's start) from a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCBRADDIF, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
