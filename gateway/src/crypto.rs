//! The TLS crypto provider (rustls on ring), built once and shared by the ingress, its
//! backend TLS and ACME: a leaf, so none of them imports another for it.

use rustls::crypto::CryptoProvider;
use std::sync::{Arc, OnceLock};

/// The process's crypto provider: one `Arc`, cloned.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
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
