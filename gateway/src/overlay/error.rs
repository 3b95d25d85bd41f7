//! Why the overlay could not start, or why its datapath stopped: a leaf every part of the
//! overlay uses.

use std::net::SocketAddr;

/// Why the overlay could not start, or why its datapath stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "overlay: cannot open TAP {tap:?} (network {network:?}): {source}{}",
        crate::privilege::tap(source)
    )]
    OpenTap {
        tap: String,
        network: String,
        source: std::io::Error,
    },
    #[error(
        "overlay: cannot open TAP {tap:?} queue {queue} (network {network:?}): {source}{}",
        crate::privilege::tap(source)
    )]
    OpenQueue {
        tap: String,
        queue: usize,
        network: String,
        source: std::io::Error,
    },
    #[error("overlay: cannot bind {addr}: {source}{}", crate::privilege::bind(addr.port(), source))]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("overlay: cannot bind a send socket on {addr}: {source}")]
    BindSend {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("overlay: no free source port in 49152-65535 on {ip}")]
    NoSourcePort { ip: std::net::IpAddr },
    #[error("overlay: cannot register {what} with the datapath's runtime: {source}")]
    Register {
        what: String,
        source: std::io::Error,
    },
    #[error("overlay: {what} {name}: {source}")]
    Io {
        what: &'static str,
        name: String,
        source: std::io::Error,
    },
    #[error("overlay task: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("overlay: WireGuard key {path}: {source}")]
    Key {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Worker(#[from] crate::worker::WorkerError),
    #[error("overlay: the offload datapath needs overlay.listen")]
    NoListen,
}
