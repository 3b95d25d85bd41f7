//! vxgate's embedded DNS.
//!
//! ```text
//!  registry snapshot ──► zone (pure: names → records) ──► answer(query, now)
//!                                                    └──► forward to upstreams (outside names)
//! ```
//!
//! This crate holds the protocol logic, with no sockets; the server that owns the UDP and TCP
//! listeners lives in the gateway. For now it holds the name rules that the config and the
//! registry share (RFC 1035 §2.3.1, RFC 1123 §2.1).

pub mod name;
