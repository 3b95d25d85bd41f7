//! `POST /v1/containers` bodies: arbitrary bytes must become a container that passes the
//! config's validation, or a 400 with the reason, never a panic. Validation runs as the admin
//! API runs it (the body as the only container of the running config).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vxgate::config::{Config, ContainerConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(entry) = serde_json::from_slice::<ContainerConfig>(data) else {
        return;
    };
    let mut probe: Config = vxgate::config::parse(
        "[node]\nname = \"h1\"\n[overlay]\nlisten = \"10.99.0.1:4789\"\n[[overlay.networks]]\nname = \"default\"\nvni = 42\n",
        std::path::Path::new("."),
    )
    .expect("base config");
    probe.containers = vec![entry.clone()];
    let problems = probe.validate();
    if problems.is_empty() {
        assert!(entry.port > 0);
        assert!(!entry.ip.is_unspecified() && !entry.ip.is_multicast());
        assert!(!entry.name.is_empty() && entry.name.len() <= 63);
    } else {
        assert!(problems.iter().all(|p| !p.message.is_empty()));
    }
});
