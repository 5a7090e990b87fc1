//! The products' own login rules, end to end: a Keycloak user whose username Confluence
//! refuses (`+`, which Keycloak allows) is listed by the simulation as not syncable to
//! Confluence, with the rule, and the real run then has no failed change: Jira and
//! Bitbucket, whose references state no such rule, get the account; Confluence does not.

use e2e::{PRODUCTS, Stack, StackOptions};
use proto::v1::{DiagnosticKind, Product, RunMode, RunState};
use test_support::keycloak::UserSpec;

use crate::directory;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_confluence_refuses_is_reported_by_the_simulation_and_nothing_fails() {
    let people = directory::people(4);
    let realm =
        directory::realm(&people).user(UserSpec::new("ann+jira").member_of("/staff/engineering"));
    let stack = Stack::start(StackOptions {
        realm,
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts");

    let simulated = stack.sync(RunMode::Simulate).await.unwrap();
    assert_eq!(simulated.state(), RunState::Succeeded, "{simulated:?}");
    let output = stack
        .cli(&[
            "run",
            &simulated.run_id,
            "--skipped",
            "--kind",
            "not_syncable",
        ])
        .await
        .unwrap();
    let listed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{listed}");
    assert!(
        listed.contains("ann+jira") && listed.contains("`+`"),
        "the simulation names the user and the rule: {listed}"
    );
    let mut client = stack.client.clone();
    let diagnostics = client
        .list_diagnostics(proto::v1::ListDiagnosticsRequest {
            run_id: simulated.run_id.clone(),
            kind: DiagnosticKind::NotSyncable as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .diagnostics;
    let products: Vec<i32> = diagnostics.iter().map(|d| d.product).collect();
    assert_eq!(products, [Product::Confluence as i32], "{diagnostics:#?}");

    let applied = stack.sync(RunMode::Apply).await.unwrap();
    assert_eq!(applied.state(), RunState::Succeeded, "{applied:?}");
    for progress in &applied.progress {
        assert_eq!(progress.failed, 0, "{progress:?}");
    }
    for product in PRODUCTS {
        let state = stack.emulator_state(product).await.unwrap();
        let logins: Vec<String> = state["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|account| account["login"].as_str().map(str::to_lowercase))
            .collect();
        let has = logins.iter().any(|login| login == "ann+jira");
        assert_eq!(
            has,
            product != Product::Confluence,
            "{product:?}: {logins:?}"
        );
    }
}
