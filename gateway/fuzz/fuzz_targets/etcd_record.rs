//! The etcd records other nodes publish (key and JSON value, written by anyone with access to
//! etcd): arbitrary keys and values must be taken as a valid entry or refused with a reason,
//! never a panic; an accepted container has the key's name and node, a port, and goes away
//! with its key. Input: 1-byte key length, key, value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vxgate::registry::remote::{Layout, RemoteState};

fuzz_target!(|data: &[u8]| {
    let Some((&klen, rest)) = data.split_first() else {
        return;
    };
    let (key, value) = rest.split_at(usize::from(klen).min(rest.len()));
    let mut st = RemoteState::new("h1", Layout::new("/vxgate/"));
    let own = st.is_own(key);
    match st.put(key, value) {
        Ok(true) => {
            assert!(!own, "a record under this node's own key was taken");
            for c in st.containers() {
                assert!(c.port > 0);
                assert_ne!(c.node, "h1");
                assert!(!c.name.is_empty());
            }
            assert!(st.delete(key), "an accepted key could not be deleted");
            assert!(st.containers().is_empty() && st.nodes().is_empty());
        }
        Ok(false) | Err(_) => {}
    }
});
