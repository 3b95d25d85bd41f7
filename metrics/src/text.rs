//! The Prometheus text format (version 0.0.4), written straight into a `String`: a family's
//! `# HELP` and `# TYPE` lines, then its samples. Every part of vxgate renders its own
//! families with these, next to the counters it keeps; nothing is allocated per sample but
//! the escaping of a label value that needs it.

use std::borrow::Cow;
use std::fmt::{Display, Write};

/// `# HELP name help` and `# TYPE name kind`.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample: `name{a="x",b="y"} value`, or `name value` without labels. Label values are
/// escaped.
pub fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A family of one unlabelled sample.
pub fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl Display) {
    family(out, name, kind, help);
    sample(out, name, &[], value);
}

/// A family with one sample per value of one label: `name{label="…"} value`.
pub fn by_label(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    samples: &[(&str, u64)],
) {
    family(out, name, kind, help);
    for (value, n) in samples {
        sample(out, name, &[(label, value)], n);
    }
}

/// A label value escaped for the text format (backslash, double quote, newline).
pub fn escape(v: &str) -> Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(v);
    }
    Cow::Owned(
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_samples_in_the_text_format() {
        let mut o = String::new();
        single(&mut o, "x_total", "counter", "Things.", 3);
        by_label(&mut o, "y", "gauge", "Ys.", "kind", &[("a", 1), ("b", 2)]);
        sample(&mut o, "z", &[("n", "d\"q\\s\nl"), ("m", "2")], 0.5);
        assert_eq!(
            o,
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total 3\n\
             # HELP y Ys.\n# TYPE y gauge\ny{kind=\"a\"} 1\ny{kind=\"b\"} 2\n\
             z{n=\"d\\\"q\\\\s\\nl\",m=\"2\"} 0.5\n"
        );
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
    }
}
