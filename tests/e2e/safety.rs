//! Scenario 6 of the end-to-end issue: a run that would take access from half the people
//! is held; CancelRun leaves the products untouched, ApproveRun applies it. And a Keycloak
//! user who sets their (unverified) email to an administrator's does not receive the
//! administrator's account.

use e2e::{PRODUCTS, Stack, StackOptions};
use proto::v1::{Product, RunMode, RunState, account_ref::Ref};
use reqwest::Method;

use crate::directory;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_half_the_directory_holds_the_run_until_approved() {
    let people = directory::people(20);
    let stack = Stack::start(StackOptions {
        realm: directory::realm(&people),
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts");
    stack.sync(RunMode::Apply).await.unwrap();

    let gone: Vec<&directory::Person> = people.iter().step_by(2).collect();
    for person in &gone {
        let id = stack.realm.user_id(&person.username).await.unwrap();
        stack
            .realm
            .admin(Method::DELETE, &format!("users/{id}"), None)
            .await
            .unwrap();
    }
    let mut states = Vec::new();
    for product in PRODUCTS {
        states.push(stack.emulator_state(product).await.unwrap());
    }
    let strip = |mut state: serde_json::Value| {
        state["counters"] = serde_json::Value::Null;
        state
    };

    // Held, then cancelled: nothing reaches the products.
    let run = stack.start_sync(RunMode::Apply).await.unwrap();
    let held = stack
        .wait_for(
            &run.run_id,
            &[RunState::Held, RunState::Succeeded, RunState::Failed],
        )
        .await
        .unwrap();
    assert_eq!(held.state(), RunState::Held, "{held:?}");
    assert!(!held.reason.is_empty(), "a held run says why");
    let cancelled = stack.cancel(&run.run_id).await.unwrap();
    assert_eq!(cancelled.state(), RunState::Cancelled);
    for (product, before) in PRODUCTS.into_iter().zip(&states) {
        let after = stack.emulator_state(product).await.unwrap();
        assert_eq!(
            strip(after),
            strip(before.clone()),
            "{product:?} changed by a cancelled run"
        );
        assert_eq!(stack.writes(product).await.unwrap(), {
            let writes = &before["counters"]["writes"];
            writes
                .as_object()
                .map(|writes| writes.values().filter_map(|value| value.as_u64()).sum())
                .unwrap_or(0)
        });
    }

    // Held again, approved: the people who left lose access.
    let run = stack.start_sync(RunMode::Apply).await.unwrap();
    let held = stack
        .wait_for(
            &run.run_id,
            &[RunState::Held, RunState::Succeeded, RunState::Failed],
        )
        .await
        .unwrap();
    assert_eq!(held.state(), RunState::Held);
    stack.approve(&run.run_id).await.unwrap();
    let done = stack.wait_for(&run.run_id, e2e::TERMINAL).await.unwrap();
    assert_eq!(done.state(), RunState::Succeeded, "{done:?}");
    let jira = stack.emulator_state(Product::Jira).await.unwrap();
    for account in jira["accounts"].as_array().unwrap() {
        let login = account["login"].as_str().unwrap();
        let Some(person) = people.iter().find(|person| person.username == login) else {
            continue;
        };
        let left = gone.iter().any(|gone| gone.username == person.username);
        assert_eq!(
            account["active"].as_bool(),
            Some(!left),
            "{login} in Jira after the approved run"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_account_goes_to_no_one_by_unverified_email_or_by_login() {
    let people = directory::people(3);
    let mallory = test_support::keycloak::UserSpec::new("mallory")
        .name("Mallory", "Example")
        .unverified_email("lead@example.org");
    // An account whose email mallory claims without Keycloak verifying it; and an
    // administrator (in the administrators' group, no protected login pattern) whose login a
    // Keycloak user has: neither may go to a Keycloak user.
    let mut seed = directory::jira_seed();
    let accounts = seed["accounts"].as_array_mut().unwrap();
    accounts.push(serde_json::json!(
        {"login": "jira-lead", "display_name": "Jira Lead", "email": "lead@example.org"}
    ));
    accounts.push(serde_json::json!(
        {"login": "ops-admin", "display_name": "Ops Admin", "email": "ops@example.org"}
    ));
    seed["groups"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "jira-administrators"}));
    seed["memberships"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(
            {"group": "jira-administrators", "login": "ops-admin"}
        ));
    let namesake = test_support::keycloak::UserSpec::new("ops-admin")
        .name("Someone", "Else")
        .email("someone@example.org");
    let stack = Stack::start(StackOptions {
        realm: directory::realm(&people).user(mallory).user(namesake),
        seeds: [(Product::Jira, seed)].into(),
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts");
    let before = stack.emulator_state(Product::Jira).await.unwrap();
    let (lead_before, admin_before) =
        (account(&before, "jira-lead"), account(&before, "ops-admin"));

    let run = stack.sync(RunMode::Apply).await.unwrap();
    let mallory_id = stack.realm.user_id("mallory").await.unwrap();
    let jira = stack.changes(&run.run_id, Product::Jira).await.unwrap();
    let touched: Vec<_> = jira
        .iter()
        .filter_map(|record| record.change.as_ref())
        .filter(|change| change.keycloak_user_id == mallory_id)
        .collect();
    assert!(touched.is_empty(), "mallory's changes in Jira: {touched:?}");
    let keys: Vec<String> = [&lead_before, &admin_before]
        .iter()
        .map(|account| account["key"].as_str().expect("an account key").to_owned())
        .collect();
    let named: Vec<_> = jira
        .iter()
        .filter_map(|record| record.change.as_ref())
        .filter(|change| {
            matches!(
                change.account.as_ref().and_then(|account| account.r#ref.as_ref()),
                Some(Ref::AccountId(id)) if keys.contains(id)
            )
        })
        .collect();
    assert!(named.is_empty(), "changes name the two accounts: {named:?}");
    let summary = run
        .plan
        .iter()
        .find(|summary| summary.product() == Product::Jira)
        .expect("a Jira summary");
    assert!(
        summary.conflicts >= 2,
        "the unverified match and the protected namesake are conflicts: {summary:?}"
    );
    let after = stack.emulator_state(Product::Jira).await.unwrap();
    assert_eq!(
        account(&after, "jira-lead"),
        lead_before,
        "jira-lead changed"
    );
    assert_eq!(
        account(&after, "ops-admin"),
        admin_before,
        "ops-admin changed"
    );
    assert!(
        account(&after, "mallory").is_null(),
        "jira-lead was renamed to mallory, or mallory got an account"
    );
}

/// The emulator's account with `login`, or null.
fn account(state: &serde_json::Value, login: &str) -> serde_json::Value {
    state["accounts"]
        .as_array()
        .and_then(|accounts| accounts.iter().find(|account| account["login"] == login))
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}
