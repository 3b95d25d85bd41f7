//! The stop signal every long-running part watches (its own module, so parts do not import
//! the process entry point in `daemon`).

use tokio::sync::watch;

/// A stop signal that every long-running part watches.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A signal and the trigger that fires it.
    pub fn new() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (tx, Shutdown(rx))
    }

    /// Whether stop has been asked, without waiting.
    pub fn is_stopping(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Resolves once stop has been asked (or the trigger is gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

#[cfg(test)]
mod tests {
    use super::Shutdown;

    #[tokio::test]
    async fn wait_resolves_on_stop_or_when_the_trigger_is_gone() {
        let (tx, mut s) = Shutdown::new();
        assert!(!s.is_stopping());
        tx.send(true).expect("send");
        assert!(s.is_stopping());
        s.wait().await;
        let (tx, mut s) = Shutdown::new();
        drop(tx);
        assert!(s.is_stopping(), "a dropped trigger stops");
        s.wait().await;
    }
}
