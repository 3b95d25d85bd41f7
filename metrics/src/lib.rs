//! What vxgate's parts share for /metrics: a fixed-bucket latency [`Histogram`] with atomic
//! counters (the DNS server and the ingress each own theirs and render it).

pub mod histogram;

pub use histogram::Histogram;
