//! Loading: the text through serde, then validation, and each problem located at its line
//! through the document's spans (`FILE:LINE: key: message`).

use super::*;

/// One thing wrong with a config, located by its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path with array indices: `containers[2].ip`.
    pub key: String,
    /// What is wrong, and what was expected.
    pub message: String,
}

/// Why a config file was refused: every problem found, each located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// `(line, problem)`; line 0 when the file could not be read at all.
    pub problems: Vec<(usize, Problem)>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (line, p)) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}: {}: {}",
                self.file.display(),
                line,
                p.key,
                p.message
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads, parses and validates a config file. Relative paths inside it (certs, token file)
/// are resolved against the file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        problems: vec![(
            0,
            Problem {
                key: "(file)".into(),
                message: format!("cannot read the config file: {e}"),
            },
        )],
    })?;
    // `vxgate.toml` has the parent "": relative paths in it are relative to "."
    let base = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    parse(&text, base).map_err(|problems| ConfigError {
        file: path.to_owned(),
        problems,
    })
}

/// Parses and validates config text; paths in it are relative to `base`.
/// Errors are `(line, problem)` pairs.
pub fn parse(text: &str, base: &Path) -> Result<Config, Vec<(usize, Problem)>> {
    let mut config: Config = match toml::from_str(text) {
        Ok(c) => c,
        Err(e) => {
            let (line, key) = match e.span() {
                Some(span) => (line_of(text, span.start), key_at(text, span.start)),
                None => (1, "(document)".to_owned()),
            };
            let message = e.message().trim().replace('\n', " ");
            return Err(vec![(line, Problem { key, message })]);
        }
    };
    config.resolve_paths(base);
    let problems = config.validate();
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems
            .into_iter()
            .map(|p| (line_of_key(text, &p.key), p))
            .collect())
    }
}

/// 1-based line of a byte offset.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// One step of a key path.
#[derive(Debug, PartialEq)]
pub(super) enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

pub(super) fn steps(path: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, rest) = part.split_once('[').unwrap_or((part, ""));
        if !key.is_empty() {
            out.push(Step::Key(key));
        }
        for idx in rest.split('[') {
            if let Ok(n) = idx.trim_end_matches(']').parse() {
                out.push(Step::Index(n));
            }
        }
    }
    out
}

pub(super) type Spanned<T> = toml::Spanned<T>;
pub(super) type DeTable<'i> = toml::de::DeTable<'i>;
pub(super) type DeValue<'i> = toml::de::DeValue<'i>;

/// The line where the deepest existing part of `path` is written (the key where it has one),
/// so a problem with a defaulted key points at its section.
pub(super) fn line_of_key(text: &str, path: &str) -> usize {
    let Ok(doc) = toml::de::DeTable::parse(text) else {
        return 1;
    };
    let mut offset = 0;
    let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    for step in steps(path) {
        let next = match (step, table, value) {
            (Step::Key(k), Some(t), _) => t.get_key_value(k).map(|(key, val)| {
                offset = key.span().start;
                val
            }),
            (Step::Index(n), _, Some(val)) => val.get_ref().as_array().and_then(|a| {
                let item = a.get(n)?;
                offset = item.span().start;
                Some(item)
            }),
            _ => None,
        };
        let Some(next) = next else { break };
        value = Some(next);
        table = next.get_ref().as_table();
    }
    line_of(text, offset)
}

/// The key path of the innermost value or key whose span holds `offset`.
pub(super) fn key_at(text: &str, offset: usize) -> String {
    let Ok(doc) = toml::de::DeTable::parse(text) else {
        return "(document)".into();
    };
    let mut path = String::new();
    let mut table: &DeTable<'_> = doc.get_ref();
    'outer: loop {
        for (k, val) in table.iter() {
            let in_key = k.span().contains(&offset);
            let in_val = val.span().contains(&offset);
            // Tables from `[section]` headers have spans that cover only the header; follow
            // a table whose children hold the offset too.
            let in_children = val.get_ref().as_table().is_some_and(|t| holds(t, offset));
            let in_items = val.get_ref().as_array().is_some_and(|a| {
                a.iter().any(|i| {
                    i.span().contains(&offset)
                        || i.get_ref().as_table().is_some_and(|t| holds(t, offset))
                })
            });
            if !(in_key || in_val || in_children || in_items) {
                continue;
            }
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(k.get_ref());
            if in_key {
                break 'outer;
            }
            match val.get_ref() {
                DeValue::Table(t) => {
                    table = t;
                    continue 'outer;
                }
                DeValue::Array(a) => {
                    for (n, item) in a.iter().enumerate() {
                        let t = item.get_ref().as_table();
                        if item.span().contains(&offset) || t.is_some_and(|t| holds(t, offset)) {
                            path.push_str(&format!("[{n}]"));
                            match t {
                                Some(t) => {
                                    table = t;
                                    continue 'outer;
                                }
                                None => break 'outer,
                            }
                        }
                    }
                    break 'outer;
                }
                _ => break 'outer,
            }
        }
        break;
    }
    if path.is_empty() {
        "(document)".into()
    } else {
        path
    }
}

/// Whether any key or value inside `table` (at any depth) spans `offset`.
pub(super) fn holds(table: &DeTable<'_>, offset: usize) -> bool {
    table.iter().any(|(k, val)| {
        k.span().contains(&offset)
            || val.span().contains(&offset)
            || match val.get_ref() {
                DeValue::Table(t) => holds(t, offset),
                DeValue::Array(a) => a.iter().any(|i| {
                    i.span().contains(&offset)
                        || i.get_ref().as_table().is_some_and(|t| holds(t, offset))
                }),
                _ => false,
            }
    })
}
