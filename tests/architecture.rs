//! The module graph stays a graph without loops: no top-level module of
//! `src/` imports, directly or through others, a module that imports it.
//!
//! Loops are how paths drift apart: when the wiring and the stages import
//! each other, each stage grows its own copy of what it cannot reach
//! cleanly. This reads `use crate::…` and `crate::…` paths from the sources
//! (tests excluded) and fails with every cycle it finds.
//!
//! One exception, by design: `config` is the vocabulary every stage reads
//! (its validated types), and its validation calls the stages' own parsers
//! (route patterns, templates, certificates, keys) so that `check` and `run`
//! share one grammar. Edges *out of* `config` are therefore not counted;
//! everything else must form no loop.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            // `foo/tests/` folders hold unit tests only.
            if path.file_name().is_some_and(|n| n != "tests") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `#[cfg(test)]`, or a `cfg` that needs `test` (`#[cfg(all(test, unix))]`).
fn is_test_only(line: &str) -> bool {
    let line = line.trim();
    line.strip_prefix("#[cfg(")
        .and_then(|rest| rest.strip_suffix(")]"))
        .is_some_and(|pred| {
            pred == "test"
                || (pred.starts_with("all(")
                    && !pred.contains("not(")
                    && pred.split([',', '(', ')']).any(|p| p.trim() == "test"))
        })
}

/// Source text without its comments (a doc link is no dependency) and its
/// `#[cfg(test)]` items (a test may reach anywhere).
fn without_tests(src: &str) -> String {
    let mut out = String::new();
    let mut lines = src.lines().filter(|l| !l.trim_start().starts_with("//"));
    while let Some(line) = lines.next() {
        if is_test_only(line) {
            // Skip the item that follows: one line (`mod tests;`) or a block.
            let mut depth = 0i32;
            for l in lines.by_ref() {
                depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
                if depth <= 0 && (l.trim_end().ends_with(';') || l.trim_end().ends_with('}')) {
                    break;
                }
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `crate::name` paths, including those inside `use crate::{a, b::c}`.
fn crate_paths(src: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in src.match_indices("crate::") {
        let rest = &src[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name == "tests.rs" || name.ends_with("_tests.rs") || name == "testutil.rs" {
            continue;
        }
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = fs::read_to_string(&file).expect("readable source");
        let deps = graph.entry(top.clone()).or_default();
        if top == "config" {
            continue;
        }
        for dep in crate_paths(&without_tests(&text)) {
            if dep != top {
                deps.insert(dep);
            }
        }
    }
    graph
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Walk<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, v: &'g str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.graph.contains_key(w) {
                    continue;
                }
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

#[test]
fn no_import_cycle_between_modules() {
    let graph = graph();
    assert!(graph.contains_key("handshake") && graph.contains_key("proxy"));
    let found = cycles(&graph);
    let explain: Vec<String> = found
        .iter()
        .map(|c| {
            let edges: Vec<String> = c
                .iter()
                .flat_map(|a| {
                    graph[a]
                        .iter()
                        .filter(|b| c.contains(b))
                        .map(move |b| format!("{a} -> {b}"))
                })
                .collect();
            format!("{{{}}}: {}", c.join(", "), edges.join(", "))
        })
        .collect();
    assert!(found.is_empty(), "import cycles:\n{}", explain.join("\n"));
}

#[test]
fn the_checker_finds_a_cycle() {
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    g.entry("d".into()).or_default().insert("a".into());
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
    assert_eq!(
        crate_paths("use crate::{a, b::c};\nlet x = crate::d::e();"),
        ["a", "b", "d"].map(String::from).into()
    );
    assert_eq!(
        without_tests(
            "use crate::a;\n/// [crate::c]\n#[cfg(test)]\nmod tests {\n use crate::b;\n}\n"
        ),
        "use crate::a;\n"
    );
}

#[test]
fn test_only_items_are_recognised() {
    for yes in ["#[cfg(test)]", "  #[cfg(all(test, target_os = \"linux\"))]"] {
        assert!(is_test_only(yes), "{yes}");
    }
    for no in [
        "#[cfg(unix)]",
        "#[cfg(not(test))]",
        "#[cfg(all(not(test), unix))]",
        "#[test]",
    ] {
        assert!(!is_test_only(no), "{no}");
    }
}
