//! The certificate chosen for a ClientHello's SNI: any name a client sends must get a
//! certificate (the default when none fits), never a panic, and the one that covers it when
//! one does. Two self-signed certificates (for a.test and *.a.test, b.test and *.b.test) are
//! generated once into a temporary directory; the first is the default.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use vxgate::config::CertConfig;
use vxgate::ingress::tls::{CertStore, Source};

struct Fixture {
    store: CertStore,
    a: Vec<u8>,
    b: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vxgate-fuzz-sni-{}", std::process::id()));
        let mut files = Vec::new();
        for zone in ["a.test", "b.test"] {
            let d = dir.join(zone);
            std::fs::create_dir_all(&d).expect("temp dir");
            let one = CertStore::load(Source::SelfSigned {
                zone: zone.into(),
                dir: d.clone(),
            })
            .expect("generate");
            drop(one);
            files.push(CertConfig {
                cert: d.join("self-signed.crt"),
                key: d.join("self-signed.key"),
            });
        }
        let store = CertStore::load(Source::Files(files)).expect("load both");
        let der = |n: &str| store.choose(Some(n)).expect("a cert").cert[0].to_vec();
        let (a, b) = (der("x.a.test"), der("x.b.test"));
        assert_ne!(a, b, "each zone's name gets its own certificate");
        Fixture { store, a, b }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    let chosen: Arc<_> = f.store.choose(Some(name)).expect("always a certificate");
    let der = chosen.cert[0].to_vec();
    // an absolute name (one trailing dot) is the same name
    let lower = name.to_ascii_lowercase();
    let lower = lower.strip_suffix('.').unwrap_or(&lower);
    // a valid DNS name (as rustls takes it from the ClientHello) that b's certificate covers
    // (b.test, or one label under it for *.b.test) gets b's
    let valid = matches!(
        rustls_pki_types::ServerName::try_from(name),
        Ok(rustls_pki_types::ServerName::DnsName(_))
    );
    let one_label_under = |zone: &str| {
        valid
            && (lower == zone
                || lower
                    .strip_suffix(&format!(".{zone}"))
                    .is_some_and(|l| !l.is_empty() && !l.contains('.')))
    };
    if one_label_under("b.test") {
        assert_eq!(der, f.b, "{name:?} is covered by b's certificate");
    } else if !one_label_under("a.test") {
        assert_eq!(
            der, f.a,
            "{name:?}: no certificate covers it, so the default"
        );
    }
    assert!(
        f.store
            .choose(None)
            .is_some_and(|c| c.cert[0].to_vec() == f.a)
    );
});
