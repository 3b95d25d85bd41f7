//! Host names as labels and the config write them: `shop.example.org`, or a pattern
//! `*.shop.example.org`. The config validates them and the ingress routes by them.

/// A `vxgate.host` value, lower-cased: a host name, or `*.` and one.
pub fn host_pattern(h: &str) -> Option<String> {
    let h = h.trim_end_matches('.').to_ascii_lowercase();
    let name = h.strip_prefix("*.").unwrap_or(&h);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    ok.then_some(h)
}

#[cfg(test)]
mod tests {
    use super::host_pattern;

    #[test]
    fn names_and_wildcards_lower_cased_bad_ones_refused() {
        assert_eq!(
            host_pattern("Shop.Example.org.").as_deref(),
            Some("shop.example.org")
        );
        assert_eq!(
            host_pattern("*.shop.example.org").as_deref(),
            Some("*.shop.example.org")
        );
        for bad in [
            "",
            "*.",
            "a..b",
            "-a.b",
            "a-.b",
            "a_b.c",
            "*.*.b",
            "a b",
            &"a".repeat(64),
        ] {
            assert_eq!(host_pattern(bad), None, "{bad:?}");
        }
    }
}
