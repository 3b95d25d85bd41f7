//! The TLS crypto provider (rustls on ring), built once and shared by the ingress, its
//! backend TLS and ACME; and the text form of WireGuard keys, which the overlay, the registry's
//! node records and the config all read. A leaf, so none of them imports another for it.

use rustls::crypto::CryptoProvider;
use std::sync::{Arc, OnceLock};

/// The process's crypto provider: one `Arc`, cloned.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// A key: 32 bytes.
pub type Key = [u8; 32];

/// `wg genkey`'s and `wg pubkey`'s text: standard base64 of 32 bytes.
pub fn encode_key(key: &Key) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// A key from its base64 text (surrounding whitespace allowed); None unless exactly 32 bytes.
pub fn parse_key(text: &str) -> Option<Key> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_provider_for_the_process() {
        assert!(std::sync::Arc::ptr_eq(
            &super::provider(),
            &super::provider()
        ));
    }
}
