//! `make bench-fetch`: the fetcher's read of a big realm against the same export done the
//! way people script it today with python-keycloak, on the same Keycloak in the same run.
//!
//! The realm (100,000 users, 2,000 groups three levels deep, 300,000 direct memberships,
//! two attributes per user) is seeded once with the partial-import endpoint into a
//! Keycloak whose database is kept in `.deps/bench/keycloak-data`, and reused by later
//! runs. Keycloak (`-Xmx4g`: H2 sorts in memory up to 40,000 rows per GiB of heap, and
//! every `/users` page sorts the realm) is warmed up with a share of both exports'
//! requests, then:
//!
//! 1. keysync's fetch runs in a child process (this binary with `--child-fetch`), which
//!    times `keycloak::client::Client::fetch`, then does what the service does with the
//!    snapshot (wire conversion, encoding, zstd) and reports its peak resident memory
//!    (`VmHWM`);
//! 2. `python_keycloak_export.py` (python-keycloak, pinned below, installed into
//!    `.deps/venv` when missing) reads all users, the group tree and every group's members.
//!
//! Both must find the same numbers of users, groups and memberships. The one line printed
//! on stdout is `BENCH fetch users=N users_per_s=X vs_python_keycloak=R peak_mib=M`, R
//! being python's time divided by keysync's. The bench fails when R < 3 or M > 256.
//!
//! `KEYSYNC_BENCH_PAGE_SIZE` and `KEYSYNC_BENCH_CONCURRENCY` override the fetch settings
//! (default: the connector defaults).

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use config::Secret;
use keycloak::{client::Client, config::KeycloakSettings};
use prost::Message;
use serde_json::{Value, json};
use test_support::bench_realm::{self, REALM, USERS};
use test_support::keycloak::TestRealm;

const PYTHON_KEYCLOAK: &str = "7.1.1";
const MIN_RATIO: f64 = 3.0;
const MAX_PEAK_MIB: f64 = 256.0;

fn main() -> ExitCode {
    let child = std::env::args().any(|arg| arg == "--child-fetch");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bench-fetch: starting tokio: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = if child {
        runtime.block_on(child_fetch()).map(|()| ExitCode::SUCCESS)
    } else {
        runtime.block_on(bench())
    };
    result.unwrap_or_else(|error| {
        eprintln!("bench-fetch: {error:#}");
        ExitCode::FAILURE
    })
}

async fn bench() -> anyhow::Result<ExitCode> {
    let root = test_support::deps::workspace_root();
    let data_dir = bench_realm::data_dir();
    eprintln!("bench-fetch: starting keycloak on {}", data_dir.display());
    let keycloak = bench_realm::start_keycloak().await?;
    let realm = bench_realm::seeded_realm(&keycloak, &data_dir).await?;
    let python = python_with_keycloak(&root)?;

    // Keycloak's JIT warms up on the first export; warm it first, so that the order of
    // the two exports does not decide the ratio.
    warm_up(&realm).await?;

    let keysync = run_child(&realm)?;
    eprintln!("bench-fetch: keysync {keysync}");
    let python_run = run_python(&python, &realm)?;
    eprintln!("bench-fetch: python-keycloak {python_run}");
    for key in ["users", "groups", "memberships"] {
        if keysync[key] != python_run[key] {
            bail!("keysync and python-keycloak disagree on {key}: {keysync} vs {python_run}");
        }
    }
    let users = keysync["users"].as_u64().context("users")?;
    let keysync_seconds = keysync["seconds"].as_f64().context("seconds")?;
    let python_seconds = python_run["seconds"].as_f64().context("seconds")?;
    let peak_mib = keysync["peak_kib"].as_f64().context("peak_kib")? / 1024.0;
    let ratio = python_seconds / keysync_seconds;
    println!(
        "BENCH fetch users={users} users_per_s={:.0} vs_python_keycloak={ratio:.2} peak_mib={peak_mib:.1}",
        users as f64 / keysync_seconds
    );
    if users != USERS as u64 || ratio < MIN_RATIO || peak_mib > MAX_PEAK_MIB {
        eprintln!(
            "bench-fetch: below the floor (users = {USERS}, vs_python_keycloak >= {MIN_RATIO}, peak_mib <= {MAX_PEAK_MIB})"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// A minute's worth of the requests both exports make, with the client's own token:
/// user pages (full representation) and the members of every group of one department.
async fn warm_up(realm: &TestRealm<'_>) -> anyhow::Result<()> {
    let started = Instant::now();
    let client = Client::new(settings(realm))?;
    client.check().await?;
    let token = realm.client_token().await?;
    let token = token["access_token"].as_str().context("no access_token")?;
    let http = reqwest::Client::new();
    let get = |path: String| {
        let request = http
            .get(format!(
                "{}/admin/realms/{}/{path}",
                realm.base_url(),
                realm.name()
            ))
            .bearer_auth(token);
        async move {
            let value: Value = request.send().await?.error_for_status()?.json().await?;
            anyhow::Ok(value)
        }
    };
    for page in 0..10 {
        get(format!(
            "users?first={}&max=500&briefRepresentation=false",
            page * 500
        ))
        .await?;
    }
    let departments = get("groups?first=0&max=1&briefRepresentation=true".to_owned()).await?;
    let mut queue: Vec<String> = departments
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|group| group["id"].as_str().map(str::to_owned))
        .collect();
    while let Some(group) = queue.pop() {
        for member_brief in ["true", "false"] {
            get(format!(
                "groups/{group}/members?first=0&max=100&briefRepresentation={member_brief}"
            ))
            .await?;
        }
        let children = get(format!("groups/{group}/children?first=0&max=100")).await?;
        queue.extend(
            children
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|group| group["id"].as_str().map(str::to_owned)),
        );
    }
    eprintln!(
        "bench-fetch: warmed Keycloak up in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn settings(realm: &TestRealm<'_>) -> KeycloakSettings {
    KeycloakSettings::new(
        realm.base_url(),
        realm.name(),
        realm.client_id(),
        Secret::new(realm.client_secret()),
    )
}

/// The venv's python with python-keycloak at the pinned version, installed when missing.
fn python_with_keycloak(root: &Path) -> anyhow::Result<PathBuf> {
    let python = root.join(".deps/venv/bin/python");
    let installed = Command::new(&python)
        .args([
            "-c",
            "import importlib.metadata as m, sys; sys.exit(m.version('python-keycloak') != sys.argv[1])",
            PYTHON_KEYCLOAK,
        ])
        .status()
        .with_context(|| format!("running {} (run `make deps`)", python.display()))?;
    if !installed.success() {
        eprintln!("bench-fetch: installing python-keycloak {PYTHON_KEYCLOAK} into .deps/venv");
        let status = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(format!("python-keycloak=={PYTHON_KEYCLOAK}"))
            .status()?;
        if !status.success() {
            bail!("pip install python-keycloak=={PYTHON_KEYCLOAK} failed");
        }
    }
    Ok(python)
}

fn run_child(realm: &TestRealm<'_>) -> anyhow::Result<Value> {
    let output = Command::new(std::env::current_exe()?)
        .arg("--child-fetch")
        .env("KC_URL", realm.base_url())
        .env("KC_CLIENT_ID", realm.client_id())
        .env("KC_CLIENT_SECRET", realm.client_secret())
        .output()
        .context("running the keysync fetch")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        bail!(
            "the keysync fetch failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("CHILD "))
        .context("the keysync fetch printed no result")?;
    Ok(serde_json::from_str(line)?)
}

fn run_python(python: &Path, realm: &TestRealm<'_>) -> anyhow::Result<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/python_keycloak_export.py");
    let output = Command::new(python)
        .arg(script)
        .env("KC_URL", realm.base_url())
        .env("KC_REALM", realm.name())
        .env("KC_CLIENT_ID", realm.client_id())
        .env("KC_CLIENT_SECRET", realm.client_secret())
        .output()
        .context("running the python-keycloak export")?;
    if !output.status.success() {
        bail!(
            "the python-keycloak export failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().context("no output")?;
    Ok(serde_json::from_str(line)?)
}

/// The child: one fetch as the service does it, timed, then the wire snapshot built,
/// encoded and compressed as the service stores it, and the process's peak memory.
async fn child_fetch() -> anyhow::Result<()> {
    let variable = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
    let mut settings = KeycloakSettings::new(
        &variable("KC_URL")?,
        REALM,
        &variable("KC_CLIENT_ID")?,
        Secret::new(variable("KC_CLIENT_SECRET")?),
    );
    if let Ok(page_size) = std::env::var("KEYSYNC_BENCH_PAGE_SIZE") {
        settings.page_size = page_size.parse()?;
    }
    if let Ok(concurrency) = std::env::var("KEYSYNC_BENCH_CONCURRENCY") {
        settings.concurrency = concurrency.parse()?;
    }
    let client = Client::new(settings)?;
    let started = Instant::now();
    let snapshot = client.fetch().await?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "bench-fetch: peak {} MiB after the fetch",
        peak_resident_kib()? >> 10
    );
    let (users, groups, memberships) = (
        snapshot.users.len(),
        snapshot.groups.len(),
        snapshot.memberships.len(),
    );
    let wire = fetcher::convert::snapshot_to_proto(
        snapshot,
        &fetcher::convert::SnapshotHeader {
            run_id: "bench",
            connector: "bench",
            realm: REALM,
            fetched_at: prost_types::Timestamp::from(std::time::SystemTime::now()),
        },
    );
    // As `bus::Bus::put_object` does: the message and its compressed encoding.
    let encoded_len = wire.encoded_len();
    let compressed = bus::objects::compressed(&wire)?;
    let peak_kib = peak_resident_kib()?;
    eprintln!(
        "bench-fetch: {} requests, {} retries, encoded {} MiB, stored {} MiB, {:?} total",
        client.progress().requests(),
        client.progress().retries(),
        encoded_len >> 20,
        compressed.len() >> 20,
        Duration::from_secs_f64(seconds),
    );
    drop((wire, compressed));
    println!(
        "CHILD {}",
        json!({
            "users": users,
            "groups": groups,
            "memberships": memberships,
            "seconds": seconds,
            "peak_kib": peak_kib,
        })
    );
    Ok(())
}

/// `VmHWM` of /proc/self/status: the most resident memory this process has had.
fn peak_resident_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/self/status")
}
