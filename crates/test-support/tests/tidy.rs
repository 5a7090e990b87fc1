//! Workspace tidy rules, checked as a test so they cannot drift: every crate folder is
//! named after its package, every Rust file opens with a `//!` doc, no test is skipped
//! or expects a panic, and no line ends in white space.

use std::path::{Path, PathBuf};

fn crates_dir() -> PathBuf {
    test_support::deps::workspace_root().join("crates")
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name == "target") {
                continue;
            }
            rust_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn crate_folders_are_named_after_their_packages() {
    let mut wrong = Vec::new();
    for entry in std::fs::read_dir(crates_dir()).expect("crates/").flatten() {
        let manifest = entry.path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let folder = entry.file_name().to_string_lossy().into_owned();
        let package = text
            .lines()
            .skip_while(|line| line.trim() != "[package]")
            .find_map(|line| line.trim().strip_prefix("name = "))
            .map(|name| name.trim_matches('"').to_owned());
        if package.as_deref() != Some(folder.as_str()) {
            wrong.push(format!("crates/{folder}: package {package:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "folder and package names differ: {wrong:#?}"
    );
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let mut files = Vec::new();
    rust_files(&crates_dir(), &mut files);
    assert!(files.len() > 5, "found only {} files", files.len());
    let missing: Vec<_> = files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            !text.trim_start().starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` doc: {missing:#?}"
    );
}

#[test]
fn no_test_is_ignored_or_expects_a_panic() {
    let mut files = Vec::new();
    rust_files(&crates_dir(), &mut files);
    let forbidden = [concat!("#[", "ignore"), concat!("#[", "should_panic")];
    let offenders: Vec<String> = files
        .iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            forbidden
                .iter()
                .filter(|pattern| text.contains(*pattern))
                .map(|pattern| format!("{}: {pattern}", path.display()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "check the Err or assert today's behaviour with a FIXME instead: {offenders:#?}"
    );
}

#[test]
fn no_line_ends_in_white_space() {
    let mut files = Vec::new();
    rust_files(&crates_dir(), &mut files);
    let offenders: Vec<String> = files
        .iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            text.lines()
                .enumerate()
                .filter(|(_, line)| line.ends_with(' ') || line.ends_with('\t'))
                .map(|(index, _)| format!("{}:{}", path.display(), index + 1))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(offenders.is_empty(), "trailing white space: {offenders:#?}");
}
