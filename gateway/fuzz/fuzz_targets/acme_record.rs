//! The ACME records of a fleet in etcd (`{prefix}acme/...`, written by any node or anyone with
//! access to etcd): arbitrary keys and values must be served as a certificate or challenge, or
//! refused with a reason, never a panic; nothing outside the node's `state_dir/acme/` is
//! written whatever the key says, and an accepted certificate is served for its key's domain
//! only. Input: 1-byte key length, key, value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vxgate::acme::challenge::Challenges;
use vxgate::acme::fleet::{Key, Layout, apply};
use vxgate::acme::store::{AcmeCerts, Store};

fuzz_target!(|data: &[u8]| {
    let Some((&klen, rest)) = data.split_first() else {
        return;
    };
    let (key, value) = rest.split_at(usize::from(klen).min(rest.len()));
    let layout = Layout::new("/vxgate/");
    let Some(k) = layout.parse(key) else {
        return;
    };
    assert_eq!(layout.key(&k).as_bytes(), key, "a parsed key names itself");
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::new(dir.path(), "https://ca.test/dir");
    let (certs, challenges) = (AcmeCerts::default(), Challenges::default());
    let _ = apply(&k, Some(value), &certs, &challenges, &store);
    for (domain, _) in certs.all() {
        assert_eq!(
            Key::Cert(domain.clone()),
            k,
            "served under another name than its key"
        );
    }
    // everything written is inside acme/, named by the key's domain
    for e in std::fs::read_dir(dir.path()).expect("dir").flatten() {
        assert_eq!(e.file_name(), "acme");
    }
    let _ = apply(&k, None, &certs, &challenges, &store);
});
