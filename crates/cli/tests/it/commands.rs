//! Each command of the built `keysync` binary, for people and with `--json`.

use std::process::Stdio;

use proto::v1::RunMode;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    process::{Child, ChildStdout},
};

use crate::helpers::{DEADLINE, TestApp, changes, describe, spawn_app, spawn_app_with};

/// A `keysync sync ARGS...` that has printed its first line, the run it started.
struct Following {
    run_id: String,
    child: Child,
    stdout: BufReader<ChildStdout>,
    first_line: String,
}

async fn start_sync(app: &TestApp, args: &[&str]) -> Following {
    let mut all = vec!["sync"];
    all.extend_from_slice(args);
    let mut child = app
        .keysync(&all)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keysync starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut first_line = String::new();
    tokio::time::timeout(DEADLINE, stdout.read_line(&mut first_line))
        .await
        .expect("keysync prints the run in time")
        .expect("reads stdout");
    let run_id = first_line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    assert!(
        ulid::Ulid::from_string(&run_id).is_ok(),
        "the first line names no run: {first_line:?}"
    );
    Following {
        run_id,
        child,
        stdout,
        first_line,
    }
}

impl Following {
    /// Waits for the command to end; answers its exit code and the rest of its stdout.
    async fn finish(mut self) -> (Option<i32>, String) {
        let mut rest = String::new();
        tokio::time::timeout(DEADLINE, self.stdout.read_to_string(&mut rest))
            .await
            .expect("keysync ends in time")
            .expect("reads stdout");
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("keysync exits in time")
            .expect("waits");
        (status.code(), rest)
    }
}

#[tokio::test]
async fn sync_simulate_prints_the_run_and_once_planned_the_summary() {
    let app = spawn_app().await;
    let sync = start_sync(
        &app,
        &["--simulate", "--product", "jira", "--product", "confluence"],
    )
    .await;
    assert!(
        sync.first_line.contains("simulate, jira, confluence"),
        "{}",
        sync.first_line
    );

    app.snapshot_ready(&sync.run_id, RunMode::Simulate as i32)
        .await;
    app.plan_ready(&sync.run_id, changes(), None).await;

    let run_id = sync.run_id.clone();
    let (code, rest) = sync.finish().await;
    assert_eq!(code, Some(0), "{rest}");
    assert!(rest.contains(&format!("Run {run_id} succeeded")), "{rest}");
    assert!(rest.contains("nothing was written"), "{rest}");
    assert!(rest.contains("Would change:"), "{rest}");
    assert!(rest.contains("jira: create_user 2"), "{rest}");
    assert!(rest.contains("confluence: create_user 1"), "{rest}");
    assert!(
        rest.contains(&format!("keysync run {run_id} --changes")),
        "{rest}"
    );
}

#[tokio::test]
async fn runs_json_parses_and_lists_the_runs_newest_first() {
    let app = spawn_app().await;
    // Two connectors: the runs of one go one at a time.
    let first = start_sync(&app, &["--simulate", "--connector", "a"]).await;
    let second = start_sync(&app, &["--connector", "b"]).await;

    let runs = app.json(&["runs"]).await;
    let runs = runs.as_array().expect("an array of runs");
    let ids: Vec<&str> = runs
        .iter()
        .map(|run| run["id"].as_str().expect("an id"))
        .collect();
    assert_eq!(ids, [second.run_id.as_str(), first.run_id.as_str()]);
    assert_eq!(runs[0]["mode"], "apply");
    assert_eq!(runs[1]["mode"], "simulate");
    assert_eq!(runs[0]["state"], "fetching");
    assert_eq!(runs[0]["trigger"], "api");
    assert_eq!(runs[0]["connector"], "b");

    let busy = app.run(&["sync", "--connector", "b"]).await;
    assert_eq!(busy.status.code(), Some(1), "{}", describe(&busy));
    let stderr = String::from_utf8_lossy(&busy.stderr);
    assert!(
        stderr.contains(&format!(
            "run {} of connector b is still FETCHING",
            second.run_id
        )),
        "{stderr}"
    );

    let table = app.run(&["runs"]).await;
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains("CREATED"), "{table}");
    assert!(table.contains("CONNECTOR"), "{table}");
    assert!(table.contains(&first.run_id), "{table}");

    let fetching_only = app.json(&["runs", "--state", "succeeded"]).await;
    assert_eq!(fetching_only.as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn run_with_changes_lists_the_changes_for_people_and_as_json() {
    let app = spawn_app().await;
    let sync = start_sync(&app, &["--simulate"]).await;
    app.snapshot_ready(&sync.run_id, RunMode::Simulate as i32)
        .await;
    app.plan_ready(&sync.run_id, changes(), None).await;
    let run_id = sync.run_id.clone();
    let (code, _) = sync.finish().await;
    assert_eq!(code, Some(0));

    let details = app.json(&["run", &run_id, "--changes"]).await;
    assert_eq!(details["run"]["state"], "succeeded");
    let listed: Vec<(&str, &str, &str)> = details["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|change| {
            (
                change["id"].as_str().expect("id"),
                change["login"].as_str().expect("login"),
                change["outcome"].as_str().expect("outcome"),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("j-1", "alice", "planned"),
            ("j-2", "bob", "planned"),
            ("c-1", "alice", "planned")
        ]
    );

    let filtered = app
        .json(&[
            "run",
            &run_id,
            "--user",
            "ALICE@example.org",
            "--product",
            "jira",
        ])
        .await;
    let filtered = filtered["changes"].as_array().expect("changes");
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0]["id"], "j-1");

    let without = app.json(&["run", &run_id]).await;
    assert!(without.get("changes").is_none(), "{without}");

    let people = app.run(&["run", &run_id, "--changes"]).await;
    assert!(people.status.success(), "{}", describe(&people));
    let text = String::from_utf8_lossy(&people.stdout);
    assert!(text.contains("State:"), "{text}");
    assert!(text.contains("USER"), "{text}");
    assert!(text.contains("bob@example.org"), "{text}");
}

#[tokio::test]
async fn sync_of_a_held_run_exits_2_and_approve_moves_it_to_applying() {
    let app = spawn_app().await;
    let sync = start_sync(&app, &[]).await;
    app.snapshot_ready(&sync.run_id, RunMode::Apply as i32)
        .await;
    app.plan_ready(
        &sync.run_id,
        changes(),
        Some("3 changes exceed the limit of 1"),
    )
    .await;
    let run_id = sync.run_id.clone();
    let (code, rest) = sync.finish().await;
    assert_eq!(code, Some(2), "{rest}");
    assert!(rest.contains("3 changes exceed the limit of 1"), "{rest}");
    assert!(
        rest.contains(&format!("keysync approve {run_id} --reason \"why\"")),
        "{rest}"
    );
    assert!(
        rest.contains(
            "jira: held: 3 changes exceed the limit of 1; 2 of 5 managed accounts lose access"
        ),
        "{rest}"
    );
    assert!(rest.contains("The hold expires at "), "{rest}");

    // Held: the hold of each product, with its numbers, and when it expires.
    let shown = app.run(&["run", &run_id]).await;
    assert!(shown.status.success(), "{}", describe(&shown));
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("Hold expires: "), "{text}");
    assert!(
        text.contains("confluence: held: 3 changes exceed the limit of 1; 2 of 5 managed accounts lose access, 1 of 9 memberships removed, 0 groups removed, 0 accounts linked"),
        "{text}"
    );
    let held = app.json(&["run", &run_id]).await;
    assert!(held["run"]["hold_expires_at"].is_string(), "{held}");
    assert_eq!(held["run"]["plan"][0]["safety"]["losing_access"], 2);
    assert_eq!(held["run"]["plan"][0]["safety"]["managed_accounts"], 5);

    // No reason: refused before any call, and by the API for a blank one.
    let no_reason = app.run(&["approve", &run_id]).await;
    assert_eq!(no_reason.status.code(), Some(2), "{}", describe(&no_reason));
    assert!(
        String::from_utf8_lossy(&no_reason.stderr).contains("--reason"),
        "{}",
        describe(&no_reason)
    );
    let blank = app.run(&["approve", &run_id, "--reason", " "]).await;
    assert_eq!(blank.status.code(), Some(1), "{}", describe(&blank));
    assert!(
        String::from_utf8_lossy(&blank.stderr).contains("a reason is required"),
        "{}",
        describe(&blank)
    );

    let output = app
        .keysync(&[
            "--json",
            "approve",
            &run_id,
            "--reason",
            "expected: new team",
        ])
        .env("USER", "carol")
        .output()
        .await
        .expect("keysync runs");
    assert!(output.status.success(), "{}", describe(&output));
    let approved: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(approved["state"], "applying");
    assert_eq!(approved["approved_by"], "carol (keysync cli)");
    assert_eq!(approved["approval_reason"], "expected: new team");
    assert!(approved["approved_at"].is_string(), "{approved}");

    let shown = app.run(&["run", &run_id]).await;
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("Approved by:  carol (keysync cli)"), "{text}");
    assert!(text.contains("Approved why: expected: new team"), "{text}");
    assert!(text.contains("Approved at:  "), "{text}");
    assert!(!text.contains("Hold expires"), "{text}");

    // `--comment` is the old name of `--reason`.
    let again = app.run(&["approve", &run_id, "--comment", "again"]).await;
    assert_eq!(again.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("is APPLYING"), "{stderr}");
}

#[tokio::test]
async fn cancel_moves_a_run_to_cancelled_and_its_sync_ends_with_an_error_code() {
    let app = spawn_app().await;
    let sync = start_sync(&app, &[]).await;

    let cancelled = app
        .json(&["cancel", &sync.run_id, "--reason", "wrong realm"])
        .await;
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(cancelled["reason"], "wrong realm");

    let (code, rest) = sync.finish().await;
    assert_eq!(code, Some(1), "{rest}");
    assert!(rest.contains("cancelled"), "{rest}");
    assert!(rest.contains("wrong realm"), "{rest}");
}

#[tokio::test]
async fn a_wrong_token_gives_a_clear_error_and_a_non_zero_exit() {
    let app = spawn_app().await;
    let wrong = app.dir.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-token\n").expect("writes");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_keysync"))
        .arg("--endpoint")
        .arg(&app.endpoint)
        .arg("--token-file")
        .arg(&wrong)
        .arg("runs")
        .output()
        .await
        .expect("keysync runs");
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refused the token") && stderr.contains("--token-file"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());

    let missing = tokio::process::Command::new(env!("CARGO_BIN_EXE_keysync"))
        .arg("--endpoint")
        .arg(&app.endpoint)
        .arg("runs")
        .env_remove("KEYSYNC_TOKEN_FILE")
        .output()
        .await
        .expect("keysync runs");
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("KEYSYNC_TOKEN_FILE"),
        "{}",
        describe(&missing)
    );
}

#[tokio::test]
async fn config_check_names_the_bad_key_and_the_file_and_accepts_a_good_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let token = dir.path().join("token");
    std::fs::write(&token, "t-0123456789abcdef-0123456789abcdef\n").expect("writes");
    let good = format!(
        "[bus]\nprefix = \"keysync\"\n\n[control_plane]\ntoken_file = \"{}\"\n\n\
         [control_plane.schedule]\ncron = \"0 3 * * 1-5\"\ntimezone = \"Europe/Berlin\"\n\n\
         [keycloak.corp]\nendpoint = \"https://sso.example.org\"\nrealm = \"corp\"\n\
         client_id = \"keysync\"\nclient_secret_file = \"{}\"\n",
        token.display(),
        token.display()
    );
    let good_file = dir.path().join("good.toml");
    std::fs::write(&good_file, &good).expect("writes");
    let check = |file: std::path::PathBuf| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_keysync"))
            .arg("config")
            .arg("check")
            .arg(&file)
            .env_remove("KEYSYNC_TOKEN_FILE")
            .output()
            .await
            .expect("keysync runs")
    };

    let output = check(good_file.clone()).await;
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("is valid"),
        "{}",
        describe(&output)
    );

    for (broken, key) in [
        (
            good.replace(
                "[control_plane.schedule]\n",
                "[control_plane.schedule]\nenable = true\n",
            ),
            "control_plane.schedule",
        ),
        (
            good.replace("cron = \"0 3 * * 1-5\"", "cron = \"0 25 * * *\""),
            "control_plane.schedule.cron",
        ),
        (good.replace("[bus]", "[buss]"), "buss"),
        (
            format!(
                "{good}\n[control_plane.schedule.connectors.corp]\nenabled = true\n\
                 timezone = \"Mars/Olympus\"\n"
            ),
            "control_plane.schedule.connectors.corp.timezone",
        ),
        (
            format!("{good}\n[products.jira]\nendpoint = \"http://127.0.0.1:8080\"\n"),
            "products.jira.token",
        ),
    ] {
        let bad_file = dir.path().join("bad.toml");
        std::fs::write(&bad_file, broken).expect("writes");
        let output = check(bad_file.clone()).await;
        assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(key), "{key}: {stderr}");
        assert!(
            stderr.contains(&bad_file.display().to_string()),
            "{key}: {stderr}"
        );
    }
}

#[tokio::test]
async fn test_connection_prints_each_check_and_fails_when_one_fails() {
    let jira = emulator::spawn(emulator::Config::for_tests(emulator::Product::Jira))
        .await
        .expect("the Jira emulator starts");
    let bitbucket = emulator::spawn(emulator::Config::for_tests(emulator::Product::Bitbucket))
        .await
        .expect("the Bitbucket emulator starts");
    let app = spawn_app_with(&format!(
        "[products.jira]\nendpoint = \"{}\"\ntoken = \"test-token\"\n\n\
         [products.bitbucket]\nendpoint = \"{}\"\nuser = \"admin\"\npassword = \"wrong\"\nmax_retries = 0\n",
        jira.url(),
        bitbucket.url()
    ))
    .await;

    let checks = app.json(&["test-connection", "jira"]).await;
    assert_eq!(checks[0]["target"], "jira");
    assert_eq!(checks[0]["ok"], true);

    let output = app.run(&["test-connection"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.starts_with("TARGET"), "{table}");
    assert!(table.contains("FAILED"), "{table}");
    assert!(table.contains("bitbucket"), "{table}");
}
