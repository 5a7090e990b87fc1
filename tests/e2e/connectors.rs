//! Connectors isolated, end to end (the safe-defaults issue): two realms sync into one
//! Jira; each connector's runs leave the other's accounts exactly as they were, a login both
//! realms have is a conflict for the one that does not own it, a second StartSync while a
//! run of its connector is active is refused, and the schedule, off by default, fires a run
//! of each connector once turned on.

use std::collections::BTreeMap;

use e2e::{CONNECTOR, SECOND_CONNECTOR, Stack, StackOptions};
use proto::v1::{Product, RunMode, RunState, RunTrigger};
use reqwest::Method;
use serde_json::Value;
use test_support::keycloak::{RealmSpec, UserSpec};
use tonic::Code;

use crate::directory;

fn partners() -> RealmSpec {
    let mut spec = RealmSpec::default().group("/partners");
    for name in ["pat", "quinn", "rosa"] {
        spec = spec.user(
            UserSpec::new(name)
                .name(name, "Partner")
                .email(&format!("{name}@partner.example"))
                .member_of("/partners"),
        );
    }
    // A login the first realm has too.
    spec.user(
        UserSpec::new("alice")
            .name("Alice", "Partner")
            .email("alice@partner.example"),
    )
}

/// Jira's accounts by login: (display name, email, active).
async fn jira_accounts(stack: &Stack) -> BTreeMap<String, Value> {
    let state = stack.emulator_state(Product::Jira).await.unwrap();
    state["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|account| {
            (
                account["login"].as_str().unwrap_or_default().to_owned(),
                account.clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connectors_sync_into_one_jira_without_touching_each_others_accounts() {
    let people = directory::people(8);
    let mut stack = Stack::start(StackOptions {
        realm: directory::realm(&people),
        second_realm: Some(partners()),
        // Few accounts: one departure is more than 10 % of them.
        extra_config: ["jira", "confluence", "bitbucket"]
            .map(|product| {
                format!(
                    "[products.{product}.policy.safety]\nmax_percent = 100\n\
                     max_memberships_percent = 100\n"
                )
            })
            .concat(),
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts");

    // The first realm's run; the second StartSync while it is active is refused.
    let first = stack
        .start_sync_of(CONNECTOR, RunMode::Apply)
        .await
        .unwrap();
    let refused = stack
        .try_start_sync_of(CONNECTOR, RunMode::Apply)
        .await
        .expect_err("a run of the connector is active");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains(&first.run_id), "{refused:?}");
    let first = stack.wait_for(&first.run_id, e2e::TERMINAL).await.unwrap();
    assert_eq!(first.state(), RunState::Succeeded, "{first:?}");
    let corp_accounts = jira_accounts(&stack).await;
    assert!(corp_accounts.contains_key("alice"));

    // The second realm's first run: its users get accounts, the first realm's accounts
    // (including alice, whose login both realms have) stay exactly as they were.
    let second = stack
        .sync_of(SECOND_CONNECTOR, RunMode::Apply)
        .await
        .unwrap();
    let after_second = jira_accounts(&stack).await;
    for (login, account) in &corp_accounts {
        assert_eq!(after_second.get(login), Some(account), "{login} changed");
    }
    for login in ["pat", "quinn", "rosa"] {
        assert_eq!(
            after_second[login]["active"].as_bool(),
            Some(true),
            "{login} in Jira"
        );
    }
    let summary = second
        .plan
        .iter()
        .find(|summary| summary.product() == Product::Jira)
        .expect("a Jira summary");
    assert!(summary.conflicts >= 1, "alice is a conflict: {summary:?}");
    assert_eq!(summary.changes_by_op.get("CHANGE_OP_DEACTIVATE_USER"), None);

    // A partner leaves: the second realm's run deactivates that account only; the first
    // realm's run, after it, changes nothing of the second's.
    let second_realm = stack.second_realm.as_ref().unwrap();
    let quinn = second_realm.user_id("quinn").await.unwrap();
    second_realm
        .admin(Method::DELETE, &format!("users/{quinn}"), None)
        .await
        .unwrap();
    stack
        .sync_of(SECOND_CONNECTOR, RunMode::Apply)
        .await
        .unwrap();
    stack.sync_of(CONNECTOR, RunMode::Apply).await.unwrap();
    let last = jira_accounts(&stack).await;
    for (login, account) in &after_second {
        if login == "quinn" {
            assert_eq!(account_active(&last, login), Some(false), "quinn left");
        } else {
            assert_eq!(last.get(login), Some(account), "{login} changed");
        }
    }

    // Until now nothing fired by itself: the schedule is off by default. Turned on, it
    // fires a run of each connector.
    let runs = stack.runs().await.unwrap();
    assert!(
        runs.iter().all(|run| run.trigger() == RunTrigger::Api),
        "{runs:?}"
    );
    stack.set_service_env("KEYSYNC_CONTROL_PLANE__SCHEDULE__ENABLED", "true");
    stack.set_service_env("KEYSYNC_CONTROL_PLANE__SCHEDULE__CRON", "*/2 * * * * *");
    stack.restart_control_plane().await.unwrap();
    let deadline = tokio::time::Instant::now() + e2e::DEADLINE;
    loop {
        let runs = stack.runs().await.unwrap();
        let fired = |connector: &str| {
            runs.iter().any(|run| {
                run.trigger() == RunTrigger::Schedule
                    && run.connector == connector
                    && run.state() == RunState::Succeeded
            })
        };
        if fired(CONNECTOR) && fired(SECOND_CONNECTOR) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no scheduled run of each connector succeeded: {runs:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(
        jira_accounts(&stack).await,
        last,
        "scheduled runs with nothing to do changed Jira"
    );
}

fn account_active(accounts: &BTreeMap<String, Value>, login: &str) -> Option<bool> {
    accounts
        .get(login)
        .and_then(|account| account["active"].as_bool())
}
