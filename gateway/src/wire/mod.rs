//! Zero-copy views over wire formats (no I/O).
//!
//! Each format is a `Packet<T: AsRef<[u8]>>` view with `new_checked` (length validated once),
//! getters, setters where `T: AsMut<[u8]>`, and where useful a typed `Repr` with
//! `parse`/`emit`. Errors are a small `Copy` enum, counted by callers, never panicked on.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod ipv4;
pub mod ipv6;
pub mod offload;
pub mod partial;
pub mod tcp;
pub mod udp;
pub mod vxlan;

/// Why bytes could not be viewed as a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireError {
    /// Shorter than the fixed header, or than a length field says.
    Truncated,
    /// A field holds a value the format forbids.
    Malformed,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WireError::Truncated => "truncated",
            WireError::Malformed => "malformed",
        })
    }
}

impl std::error::Error for WireError {}

/// Whole frames built through each format's `emit`, lengths and checksums filled: what tests
/// and fuzz targets feed the datapath.
pub mod build {
    use super::{ethernet, ipv4, ipv6, tcp, udp};

    /// The network layer of a frame (its payload length and next header are filled in).
    #[derive(Debug, Clone, Copy)]
    pub enum Ip {
        V4(ipv4::Repr),
        V6(ipv6::Repr),
    }

    /// The transport layer (its length and checksum are filled in).
    #[derive(Debug, Clone, Copy)]
    pub enum Transport<'a> {
        Tcp(tcp::Repr<'a>),
        /// `checksum: false` leaves it 0 (no checksum, allowed over IPv4).
        Udp {
            repr: udp::Repr,
            checksum: bool,
        },
    }

    /// `eth` / `ip` / `transport` / `payload` as one frame.
    pub fn frame(eth: ethernet::Repr, ip: Ip, transport: Transport<'_>, payload: &[u8]) -> Vec<u8> {
        let (l4_len, proto) = match transport {
            Transport::Tcp(t) => (t.header_len(), ipv4::protocol::TCP),
            Transport::Udp { .. } => (udp::HEADER_LEN, ipv4::protocol::UDP),
        };
        let seg_len = l4_len + payload.len();
        let (l3_len, pseudo) = match ip {
            Ip::V4(mut r) => {
                r.protocol = proto;
                r.payload_len = seg_len;
                (ipv4::MIN_HEADER_LEN, Ip::V4(r))
            }
            Ip::V6(mut r) => {
                r.next_header = proto;
                r.payload_len = seg_len;
                (ipv6::HEADER_LEN, Ip::V6(r))
            }
        };
        let mut f = vec![0u8; ethernet::HEADER_LEN + l3_len + seg_len];
        let eth = ethernet::Repr {
            ethertype: match ip {
                Ip::V4(_) => ethernet::ethertype::IPV4,
                Ip::V6(_) => ethernet::ethertype::IPV6,
            },
            ..eth
        };
        if let Ok(mut e) = ethernet::Frame::new_checked(&mut f[..]) {
            eth.emit(&mut e);
        }
        let (l3, rest) = f[ethernet::HEADER_LEN..].split_at_mut(l3_len);
        let sum = match pseudo {
            Ip::V4(r) => r.emit(l3).map(|()| r.pseudo_sum()),
            Ip::V6(r) => r.emit(l3).map(|()| r.pseudo_sum()),
        }
        .expect("an IP header fits the frame built for it");
        rest[l4_len..].copy_from_slice(payload);
        match transport {
            Transport::Tcp(t) => {
                t.emit(rest).expect("a valid TCP header");
                tcp::Packet::new_checked(rest)
                    .expect("just emitted")
                    .fill_checksum(sum);
            }
            Transport::Udp { repr, checksum } => {
                udp::Repr {
                    payload_len: payload.len(),
                    ..repr
                }
                .emit(rest)
                .expect("a valid UDP header");
                if checksum {
                    udp::Packet::new_checked(rest)
                        .expect("just emitted")
                        .fill_checksum(sum);
                }
            }
        }
        f
    }
}
