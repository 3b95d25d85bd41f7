//! Where the Docker Engine API is reached: `unix:///path` or `tcp://host:port` (plain HTTP,
//! meant for a read-only socket proxy). HTTPS is not supported: bollard is built without its
//! TLS features, so there is one crypto provider in the binary.

use std::fmt;
use std::path::PathBuf;

/// Where the Docker Engine API is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerEndpoint {
    /// A unix socket path.
    Unix(PathBuf),
    /// `host:port`, plain HTTP.
    Tcp(String),
}

/// Why an endpoint text was refused; each message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("{0:?}: expected an absolute socket path like \"unix:///var/run/docker.sock\"")]
    RelativeSocket(String),
    #[error(
        "{0:?}: expected \"unix:///path/to/docker.sock\" or \"tcp://host:port\" (https is not supported)"
    )]
    Scheme(String),
    #[error("{0:?}: expected tcp://host:port")]
    HostPort(String),
}

impl fmt::Display for DockerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DockerEndpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            DockerEndpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

impl DockerEndpoint {
    /// The Docker CLI's default socket.
    pub const DEFAULT: &str = "unix:///var/run/docker.sock";

    /// Parses `unix:///path` or `tcp://host:port` (also `http://host:port`).
    pub fn parse(text: &str) -> Result<DockerEndpoint, EndpointError> {
        if let Some(path) = text.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(EndpointError::RelativeSocket(text.to_owned()));
            }
            return Ok(DockerEndpoint::Unix(PathBuf::from(path)));
        }
        let addr = text
            .strip_prefix("tcp://")
            .or_else(|| text.strip_prefix("http://"))
            .ok_or_else(|| EndpointError::Scheme(text.to_owned()))?;
        let addr = addr.trim_end_matches('/');
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                Ok(DockerEndpoint::Tcp(addr.to_owned()))
            }
            _ => Err(EndpointError::HostPort(text.to_owned())),
        }
    }
}
