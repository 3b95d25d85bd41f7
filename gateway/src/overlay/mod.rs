//! The VXLAN overlay (RFC 7348): containers on different hosts share one L2 network.
//!
//! ```text
//!  bridge br0 ──► TAP ──read──► [headroom | frame] ──switch.from_tap──► VXLAN header written in
//!                                                                       the headroom ──► UDP send
//!  UDP :4789 ──recv──► [VXLAN | frame] ──switch.from_udp──► frame slice ──write──► TAP ──► br0
//! ```
//!
//! `fdb` and `switch` are the protocol logic (no I/O, time passed in); `tap` and `driver` are
//! the I/O shell.

pub mod bridge;
pub mod counters;
pub mod driver;
pub mod fast;
pub mod fdb;
pub mod switch;
pub mod tap;
pub mod udp;

pub use counters::{Counters, DropReason};
pub use switch::{FromTap, FromUdp, NetworkSpec, Switch};
