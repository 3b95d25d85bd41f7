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
