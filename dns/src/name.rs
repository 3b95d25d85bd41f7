//! Domain-name rules shared by the config, the registry and the zone.
//!
//! RFC 1035 §2.3.4: a label is 1–63 octets and a name at most 255 octets on the wire (253
//! characters in text form without the trailing dot). Names that vxgate creates from container
//! names and service labels are host names (RFC 1123 §2.1): letters, digits and hyphens, no
//! hyphen at either end of a label.

use std::fmt;

/// Why a text is not an acceptable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong,
    EmptyLabel,
    LabelTooLong,
    BadCharacter(char),
    HyphenAtEdge,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("the name is empty"),
            NameError::TooLong => f.write_str("the name is longer than 253 characters"),
            NameError::EmptyLabel => f.write_str("the name has an empty label (two dots in a row)"),
            NameError::LabelTooLong => f.write_str("a label is longer than 63 characters"),
            NameError::BadCharacter(c) => {
                write!(f, "{c:?} is not allowed (letters, digits and '-' only)")
            }
            NameError::HyphenAtEdge => f.write_str("a label starts or ends with '-'"),
        }
    }
}

impl std::error::Error for NameError {}

/// Checks one host-name label: 1–63 of `[A-Za-z0-9-]`, no hyphen at either end.
pub fn check_label(label: &str) -> Result<(), NameError> {
    if label.is_empty() {
        return Err(NameError::EmptyLabel);
    }
    if label.len() > 63 {
        return Err(NameError::LabelTooLong);
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(NameError::BadCharacter(c));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(NameError::HyphenAtEdge);
    }
    Ok(())
}

/// Normalises a zone name: checks every label, lower-cases it and drops one trailing dot.
pub fn parse_zone(text: &str) -> Result<String, NameError> {
    let text = text.strip_suffix('.').unwrap_or(text);
    if text.is_empty() {
        return Err(NameError::Empty);
    }
    if text.len() > 253 {
        return Err(NameError::TooLong);
    }
    for label in text.split('.') {
        check_label(label)?;
    }
    Ok(text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_names_are_normalised() {
        assert_eq!(parse_zone("Example.COM.").as_deref(), Ok("example.com"));
        assert_eq!(
            parse_zone("svc.cluster.local").as_deref(),
            Ok("svc.cluster.local")
        );
    }

    #[test]
    fn bad_zone_names_are_refused_with_the_reason() {
        assert_eq!(parse_zone(""), Err(NameError::Empty));
        assert_eq!(parse_zone("."), Err(NameError::Empty));
        assert_eq!(parse_zone("a..b"), Err(NameError::EmptyLabel));
        assert_eq!(
            parse_zone("ex ample.com"),
            Err(NameError::BadCharacter(' '))
        );
        assert_eq!(parse_zone("-a.com"), Err(NameError::HyphenAtEdge));
        assert_eq!(parse_zone(&"a".repeat(64)), Err(NameError::LabelTooLong));
        let long = vec!["abcdefghi"; 26].join(".");
        assert_eq!(parse_zone(&long), Err(NameError::TooLong));
    }

    #[test]
    fn labels_follow_rfc1123() {
        assert!(check_label("web-1").is_ok());
        assert!(check_label("1web").is_ok());
        assert_eq!(check_label("web_1"), Err(NameError::BadCharacter('_')));
        assert_eq!(check_label("web-"), Err(NameError::HyphenAtEdge));
    }
}
