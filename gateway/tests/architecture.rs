//! ARCHITECTURE.md's module table says what each part of `gateway/src` uses; this test reads
//! the `crate::…` paths in the code and fails when the table and the code disagree, either
//! way, so the table cannot drift. (`crate::Error` and `crate::Tasks`, the daemon's task set
//! that every part still takes, are the knot issue 32 item 1 removes; they are not counted.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every top-level module of `gateway/src` and the other top-level modules its files name.
fn actual() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read src") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(&src).expect("under src");
            let first = rel.components().next().expect("a component");
            let top = first
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned();
            let text = std::fs::read_to_string(&p).expect("read");
            let uses = out.entry(top.clone()).or_default();
            let mut rest = text.as_str();
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + 7..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() && name != top {
                    uses.insert(name);
                }
            }
        }
    }
    out
}

/// The table's rows: each gateway module it names, and what the row says it uses (None:
/// "every part" or "everything").
fn documented(modules: &BTreeSet<String>) -> BTreeMap<String, Option<BTreeSet<String>>> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md"))
            .expect("ARCHITECTURE.md");
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (names, uses) = (cells[1], cells[3]);
        // the row's modules: the backticked names before any "(…)" of sub-modules
        let head = names.split('(').next().unwrap_or(names);
        let named: Vec<String> = head
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|n| {
                n.trim_end_matches(".rs")
                    .trim_start_matches("gateway/src/")
                    .to_owned()
            })
            .filter(|n| modules.contains(n))
            .collect();
        let said = if uses.contains("every") {
            None
        } else {
            Some(
                uses.split(',')
                    .map(|u| u.split_whitespace().next().unwrap_or("").to_owned())
                    .filter(|u| modules.contains(u))
                    .collect(),
            )
        };
        for n in named {
            out.insert(n, said.clone());
        }
    }
    out
}

#[test]
fn the_module_table_says_what_each_part_uses() {
    let actual = actual();
    let modules: BTreeSet<String> = actual.keys().cloned().collect();
    let documented = documented(&modules);
    let mut wrong = Vec::new();
    for (m, uses) in &actual {
        let uses: BTreeSet<String> = uses
            .iter()
            .filter(|u| modules.contains(*u) && u.as_str() != "error")
            .cloned()
            .collect();
        match documented.get(m) {
            None if m == "main" || m == "lib" => {}
            None => wrong.push(format!("{m}: no row in ARCHITECTURE.md's table")),
            Some(None) => {}
            Some(Some(said)) => {
                let missing: Vec<_> = uses.difference(said).collect();
                let stale: Vec<_> = said.difference(&uses).collect();
                if !missing.is_empty() || !stale.is_empty() {
                    wrong.push(format!(
                        "{m}: uses {missing:?} not in the table; the table names {stale:?} it does not use"
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "ARCHITECTURE.md:\n{}", wrong.join("\n"));
    // the test reads something: the parts it knows are there
    for m in ["overlay", "ingress", "registry", "wire", "crypto"] {
        assert!(documented.contains_key(m), "{m} has no row");
    }
}
