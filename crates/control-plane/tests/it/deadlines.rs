//! Runs always end: a run stuck past its state's deadline is failed by the reaper with a
//! reason naming the state (and, applying, the products with changes unreported), a HELD
//! run is left to its hold expiry, and a restart publishes again the approval a stop may
//! have left unannounced.

use std::time::Instant;

use control_plane::store::Store;
use proto::v1::{self, ChangeOutcome, Product, RunMode, RunState};

use crate::helpers::{DEADLINE, Options, drain, fixture_changes, plan, spawn_app, spawn_app_with};

/// Deadlines of one second for `states` ("fetch", "plan", "apply"), swept every second.
fn short_deadlines(states: &[&str]) -> String {
    let mut keys = "apply_deadline_per_change_ms = 0\ndeadline_sweep_seconds = 1\n".to_owned();
    for state in states {
        keys.push_str(&format!("{state}_deadline_seconds = 1\n"));
    }
    keys
}

#[tokio::test]
async fn a_run_stuck_applying_fails_at_its_deadline_naming_what_is_unreported_and_a_held_run_stays()
{
    let app = spawn_app_with(Options {
        control_plane: short_deadlines(&["apply"]),
        ..Options::default()
    })
    .await;
    // A second replica reaps too: the compare-and-set lets one of them fail the run.
    let replica = spawn_app_with(Options {
        nats: Some(app.nats.clone()),
        prefix: Some(app.prefix.clone()),
        control_plane: short_deadlines(&["apply"]),
        ..Options::default()
    })
    .await;
    let held = app
        .try_start(RunMode::Apply, "lab")
        .await
        .expect("a run of another connector");
    app.hold(&held, &[]).await;

    let run = app.start_sync(RunMode::Apply, &[]).await;
    app.snapshot_ready(&run).await;
    // Counted before the plan, so the deadline cannot pass before it is.
    app.report(
        &run.run_id,
        Product::Jira,
        &[("j-1", ChangeOutcome::Applied)],
    )
    .await;
    app.plan_ready(&plan(&run, fixture_changes(), None)).await;

    // Jira's applier stops after one change and Confluence has none: nobody reports more.
    let failed = app.wait_for_state(&run.run_id, RunState::Failed).await;
    assert_eq!(
        failed.reason,
        "apply deadline of 1 s passed with jira: 2 of 3 changes unreported; \
         no applier for confluence reported anything (1 of 1 change unreported)"
    );
    assert!(failed.finished_at.is_some());
    assert_eq!(
        replica.get_run(&held.run_id).await.state(),
        RunState::Held,
        "a hold waits for a person; only its expiry ends it"
    );
    // The failed run freed its connector.
    app.try_start(RunMode::Simulate, "")
        .await
        .expect("the connector is free");

    // A late result is still recorded and counted, and changes nothing else.
    app.report(
        &run.run_id,
        Product::Jira,
        &[("j-2", ChangeOutcome::Applied)],
    )
    .await;
    let after = app.get_run(&run.run_id).await;
    assert_eq!(after.state(), RunState::Failed);
    assert_eq!(after.reason, failed.reason);
    assert_eq!(after.progress[0].applied, 2);
}

#[tokio::test]
async fn a_run_whose_snapshot_never_comes_fails_at_the_fetch_deadline() {
    let app = spawn_app_with(Options {
        control_plane: short_deadlines(&["fetch"]),
        ..Options::default()
    })
    .await;
    let run = app.start_sync(RunMode::Apply, &[]).await;
    let failed = app.wait_for_state(&run.run_id, RunState::Failed).await;
    assert_eq!(
        failed.reason,
        "fetch deadline of 1 s passed while FETCHING: the fetcher reported no snapshot"
    );
    // The failed run freed its connector.
    let next = app.start_sync(RunMode::Simulate, &[]).await;
    assert_eq!(next.state(), RunState::Fetching);
}

#[tokio::test]
async fn a_restart_publishes_again_the_approval_of_an_applying_run() {
    let first = spawn_app().await;
    let run = first.start_sync(RunMode::Apply, &[]).await;
    first.hold(&run, &[]).await;
    let approvals = first.observe(&first.bus.topology().run_approved()).await;
    let prefix = first.prefix.clone();
    let bus = first.bus.clone();
    let nats = first.stop().await;

    // What a replica that stopped between recording the approval and publishing it left.
    let store = Store::open(&bus).await.expect("the store");
    store
        .update(&run.run_id, |stored| {
            stored.run.set_state(RunState::Applying);
            stored.run.approved_by = "alice".to_owned();
            stored.run.approval_reason = "checked the removals".to_owned();
            true
        })
        .await
        .expect("writes")
        .expect("the run exists");
    assert!(drain::<v1::RunApproved>(&approvals).await.is_empty());

    let second = spawn_app_with(Options {
        nats: Some(nats),
        prefix: Some(prefix),
        ..Options::default()
    })
    .await;
    let deadline = Instant::now() + DEADLINE;
    let published = loop {
        let published = drain::<v1::RunApproved>(&approvals).await;
        if !published.is_empty() || Instant::now() > deadline {
            break published;
        }
    };
    let announced: Vec<(&str, &str, &str)> = published
        .iter()
        .map(|approved| {
            (
                approved.run_id.as_str(),
                approved.approved_by.as_str(),
                approved.comment.as_str(),
            )
        })
        .collect();
    assert_eq!(
        announced,
        [(run.run_id.as_str(), "alice", "checked the removals")]
    );
    assert_eq!(
        second.get_run(&run.run_id).await.state(),
        RunState::Applying
    );
}

#[tokio::test]
async fn an_applying_run_fails_naming_the_product_no_applier_announced_itself_for() {
    let app = spawn_app_with(Options {
        control_plane: "absent_applier_seconds = 1\ndeadline_sweep_seconds = 1\n".to_owned(),
        ..Options::default()
    })
    .await;
    // A Jira applier is running; nobody applies Confluence.
    let jira = bus::liveness::Announcer::open(&app.bus, "jira", "test-1")
        .await
        .expect("the announcements bucket");
    jira.announce().await.expect("announced");

    let run = app.start_sync(RunMode::Apply, &[]).await;
    app.snapshot_ready(&run).await;
    app.plan_ready(&plan(&run, fixture_changes(), None)).await;

    let failed = app.wait_for_state(&run.run_id, RunState::Failed).await;
    assert_eq!(
        failed.reason,
        "no applier is running for confluence (1 of 1 changes unreported): \
         none announced itself for 1 s",
        "Jira's applier is running, so only Confluence is named"
    );
    // The connector is free again.
    app.try_start(RunMode::Simulate, "")
        .await
        .expect("the connector is free");
}
