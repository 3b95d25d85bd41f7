//! systemd's socket activation (sd_listen_fds(3)): listening sockets handed to vxgate as
//! descriptors 3, 4, … (`LISTEN_FDS` of them, for the process `LISTEN_PID`, named by
//! `LISTEN_FDNAMES`). The socket unit keeps them open across restarts, so the kernel's
//! backlog holds new connections (and the receive queue new datagrams) while vxgate is
//! down, instead of refusing them.
//!
//! A passed socket serves the configured listener whose address it is bound to (its name is
//! only for logs); a configured address with no passed socket is bound as usual; a passed
//! socket that no configured listener takes is an error at start ([`Passed::finish`]).

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The first passed descriptor (`SD_LISTEN_FDS_START`).
const FIRST_FD: i32 = 3;

/// Why the passed sockets cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("socket activation: LISTEN_FDS={0:?} is not a number of descriptors")]
    Count(String),
    #[error(
        "socket activation: descriptor {fd} ({name}) is not a socket bound to an address: {source}"
    )]
    NotASocket {
        fd: i32,
        name: String,
        source: std::io::Error,
    },
    #[error(
        "socket activation: descriptor {fd} ({name}) is a {kind} socket, neither stream nor datagram"
    )]
    Kind { fd: i32, name: String, kind: i32 },
    #[error(
        "socket activation: systemd passed sockets that no configured listener takes: {0} (make the socket unit's Listen lines match the config's addresses)"
    )]
    Unused(String),
}

/// TCP (stream) or UDP (datagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stream,
    Datagram,
}

#[derive(Debug)]
struct Sock {
    fd: OwnedFd,
    kind: Kind,
    addr: SocketAddr,
    name: String,
}

/// The sockets systemd passed, until the listeners take them.
#[derive(Debug, Default)]
pub struct Passed {
    socks: Vec<Sock>,
}

impl Passed {
    /// Takes the passed sockets from the environment (when `LISTEN_PID` is this process)
    /// and removes the variables, so no child sees them. Call it before any thread starts.
    pub fn from_env() -> Result<Passed, Error> {
        let pid = std::env::var("LISTEN_PID").ok();
        let fds = std::env::var("LISTEN_FDS").ok();
        let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
        for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            // SAFETY: called from main before the runtime (or any other thread) starts.
            unsafe { std::env::remove_var(var) };
        }
        let (Some(pid), Some(fds)) = (pid, fds) else {
            return Ok(Passed::default());
        };
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return Ok(Passed::default()); // meant for another process
        }
        let n: i32 = fds.parse().map_err(|_| Error::Count(fds.clone()))?;
        if !(0..=1024).contains(&n) {
            return Err(Error::Count(fds));
        }
        let names: Vec<&str> = names.split(':').collect();
        let mut socks = Vec::new();
        for i in 0..n {
            let raw = FIRST_FD + i;
            let name = names
                .get(i as usize)
                .filter(|n| !n.is_empty())
                .map_or_else(|| format!("fd {raw}"), |n| (*n).to_owned());
            // SAFETY: systemd hands descriptors FIRST_FD.. FIRST_FD+n-1 to this process for
            // it to own; nothing else in vxgate opened or owns them.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            socks.push(Sock::inspect(fd, name)?);
        }
        Ok(Passed { socks })
    }

    /// How many are still untaken.
    pub fn len(&self) -> usize {
        self.socks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.socks.is_empty()
    }

    fn take(&mut self, kind: Kind, addr: SocketAddr) -> Option<Sock> {
        let i = self
            .socks
            .iter()
            .position(|s| s.kind == kind && s.addr == addr)?;
        let s = self.socks.remove(i);
        tracing::info!(name = %s.name, %addr, ?kind, "listening on a socket passed by systemd");
        Some(s)
    }

    /// The passed TCP listener bound to `addr`, if there is one (non-blocking).
    pub fn tcp(&mut self, addr: SocketAddr) -> Option<std::io::Result<std::net::TcpListener>> {
        self.take(Kind::Stream, addr).map(|s| {
            let l = std::net::TcpListener::from(s.fd);
            l.set_nonblocking(true).map(|()| l)
        })
    }

    /// The passed UDP socket bound to `addr`, if there is one (non-blocking).
    pub fn udp(&mut self, addr: SocketAddr) -> Option<std::io::Result<std::net::UdpSocket>> {
        self.take(Kind::Datagram, addr).map(|s| {
            let u = std::net::UdpSocket::from(s.fd);
            u.set_nonblocking(true).map(|()| u)
        })
    }

    /// Every passed socket must have been taken: one left over is a socket unit that does
    /// not match the config (it would hold connections nobody accepts).
    pub fn finish(self) -> Result<(), Error> {
        if self.socks.is_empty() {
            return Ok(());
        }
        let left: Vec<String> = self
            .socks
            .iter()
            .map(|s| {
                let proto = match s.kind {
                    Kind::Stream => "tcp",
                    Kind::Datagram => "udp",
                };
                format!("{proto} {} ({})", s.addr, s.name)
            })
            .collect();
        Err(Error::Unused(left.join(", ")))
    }
}

impl Sock {
    fn inspect(fd: OwnedFd, name: String) -> Result<Sock, Error> {
        let raw = fd.as_raw_fd();
        let sock = socket2::SockRef::from(&fd);
        let not_socket = |source| Error::NotASocket {
            fd: raw,
            name: name.clone(),
            source,
        };
        let ty = sock.r#type().map_err(not_socket)?;
        let kind = if ty == socket2::Type::STREAM {
            Kind::Stream
        } else if ty == socket2::Type::DGRAM {
            Kind::Datagram
        } else {
            return Err(Error::Kind {
                fd: raw,
                name,
                kind: ty.into(),
            });
        };
        let addr = sock
            .local_addr()
            .map_err(not_socket)?
            .as_socket()
            .ok_or_else(|| not_socket(std::io::Error::other("not an IP socket")))?;
        // not for children (nft): they must not hold the listeners open
        // SAFETY: fcntl on a descriptor this function owns.
        unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) };
        Ok(Sock {
            fd,
            kind,
            addr,
            name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passed(socks: Vec<(OwnedFd, &str)>) -> Passed {
        Passed {
            socks: socks
                .into_iter()
                .map(|(fd, n)| Sock::inspect(fd, n.into()).expect("a socket"))
                .collect(),
        }
    }

    #[test]
    fn passed_sockets_go_to_the_listener_of_their_address_and_kind() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let (ta, ua) = (
            tcp.local_addr().expect("addr"),
            udp.local_addr().expect("addr"),
        );
        let mut p = passed(vec![(tcp.into(), "https"), (udp.into(), "dns")]);
        assert_eq!(p.len(), 2);
        assert!(
            p.udp(ta).is_none(),
            "a stream socket is not the UDP listener"
        );
        let l = p.tcp(ta).expect("passed").expect("ok");
        assert_eq!(l.local_addr().expect("addr"), ta);
        // the listener is the very socket: a client connects to it
        let c = std::net::TcpStream::connect(ta).expect("connect");
        drop(c);
        assert!(p.tcp(ta).is_none(), "taken once");
        let err = Passed {
            socks: std::mem::take(&mut p.socks),
        }
        .finish()
        .expect_err("the UDP one was not taken");
        assert!(
            err.to_string().contains(&format!("udp {ua} (dns)")),
            "{err}"
        );
        assert!(Passed::default().finish().is_ok());
    }

    #[test]
    fn a_descriptor_that_is_not_a_socket_is_refused() {
        let f = std::fs::File::open("/dev/null").expect("open");
        let e = Sock::inspect(f.into(), "x".into()).expect_err("not a socket");
        assert!(e.to_string().contains("not a socket"), "{e}");
    }
}
