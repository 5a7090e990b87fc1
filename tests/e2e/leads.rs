//! What the products refuse for reasons the plan can know, end to end: leavers who lead Jira
//! projects or components (Jira refuses to deactivate them), and a Confluence licence with
//! fewer seats than new users. The simulation lists each of them with the reason; the real
//! run then has zero failed changes: a lead is handed to `cleanup.lead_replacement` before
//! the deactivation, or, without one, the leaver stays active; no account is created beyond
//! the seats.

use e2e::{Stack, StackOptions};
use proto::v1::{Product, Run, RunMode, RunState};
use reqwest::Method;
use serde_json::{Value, json};

use crate::directory;

/// Jira with a replacement lead (`jira-admin`, not in Keycloak), the accounts of `user001`
/// and `user002` (linked on the first sync), project ALPHA led by `user001`, and project
/// BETA led by `jira-admin` with a component led by `user002`.
fn jira_seed() -> Value {
    json!({
        "accounts": [
            {"login": "jira-admin", "display_name": "Jira Admin", "email": "jira-admin@example.org"},
            {"login": "user001", "display_name": "First1 Last1", "email": "user001@example.org"},
            {"login": "user002", "display_name": "First2 Last2", "email": "user002@example.org"}
        ],
        "projects": [
            {"key": "ALPHA", "name": "Alpha", "lead": "user001"},
            {"key": "BETA", "name": "Beta", "lead": "jira-admin",
             "components": [{"name": "Backend", "lead": "user002"}]}
        ]
    })
}

/// Four seats in Confluence, and no safety hold for three leavers of eight.
fn options(extra_policy: &str) -> StackOptions {
    let people = directory::people(8);
    StackOptions {
        realm: directory::realm(&people),
        seeds: [(Product::Jira, jira_seed())].into(),
        emulator_args: [(
            Product::Confluence,
            vec!["--license-seats".to_owned(), "4".to_owned()],
        )]
        .into(),
        extra_config: ["jira", "confluence", "bitbucket"]
            .map(|product| {
                format!(
                    "[products.{product}.policy.safety]\nmax_percent = 100\n\
                     max_memberships_percent = 100\nmax_group_loss_percent = 100\n"
                )
            })
            .concat()
            + extra_policy,
        ..StackOptions::default()
    }
}

async fn cli_stdout(stack: &Stack, args: &[&str]) -> String {
    let output = stack.cli(args).await.expect("the CLI runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "keysync {args:?}: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn assert_nothing_failed(run: &Run) {
    assert_eq!(run.state(), RunState::Succeeded, "{run:?}");
    for progress in &run.progress {
        assert_eq!(progress.failed, 0, "{progress:?}");
    }
}

async fn delete_from_keycloak(stack: &Stack, usernames: &[&str]) {
    for username in usernames {
        let id = stack.realm.user_id(username).await.unwrap();
        stack
            .realm
            .admin(Method::DELETE, &format!("users/{id}"), None)
            .await
            .unwrap();
    }
}

/// Jira's accounts as `login -> active`, and each project's and component's lead.
async fn jira_view(stack: &Stack) -> (Vec<(String, bool)>, Vec<(String, String)>) {
    let state = stack.emulator_state(Product::Jira).await.unwrap();
    let mut accounts: Vec<(String, bool)> = state["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|account| {
            (
                account["login"].as_str().unwrap_or_default().to_owned(),
                account["active"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    accounts.sort();
    let mut leads = Vec::new();
    for project in state["projects"].as_array().unwrap() {
        let key = project["key"].as_str().unwrap_or_default();
        let lead = project["lead"].as_str().unwrap_or("-").to_owned();
        leads.push((key.to_owned(), lead));
        for component in project["components"].as_array().into_iter().flatten() {
            let name = component["name"].as_str().unwrap_or_default();
            let lead = component["lead"].as_str().unwrap_or("-").to_owned();
            leads.push((format!("{key}/{name}"), lead));
        }
    }
    (accounts, leads)
}

fn active(accounts: &[(String, bool)], login: &str) -> Option<bool> {
    accounts
        .iter()
        .find(|(account, _)| account == login)
        .map(|(_, active)| *active)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulation_lists_leads_and_missing_seats_and_the_real_run_fails_nothing() {
    let stack = Stack::start(options("")).await.expect("the stack starts");

    // Seats: six people get a Confluence account (one has no email, one is disabled); four
    // seats are free.
    let simulated = stack.sync(RunMode::Simulate).await.unwrap();
    let confluence = simulated
        .plan
        .iter()
        .find(|summary| summary.product() == Product::Confluence)
        .and_then(|summary| summary.seats)
        .expect("Confluence reports its seats");
    assert_eq!(
        (
            confluence.needed,
            confluence.used,
            confluence.limit,
            confluence.left_out
        ),
        (6, 0, Some(4), 2),
        "{confluence:?}"
    );
    let summary = cli_stdout(&stack, &["run", &simulated.run_id]).await;
    assert!(
        summary.contains("seats: 6 needed, 4 free of 4 (2 left out: no seat)"),
        "{summary}"
    );
    let no_seat = cli_stdout(
        &stack,
        &["run", &simulated.run_id, "--skipped", "--kind", "no_seat"],
    )
    .await;
    assert_eq!(
        no_seat.matches("no licence seat").count(),
        2,
        "two users are named, each with the reason: {no_seat}"
    );

    let first = stack.sync(RunMode::Apply).await.unwrap();
    assert_nothing_failed(&first);
    let confluence_state = stack.emulator_state(Product::Confluence).await.unwrap();
    assert_eq!(
        confluence_state["accounts"].as_array().map(Vec::len),
        Some(4),
        "no account beyond the seats: {confluence_state}"
    );

    // Leads: user001 leads ALPHA, user002 a component of BETA, user003 nothing.
    delete_from_keycloak(&stack, &["user001", "user002", "user003"]).await;
    let simulated = stack.sync(RunMode::Simulate).await.unwrap();
    let leads = cli_stdout(
        &stack,
        &["run", &simulated.run_id, "--skipped", "--kind", "lead"],
    )
    .await;
    for expected in [
        "user001",
        "project ALPHA",
        "user002",
        "component Backend of project BETA",
        "cleanup.lead_replacement",
    ] {
        assert!(leads.contains(expected), "{expected}: {leads}");
    }
    assert!(!leads.contains("user003"), "{leads}");

    let applied = stack.sync(RunMode::Apply).await.unwrap();
    assert_nothing_failed(&applied);
    let (accounts, project_leads) = jira_view(&stack).await;
    assert_eq!(active(&accounts, "user001"), Some(true), "{accounts:?}");
    assert_eq!(active(&accounts, "user002"), Some(true), "{accounts:?}");
    assert_eq!(active(&accounts, "user003"), Some(false), "{accounts:?}");
    assert_eq!(
        project_leads,
        [
            ("ALPHA".to_owned(), "user001".to_owned()),
            ("BETA".to_owned(), "jira-admin".to_owned()),
            ("BETA/Backend".to_owned(), "user002".to_owned()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_replacement_takes_the_leads_before_the_leavers_are_deactivated() {
    let stack = Stack::start(options(
        "[products.jira.policy.cleanup]\nlead_replacement = \"jira-admin\"\n",
    ))
    .await
    .expect("the stack starts");
    assert_nothing_failed(&stack.sync(RunMode::Apply).await.unwrap());

    delete_from_keycloak(&stack, &["user001", "user002"]).await;
    let simulated = stack.sync(RunMode::Simulate).await.unwrap();
    let changes = cli_stdout(
        &stack,
        &["run", &simulated.run_id, "--changes", "--product", "jira"],
    )
    .await;
    for expected in [
        "hands the lead of project ALPHA to jira-admin first",
        "hands the lead of component Backend of project BETA to jira-admin first",
    ] {
        assert!(changes.contains(expected), "{expected}: {changes}");
    }

    let applied = stack.sync(RunMode::Apply).await.unwrap();
    assert_nothing_failed(&applied);
    let (accounts, project_leads) = jira_view(&stack).await;
    assert_eq!(active(&accounts, "user001"), Some(false), "{accounts:?}");
    assert_eq!(active(&accounts, "user002"), Some(false), "{accounts:?}");
    assert_eq!(
        project_leads,
        [
            ("ALPHA".to_owned(), "jira-admin".to_owned()),
            ("BETA".to_owned(), "jira-admin".to_owned()),
            ("BETA/Backend".to_owned(), "jira-admin".to_owned()),
        ]
    );
    // The next run has nothing left to do in Jira.
    let again = stack.sync(RunMode::Simulate).await.unwrap();
    let jira = again
        .plan
        .iter()
        .find(|summary| summary.product() == Product::Jira)
        .expect("a Jira plan");
    assert!(jira.changes_by_op.is_empty(), "{jira:?}");
}
