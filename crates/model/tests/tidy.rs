//! Tidy rules for the `model` crate, as tests: it stays pure (no IO, async or wire-format
//! dependencies), every source file opens with a `//!` doc, no test is marked should-panic or
//! ignored, and no line ends in spaces.

use std::path::{Path, PathBuf};

const FORBIDDEN: [&str; 8] = [
    "tokio",
    "async-nats",
    "reqwest",
    "tonic",
    "prost",
    "hyper",
    "axum",
    "futures",
];

#[test]
fn model_has_no_io_async_or_wire_format_dependencies() {
    let manifest = read(&crate_dir().join("Cargo.toml"));
    let mut section = String::new();
    let mut offenders = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.trim_matches(|ch| ch == '[' || ch == ']').to_owned();
            // A `[dependencies.NAME]` table names the dependency in its header.
            if let Some((_, name)) = section.rsplit_once("dependencies.") {
                let name = name.trim_matches('"');
                if FORBIDDEN
                    .iter()
                    .any(|forbidden| name.starts_with(forbidden))
                {
                    offenders.push(format!("[{section}]"));
                }
            }
            continue;
        }
        if !section.ends_with("dependencies") && !section.contains("dependencies.") {
            continue;
        }
        let name = line
            .split(['=', '.', ' '])
            .next()
            .unwrap_or("")
            .trim_matches('"');
        let package = line
            .split("package")
            .nth(1)
            .and_then(|rest| rest.split('"').nth(1))
            .unwrap_or(name);
        for forbidden in FORBIDDEN {
            if name.starts_with(forbidden) || package.starts_with(forbidden) {
                offenders.push(format!("[{section}] {line}"));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "model must stay pure, but Cargo.toml has:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn every_source_file_starts_with_a_module_doc() {
    let missing: Vec<String> = rust_files()
        .into_iter()
        .filter(|path| !read(path).starts_with("//!"))
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not start with a `//!` doc:\n{}",
        missing.join("\n")
    );
}

#[test]
fn no_test_is_ignored_or_expected_to_panic() {
    let should_panic = ["#[should", "_panic]"].concat();
    let ignore = ["#[ig", "nore]"].concat();
    let offenders: Vec<String> = rust_files()
        .into_iter()
        .filter(|path| {
            let text = read(path);
            text.contains(&should_panic) || text.contains(&ignore)
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "assert today's behavior instead, in:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn no_line_has_trailing_whitespace() {
    let mut offenders = Vec::new();
    for path in rust_files() {
        for (idx, line) in read(&path).lines().enumerate() {
            if line.ends_with([' ', '\t']) {
                offenders.push(format!("{}:{}", path.display(), idx + 1));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "trailing whitespace at:\n{}",
        offenders.join("\n")
    );
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

fn rust_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![crate_dir()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(
        files.len() > 5,
        "found only {} Rust files under {}",
        files.len(),
        crate_dir().display()
    );
    files
}
