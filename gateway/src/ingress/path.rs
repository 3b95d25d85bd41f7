//! The request path, normalised once before it is matched against routes and forwarded, so
//! that a route's prefix is the prefix the backend sees (RFC 3986 §6.2.2). Pure.
//!
//! - `%xx` of an unreserved character (`A-Z a-z 0-9 - . _ ~`, RFC 3986 §2.3) is decoded, so
//!   `%2e%2e` is `..` before dot segments are removed; other escapes stay as they came;
//! - an encoded `/` or `\` (`%2f`, `%5c`), an encoded NUL, a raw `\` or a control byte is
//!   refused: a backend that decodes them would see a different path than the route did;
//! - dot segments are removed (§5.2.4; `..` above the root stays at the root);
//! - runs of `/` are merged (as nginx's `merge_slashes`): `/api//evil.com/x` is
//!   `/api/evil.com/x`, never `//evil.com/x` after a prefix is stripped.
//!
//! The query is left as it is.

use std::borrow::Cow;

/// Why a path was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `%2f`, `%5c` or `%00` in the path.
    EncodedSeparator,
    /// A raw `\`, a control byte or a malformed `%` escape.
    BadByte,
    /// Not starting with `/`.
    NotAbsolute,
}

impl PathError {
    pub fn message(self) -> &'static str {
        match self {
            PathError::EncodedSeparator => "an encoded / or \\ or NUL in the path",
            PathError::BadByte => "a backslash, control byte or bad %-escape in the path",
            PathError::NotAbsolute => "the path must start with /",
        }
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `path_and_query` (`/a/../b?q`) with its path normalised; borrowed when it already is
/// (the usual case: no allocation).
pub fn normalize(path_and_query: &str) -> Result<Cow<'_, str>, PathError> {
    let (path, query) = match path_and_query.find('?') {
        Some(i) => path_and_query.split_at(i),
        None => (path_and_query, ""),
    };
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_clean(path.as_bytes())? {
        return Ok(Cow::Borrowed(path_and_query));
    }
    let decoded = decode_unreserved(path.as_bytes());
    Ok(Cow::Owned(remove_dot_segments(&decoded, query)))
}

/// Whether `b` (a path) is already normal, or the byte that makes it unusable: an escape
/// that is not two hex digits, an encoded `/`, `\` or NUL, a control byte, a raw `\`.
fn is_clean(b: &[u8]) -> Result<bool, PathError> {
    let mut clean = true;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let (Some(h), Some(l)) = (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadByte);
                };
                let c = h * 16 + l;
                if matches!(c, b'/' | b'\\' | 0) {
                    return Err(PathError::EncodedSeparator);
                }
                if unreserved(c) {
                    clean = false;
                }
                i += 3;
                continue;
            }
            b'\\' => return Err(PathError::BadByte),
            c if c < 0x20 || c == 0x7f => return Err(PathError::BadByte),
            b'/' => {
                // `//`, `/.` followed by `/` or the end, `/..` likewise
                let rest = &b[i + 1..];
                let seg_end = rest.iter().position(|&c| c == b'/').unwrap_or(rest.len());
                let seg = &rest[..seg_end];
                if seg == b"." || seg == b".." || (seg.is_empty() && seg_end < rest.len()) {
                    clean = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(clean)
}

/// `b` with its escapes of unreserved characters decoded (checked by [`is_clean`]: two hex
/// digits follow every `%`).
fn decode_unreserved(b: &[u8]) -> Vec<u8> {
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let c = hex(b[i + 1]).unwrap_or(0) * 16 + hex(b[i + 2]).unwrap_or(0);
            if unreserved(c) {
                decoded.push(c);
            } else {
                decoded.extend_from_slice(&b[i..i + 3]);
            }
            i += 3;
        } else {
            decoded.push(b[i]);
            i += 1;
        }
    }
    decoded
}

/// RFC 3986 §5.2.4 on a decoded absolute path, segment by segment, then `query`.
fn remove_dot_segments(decoded: &[u8], query: &str) -> String {
    let mut out: Vec<&[u8]> = Vec::new();
    let segments: Vec<&[u8]> = decoded[1..].split(|&c| c == b'/').collect();
    let last = segments.len() - 1;
    let mut trailing_slash = false;
    for (n, seg) in segments.iter().enumerate() {
        match *seg {
            b"." => trailing_slash = n == last,
            b".." => {
                out.pop();
                trailing_slash = n == last;
            }
            b"" => trailing_slash = n == last,
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut s = String::with_capacity(decoded.len() + query.len());
    for seg in &out {
        s.push('/');
        // only ASCII was decoded, and the input was a str: still UTF-8
        s.push_str(&String::from_utf8_lossy(seg));
    }
    if out.is_empty() || trailing_slash {
        s.push('/');
    }
    s.push_str(query);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize(p).map(Cow::into_owned)
    }

    #[test]
    fn clean_paths_are_borrowed_unchanged() {
        for p in [
            "/",
            "/a",
            "/a/b/",
            "/a.b/c..d/.e",
            "/x?a=../b//c",
            "/%20%C3%A9",
        ] {
            let r = normalize(p).expect(p);
            assert!(matches!(r, Cow::Borrowed(q) if q == p), "{p}");
        }
        assert_eq!(n("/a/b?q=1").as_deref(), Ok("/a/b?q=1"));
    }

    #[test]
    fn rfc3986_dot_segments_are_removed() {
        // RFC 3986 §5.2.4's examples, and the escapes
        assert_eq!(n("/a/b/c/./../../g").as_deref(), Ok("/a/g"));
        assert_eq!(n("/mid/content=5/../6").as_deref(), Ok("/mid/6"));
        assert_eq!(n("/public/../secret.txt").as_deref(), Ok("/secret.txt"));
        assert_eq!(n("/public/%2e%2e/secret.txt").as_deref(), Ok("/secret.txt"));
        assert_eq!(n("/public/%2E./secret.txt").as_deref(), Ok("/secret.txt"));
        assert_eq!(n("/..").as_deref(), Ok("/"));
        assert_eq!(n("/../../etc/passwd").as_deref(), Ok("/etc/passwd"));
        assert_eq!(n("/a/.").as_deref(), Ok("/a/"));
        assert_eq!(n("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(n("/a/./b/?x=/../").as_deref(), Ok("/a/b/?x=/../"));
    }

    #[test]
    fn slashes_are_merged_and_unreserved_escapes_decoded() {
        assert_eq!(n("/api//evil.com/x").as_deref(), Ok("/api/evil.com/x"));
        assert_eq!(n("//x").as_deref(), Ok("/x"));
        assert_eq!(n("/a///").as_deref(), Ok("/a/"));
        assert_eq!(n("/%7Euser/%61").as_deref(), Ok("/~user/a"));
        // reserved and non-ASCII escapes stay escaped
        assert_eq!(
            n("/a%20b/%3F/%C3%A9/.").as_deref(),
            Ok("/a%20b/%3F/%C3%A9/")
        );
    }

    #[test]
    fn encoded_separators_and_bad_bytes_are_refused() {
        for p in [
            "/public/..%2fsecret.txt",
            "/a%2Fb",
            "/a%5cb",
            "/a%00",
            "/a%5C",
        ] {
            assert_eq!(n(p), Err(PathError::EncodedSeparator), "{p}");
        }
        for p in ["/a\\b", "/a%zz", "/a%4", "/a\x01"] {
            assert_eq!(n(p), Err(PathError::BadByte), "{p:?}");
        }
        assert_eq!(n("a/b"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for p in [
            "/a/../b//c/./d",
            "/%2e%2e/%2E/x/..",
            "/x/%2e/y",
            "/a/b/../../..//c?q",
        ] {
            let once = n(p).expect(p);
            assert_eq!(n(&once).as_deref(), Ok(once.as_str()), "{p}");
            assert!(
                !once.contains("/../") && !once.contains("//"),
                "{p} -> {once}"
            );
        }
    }
}
