//! Sticky sessions (`vxgate.sticky = "cookie"`): the response carries a cookie naming the
//! backend that answered, and later requests with it go to that backend while it serves.
//! The value is opaque: an HMAC-SHA256 of the service and the backend's name under a secret
//! drawn when this node starts, so it names no container and cannot be forged to pick one.

use ring::hmac;

/// The per-node key the cookie values are made with.
pub struct Sticky {
    key: hmac::Key,
}

impl Sticky {
    /// A key from the system's random source (`None` if it fails: no sticky sessions).
    pub fn random() -> Option<Sticky> {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).ok()?;
        Some(Sticky { key })
    }

    #[cfg(test)]
    pub(crate) fn with_key(bytes: &[u8]) -> Sticky {
        Sticky {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    /// The cookie value for `backend` of `service`: 32 hex digits.
    pub fn token(&self, service: &str, backend: &str) -> String {
        let mut msg = Vec::with_capacity(service.len() + backend.len() + 1);
        msg.extend_from_slice(service.as_bytes());
        msg.push(0);
        msg.extend_from_slice(backend.as_bytes());
        let tag = hmac::sign(&self.key, &msg);
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(32);
        for b in &tag.as_ref()[..16] {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        out
    }

    /// The `Set-Cookie` value that sends this client to `backend` from now on.
    pub fn set_cookie(&self, service: &str, backend: &str) -> String {
        format!(
            "{}={}; Path=/; Secure; HttpOnly; SameSite=Lax",
            cookie_name(service),
            self.token(service, backend)
        )
    }
}

/// The cookie's name for `service` (services sharing a host by path keep theirs apart).
pub fn cookie_name(service: &str) -> String {
    format!("vxgate_{service}")
}

/// The value of cookie `name` in `Cookie` header values (`a=1; b=2`), if there.
pub fn find<'a>(cookie_headers: impl Iterator<Item = &'a str>, name: &str) -> Option<&'a str> {
    cookie_headers
        .flat_map(|h| h.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_opaque_stable_and_per_service_and_key() {
        let s = Sticky::with_key(b"k1");
        let t = s.token("web", "web-1");
        assert_eq!(t.len(), 32);
        assert!(!t.contains("web"));
        assert_eq!(t, s.token("web", "web-1"), "stable for one key");
        assert_ne!(t, s.token("web", "web-2"));
        assert_ne!(
            t,
            s.token("webw", "eb-1"),
            "the separator keeps names apart"
        );
        assert_ne!(
            t,
            Sticky::with_key(b"k2").token("web", "web-1"),
            "per node key"
        );
        assert_eq!(
            s.set_cookie("web", "web-1"),
            format!("vxgate_web={t}; Path=/; Secure; HttpOnly; SameSite=Lax")
        );
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let h = ["a=1; vxgate_web=abc ; b=2", "vxgate_api=def"];
        assert_eq!(find(h.iter().copied(), "vxgate_web"), Some("abc"));
        assert_eq!(find(h.iter().copied(), "vxgate_api"), Some("def"));
        assert_eq!(find(h.iter().copied(), "vxgate_x"), None);
        assert_eq!(find(["vxgate_webx=1"].into_iter(), "vxgate_web"), None);
    }
}
