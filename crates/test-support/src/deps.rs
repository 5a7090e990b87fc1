//! Where the installed servers are: `KEYSYNC_*` environment variables first, then the
//! `.deps/env` file that `deploy/local/deps.sh` writes at the workspace root.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use anyhow::{Context, bail};

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The value of one `KEYSYNC_*` setting, from the environment or `.deps/env`.
pub fn setting(key: &str) -> anyhow::Result<String> {
    if let Ok(value) = std::env::var(key) {
        return Ok(value);
    }
    static FILE: OnceLock<HashMap<String, String>> = OnceLock::new();
    let file = FILE.get_or_init(|| {
        let deps_dir = std::env::var("KEYSYNC_DEPS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| workspace_root().join(".deps"));
        std::fs::read_to_string(deps_dir.join("env"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
            .collect()
    });
    match file.get(key) {
        Some(value) => Ok(value.clone()),
        None => bail!("{key} is not set and .deps/env does not name it: run `make deps` first"),
    }
}

/// A path setting that must exist on disk.
pub fn existing_path(key: &str) -> anyhow::Result<PathBuf> {
    let path = PathBuf::from(setting(key)?);
    if !path.exists() {
        bail!(
            "{key} points to {}, which does not exist: run `make deps`",
            path.display()
        );
    }
    path.canonicalize()
        .with_context(|| format!("resolving {}", path.display()))
}
