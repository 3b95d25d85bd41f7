//! The Docker source's mapping from an inspect answer to a registry entry: arbitrary bytes
//! must map to an entry or a skip reason, never a panic. Seeds: answers captured from
//! dockerd 20.10 (gateway/tests/fixtures/docker/inspect-*.json).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vxgate::registry::docker::mapping::{Settings, entry_from_json};

fuzz_target!(|data: &[u8]| {
    for network in [None, Some("vxnet".to_owned())] {
        let s = Settings {
            network,
            node: "h1".into(),
            overlay_network: "default".into(),
            service_label: "app".into(),
        };
        if let Ok(c) = entry_from_json(data, &s) {
            assert!(c.port > 0);
            assert!(!c.name.is_empty() && !c.name.starts_with('/'));
        }
    }
});
