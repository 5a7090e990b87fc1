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

/// The source files of the workspace outside tests, benches and examples: `crates/*/src`
/// and `tests/src`.
fn source_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(crates_dir()).expect("crates/").flatten() {
        rust_files(&entry.path().join("src"), &mut files);
    }
    rust_files(
        &test_support::deps::workspace_root()
            .join("tests")
            .join("src"),
        &mut files,
    );
    files
}

/// `text` with comments, string and character literals blanked out (lines kept), so that
/// braces can be counted.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut index = 0;
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    while index < chars.len() {
        let ch = chars[index];
        let next = chars.get(index + 1).copied();
        if ch == '/' && next == Some('/') {
            while index < chars.len() && chars[index] != '\n' {
                index += 1;
            }
        } else if ch == '/' && next == Some('*') {
            index += 2;
            while index < chars.len()
                && !(chars[index] == '*' && chars.get(index + 1) == Some(&'/'))
            {
                blank(&mut out, chars[index]);
                index += 1;
            }
            index += 2;
        } else if ch == 'r' && (next == Some('"') || next == Some('#')) && {
            let hashes = chars[index + 1..].iter().take_while(|c| **c == '#').count();
            chars.get(index + 1 + hashes) == Some(&'"')
        } {
            let hashes = chars[index + 1..].iter().take_while(|c| **c == '#').count();
            index += hashes + 2;
            let closing: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            while index < chars.len()
                && !chars[index..]
                    .iter()
                    .collect::<String>()
                    .starts_with(&closing)
            {
                blank(&mut out, chars[index]);
                index += 1;
            }
            index += closing.len();
        } else if ch == '"' {
            index += 1;
            while index < chars.len() && chars[index] != '"' {
                if chars[index] == '\\' {
                    index += 1;
                }
                if let Some(&inner) = chars.get(index) {
                    blank(&mut out, inner);
                }
                index += 1;
            }
            index += 1;
        } else if ch == '\'' && (next == Some('\\') || chars.get(index + 2) == Some(&'\'')) {
            index += 1;
            while index < chars.len() && chars[index] != '\'' {
                if chars[index] == '\\' {
                    index += 1;
                }
                index += 1;
            }
            index += 1;
        } else {
            out.push(ch);
            index += 1;
        }
    }
    out
}

/// Each function of `text` before its `#[cfg(test)]` module: its name and its length in
/// lines, from `fn` to its closing brace.
fn function_lengths(text: &str) -> Vec<(String, usize)> {
    let code = code_only(text);
    let lines: Vec<&str> = code.lines().collect();
    let end = lines
        .iter()
        .position(|line| line.starts_with("#[cfg(test)]"))
        .unwrap_or(lines.len());
    let mut found = Vec::new();
    for (start, line) in lines[..end].iter().enumerate() {
        let Some(name) = line
            .split_whitespace()
            .skip_while(|word| *word != "fn")
            .nth(1)
            .map(|name| name.split(['(', '<']).next().unwrap_or(name).to_owned())
        else {
            continue;
        };
        let mut depth = 0i64;
        let mut opened = false;
        for (offset, body_line) in lines[start..end].iter().enumerate() {
            for ch in body_line.chars() {
                match ch {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    ';' if !opened && depth == 0 => break,
                    _ => {}
                }
            }
            if opened && depth <= 0 {
                found.push((name.clone(), offset + 1));
                break;
            }
            if !opened && body_line.trim_end().ends_with(';') {
                break;
            }
        }
    }
    found
}

#[test]
fn function_lengths_count_code_not_braces_in_literals_or_comments() {
    let text = "fn a() {\n    let x = '{';\n    // }\n    let y = \"}}\";\n}\nfn b();\n";
    assert_eq!(function_lengths(text), [("a".to_owned(), 5)]);
    let raw = "pub async fn c<T>() -> T {\n    r#\"{\"#;\n    todo()\n}\n";
    assert_eq!(function_lengths(raw), [("c".to_owned(), 4)]);
}

#[test]
fn no_source_file_is_over_1000_lines_and_no_function_over_150() {
    let mut offenders = Vec::new();
    for path in source_files() {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines = text.lines().count();
        if lines > 1000 {
            offenders.push(format!("{}: {lines} lines", path.display()));
        }
        for (name, length) in function_lengths(&text) {
            if length > 150 {
                offenders.push(format!("{}: fn {name} has {length} lines", path.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "split these along the lines their docs mark: {offenders:#?}"
    );
}

/// The names of the `[dependencies]` of the crate in `crates/{name}` (not dev or build).
fn normal_dependencies(name: &str) -> Vec<String> {
    let manifest =
        std::fs::read_to_string(crates_dir().join(name).join("Cargo.toml")).expect("the manifest");
    manifest
        .lines()
        .skip_while(|line| line.trim() != "[dependencies]")
        .skip(1)
        .take_while(|line| !line.trim_start().starts_with('['))
        .filter_map(|line| {
            let line = line.trim();
            (!line.is_empty() && !line.starts_with('#')).then(|| {
                line.split(['=', '.', ' '])
                    .next()
                    .unwrap_or(line)
                    .to_owned()
            })
        })
        .collect()
}

#[test]
fn the_cli_and_the_libraries_link_no_service() {
    let services = ["fetcher", "planner", "applier", "control-plane"];
    let mut offenders = Vec::new();
    for entry in std::fs::read_dir(crates_dir()).expect("crates/").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if services.contains(&name.as_str()) || !entry.path().join("Cargo.toml").exists() {
            continue;
        }
        for dependency in normal_dependencies(&name) {
            if services.contains(&dependency.as_str()) {
                offenders.push(format!("{name} -> {dependency}"));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

#[test]
fn every_path_dependency_is_declared_in_the_workspace_manifest() {
    let mut offenders = Vec::new();
    for entry in std::fs::read_dir(crates_dir()).expect("crates/").flatten() {
        let manifest = entry.path().join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).unwrap_or_default();
        for line in text.lines().filter(|line| line.contains("path = \"..")) {
            offenders.push(format!("{}: {line}", manifest.display()));
        }
    }
    assert!(
        offenders.is_empty(),
        "use `name.workspace = true`: {offenders:#?}"
    );
}

#[test]
fn only_telemetry_builds_a_subscriber() {
    let mut offenders = Vec::new();
    for path in source_files() {
        if path
            .components()
            .any(|part| part.as_os_str() == "telemetry")
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let code = code_only(&text);
        let before_tests = code.split("\n#[cfg(test)]").next().unwrap_or_default();
        if before_tests.contains("tracing_subscriber") {
            offenders.push(path.display().to_string());
        }
    }
    assert!(offenders.is_empty(), "use telemetry::init: {offenders:#?}");
}
