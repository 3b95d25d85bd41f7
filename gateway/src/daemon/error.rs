//! What stops vxgate: each part's start-up or run-time error, as the operator reads it in the
//! log. Every part has its own `thiserror` enum whose messages say what to fix; this one only
//! gathers them, so that the daemon's task set has one error type.

/// Why vxgate could not start, or why a part stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Overlay(#[from] crate::overlay::Error),
    #[error(transparent)]
    Ingress(#[from] crate::ingress::Error),
    #[error(transparent)]
    Dns(#[from] crate::nameserver::Error),
    #[error(transparent)]
    Admin(#[from] crate::admin::Error),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error(transparent)]
    Docker(#[from] crate::registry::docker::Error),
    #[error(transparent)]
    Etcd(#[from] crate::registry::EtcdError),
    #[error(transparent)]
    Policy(#[from] crate::policy::Error),
    #[error(transparent)]
    Activation(#[from] crate::activation::Error),
    /// The process's own plumbing: signals, the runtime.
    #[error("{what}: {source}")]
    Process {
        what: &'static str,
        source: std::io::Error,
    },
}

/// The daemon's running parts: each task ends when its part stops (an error stops vxgate).
pub type Tasks = tokio::task::JoinSet<Result<(), Error>>;
