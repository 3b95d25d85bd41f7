//! The ingress's path normaliser (issue 30): whatever the request target, a path it accepts
//! is absolute, has no dot segment and no empty segment, no encoded `/`, `\` or NUL, keeps
//! the query as it came, and normalises to itself (what is routed is what is forwarded).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::borrow::Cow;
use vxgate::ingress::path::normalize;

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(out) = normalize(target) else {
        return;
    };
    let (path, query) = out
        .split_once('?')
        .map_or((&*out, None), |(p, q)| (p, Some(q)));
    assert!(path.starts_with('/'), "{target:?} -> {out:?}");
    assert!(!path.contains("//"), "{target:?} -> {out:?}");
    for seg in path.split('/').skip(1) {
        assert!(seg != "." && seg != "..", "{target:?} -> {out:?}");
        assert!(!seg.contains('\\'), "{target:?} -> {out:?}");
        // every escape left is of a byte that is neither unreserved nor / \ NUL
        for (i, _) in seg.match_indices('%') {
            let hex = seg.get(i + 1..i + 3).expect("two hex digits");
            let byte = u8::from_str_radix(hex, 16).expect("hex");
            assert!(
                !(byte.is_ascii_alphanumeric() || b"-._~/\\\0".contains(&byte)),
                "%{hex} left in {target:?} -> {out:?}"
            );
        }
    }
    assert_eq!(
        query,
        target.split_once('?').map(|(_, q)| q),
        "the query changed: {target:?} -> {out:?}"
    );
    match normalize(&out) {
        Ok(Cow::Borrowed(again)) => assert_eq!(again, &*out),
        other => panic!("not idempotent: {target:?} -> {out:?} -> {other:?}"),
    }
});
