//! `keysync-test-env -- COMMAND...`: runs COMMAND with one Keycloak for the whole test
//! run. Keycloak starts in the background while COMMAND (usually `cargo test`) compiles;
//! the tests find it through `KEYSYNC_TEST_KEYCLOAK_URL` and wait for it on first use.
//! Keycloak is stopped when COMMAND ends, and the exit code is COMMAND's.

use std::process::{Command, ExitCode};

use anyhow::Context;
use test_support::keycloak::{Keycloak, KeycloakOptions};

fn main() -> anyhow::Result<ExitCode> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .skip_while(|arg| arg == "--")
        .collect();
    let Some((program, rest)) = args.split_first() else {
        anyhow::bail!("usage: keysync-test-env -- COMMAND [ARGS...]");
    };
    let keycloak = Keycloak::spawn(KeycloakOptions::default()).context("starting keycloak")?;
    eprintln!(
        "keysync-test-env: keycloak starting at {} (log: {})",
        keycloak.base_url(),
        keycloak.log_path().display()
    );
    let status = Command::new(program)
        .args(rest)
        .env("KEYSYNC_TEST_KEYCLOAK_URL", keycloak.base_url())
        .env(
            "KEYSYNC_TEST_KEYCLOAK_ADMIN_PASSWORD",
            keycloak.admin_password(),
        )
        .env("KEYSYNC_TEST_KEYCLOAK_LOG", keycloak.log_path())
        .status()
        .with_context(|| format!("running {program}"))?;
    drop(keycloak);
    Ok(status
        .code()
        .and_then(|code| u8::try_from(code).ok())
        .map_or(ExitCode::FAILURE, ExitCode::from))
}
