//! A running part's own tasks. Each part (overlay, ingress, DNS, a registry source, the admin
//! API) spawns what it runs into a [`Part`] over its own error type and hands that back; the
//! daemon runs each part's [`Part::run`] as one future. No part sees another's error or the
//! daemon's task set.

use crate::shutdown::Shutdown;
use std::future::Future;
use tokio::task::{JoinError, JoinSet};

/// The tasks of one part, each ending with the part's error type `E`.
pub struct Part<E> {
    tasks: JoinSet<Result<(), E>>,
}

impl<E: Send + 'static> Default for Part<E> {
    fn default() -> Self {
        Part {
            tasks: JoinSet::new(),
        }
    }
}

impl<E: Send + 'static> Part<E> {
    pub fn new() -> Part<E> {
        Part::default()
    }

    /// Spawns one of the part's tasks on the current runtime.
    pub fn spawn(&mut self, task: impl Future<Output = Result<(), E>> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Runs another part's tasks as one of this part's (its error converted).
    pub fn adopt<F>(&mut self, other: Part<F>, shutdown: &Shutdown)
    where
        F: Send + std::fmt::Display + 'static,
        E: From<F>,
    {
        let shutdown = shutdown.clone();
        self.spawn(async move { other.run(shutdown).await.map_err(E::from) });
    }

    /// Whether no task was spawned.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The part's life. Until `shutdown`, the first task that ends is the part's end: its
    /// error, or `Ok(())` for a task that stopped on its own (the caller then stops the
    /// process; the other tasks see that stop and end by themselves). After `shutdown` every
    /// task is waited for; the first error is returned and later ones logged. A task that
    /// panicked panics this future too.
    pub async fn run(mut self, mut shutdown: Shutdown) -> Result<(), E>
    where
        E: std::fmt::Display,
    {
        let first = tokio::select! {
            biased;
            _ = shutdown.wait() => None,
            done = self.tasks.join_next(), if !self.tasks.is_empty() => done,
        };
        // A task that ended because stop was just asked (its own wait saw it first: `wait` only
        // learns of the stop from a wake-up that may not have been polled yet) is part of the
        // drain, not the part's end: returning here would detach the others mid-drain (the
        // ingress's workers, with the connections they still serve).
        let mut result = Ok(());
        match first {
            Some(done) if !shutdown.is_stopping() => {
                self.tasks.detach_all();
                return flatten(done);
            }
            Some(done) => result = flatten(done),
            None => {}
        }
        while let Some(done) = self.tasks.join_next().await {
            match (flatten(done), &result) {
                (Err(e), Ok(())) => result = Err(e),
                (Err(e), Err(_)) => tracing::warn!("while stopping: {e}"),
                (Ok(()), _) => {}
            }
        }
        result
    }
}

/// A task's end as the part's: a panic goes on unwinding, a cancelled task ended.
fn flatten<E>(done: Result<Result<(), E>, JoinError>) -> Result<(), E> {
    match done {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::Part;
    use crate::shutdown::Shutdown;

    #[tokio::test]
    async fn a_task_that_ends_before_stop_ends_the_part_with_its_result() {
        let (_stop, shutdown) = Shutdown::new();
        let mut part: Part<String> = Part::new();
        let mut s = shutdown.clone();
        part.spawn(async move {
            s.wait().await;
            Ok(())
        });
        part.spawn(async { Err("broken".to_owned()) });
        assert_eq!(part.run(shutdown).await, Err("broken".to_owned()));

        let (_stop, shutdown) = Shutdown::new();
        let mut part: Part<String> = Part::new();
        part.spawn(async { Ok(()) });
        let mut s = shutdown.clone();
        part.spawn(async move {
            s.wait().await;
            Err("never".to_owned())
        });
        assert_eq!(part.run(shutdown).await, Ok(()), "ended on its own");
    }

    #[tokio::test]
    async fn after_stop_every_task_drains_and_the_first_error_is_kept() {
        let (stop, shutdown) = Shutdown::new();
        let mut part: Part<String> = Part::new();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        for n in 0..3 {
            let (mut s, done) = (shutdown.clone(), done_tx.clone());
            part.spawn(async move {
                s.wait().await;
                tokio::time::sleep(std::time::Duration::from_millis(20 * n)).await;
                done.send(n).expect("send");
                if n == 0 {
                    Ok(())
                } else {
                    Err(format!("task {n}"))
                }
            });
        }
        let run = tokio::spawn(part.run(shutdown));
        stop.send(true).expect("stop");
        assert_eq!(run.await.expect("join"), Err("task 1".to_owned()));
        drop(done_tx);
        let mut ended = Vec::new();
        while let Some(n) = done_rx.recv().await {
            ended.push(n);
        }
        assert_eq!(ended, [0, 1, 2], "every task drained before run returned");
    }

    #[tokio::test]
    async fn a_task_that_ends_as_stop_is_asked_does_not_cut_the_drain_short() {
        let (stop, shutdown) = Shutdown::new();
        let mut part: Part<String> = Part::new();
        let (end_first, first_ends) = tokio::sync::oneshot::channel::<()>();
        let (end_second, second_ends) = tokio::sync::oneshot::channel::<()>();
        part.spawn(async move {
            let _ = first_ends.await;
            Ok(())
        });
        part.spawn(async move {
            let _ = second_ends.await;
            Err("second".to_owned())
        });
        let run = tokio::spawn(part.run(shutdown));
        tokio::task::yield_now().await;
        // stop asked without waking anyone (the wake-up not yet seen), then a task ends:
        // what the part sees first is the task's end
        stop.send_if_modified(|s| {
            *s = true;
            false
        });
        end_first.send(()).expect("first");
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        assert!(
            !run.is_finished(),
            "the part returned while a task was still draining"
        );
        end_second.send(()).expect("second");
        assert_eq!(run.await.expect("join"), Err("second".to_owned()));
    }

    #[tokio::test]
    async fn an_empty_part_waits_for_stop() {
        let (stop, shutdown) = Shutdown::new();
        let part: Part<String> = Part::new();
        let run = tokio::spawn(part.run(shutdown));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!run.is_finished(), "nothing ran, nothing ended");
        stop.send(true).expect("stop");
        assert_eq!(run.await.expect("join"), Ok(()));
    }
}
