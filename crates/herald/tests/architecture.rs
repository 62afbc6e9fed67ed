//! Two rules of ARCHITECTURE.md, checked on the library's own source: the modules form layers
//! that only point down (no import circle; the upward imports allowed are listed here with
//! their reason), and only `protocol` spells wire JSON (`json!` builds no wire body anywhere
//! else).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The library's top-level modules, lowest first. A module may use any module of its own
/// layer or below; modules of one layer do not use each other.
const LAYERS: &[&[&str]] = &[
    &["sync", "metrics", "wire", "protocol"],
    &["config"],
    &["auth", "hooks"],
    &["topic"],
    &["publication"],
    &["hub", "engine"],
    &["node"],
    &["connection"],
    &["http"],
    &["bench_support"],
];

/// Imports that point up, each with its reason (ARCHITECTURE.md).
const UPWARD: &[(&str, &str, &str)] = &[];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`None` for lib.rs).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).expect("under src");
    let first = relative
        .components()
        .next()?
        .as_os_str()
        .to_str()?
        .to_string();
    match first.strip_suffix(".rs") {
        Some("lib") => None,
        Some(stem) => Some(stem.to_string()),
        None => Some(first),
    }
}

/// The code of a file that ships: comments and `#[cfg(test)]` modules left out.
fn shipped_code(text: &str) -> String {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    code.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn library() -> (PathBuf, Vec<PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    (src, files)
}

#[test]
fn layers_only_point_down() {
    let (src, files) = library();
    let mut seen = BTreeSet::new();
    let mut wrong = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let own = layer_of(&module)
            .unwrap_or_else(|| panic!("module `{module}` is in no layer of this test"));
        let code = shipped_code(&std::fs::read_to_string(file).expect("read"));
        for (at, _) in code.match_indices("crate::") {
            let used: String = code[at + 7..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if used == module || used.is_empty() {
                continue;
            }
            let Some(theirs) = layer_of(&used) else {
                continue; // a re-exported item at the crate root (`crate::Herald`)
            };
            seen.insert((module.clone(), used.clone()));
            let allowed = UPWARD
                .iter()
                .any(|(from, to, _)| *from == module && *to == used);
            if theirs >= own && !allowed {
                wrong.push(format!(
                    "{} uses `{used}` (layer {theirs}) from layer {own}",
                    file.strip_prefix(&src).unwrap_or(file).display()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that do not point down:\n{}",
        wrong.join("\n")
    );
    // The scan itself works: these imports are known to exist.
    for known in [
        ("connection", "node"),
        ("node", "engine"),
        ("http", "connection"),
    ] {
        assert!(
            seen.contains(&(known.0.into(), known.1.into())),
            "{known:?} not seen"
        );
    }
    for (from, to, why) in UPWARD {
        assert!(
            seen.contains(&(from.to_string(), to.to_string())),
            "the allowed upward import {from} -> {to} ({why}) is gone: remove it from UPWARD"
        );
    }
}

#[test]
fn only_protocol_spells_wire_json() {
    let (src, files) = library();
    let mut found = Vec::new();
    for file in &files {
        if module_of(&src, file).as_deref() == Some("protocol") {
            continue;
        }
        let code = shipped_code(&std::fs::read_to_string(file).expect("read"));
        // The conformance suites and the benchmark support build test data, not wire bodies.
        let name = file
            .strip_prefix(&src)
            .unwrap_or(file)
            .display()
            .to_string();
        if name.ends_with("conformance.rs") || name == "bench_support.rs" {
            continue;
        }
        for (number, line) in code.lines().enumerate() {
            if line.contains("json!(") {
                found.push(format!("{name}:{}: {}", number + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "wire JSON built outside protocol (use a type of protocol::replies or answers):\n{}",
        found.join("\n")
    );
}
