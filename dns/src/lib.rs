//! vxgate's embedded DNS.
//!
//! ```text
//!  registry snapshot ──► Zone::build (names → wire-form records)
//!  query bytes ──► answer(zone, bytes) ──► Reply (response bytes) | Forward | Drop
//!                                               └─► forward::Forwarder ──► upstreams (cache)
//! ```
//!
//! `message`, `zone`, `answer`, `cache` and `ratelimit` are protocol logic without I/O; `server` and
//! `forward` own the sockets (UDP and TCP on every listen address).

pub mod answer;
pub mod cache;
pub mod forward;
pub mod message;
pub mod name;
pub mod ratelimit;
pub mod server;
pub mod zone;
