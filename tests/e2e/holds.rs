//! The holds of the safe-defaults issue, end to end: a run that would empty a mapped group
//! is held with the numbers that tripped it; an approval needs a reason, is recorded and
//! applies the plan; a hold that expired cannot be approved.

use e2e::{Stack, StackOptions};
use proto::v1::{Product, RunMode, RunState};
use reqwest::Method;
use tonic::Code;

use crate::directory;

/// Takes every member of Keycloak group `path` out of it; answers their usernames.
pub(crate) async fn empty_group(
    stack: &Stack,
    people: &[directory::Person],
    path: &str,
) -> Vec<String> {
    let group = stack.realm.group_id(path).await.unwrap();
    let mut removed = Vec::new();
    for person in people
        .iter()
        .filter(|person| person.groups.iter().any(|g| g == path))
    {
        let user = stack.realm.user_id(&person.username).await.unwrap();
        stack
            .realm
            .admin(
                Method::DELETE,
                &format!("users/{user}/groups/{group}"),
                None,
            )
            .await
            .unwrap();
        removed.push(person.username.clone());
    }
    removed
}

/// Who is in product group `group` of Jira, by login.
async fn jira_members(stack: &Stack, group: &str) -> Vec<String> {
    let state = stack.emulator_state(Product::Jira).await.unwrap();
    let mut members: Vec<String> = state["memberships"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|membership| membership["group"] == group)
        .filter_map(|membership| membership["login"].as_str().map(str::to_owned))
        .collect();
    members.sort();
    members
}

/// Starts an apply run and waits until it is held (it must be).
pub(crate) async fn held_run(stack: &Stack) -> proto::v1::Run {
    let run = stack.start_sync(RunMode::Apply).await.unwrap();
    let held = stack
        .wait_for(
            &run.run_id,
            &[RunState::Held, RunState::Succeeded, RunState::Failed],
        )
        .await
        .unwrap();
    assert_eq!(held.state(), RunState::Held, "{held:?}");
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emptying_a_mapped_group_holds_the_run_until_someone_approves_it_with_a_reason() {
    let people = directory::people(12);
    let mut stack = Stack::start(StackOptions {
        realm: directory::realm(&people),
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts");
    stack.sync(RunMode::Apply).await.unwrap();
    let sales_before = jira_members(&stack, "sales").await;
    assert!(sales_before.len() >= 4, "sales in Jira: {sales_before:?}");

    // Everybody leaves /staff/sales in Keycloak: the run is held, and says why with numbers.
    let removed = empty_group(&stack, &people, "/staff/sales").await;
    let held = held_run(&stack).await;
    let jira = held
        .plan
        .iter()
        .find(|summary| summary.product() == Product::Jira)
        .expect("a Jira summary");
    let counts = jira.safety.expect("the safety counts");
    assert_eq!(
        counts.removed_memberships,
        sales_before.len() as u64,
        "{jira:?}"
    );
    assert!(counts.managed_memberships > counts.removed_memberships);
    assert!(
        jira.hold_reason.contains("group sales would lose"),
        "{}",
        jira.hold_reason
    );
    assert!(
        held.hold_expires_at.is_some(),
        "a held run says when it expires"
    );
    assert_eq!(
        jira_members(&stack, "sales").await,
        sales_before,
        "nothing applied yet"
    );

    // No reason, no approval; with one, the run is applied and the approval recorded.
    let refused = stack
        .try_approve(&held.run_id, "  ")
        .await
        .expect_err("no reason");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let approved = stack
        .try_approve(&held.run_id, "sales moved to the partner portal")
        .await
        .expect("approved");
    assert_eq!(
        approved.approval_reason,
        "sales moved to the partner portal"
    );
    assert!(!approved.approved_by.is_empty() && approved.approved_at.is_some());
    let done = stack.wait_for(&held.run_id, e2e::TERMINAL).await.unwrap();
    assert_eq!(done.state(), RunState::Succeeded, "{done:?}");
    assert_eq!(done.approval_reason, "sales moved to the partner portal");
    let sales_after = jira_members(&stack, "sales").await;
    assert!(
        sales_after.iter().all(|login| !removed.contains(login)),
        "still in sales: {sales_after:?}"
    );

    // A hold that expired can no longer be approved: the run is cancelled.
    stack.set_service_env("KEYSYNC_CONTROL_PLANE__HOLD_EXPIRY", "2s");
    stack.restart_control_plane().await.unwrap();
    empty_group(&stack, &people, "/staff/engineering").await;
    let held = held_run(&stack).await;
    let expired = stack.wait_for(&held.run_id, e2e::TERMINAL).await.unwrap();
    assert_eq!(expired.state(), RunState::Cancelled, "{expired:?}");
    assert!(expired.reason.contains("expired"), "{}", expired.reason);
    let refused = stack
        .try_approve(&held.run_id, "too late")
        .await
        .expect_err("an expired hold");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        jira_members(&stack, "engineering").await.len() > 1,
        "the expired plan was applied"
    );
}
