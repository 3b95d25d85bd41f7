//! One log line per refused new flow: the table's drop chains send the first packets they
//! refuse (rate-limited in the kernel) to an NFLOG group, and this reader — a netlink socket
//! bound to that group — names both sides and logs each flow once.
//!
//! The wire (nfnetlink_log, `linux/netfilter/nfnetlink_log.h`): a config message binds the
//! group and asks for the packet's first [`COPY`] bytes; each logged packet then arrives as
//! an `NFULNL_MSG_PACKET` whose attributes carry the rule's prefix (the protected container)
//! and the packet from its IP header on.

use crate::wire::{ipv4, ipv6};
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// The NFLOG group the drop chains log to (the VXLAN port: easy to spot in `nft list`).
pub const GROUP: u16 = 4789;
/// Bytes of each packet copied to us: the IP and transport headers.
const COPY: u32 = 96;

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;

/// A refused packet as the kernel logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The rule's prefix: the protected container.
    pub container: String,
    pub flow: Flow,
}

/// What makes a flow one: protocol, and both ends (ports 0 for other protocols).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub proto: u8,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
}

impl Flow {
    /// The flow of a packet starting at its IP header (truncated after the transport ports
    /// is fine); `None` for anything else.
    pub fn of(packet: &[u8]) -> Option<Flow> {
        let ports = |proto: u8, rest: &[u8]| match (proto, rest) {
            (6 | 17, [a, b, c, d, ..]) => {
                (u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d]))
            }
            _ => (0, 0),
        };
        let (proto, src, dst, ports) = match packet.first()? >> 4 {
            4 => {
                let p = ipv4::Packet::header_only(packet).ok()?;
                let rest = if p.is_later_fragment() {
                    &[][..]
                } else {
                    p.payload()
                };
                let pp = ports(p.protocol(), rest);
                (p.protocol(), p.src().into(), p.dst().into(), pp)
            }
            6 => {
                let p = ipv6::Packet::header_only(packet).ok()?;
                let pp = ports(p.next_header(), p.payload());
                (p.next_header(), p.src().into(), p.dst().into(), pp)
            }
            _ => return None,
        };
        Some(Flow {
            proto,
            src,
            sport: ports.0,
            dst,
            dport: ports.1,
        })
    }

    /// `tcp`, `udp`, `icmp`… as a log line names the protocol.
    pub fn proto_name(&self) -> String {
        match self.proto {
            6 => "tcp".into(),
            17 => "udp".into(),
            1 => "icmp".into(),
            58 => "icmpv6".into(),
            n => format!("proto {n}"),
        }
    }
}

/// The netlink messages in one read: each `NFULNL_MSG_PACKET` with a prefix and a packet;
/// other messages, and malformed ones, are skipped (a malformed one ends the read).
pub fn parse(buf: &[u8]) -> Vec<Refused> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= 16 {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let ty = u16::from_ne_bytes([rest[4], rest[5]]);
        if len < 16 || len > rest.len() {
            break;
        }
        // nlmsghdr (16) + nfgenmsg (4), then the attributes
        if ty == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET && len >= 20 {
            let (mut prefix, mut payload) = (None, None);
            for (kind, value) in attrs(&rest[20..len]) {
                match kind {
                    NFULA_PREFIX => prefix = Some(value),
                    NFULA_PAYLOAD => payload = Some(value),
                    _ => {}
                }
            }
            if let (Some(prefix), Some(flow)) = (prefix, payload.and_then(Flow::of)) {
                let end = prefix.iter().position(|b| *b == 0).unwrap_or(prefix.len());
                out.push(Refused {
                    container: String::from_utf8_lossy(&prefix[..end]).into_owned(),
                    flow,
                });
            }
        }
        rest = &rest[align(len).min(rest.len())..];
    }
    out
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// The (type, value) attributes of a netlink message body.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let kind = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let value = &b[4..len];
        b = &b[align(len).min(b.len())..];
        Some((kind, value))
    })
}

/// A config message for `group`: an attribute list after the nfgenmsg.
fn config_message(group: u16, seq: u32, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut m = vec![0u8; 16];
    // nfgenmsg: AF_UNSPEC, version 0, the group (big-endian)
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&group.to_be_bytes());
    for (kind, value) in attrs {
        let len = 4 + value.len();
        m.extend_from_slice(&(len as u16).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(value);
        m.resize(align(m.len()), 0);
    }
    let total = m.len() as u32;
    m[0..4].copy_from_slice(&total.to_ne_bytes());
    m[4..6].copy_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG).to_ne_bytes());
    m[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m
}

/// A netlink socket bound to the NFLOG group, or why not (another program has the group,
/// or CAP_NET_ADMIN is missing).
pub fn open(group: u16) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut mode = COPY.to_be_bytes().to_vec();
    mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
    for (seq, attr) in [
        (1, (NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND, 0, 0, 0][..1])),
        (2, (NFULA_CFG_MODE, &mode[..])),
    ] {
        request(&fd, &config_message(group, seq, &[attr]))?;
    }
    // a receive timeout lets the reader thread notice the stop
    let tv = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: setsockopt with a timeval of the size given.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    Ok(fd)
}

/// Sends one request and reads its acknowledgement: the kernel's error, if any.
fn request(fd: &OwnedFd, msg: &[u8]) -> std::io::Result<()> {
    // SAFETY: a zeroed sockaddr_nl addressed to the kernel (pid 0).
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: `msg` and `kernel` live across the call; the sizes are theirs.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut buf = [0u8; 512];
    // SAFETY: reads into `buf`, of the size given.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let b = &buf[..n as usize];
    if b.len() >= 20 && u16::from_ne_bytes([b[4], b[5]]) == NLMSG_ERROR {
        let code = i32::from_ne_bytes([b[16], b[17], b[18], b[19]]);
        if code != 0 {
            return Err(std::io::Error::from_raw_os_error(-code));
        }
    }
    Ok(())
}

/// Reads refused packets until `stop` says so, giving each new flow to `log` once (a flow
/// seen again within [`REMEMBER`] is the same one retrying), at most [`PER_SECOND`] a second
/// (what is left over is counted and given with the next line).
pub fn read(fd: OwnedFd, stop: &std::sync::atomic::AtomicBool, mut log: impl FnMut(&Refused, u64)) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut seen = Seen::default();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        // SAFETY: reads into `buf`, of the size given.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                // the timeout, or more logged than we read (the kernel dropped some): go on
                Some(libc::EAGAIN | libc::EINTR | libc::ENOBUFS) => continue,
                _ => {
                    tracing::warn!("policy: reading refused flows stopped: {e}");
                    return;
                }
            }
        }
        for r in parse(&buf[..n as usize]) {
            if let Some(unsaid) = seen.first(&r.flow, Instant::now()) {
                log(&r, unsaid);
            }
        }
    }
}

/// How long a flow is remembered (its SYN retransmissions are not new flows).
pub const REMEMBER: Duration = Duration::from_secs(30);
/// Log lines a second at most.
pub const PER_SECOND: u32 = 20;
/// Flows remembered at most (a scan of many ports must not grow the map without bound).
const MAX_SEEN: usize = 4096;

/// The flows already logged, and the budget of lines.
#[derive(Debug, Default)]
pub struct Seen {
    flows: HashMap<Flow, Instant>,
    second: Option<Instant>,
    lines: u32,
    unsaid: u64,
}

impl Seen {
    /// `Some(n)` when `flow` is new and a line may be written (`n` new flows were not
    /// logged for lack of budget since the last line), `None` otherwise.
    pub fn first(&mut self, flow: &Flow, now: Instant) -> Option<u64> {
        if let Some(t) = self.flows.get(flow)
            && now.duration_since(*t) < REMEMBER
        {
            return None;
        }
        if self.flows.len() >= MAX_SEEN {
            self.flows.retain(|_, t| now.duration_since(*t) < REMEMBER);
            if self.flows.len() >= MAX_SEEN {
                self.flows.clear();
            }
        }
        self.flows.insert(*flow, now);
        match self.second {
            Some(s) if now.duration_since(s) < Duration::from_secs(1) => {}
            _ => {
                self.second = Some(now);
                self.lines = 0;
            }
        }
        if self.lines >= PER_SECOND {
            self.unsaid += 1;
            return None;
        }
        self.lines += 1;
        Some(std::mem::take(&mut self.unsaid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::build::{Ip, Transport, frame};
    use crate::wire::ethernet::{self, MacAddr};
    use crate::wire::udp;

    /// A UDP packet (from its IP header on) from `src:sport` to `dst:dport`.
    fn packet(src: &str, sport: u16, dst: &str, dport: u16) -> Vec<u8> {
        let ip = Ip::V4(ipv4::Repr {
            src: src.parse().expect("ip"),
            dst: dst.parse().expect("ip"),
            protocol: 0,
            payload_len: 0,
            ttl: 64,
            ident: 1,
            dont_frag: true,
        });
        let eth = ethernet::Repr {
            dst: MacAddr([2, 0, 0, 0, 0, 1]),
            src: MacAddr([2, 0, 0, 0, 0, 2]),
            ethertype: 0,
        };
        let repr = udp::Repr {
            src_port: sport,
            dst_port: dport,
            payload_len: 0,
        };
        let f = frame(
            eth,
            ip,
            Transport::Udp {
                repr,
                checksum: true,
            },
            b"x",
        );
        f[ethernet::HEADER_LEN..].to_vec()
    }

    fn packet_message(prefix: &str, packet: &[u8]) -> Vec<u8> {
        let mut p = prefix.as_bytes().to_vec();
        p.push(0);
        let mut m = config_message(0, 7, &[(NFULA_PREFIX, &p), (NFULA_PAYLOAD, packet)]);
        m[4..6].copy_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET).to_ne_bytes());
        m
    }

    #[test]
    fn logged_packets_are_read_with_their_flow_and_container() {
        let a = packet("10.200.1.11", 40000, "10.200.2.13", 5432);
        let b = packet("10.200.1.99", 1, "10.200.2.13", 22);
        let mut buf = packet_message("db-1", &a);
        buf.extend(config_message(0, 8, &[(NFULA_CFG_CMD, &[1])])); // not a packet: skipped
        buf.extend(packet_message("db-2", &b[..24])); // cut after the ports: enough
        let got = parse(&buf);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].container, "db-1");
        assert_eq!(
            got[0].flow,
            Flow {
                proto: 17,
                src: "10.200.1.11".parse().expect("ip"),
                sport: 40000,
                dst: "10.200.2.13".parse().expect("ip"),
                dport: 5432
            }
        );
        assert_eq!((got[1].container.as_str(), got[1].flow.dport), ("db-2", 22));
        // a message whose length runs past the read: nothing, no panic
        let mut cut = packet_message("db-1", &a);
        cut.truncate(30);
        assert!(parse(&cut).is_empty());
        assert!(parse(&[0xff; 7]).is_empty());
        assert_eq!(Flow::of(&[0x45, 0, 0]), None);
    }

    #[test]
    fn each_flow_is_logged_once_within_a_budget() {
        let t0 = Instant::now();
        let flow = |sport| Flow::of(&packet("10.0.0.1", sport, "10.0.0.2", 80)).expect("flow");
        let mut s = Seen::default();
        assert_eq!(s.first(&flow(1), t0), Some(0));
        assert_eq!(
            s.first(&flow(1), t0 + Duration::from_secs(3)),
            None,
            "a retransmission"
        );
        assert_eq!(
            s.first(&flow(1), t0 + REMEMBER + Duration::from_secs(1)),
            Some(0),
            "a new flow on the old ports"
        );
        let mut s = Seen::default();
        for p in 0..PER_SECOND as u16 {
            assert_eq!(s.first(&flow(100 + p), t0), Some(0));
        }
        assert_eq!(s.first(&flow(999), t0), None, "over the budget");
        assert_eq!(s.first(&flow(998), t0), None);
        assert_eq!(
            s.first(&flow(997), t0 + Duration::from_secs(1)),
            Some(2),
            "the next second says how many went unsaid"
        );
        let mut s = Seen::default();
        for p in 0..(MAX_SEEN as u16 + 10) {
            let _ = s.first(&flow(p), t0 + Duration::from_secs(u64::from(p)));
        }
        assert!(s.flows.len() <= MAX_SEEN);
    }
}
