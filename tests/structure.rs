//! The structure the README promises, checked on the source tree: module imports form no
//! cycle, the server never imports the controller, and no source file holds more than 500
//! lines of production code (what precedes its `#[cfg(test)]` module).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `root`, keyed by its module path (`server::h1`, `controller`).
fn modules(root: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).unwrap().with_extension("");
                let mut parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if matches!(
                    parts.last().map(String::as_str),
                    Some("mod" | "main" | "lib")
                ) {
                    parts.pop();
                }
                out.insert(parts.join("::"), path);
            }
        }
    }
    out
}

fn production(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// Which other modules each module names through `crate::` or `super::` paths.
fn imports(mods: &BTreeMap<String, PathBuf>) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges = BTreeMap::new();
    for (name, path) in mods {
        let here: Vec<&str> = name.split("::").filter(|s| !s.is_empty()).collect();
        let code = production(path);
        let mut deps = BTreeSet::new();
        for (i, _) in code
            .match_indices("crate::")
            .chain(code.match_indices("super::"))
        {
            let rest = &code[i..];
            let (anchor, tail) = rest.split_once("::").unwrap();
            let words: Vec<&str> = tail
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or("")
                .split("::")
                .filter(|w| !w.is_empty())
                .collect();
            let mut target: Vec<&str> = if anchor.ends_with("super") {
                here[..here.len().saturating_sub(1)].to_vec()
            } else {
                Vec::new()
            };
            target.extend(words);
            // The longest prefix that names a module of this crate.
            for k in (1..=target.len()).rev() {
                let cand = target[..k].join("::");
                if mods.contains_key(&cand) && &cand != name {
                    deps.insert(cand);
                    break;
                }
            }
        }
        edges.insert(name.clone(), deps);
    }
    edges
}

fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next) {
                Some(1) => {
                    let from = path.iter().position(|p| p == next).unwrap();
                    let mut c = path[from..].to_vec();
                    c.push(next.clone());
                    return Some(c);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(next, edges, state, path) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if !state.contains_key(node) {
            if let Some(c) = visit(node, edges, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn crates() -> [PathBuf; 2] {
    let top = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    [top.join("src"), top.join("backends/src")]
}

#[test]
fn imports_form_no_cycle_and_the_server_never_imports_the_controller() {
    for root in crates() {
        let mods = modules(&root);
        assert!(mods.len() > 5, "read the tree at {}", root.display());
        let edges = imports(&mods);
        assert_eq!(
            cycle(&edges),
            None,
            "an import cycle under {}",
            root.display()
        );
        for (m, deps) in &edges {
            if m.starts_with("server") {
                let wrong: Vec<&String> = deps
                    .iter()
                    .filter(|d| d.starts_with("controller"))
                    .collect();
                assert!(wrong.is_empty(), "{m} imports {wrong:?}");
            }
        }
    }
}

#[test]
fn the_checker_sees_a_cycle_when_there_is_one() {
    // The check above must be able to fail: feed it a made-up tree with a cycle.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("server")).unwrap();
    std::fs::write(dir.path().join("main.rs"), "mod a;\n").unwrap();
    std::fs::write(dir.path().join("a.rs"), "use crate::server::b;\n").unwrap();
    std::fs::write(dir.path().join("server/mod.rs"), "mod b;\n").unwrap();
    std::fs::write(dir.path().join("server/b.rs"), "use crate::a::X;\n").unwrap();
    let edges = imports(&modules(dir.path()));
    assert_eq!(
        cycle(&edges),
        Some(vec!["a".into(), "server::b".into(), "a".into()])
    );
}

#[test]
fn no_source_file_holds_more_than_500_lines_of_production_code() {
    for root in crates() {
        for (name, path) in modules(&root) {
            let lines = production(&path).lines().count();
            assert!(
                lines <= 500,
                "{name} ({}) has {lines} lines",
                path.display()
            );
        }
    }
}
