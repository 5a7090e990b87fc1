//! Runs that cannot be planned fail with `PlanFailed` and publish nothing else; a restart
//! loses no part of a join; a message that does not decode is dead-lettered.

use std::time::{Duration, Instant};

use model::state::Product;
use planner::StepOutcome;
use proto::v1::RunMode;
use test_support::nats::NatsServer;

use crate::helpers::{TestPlanner, realm, settings, state};

#[tokio::test]
async fn a_state_failed_fails_the_run_and_nothing_else_is_published() {
    let planner = TestPlanner::spawn(500).await;
    let run_id = "01JRUNSTATEFAILED";
    planner
        .publish_snapshot(
            run_id,
            RunMode::Apply,
            &[Product::Jira, Product::Bitbucket],
            realm(),
        )
        .await;
    planner
        .publish_state(run_id, state(Product::Jira, vec![]))
        .await;
    planner
        .publish_state_failed(
            run_id,
            Product::Bitbucket,
            "bitbucket rejected the credentials (401)",
        )
        .await;
    assert!(matches!(planner.step().await, StepOutcome::Waiting { .. }));
    assert!(matches!(planner.step().await, StepOutcome::Waiting { .. }));
    let StepOutcome::Failed { reason, .. } = planner.step().await else {
        panic!("the run fails");
    };
    assert!(
        reason.contains("bitbucket") && reason.contains("401"),
        "{reason}"
    );
    let failed = planner.next_plan_event().await.failed();
    assert_eq!(failed.run_id, run_id);
    assert_eq!(failed.reason, reason);

    // A late state of the failed run changes nothing.
    planner
        .publish_state(run_id, state(Product::Bitbucket, vec![]))
        .await;
    assert_eq!(planner.step().await, StepOutcome::Ignored);
    assert_eq!(planner.change_set_messages_published().await, 0);
    assert_eq!(planner.step().await, StepOutcome::Idle);
}

#[tokio::test]
async fn a_missing_snapshot_object_fails_the_run() {
    let planner = TestPlanner::spawn(500).await;
    let run_id = "01JRUNNOSNAPSHOT";
    planner
        .publish_snapshot(run_id, RunMode::Apply, &[Product::Jira], realm())
        .await;
    let store = planner
        .bus
        .object_store(&planner.bus.topology().snapshots_bucket())
        .await
        .expect("the snapshots bucket");
    store
        .delete(format!("{run_id}.pb.zst"))
        .await
        .expect("deletes the snapshot");
    planner
        .publish_state(run_id, state(Product::Jira, vec![]))
        .await;
    assert!(matches!(planner.step().await, StepOutcome::Waiting { .. }));
    let StepOutcome::Failed { reason, .. } = planner.step().await else {
        panic!("the run fails");
    };
    assert!(reason.contains("snapshot"), "{reason}");
    assert_eq!(planner.next_plan_event().await.failed().reason, reason);
    assert_eq!(planner.change_set_messages_published().await, 0);
}

#[tokio::test]
async fn a_planner_restarted_mid_join_still_completes_the_run() {
    let planner = TestPlanner::spawn(500).await;
    let run_id = "01JRUNRESTART";
    planner
        .publish_snapshot(run_id, RunMode::Apply, &[], realm())
        .await;
    planner
        .publish_state(run_id, state(Product::Jira, vec![]))
        .await;
    assert!(matches!(planner.step().await, StepOutcome::Waiting { .. }));
    assert!(matches!(planner.step().await, StepOutcome::Waiting { .. }));

    let planner = planner.restart().await;
    planner
        .publish_state(run_id, state(Product::Confluence, vec![]))
        .await;
    planner
        .publish_state(run_id, state(Product::Bitbucket, vec![]))
        .await;
    assert!(matches!(planner.step().await, StepOutcome::Waiting { .. }));
    assert!(matches!(
        planner.step().await,
        StepOutcome::Planned { held: false, .. }
    ));
    let ready = planner.next_plan_event().await.ready();
    assert_eq!(ready.products.len(), 3);
}

#[tokio::test]
async fn a_state_that_never_arrives_fails_the_run_after_the_timeout() {
    let nats = NatsServer::start().expect("nats-server starts");
    let settings = settings(&nats, 500, 1);
    let planner = TestPlanner::spawn_with(nats, settings).await;
    let run_id = "01JRUNTIMEOUT";
    planner
        .publish_snapshot(
            run_id,
            RunMode::Apply,
            &[Product::Jira, Product::Confluence],
            realm(),
        )
        .await;
    planner
        .publish_state(run_id, state(Product::Jira, vec![]))
        .await;
    assert!(matches!(planner.step().await, StepOutcome::Waiting { .. }));
    assert!(matches!(planner.step().await, StepOutcome::Waiting { .. }));

    let deadline = Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let failed = planner
            .app
            .check_deadlines()
            .await
            .expect("checks deadlines");
        if !failed.is_empty() || Instant::now() > deadline {
            break failed;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(failed, [run_id]);
    let failed = planner.next_plan_event().await.failed();
    assert!(
        failed.reason.contains("no state of confluence"),
        "{}",
        failed.reason
    );
    assert!(
        planner
            .app
            .check_deadlines()
            .await
            .expect("checks again")
            .is_empty()
    );
    assert_eq!(planner.change_set_messages_published().await, 0);
}

#[tokio::test]
async fn a_message_that_does_not_decode_is_dead_lettered_and_the_next_one_is_handled() {
    let planner = TestPlanner::spawn(500).await;
    let topology = planner.bus.topology().clone();
    planner
        .bus
        .jetstream()
        .publish(
            topology.snapshot_ready(),
            bytes::Bytes::from_static(b"\xff\xff not protobuf"),
        )
        .await
        .expect("publishes")
        .await
        .expect("stored");
    planner
        .publish_snapshot("01JRUNAFTERJUNK", RunMode::Apply, &[Product::Jira], realm())
        .await;
    assert_eq!(planner.step().await, StepOutcome::DeadLettered);
    assert!(matches!(planner.step().await, StepOutcome::Waiting { .. }));
    let mut dead = planner
        .bus
        .jetstream()
        .get_stream(topology.dead_stream())
        .await
        .expect("the dead-letter stream");
    // One from the planner, one from the control plane, which reads the same stream.
    assert_eq!(dead.info().await.expect("info").state.messages, 2);
}

#[tokio::test]
async fn the_running_planner_plans_a_run_and_stops_when_told() {
    let planner = TestPlanner::spawn(500).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = planner::App::build(planner.settings.clone())
        .await
        .expect("a second replica starts");
    let running = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let run_id = "01JRUNLOOP";
    planner
        .publish_snapshot(run_id, RunMode::Apply, &[Product::Jira], realm())
        .await;
    planner
        .publish_state(run_id, state(Product::Jira, vec![]))
        .await;
    let ready = planner
        .next_plan_event_within(Duration::from_secs(20))
        .await
        .ready();
    assert_eq!(ready.run_id, run_id);
    assert!(!planner.change_sets().await.is_empty());
    let _ = stop.send(());
    running
        .await
        .expect("the planner task ends")
        .expect("the planner stops cleanly");
}
