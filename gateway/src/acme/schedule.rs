//! When the ACME task orders: the decisions of its loop, pure. For each wanted domain, at
//! `now` (Unix seconds from the caller, a fake clock in tests): order now, or look again
//! at a given time; what a fleet claim, a success and a failure change.

use super::plan::Backoff;
use std::collections::HashMap;
use std::time::Duration;

/// In a fleet: how soon a node looks again at a domain another node is ordering, or after
/// etcd did not answer.
pub const FLEET_RECHECK: u64 = 5;

/// What to do about a domain now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Order (in a fleet: claim the domain's lock first).
    Order,
    /// Nothing before this time (Unix seconds).
    Later(u64),
}

/// What the fleet answered a claim (see `fleet::Claim`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// The fleet's state is not read yet.
    NotSynced,
    /// etcd did not answer.
    Unreachable,
    /// Another node holds the lock.
    Held,
    /// The fleet has a certificate that is not due: it renews at this time.
    Have { renew_at: u64 },
    /// The fleet's retry state says not yet.
    Wait(Backoff),
    /// The lock is this node's.
    Mine,
}

/// The retry state of every domain.
#[derive(Debug)]
pub struct Schedule {
    backoff: HashMap<String, Backoff>,
    /// `acme.retry_initial`: the first wait after a failure.
    initial: Duration,
}

impl Schedule {
    pub fn new(initial: Duration) -> Schedule {
        Schedule {
            backoff: HashMap::new(),
            initial,
        }
    }

    fn backoff(&self, domain: &str) -> Backoff {
        self.backoff.get(domain).copied().unwrap_or(Backoff::NONE)
    }

    /// Whether `domain`, whose certificate renews at `renew_at` (`None`: it has none), is
    /// ordered at `now`.
    pub fn decide(&self, domain: &str, renew_at: Option<u64>, now: u64) -> Decision {
        if let Some(at) = renew_at
            && now < at
        {
            return Decision::Later(at);
        }
        let b = self.backoff(domain);
        if b.may_try(now) {
            Decision::Order
        } else {
            Decision::Later(b.next_at)
        }
    }

    /// In a fleet, after a claim on `domain` at `now`.
    pub fn claimed(&mut self, domain: &str, claim: Claimed, now: u64) -> Decision {
        match claim {
            Claimed::NotSynced => Decision::Later(now + 1),
            Claimed::Unreachable | Claimed::Held => Decision::Later(now + FLEET_RECHECK),
            Claimed::Have { renew_at } => Decision::Later(renew_at),
            Claimed::Wait(b) => {
                self.backoff.insert(domain.to_owned(), b);
                Decision::Later(b.next_at)
            }
            Claimed::Mine => Decision::Order,
        }
    }

    /// An order of `domain` succeeded: its retry state is gone.
    pub fn succeeded(&mut self, domain: &str) {
        self.backoff.remove(domain);
    }

    /// An order of `domain` failed at `now` (the CA said `rateLimited`, or not): the new
    /// retry state.
    pub fn failed(&mut self, domain: &str, now: u64, rate_limited: bool) -> Backoff {
        let b = self.backoff(domain).failed(now, self.initial, rate_limited);
        self.backoff.insert(domain.to_owned(), b);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acme::plan::{BACKOFF_MAX, RATE_LIMITED, Validity};

    /// A fake CA: answers each order with the next scripted result (a certificate of
    /// `life` seconds from the order's time, or a failure, rate limited or not).
    struct FakeCa {
        script: Vec<Result<u64, bool>>,
        orders: Vec<u64>,
    }

    impl FakeCa {
        fn order(&mut self, now: u64) -> Result<Validity, bool> {
            self.orders.push(now);
            match self.script.remove(0) {
                Ok(life) => Ok(Validity {
                    not_before: now,
                    not_after: now + life,
                }),
                Err(rate_limited) => Err(rate_limited),
            }
        }
    }

    /// Runs the task's loop for one domain on a fake clock from 0 to `until`, jumping to
    /// each next look: the times the CA was asked, and the certificate held at the end.
    fn drive(ca: &mut FakeCa, until: u64) -> Option<Validity> {
        let mut s = Schedule::new(Duration::from_secs(60));
        let mut cert: Option<Validity> = None;
        let mut now = 0;
        while now <= until {
            now = match s.decide("web.example.com", cert.map(|c| c.renew_at()), now) {
                Decision::Later(at) => at,
                Decision::Order => match ca.order(now) {
                    Ok(v) => {
                        s.succeeded("web.example.com");
                        cert = Some(v);
                        v.renew_at()
                    }
                    Err(rate_limited) => s.failed("web.example.com", now, rate_limited).next_at,
                },
            };
        }
        cert
    }

    const DAY: u64 = 24 * 3600;

    #[test]
    fn orders_at_once_then_renews_at_two_thirds_of_the_lifetime() {
        let mut ca = FakeCa {
            script: vec![Ok(90 * DAY), Ok(90 * DAY), Ok(90 * DAY)],
            orders: vec![],
        };
        let cert = drive(&mut ca, 130 * DAY).expect("a certificate");
        assert_eq!(ca.orders, [0, 60 * DAY, 120 * DAY]);
        assert_eq!(cert.not_before, 120 * DAY);
    }

    #[test]
    fn failures_back_off_exponentially_and_a_success_starts_over() {
        let mut ca = FakeCa {
            script: vec![
                Err(false),
                Err(false),
                Err(false),
                Ok(90 * DAY),
                Err(false),
                Ok(DAY),
            ],
            orders: vec![],
        };
        drive(&mut ca, 60 * DAY + 1000);
        // 60 s, 120 s, 240 s after each failure; then the renewal at 2/3 of 90 days fails
        // once: the wait starts from 60 s again
        let t = 60 + 120 + 240;
        assert_eq!(ca.orders, [0, 60, 180, t, t + 60 * DAY, t + 60 * DAY + 60]);
    }

    #[test]
    fn rate_limited_waits_an_hour_and_the_wait_is_capped() {
        let mut s = Schedule::new(Duration::from_secs(60));
        let b = s.failed("a", 1000, true);
        assert_eq!(b.next_at, 1000 + RATE_LIMITED.as_secs());
        assert_eq!(s.decide("a", None, 1000 + 60), Decision::Later(b.next_at));
        assert_eq!(s.decide("b", None, 1000), Decision::Order, "per domain");
        let mut last = b;
        for _ in 0..40 {
            last = s.failed("a", 0, false);
        }
        assert_eq!(last.next_at, BACKOFF_MAX.as_secs(), "capped at a day");
        s.succeeded("a");
        assert_eq!(s.decide("a", None, 0), Decision::Order);
    }

    #[test]
    fn a_certificate_not_due_is_not_ordered_whatever_the_retry_state() {
        let mut s = Schedule::new(Duration::from_secs(60));
        s.failed("a", 0, false);
        assert_eq!(s.decide("a", Some(500), 100), Decision::Later(500));
        assert_eq!(
            s.decide("a", Some(50), 100),
            Decision::Order,
            "due, backoff over"
        );
    }

    #[test]
    fn the_fleet_lock_decides_who_orders() {
        let mut s = Schedule::new(Duration::from_secs(60));
        let now = 1_000;
        assert_eq!(
            s.claimed("a", Claimed::NotSynced, now),
            Decision::Later(now + 1)
        );
        assert_eq!(
            s.claimed("a", Claimed::Held, now),
            Decision::Later(now + FLEET_RECHECK)
        );
        assert_eq!(
            s.claimed("a", Claimed::Unreachable, now),
            Decision::Later(now + FLEET_RECHECK)
        );
        assert_eq!(
            s.claimed("a", Claimed::Have { renew_at: 9_000 }, now),
            Decision::Later(9_000),
            "another node's certificate is served, not ordered again"
        );
        assert_eq!(s.claimed("a", Claimed::Mine, now), Decision::Order);
        // the fleet's retry state is this node's too: no order before it
        let fleet_says = Backoff::NONE.failed(now, Duration::from_secs(300), false);
        assert_eq!(
            s.claimed("a", Claimed::Wait(fleet_says), now),
            Decision::Later(now + 300)
        );
        assert_eq!(s.decide("a", None, now + 299), Decision::Later(now + 300));
        assert_eq!(s.decide("a", None, now + 300), Decision::Order);
        // and a failure after it goes on from the fleet's count
        assert_eq!(s.failed("a", now + 300, false).failures, 2);
    }
}
