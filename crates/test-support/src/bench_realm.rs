//! The benchmarks' big realm, kept across runs: 100,000 users, 2,000 groups three levels
//! deep, 300,000 direct memberships and two attributes per user, seeded once with the
//! partial-import endpoint into a Keycloak whose database is kept in
//! `.deps/bench/keycloak-data` ([`start_keycloak`]), and reused by later runs of
//! `make bench-fetch`, `make bench-e2e` and `make bench-events` ([`seeded_realm`]).
//! Seeding takes a while; a run that reuses the realm starts in seconds.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value, json};

use crate::keycloak::{Keycloak, KeycloakOptions, RealmSpec, TestRealm, UserSpec};

/// The realm's name.
pub const REALM: &str = "bench";
/// Its users.
pub const USERS: usize = 100_000;
/// Users imported per request (and per admin token).
const IMPORT_BATCH: usize = 1_000;
/// The bench server only listens on 127.0.0.1; its admin must keep one password because
/// Keycloak creates the bootstrap admin only when its database is new.
const ADMIN_PASSWORD: &str = "keysync-bench-admin";

/// Where the bench Keycloak keeps its database.
pub fn data_dir() -> PathBuf {
    crate::deps::workspace_root().join(".deps/bench/keycloak-data")
}

/// Starts the bench Keycloak on [`data_dir`] with `-Xmx4g` (H2 sorts in memory up to
/// 40,000 rows per GiB of heap, and every `/users` page sorts the realm).
pub async fn start_keycloak() -> anyhow::Result<Keycloak> {
    Keycloak::start(KeycloakOptions {
        heap: Some("-Xms1g -Xmx4g".to_owned()),
        data_dir: Some(data_dir()),
        admin_password: Some(ADMIN_PASSWORD.to_owned()),
        ..KeycloakOptions::default()
    })
    .await
}

/// The realm, seeded now unless a complete earlier seeding is recorded next to the data.
pub async fn seeded_realm<'k>(
    keycloak: &'k Keycloak,
    data_dir: &Path,
) -> anyhow::Result<TestRealm<'k>> {
    let marker = data_dir.join("bench-realm.json");
    if let Ok(text) = std::fs::read_to_string(&marker) {
        let recorded: Value = serde_json::from_str(&text)?;
        if let Some(secret) = recorded["client_secret"].as_str()
            && recorded["users"] == USERS
        {
            let realm = keycloak.existing_realm(REALM, secret);
            match realm.admin(reqwest::Method::GET, "users/count", None).await {
                Ok(count) if count == USERS => {
                    eprintln!("bench realm: reusing realm {REALM} ({USERS} users)");
                    return Ok(realm);
                }
                other => {
                    eprintln!("bench realm: recorded realm unusable ({other:?}); seeding again")
                }
            }
        }
    }
    let _ = std::fs::remove_file(&marker);
    // A realm left by an interrupted seeding goes first.
    let _ = keycloak
        .admin(reqwest::Method::DELETE, &format!("realms/{REALM}"), None)
        .await;
    let started = Instant::now();
    let paths = group_paths();
    let mut spec = RealmSpec::default().name(REALM);
    for path in &paths {
        spec = spec.group(path);
    }
    let realm = keycloak.create_realm(spec).await?;
    for batch_start in (0..USERS).step_by(IMPORT_BATCH) {
        let batch: Vec<UserSpec> = (batch_start..(batch_start + IMPORT_BATCH).min(USERS))
            .map(|idx| user(idx, &paths))
            .collect();
        realm.import_users(&batch, IMPORT_BATCH).await?;
        if (batch_start + IMPORT_BATCH).is_multiple_of(10_000) {
            eprintln!(
                "bench realm: seeded {} users in {:.0} s",
                batch_start + IMPORT_BATCH,
                started.elapsed().as_secs_f64()
            );
        }
    }
    std::fs::write(
        &marker,
        json!({ "realm": REALM, "client_secret": realm.client_secret(), "users": USERS })
            .to_string(),
    )?;
    Ok(realm)
}

/// 2,000 groups: 20 departments of 9 teams of 10 squads.
pub fn group_paths() -> Vec<String> {
    let mut paths = Vec::new();
    for department in 0..20 {
        paths.push(format!("/dept-{department:02}"));
        for team in 0..9 {
            paths.push(format!("/dept-{department:02}/team-{team}"));
            for squad in 0..10 {
                paths.push(format!("/dept-{department:02}/team-{team}/squad-{squad}"));
            }
        }
    }
    paths
}

/// User `idx`: three direct memberships spread over the tree, two attributes, some
/// disabled and some without email.
pub fn user(idx: usize, paths: &[String]) -> UserSpec {
    let mut user = UserSpec::new(&format!("user-{idx:06}"))
        .name(&format!("First{idx}"), &format!("Last{idx}"))
        .attribute("employeeNumber", &[&idx.to_string()])
        .attribute("costCenter", &[&format!("cc-{}", idx % 97)]);
    if idx.is_multiple_of(40) {
        user = user.no_email();
    }
    if idx.is_multiple_of(50) {
        user = user.disabled();
    }
    let n = paths.len();
    for offset in [0, n / 3, 2 * n / 3] {
        user = user.member_of(&paths[(idx + offset + idx / n) % n]);
    }
    user
}
