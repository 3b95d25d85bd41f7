//! vxgate: a container edge gateway in one async process.
//!
//! ```text
//!            config ──► registry (containers, labels, health) ──watch──► snapshots
//!                                                     │            │            │
//!  HTTPS :443 ──► ingress (rustls → hyper) ◄──────────┘            │            │
//!  DNS :53   ──► dns (vxgate-dns: zone from snapshot, forwarding) ◄┘            │
//!  TAP vxg0 ◄─► overlay switch (FDB) ◄─► UDP :4789 ◄─► peer hosts ◄─────────────┘
//! ```
//!
//! Protocol logic (`wire`, the overlay switch, zone answering) takes bytes and `now` and
//! returns decisions; the I/O shells own sockets, the TAP fd and timers.

pub mod acme;
pub mod activation;
pub mod admin;
pub mod config;
pub mod crypto;
pub mod ctl;
pub mod daemon;
pub mod fd_limit;
pub mod ingress;
pub mod init;
pub mod names;
pub mod nameserver;
pub mod notify;
pub mod overlay;
pub mod part;
pub mod policy;
pub mod privilege;
pub mod registry;
pub mod shutdown;
pub mod wire;
pub mod worker;
