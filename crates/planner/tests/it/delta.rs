//! Event runs (#16): a delta snapshot is planned over the full snapshot its
//! `SnapshotReady.base` names, and its plan changes only the users it names, even where
//! the base and the product disagree about others; a delta with no base fails the run.

use std::collections::BTreeSet;

use model::state::Product;
use planner::StepOutcome;
use proto::v1::{self, ChangeOp, RunMode};

use crate::helpers::{TestPlanner, account, realm, state};

/// Jira as keysync left it: alice, bob and carol managed, carol's name stale (a full sync
/// would update it), no groups yet.
fn jira() -> v1::ProductState {
    let mut carol = account("JIRAUSER3", "carol", "u-carol");
    carol.display_name = "Carol Stale".to_owned();
    state(
        Product::Jira,
        vec![
            account("JIRAUSER1", "alice", "u-alice"),
            account("JIRAUSER2", "bob", "u-bob"),
            carol,
        ],
    )
}

/// What Keycloak's events named: alice's email changed, bob deleted.
fn delta() -> v1::Snapshot {
    let realm = realm();
    let mut alice = realm.users[0].clone();
    assert_eq!(alice.id, "u-alice");
    alice.email = "alice@new.example.com".to_owned();
    v1::Snapshot {
        users: vec![alice],
        memberships: vec![realm.memberships[0].clone()],
        deleted_user_ids: vec!["u-bob".to_owned()],
        delta: true,
        ..Default::default()
    }
}

/// Plans one run of Jira in `mode` from `snapshot` over `base` against `state`; answers
/// the stored snapshot and the plan event.
async fn plan_run(
    planner: &TestPlanner,
    run_id: &str,
    mode: RunMode,
    snapshot: v1::Snapshot,
    base: Option<v1::ObjectRef>,
    state: v1::ProductState,
) -> (v1::ObjectRef, v1::PlanReady) {
    let object = planner
        .publish_snapshot_over(run_id, mode, &[Product::Jira], snapshot, base)
        .await;
    planner.publish_state(run_id, state).await;
    assert!(matches!(planner.step().await, StepOutcome::Waiting { .. }));
    let outcome = planner.step().await;
    assert!(
        matches!(outcome, StepOutcome::Planned { .. }),
        "{outcome:?}"
    );
    (object, planner.next_plan_event().await.ready())
}

/// Simulates one run of Jira from `snapshot` over `base` against `state`, and answers
/// the stored snapshot and plan.
async fn simulate(
    planner: &TestPlanner,
    run_id: &str,
    snapshot: v1::Snapshot,
    base: Option<v1::ObjectRef>,
    state: v1::ProductState,
) -> (v1::ObjectRef, v1::Plan) {
    let (object, ready) = plan_run(planner, run_id, RunMode::Simulate, snapshot, base, state).await;
    let plan = planner
        .stored_plan(ready.plan.as_ref().expect("a plan object"))
        .await;
    (object, plan)
}

/// Simulates one run of Jira from `snapshot` over `base`, and answers the stored plan.
async fn plan_jira(
    planner: &TestPlanner,
    run_id: &str,
    snapshot: v1::Snapshot,
    base: Option<v1::ObjectRef>,
) -> (v1::ObjectRef, v1::Plan) {
    simulate(planner, run_id, snapshot, base, jira()).await
}

/// The operations of the plan's changes for Keycloak user `id`.
fn ops_of(plan: &v1::Plan, id: &str) -> Vec<ChangeOp> {
    plan.changes
        .iter()
        .filter(|change| change.keycloak_user_id == id)
        .map(|change| change.op())
        .collect()
}

fn account_id(change: &v1::Change) -> Option<&str> {
    match change.account.as_ref()?.r#ref.as_ref()? {
        v1::account_ref::Ref::AccountId(id) => Some(id),
        _ => None,
    }
}

#[tokio::test]
async fn a_delta_plans_only_the_users_it_names_over_its_base() {
    let planner = TestPlanner::spawn(100).await;
    let (base, full) = plan_jira(&planner, "01JRUNDELTAFULL", realm(), None).await;
    assert!(
        ops_of(&full, "u-carol").contains(&ChangeOp::UpdateUser),
        "a full sync updates carol's stale account: {:?}",
        full.changes
    );

    let (_, plan) = plan_jira(&planner, "01JRUNDELTA1", delta(), Some(base.clone())).await;
    let users: BTreeSet<&str> = plan
        .changes
        .iter()
        .map(|change| change.keycloak_user_id.as_str())
        .filter(|id| !id.is_empty())
        .collect();
    assert_eq!(
        users,
        BTreeSet::from(["u-alice", "u-bob"]),
        "{:?}",
        plan.changes
    );
    let update = plan
        .changes
        .iter()
        .find(|change| change.keycloak_user_id == "u-alice" && change.op() == ChangeOp::UpdateUser)
        .expect("alice's account is updated");
    assert_eq!(
        update.fields.as_ref().map(|fields| fields.email.as_str()),
        Some("alice@new.example.com")
    );
    assert!(
        ops_of(&plan, "u-bob").contains(&ChangeOp::DeactivateUser),
        "{:?}",
        plan.changes
    );
    assert!(
        plan.changes
            .iter()
            .all(|change| account_id(change) != Some("JIRAUSER3")),
        "carol's stale account is no delta's business: {:?}",
        plan.changes
    );
    assert!(
        plan.changes
            .iter()
            .all(|change| change.op() != ChangeOp::RemoveGroup)
    );
    let named = ["u-alice", "u-bob"];
    assert!(
        plan.diagnostics
            .iter()
            .all(|diagnostic| named.contains(&diagnostic.keycloak_user_id.as_str())),
        "{:?}",
        plan.diagnostics
    );
    assert!(plan.conflicts.iter().all(|conflict| {
        conflict
            .keycloak_user_ids
            .iter()
            .all(|id| named.contains(&id.as_str()))
    }));

    // The next delta over the same base plans from the base kept in memory: it plans even
    // once the stored base is gone.
    planner
        .bus
        .object_store(&planner.bus.topology().snapshots_bucket())
        .await
        .expect("the snapshots bucket")
        .delete(base.key.clone())
        .await
        .expect("deletes the base");
    let (_, again) = plan_jira(&planner, "01JRUNDELTA2", delta(), Some(base)).await;
    assert_eq!(
        again
            .changes
            .iter()
            .map(|change| (change.keycloak_user_id.as_str(), change.op()))
            .collect::<Vec<_>>(),
        plan.changes
            .iter()
            .map(|change| (change.keycloak_user_id.as_str(), change.op()))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_delta_with_no_base_fails_the_run() {
    let planner = TestPlanner::spawn(100).await;
    let run_id = "01JRUNDELTANOBASE";
    planner
        .publish_snapshot_over(run_id, RunMode::Apply, &[Product::Jira], delta(), None)
        .await;
    planner.publish_state(run_id, jira()).await;
    assert!(matches!(planner.step().await, StepOutcome::Waiting { .. }));
    let StepOutcome::Failed { reason, .. } = planner.step().await else {
        panic!("the run fails");
    };
    assert!(reason.contains("no base snapshot"), "{reason}");
    let failed = planner.next_plan_event().await.failed();
    assert_eq!(failed.reason, reason);
    assert_eq!(planner.change_set_messages_published().await, 0);
}

#[tokio::test]
async fn a_delta_whose_base_is_gone_fails_the_run() {
    let planner = TestPlanner::spawn(100).await;
    let base = planner
        .publish_snapshot_over(
            "01JRUNDELTAGONEBASE",
            RunMode::Simulate,
            &[Product::Jira],
            realm(),
            None,
        )
        .await;
    planner
        .bus
        .object_store(&planner.bus.topology().snapshots_bucket())
        .await
        .expect("the snapshots bucket")
        .delete(base.key.clone())
        .await
        .expect("deletes the base");
    let run_id = "01JRUNDELTAGONE";
    planner
        .publish_snapshot_over(
            run_id,
            RunMode::Apply,
            &[Product::Jira],
            delta(),
            Some(base),
        )
        .await;
    planner.publish_state(run_id, jira()).await;
    // The base's own run waits for a state that never comes; only the delta's run counts.
    loop {
        match planner.step().await {
            StepOutcome::Failed {
                run_id: failed,
                reason,
            } if failed == run_id => {
                assert!(reason.contains("base snapshot"), "{reason}");
                break;
            }
            StepOutcome::Waiting { .. } => continue,
            outcome => panic!("unexpected {outcome:?}"),
        }
    }
}

/// Applies one Jira delta run over `base` and answers its plan event.
async fn apply_delta(
    planner: &TestPlanner,
    run_id: &str,
    snapshot: v1::Snapshot,
    base: &v1::ObjectRef,
) -> v1::PlanReady {
    let base = Some(base.clone());
    plan_run(planner, run_id, RunMode::Apply, snapshot, base, jira())
        .await
        .1
}

/// A delta that names only user `id`, deleted from Keycloak.
fn deleted(id: &str) -> v1::Snapshot {
    v1::Snapshot {
        deleted_user_ids: vec![id.to_owned()],
        delta: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn deletions_one_by_one_are_held_once_the_last_hour_crosses_the_limit() {
    let nats = test_support::nats::NatsServer::start().expect("nats-server starts");
    let mut settings = crate::helpers::settings(&nats, 100, 600);
    settings.products.jira = Some(crate::helpers::toml_section(
        "endpoint = \"http://127.0.0.1:1\"\ntoken = \"t\"\n\n[policy.safety]\nmax_accounts = 1\nmax_percent = 100\n",
    ));
    let planner = TestPlanner::spawn_with(nats, settings).await;
    let (base, _) = plan_jira(&planner, "01JRUNWINDOWFULL", realm(), None).await;

    // One deletion is within the limit, and is applied.
    let first = apply_delta(&planner, "01JRUNWINDOW1", deleted("u-bob"), &base).await;
    assert!(!first.held, "{}", first.hold_reason);
    // The next one would make two within the hour: held, for a person to approve.
    let second = apply_delta(&planner, "01JRUNWINDOW2", deleted("u-alice"), &base).await;
    assert!(second.held);
    assert!(
        second
            .hold_reason
            .contains("event runs of the last 60 minutes would take access from 2 account(s)"),
        "{}",
        second.hold_reason
    );
    assert!(
        second.hold_reason.contains("safety.max_accounts (1)"),
        "{}",
        second.hold_reason
    );
}

#[tokio::test]
async fn a_delta_is_patched_with_what_earlier_deltas_read_and_plans_only_its_own_users() {
    let planner = TestPlanner::spawn(100).await;
    let (base, _) = plan_jira(&planner, "01JRUNCARRYFULL", realm(), None).await;
    // Earlier deltas on this base: carol was renamed caroline (and Jira followed), bob was
    // deleted. Now erin is created with carol's old username.
    let realm = realm();
    let mut caroline = realm.users[2].clone();
    assert_eq!(caroline.id, "u-carol");
    caroline.username = "caroline".to_owned();
    caroline.email = "caroline@example.com".to_owned();
    caroline.first_name = "Caroline".to_owned();
    let mut erin = realm.users[2].clone();
    erin.id = "u-erin".to_owned();
    erin.email = "erin@example.com".to_owned();
    let jira_now = state(
        Product::Jira,
        vec![
            account("JIRAUSER1", "alice", "u-alice"),
            account("JIRAUSER2", "bob", "u-bob"),
            account("JIRAUSER3", "caroline", "u-carol"),
        ],
    );
    let carrying = v1::Snapshot {
        users: vec![erin.clone(), caroline],
        memberships: vec![realm.memberships[1].clone()],
        deleted_user_ids: vec!["u-bob".to_owned()],
        delta: true,
        named_user_ids: vec!["u-erin".to_owned()],
        named_listed: true,
        ..Default::default()
    };

    let (_, plan) = simulate(
        &planner,
        "01JRUNCARRY1",
        carrying,
        Some(base.clone()),
        jira_now.clone(),
    )
    .await;

    assert_eq!(
        ops_of(&plan, "u-erin"),
        [ChangeOp::CreateUser],
        "carol's old login is free: {:?} {:?}",
        plan.changes,
        plan.conflicts
    );
    let users: BTreeSet<&str> = plan
        .changes
        .iter()
        .map(|change| change.keycloak_user_id.as_str())
        .filter(|id| !id.is_empty())
        .collect();
    assert_eq!(
        users,
        BTreeSet::from(["u-erin"]),
        "bob's carried deletion and caroline are not planned again: {:?}",
        plan.changes
    );

    // The same run's users over the base alone (a delta that carries nothing): erin's
    // login is still carol's there.
    let alone = v1::Snapshot {
        users: vec![erin],
        delta: true,
        named_user_ids: vec!["u-erin".to_owned()],
        named_listed: true,
        ..Default::default()
    };
    let (_, plan) = simulate(&planner, "01JRUNCARRY2", alone, Some(base), jira_now).await;
    assert!(
        !ops_of(&plan, "u-erin").contains(&ChangeOp::CreateUser),
        "{:?}",
        plan.changes
    );
}
