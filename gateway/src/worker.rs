//! Datapath threads: a named OS thread running a single-threaded tokio runtime, joined from
//! a task of the main runtime so that its end (an error, a panic) stops the process like any
//! other part's. The overlay's queues and the ingress's per-core workers run this way, so a
//! packet or a request never crosses threads.

use crate::part::Part;
use std::future::Future;

/// Why a datapath thread could not start or ended badly.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot start thread {name}: {source}")]
    Thread {
        name: String,
        source: std::io::Error,
    },
    #[error("{name}: cannot build its runtime: {source}")]
    Runtime {
        name: String,
        source: std::io::Error,
    },
    #[error("{name} panicked")]
    Panicked { name: String },
    #[error("{name}: {source}")]
    Join {
        name: String,
        source: tokio::task::JoinError,
    },
}

/// Starts `make()`'s future on a new thread `name` with its own current-thread runtime (the
/// future is built there, so it may hold fds registered with that runtime), and a task in
/// `part` that ends with it.
pub fn spawn<F, Fut, E>(name: String, part: &mut Part<E>, make: F) -> Result<(), WorkerError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>>,
    E: From<WorkerError> + Send + 'static,
{
    let label = name.clone();
    let thread = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || -> Result<(), E> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| WorkerError::Runtime {
                    name: label,
                    source,
                })?;
            rt.block_on(make())
        })
        .map_err(|source| WorkerError::Thread {
            name: name.clone(),
            source,
        })?;
    part.spawn(async move {
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|source| WorkerError::Join {
                name: name.clone(),
                source,
            })?
            .map_err(|_| WorkerError::Panicked { name })?
    });
    Ok(())
}
