//! The ACME decisions, pure: when a certificate is due for renewal, when a failed order may
//! be retried, and what a certificate's validity is. Times are Unix seconds passed in by the
//! caller (tests use a fake clock).

use std::time::Duration;

/// What vxgate knows of an issued certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: u64,
    pub not_after: u64,
}

impl Validity {
    /// Renewal starts when two thirds of the lifetime have passed (Let's Encrypt's advice for
    /// clients without ARI: 60 days into a 90-day certificate).
    pub fn renew_at(&self) -> u64 {
        let life = self.not_after.saturating_sub(self.not_before);
        self.not_before + life / 3 * 2
    }

    /// Whether a new certificate should be ordered at `now`.
    pub fn due(&self, now: u64) -> bool {
        now >= self.renew_at()
    }

    /// Whether the certificate can be served at `now`.
    pub fn valid(&self, now: u64) -> bool {
        self.not_before <= now && now < self.not_after
    }
}

/// Retries of a failed order: capped exponential backoff from `initial`, and at least an
/// hour after the CA said "rate limited".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub failures: u32,
    /// Unix seconds before which no new order is placed.
    pub next_at: u64,
}

/// The longest wait between two attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(24 * 3600);
/// The wait after the CA answered `rateLimited`.
pub const RATE_LIMITED: Duration = Duration::from_secs(3600);

impl Backoff {
    pub const NONE: Backoff = Backoff {
        failures: 0,
        next_at: 0,
    };

    /// The state after one more failure at `now`.
    pub fn failed(self, now: u64, initial: Duration, rate_limited: bool) -> Backoff {
        let failures = self.failures.saturating_add(1);
        let exp = initial
            .saturating_mul(1u32 << (failures - 1).min(20))
            .min(BACKOFF_MAX);
        let wait = if rate_limited {
            exp.max(RATE_LIMITED)
        } else {
            exp
        };
        Backoff {
            failures,
            next_at: now + wait.as_secs(),
        }
    }

    pub fn may_try(&self, now: u64) -> bool {
        now >= self.next_at
    }
}

/// The validity and serial (hex) of a DER certificate.
pub fn validity_of(der: &[u8]) -> Option<(Validity, String)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let v = cert.validity();
    let ts = |t: &x509_parser::time::ASN1Time| u64::try_from(t.timestamp()).ok();
    Some((
        Validity {
            not_before: ts(&v.not_before)?,
            not_after: ts(&v.not_after)?,
        },
        cert.raw_serial_as_string().replace(':', ""),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    #[test]
    fn renewal_starts_at_two_thirds_of_the_lifetime() {
        let t0 = 1_700_000_000;
        let v = Validity {
            not_before: t0,
            not_after: t0 + 90 * DAY,
        };
        assert_eq!(v.renew_at(), t0 + 60 * DAY);
        assert!(!v.due(t0));
        assert!(!v.due(t0 + 60 * DAY - 1));
        assert!(v.due(t0 + 60 * DAY));
        assert!(v.valid(t0 + 89 * DAY) && !v.valid(t0 + 90 * DAY) && !v.valid(t0 - 1));
        // a 6-day certificate (short-lived profile): renewed after 4 days
        let short = Validity {
            not_before: t0,
            not_after: t0 + 6 * DAY,
        };
        assert!(!short.due(t0 + 4 * DAY - 1) && short.due(t0 + 4 * DAY));
    }

    #[test]
    fn backoff_doubles_to_a_day_and_waits_an_hour_when_rate_limited() {
        let now = 1_000_000;
        let initial = Duration::from_secs(600);
        let mut b = Backoff::NONE;
        assert!(b.may_try(now));
        let mut waits = Vec::new();
        for _ in 0..10 {
            b = b.failed(now, initial, false);
            waits.push(b.next_at - now);
        }
        assert_eq!(&waits[..5], &[600, 1200, 2400, 4800, 9600]);
        assert_eq!(*waits.last().expect("10"), 86_400, "capped at a day");
        assert!(!b.may_try(now + 86_399) && b.may_try(now + 86_400));
        let r = Backoff::NONE.failed(now, Duration::from_secs(1), true);
        assert_eq!(r.next_at - now, 3600, "rate limited: an hour at least");
        // never more than 5 attempts in an hour with the default (Let's Encrypt's failed
        // validation limit is 5 per hostname per hour)
        let (mut t, mut b, mut in_first_hour) = (now, Backoff::NONE, 1);
        loop {
            b = b.failed(t, initial, false);
            t = b.next_at;
            if t - now >= 3600 {
                break;
            }
            in_first_hour += 1;
        }
        assert!(
            in_first_hour <= 5,
            "{in_first_hour} attempts in the first hour"
        );
    }

    #[test]
    fn validity_and_serial_are_read_from_the_certificate() {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut p = rcgen::CertificateParams::new(vec!["web.example.com".into()]).expect("p");
        p.not_before = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("t");
        p.not_after =
            time::OffsetDateTime::from_unix_timestamp(1_700_000_000 + 90 * DAY as i64).expect("t");
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x01, 0xab, 0xcd]));
        let c = p.self_signed(&kp).expect("cert");
        let (v, serial) = validity_of(c.der()).expect("parse");
        assert_eq!(v.not_before, 1_700_000_000);
        assert_eq!(v.not_after, 1_700_000_000 + 90 * DAY);
        assert_eq!(serial, "01abcd");
        assert!(validity_of(b"not a certificate").is_none());
    }
}
