//! ARCHITECTURE.md's module table says what each part of `gateway/src` uses; this test reads
//! the `crate::…` paths in the code and fails when the table and the code disagree, either
//! way, so the table cannot drift. It also checks the shape the table promises: no part
//! imports the crate root or `daemon`, and the import graph between top-level modules has no
//! cycle.

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
                // `crate::{a, b::C}` names modules a and b; `crate::Name` an item of the root
                let names: Vec<String> = match rest.strip_prefix('{') {
                    Some(list) => list[..list.find('}').unwrap_or(list.len())]
                        .split(',')
                        .map(|n| n.trim().split("::").next().unwrap_or("").to_owned())
                        .collect(),
                    None => vec![
                        rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                            .next()
                            .unwrap_or("")
                            .to_owned(),
                    ],
                };
                for name in names {
                    let name = if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                        "lib".to_owned()
                    } else {
                        name
                    };
                    if !name.is_empty() && name != top && name != "self" {
                        uses.insert(name);
                    }
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
            .filter(|u| modules.contains(*u))
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

#[test]
fn no_part_imports_the_root_or_the_daemon() {
    let actual = actual();
    let wrong: Vec<String> = actual
        .iter()
        .filter(|(m, _)| !["daemon", "main", "lib"].contains(&m.as_str()))
        .filter(|(_, uses)| uses.contains("lib") || uses.contains("daemon"))
        .map(|(m, uses)| format!("{m}: {uses:?}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "parts that import the crate root or daemon: {wrong:?}"
    );
    // the check reads something: the daemon does compose the parts
    let daemon = &actual["daemon"];
    assert!(
        daemon.contains("overlay") && daemon.contains("ingress"),
        "{daemon:?}"
    );
}

#[test]
fn the_import_graph_between_modules_has_no_cycle() {
    let actual = actual();
    // Kahn: peel modules that import nothing left; what stays is on a cycle
    let mut left: BTreeMap<&str, BTreeSet<&str>> = actual
        .iter()
        .map(|(m, uses)| {
            let uses = uses
                .iter()
                .map(String::as_str)
                .filter(|u| actual.contains_key(*u) && *u != "lib")
                .collect();
            (m.as_str(), uses)
        })
        .collect();
    let total = left.len();
    loop {
        let leaves: Vec<&str> = left
            .iter()
            .filter(|(_, uses)| uses.is_empty())
            .map(|(m, _)| *m)
            .collect();
        if leaves.is_empty() {
            break;
        }
        for l in &leaves {
            left.remove(l);
        }
        for uses in left.values_mut() {
            for l in &leaves {
                uses.remove(l);
            }
        }
    }
    assert!(left.is_empty(), "modules on an import cycle: {left:?}");
    assert!(total > 15, "the graph has the modules: {total}");
}
