//! `deploy/keysync.example.toml` stays true: as shipped, and with every commented default
//! spelled out, it passes `keysync config check`.

use std::path::{Path, PathBuf};

fn example() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/keysync.example.toml");
    std::fs::read_to_string(&path).expect("the example config exists")
}

/// Points every `/run/secrets/...` file of the example into `dir`, and creates them.
fn with_secrets_in(text: &str, dir: &Path) -> String {
    let secrets = dir.join("secrets");
    for line in text.lines() {
        if let Some(start) = line.find("\"/run/secrets/") {
            let rest = &line[start + 1..];
            let path = &rest[..rest.find('"').expect("a closing quote")];
            let file = secrets.join(path.trim_start_matches("/run/secrets/"));
            std::fs::create_dir_all(file.parent().expect("a parent")).expect("mkdir");
            // Long enough for a bearer token of the control API (32 bytes or more).
            std::fs::write(&file, "s3cret-0123456789abcdef-0123456789\n").expect("writes a secret");
        }
    }
    text.replace("/run/secrets", &secrets.display().to_string())
}

/// Uncomments `# key = value` lines and `# [section]` headers: the example's defaults.
fn spelled_out(text: &str) -> String {
    text.lines()
        .map(|line| {
            let Some(rest) = line.strip_prefix("# ") else {
                return line.to_owned();
            };
            let is_header = rest.starts_with('[') && !rest.starts_with("[\"");
            let value = rest.split_once(" = ").map(|(_, value)| value.trim());
            let is_key = rest
                .split_once(" = ")
                .is_some_and(|(key, _)| key.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                && value.is_some_and(|value| !value.is_empty() && !value.starts_with('#'));
            if is_header || is_key {
                rest.to_owned()
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn check(file: &PathBuf) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_keysync"))
        .args(["config", "check"])
        .arg(file)
        .output()
        .expect("runs keysync")
}

#[test]
fn example_config_is_valid_as_shipped_and_with_every_default_spelled_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shipped = with_secrets_in(&example(), dir.path());
    let full = spelled_out(&shipped);
    assert!(
        full.lines().count() == shipped.lines().count() && full != shipped,
        "some defaults were uncommented"
    );
    assert!(
        full.contains("\ncron = \"0 2 * * *\""),
        "the schedule default is spelled out"
    );
    for (name, text) in [("shipped.toml", shipped), ("full.toml", full)] {
        let file = dir.path().join(name);
        std::fs::write(&file, text).expect("writes");
        let output = check(&file);
        assert!(
            output.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
