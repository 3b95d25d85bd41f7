//! What vxgate's parts share for /metrics: a fixed-bucket latency [`Histogram`] with atomic
//! counters (the DNS server and the ingress each own theirs and render it), and a small
//! writer of the Prometheus text format ([`text`]) with which each part renders its own
//! families.

pub mod histogram;
pub mod text;

pub use histogram::Histogram;
