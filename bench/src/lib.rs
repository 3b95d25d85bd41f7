//! vxgate's benchmarks. The criterion micro-benchmarks are in `benches/` (run with
//! `cargo bench -p vxgate-bench`); the whole-system comparisons with the kernel's vxlan,
//! nginx and dnsmasq are the scripts beside this crate (`bench/*.sh`).
