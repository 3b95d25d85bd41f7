//! `[[overlay.networks]] bridge = "NAME"`: keeps a network's TAP a port of a Linux bridge that
//! someone else owns (Docker creates the bridge of a network when the network is created, and
//! removes it with the network), attaching it as soon as the bridge exists and again whenever
//! the bridge is re-created.
//!
//! The decision is [`Attachment::wants_attach`]: a bridge that exists under an index the TAP
//! was not attached to. The task around it polls the bridge's index (one `if_nametoindex`
//! per tick, no sysfs, so it works in any network namespace) and runs the ioctl.

use super::tap;
use crate::shutdown::Shutdown;
use std::time::Duration;

/// How often the bridge's presence is checked.
const POLL: Duration = Duration::from_millis(200);

/// What the follower knows of one TAP's bridge.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Attachment {
    /// The bridge index the TAP was last attached to (or found attached to).
    attached_to: Option<u32>,
}

impl Attachment {
    /// Whether to attach now, given the bridge's current index (`None`: it does not exist).
    pub fn wants_attach(&self, bridge: Option<u32>) -> bool {
        bridge.is_some() && bridge != self.attached_to
    }

    /// Records the outcome of an attach (or the bridge's disappearance).
    pub fn record(&mut self, bridge: Option<u32>) {
        self.attached_to = bridge;
    }
}

/// Spawns one follower per (TAP, bridge) pair.
pub fn start(
    pairs: Vec<(String, String)>,
    shutdown: &Shutdown,
    tasks: &mut crate::part::Part<super::error::Error>,
) {
    for (tap_name, bridge) in pairs {
        let mut shutdown = shutdown.clone();
        tasks.spawn(async move {
            let mut state = Attachment::default();
            let mut failing = false;
            let mut ever_attached = false;
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.wait() => return Ok(()),
                    _ = tick.tick() => {}
                }
                let index = tap::ifindex(&bridge);
                if index.is_none() && state != Attachment::default() {
                    tracing::warn!(tap = %tap_name, bridge = %bridge, "overlay: bridge is gone; the TAP joins it again when it is back");
                    state.record(None);
                }
                if !state.wants_attach(index) {
                    continue;
                }
                match tap::attach_to_bridge(&tap_name, &bridge) {
                    Ok(()) if ever_attached => {
                        tracing::info!(tap = %tap_name, bridge = %bridge, "overlay: TAP attached again, to the re-created bridge");
                        state.record(index);
                        failing = false;
                    }
                    Ok(()) => {
                        tracing::info!(tap = %tap_name, bridge = %bridge, "overlay: TAP attached to the bridge");
                        state.record(index);
                        failing = false;
                        ever_attached = true;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        // already a bridge port (attached by hand, or before a restart)
                        tracing::info!(tap = %tap_name, bridge = %bridge, "overlay: TAP is already a bridge port");
                        state.record(index);
                        failing = false;
                        ever_attached = true;
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(tap = %tap_name, bridge = %bridge, "overlay: cannot attach the TAP to the bridge: {e}; retrying");
                            failing = true;
                        }
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attaches_when_the_bridge_appears_and_again_when_it_is_recreated() {
        let mut a = Attachment::default();
        assert!(!a.wants_attach(None), "no bridge yet");
        assert!(a.wants_attach(Some(7)), "the bridge appeared");
        a.record(Some(7));
        assert!(!a.wants_attach(Some(7)), "attached: nothing to do");
        a.record(None); // deleted
        assert!(!a.wants_attach(None));
        assert!(a.wants_attach(Some(9)), "re-created under a new index");
        a.record(Some(9));
        assert!(
            a.wants_attach(Some(11)),
            "deleted and re-created between two polls"
        );
    }
}
