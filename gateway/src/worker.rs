//! Datapath threads: a named OS thread running a single-threaded tokio runtime, joined from
//! a task of the main runtime so that its end (an error, a panic) stops the process like any
//! other part's. The overlay's queues and the ingress's per-core workers run this way, so a
//! packet or a request never crosses threads.

use std::future::Future;
use tokio::task::JoinSet;

/// Starts `make()`'s future on a new thread `name` with its own current-thread runtime (the
/// future is built there, so it may hold fds registered with that runtime), and a task in
/// `tasks` that ends with it.
pub fn spawn<F, Fut>(
    name: String,
    tasks: &mut JoinSet<Result<(), String>>,
    make: F,
) -> Result<(), String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>>,
{
    let label = name.clone();
    let thread = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || -> Result<(), String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("{label} runtime: {e}"))?;
            rt.block_on(make())
        })
        .map_err(|e| format!("cannot start thread {name}: {e}"))?;
    tasks.spawn(async move {
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| format!("{name}: {e}"))?
            .map_err(|_| format!("{name} panicked"))?
    });
    Ok(())
}
