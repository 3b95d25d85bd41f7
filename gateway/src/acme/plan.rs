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

/// ACME Renewal Information (RFC 9773): when the CA suggests renewing.
///
/// RFC 9773 §4.2: a uniformly random point of the suggested window (`pick` in `0.0..1.0`),
/// or at once when the window has started; a window that ends before it starts is ignored
/// (the caller falls back to two thirds of the lifetime).
pub fn ari_renew_at(start: i64, end: i64, now: u64, pick: f64) -> Option<u64> {
    let (start, end) = (u64::try_from(start).ok()?, u64::try_from(end).ok()?);
    if end < start {
        return None;
    }
    if start <= now {
        return Some(now);
    }
    let span = (end - start) as f64;
    Some(start + (span * pick.clamp(0.0, 1.0)) as u64)
}

/// RFC 9773 §4.1: the raw keyIdentifier of the certificate's authority key identifier and its
/// serial number's DER content bytes, which name it to the CA's renewalInfo resource.
pub fn ari_id_parts(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let aki = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })?;
    Some((aki, cert.raw_serial().to_vec()))
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
    fn ari_renews_in_the_window_or_at_once_once_it_has_started() {
        let now: u64 = 1_000_000;
        let (start, end): (i64, i64) = (1_000_000 + 100, 1_000_000 + 200);
        assert_eq!(ari_renew_at(start, end, now, 0.0), Some(now + 100));
        assert_eq!(ari_renew_at(start, end, now, 0.5), Some(now + 150));
        assert_eq!(ari_renew_at(start, end, now, 0.999_999), Some(now + 199));
        // the window started (a CA asking for early renewal, e.g. before a revocation)
        assert_eq!(ari_renew_at(now as i64 - 5, end, now, 0.7), Some(now));
        assert_eq!(
            ari_renew_at(end, start, now, 0.5),
            None,
            "an inverted window"
        );
        assert_eq!(ari_renew_at(-1, end, now, 0.5), None);
    }

    #[test]
    fn the_ari_identifier_is_the_authority_key_id_and_the_serial_bytes() {
        // RFC 9773 §4.1's example: keyIdentifier 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:
        // AE:2C:DE:01:C8:D4 and serial 00:87:65:43:21 encode as
        // "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
        let aki: [u8; 20] = [
            0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3, 0x7B, 0x84, 0x7B, 0xA0,
            0xAE, 0x2C, 0xDE, 0x01, 0xC8, 0xD4,
        ];
        let serial = [0x00, 0x87, 0x65, 0x43, 0x21];
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(aki.to_vec());
        let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut p = rcgen::CertificateParams::new(vec!["web.example.com".into()]).expect("p");
        p.use_authority_key_identifier_extension = true;
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial[1..]));
        let leaf = p.signed_by(&kp, &issuer).expect("leaf");
        let (got_aki, got_serial) = ari_id_parts(leaf.der()).expect("parts");
        assert_eq!(got_aki, aki);
        assert_eq!(
            got_serial, serial,
            "DER content bytes, with the sign-padding zero"
        );
        let id = instant_acme::CertificateIdentifier::new(
            got_aki.as_slice().into(),
            got_serial.as_slice().into(),
        );
        assert_eq!(id.to_string(), "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
        // a certificate without an authority key identifier has no ARI identity
        assert!(ari_id_parts(ca_cert.der()).is_none());
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
