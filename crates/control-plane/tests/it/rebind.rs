//! The event consumer deleted under a running control plane: the service turns unready,
//! binds it again by itself, turns ready, and goes on where it was, losing no event and
//! handling none twice.

use async_nats::jetstream::consumer::{Info, pull};
use proto::v1::{self, RunMode, RunState};

use crate::helpers::{DEADLINE, Options, TestApp, spawn_app_with};

/// The info of the control plane's consumer on the events stream, if it exists.
async fn consumer_info(app: &TestApp) -> Option<Info> {
    let topology = app.bus.topology();
    let stream = app
        .bus
        .jetstream()
        .get_stream(topology.events_stream())
        .await
        .expect("the events stream");
    let mut consumer = stream
        .get_consumer::<pull::Config>(&topology.control_plane_consumer())
        .await
        .ok()?;
    consumer.info().await.ok().cloned()
}

/// Waits until the consumer has settled everything it delivered, and answers its info.
async fn settled(app: &TestApp, what: &str) -> Info {
    app.wait_until(what, || async {
        consumer_info(app)
            .await
            .is_some_and(|info| info.delivered.consumer_sequence >= 1 && info.num_ack_pending == 0)
    })
    .await;
    consumer_info(app).await.expect("the consumer exists")
}

#[tokio::test]
async fn a_deleted_event_consumer_is_bound_again_and_no_event_is_lost_or_handled_twice() {
    let app = spawn_app_with(Options {
        health: true,
        ..Options::default()
    })
    .await;
    let health = app.health_address.expect("the probes are served");
    test_support::http::wait_for_status(health, "/readyz", 200, DEADLINE)
        .await
        .expect("ready");
    let topology = app.bus.topology();
    let consumer = topology.control_plane_consumer();

    // Two connectors, so that both runs may be active at once.
    let run_a = app.try_start(RunMode::Apply, "a").await.expect("StartSync");
    app.snapshot_ready(&run_a).await;
    app.wait_for_state(&run_a.run_id, RunState::Planning).await;
    let before = settled(&app, "run A's event is acknowledged").await;
    assert_eq!(before.delivered.consumer_sequence, 1, "{before:?}");

    test_support::rebind::delete_consumer_and_wait(
        app.bus.jetstream(),
        &topology.events_stream(),
        &consumer,
        || app.health.transitions(),
        || app.health.readiness().is_ok(),
        Some(health),
    )
    .await
    .expect("the consumer is bound again");

    let run_b = app.try_start(RunMode::Apply, "b").await.expect("StartSync");
    app.snapshot_ready(&run_b).await;
    app.wait_for_state(&run_b.run_id, RunState::Planning).await;
    // The consumer made again delivered run B's event only: run A's was not handed out
    // again, and nothing waits.
    let after = settled(&app, "run B's event is acknowledged").await;
    assert_eq!(after.delivered.consumer_sequence, 1, "{after:?}");
    assert_eq!(after.num_ack_pending, 0, "{after:?}");
    assert_eq!(after.num_redelivered, 0, "{after:?}");
    assert_eq!(after.num_pending, 0, "{after:?}");
    assert!(
        after.delivered.stream_sequence > before.delivered.stream_sequence,
        "before: {before:?}, after: {after:?}"
    );

    let runs: Vec<(String, RunState)> = app
        .client
        .clone()
        .list_runs(v1::ListRunsRequest::default())
        .await
        .expect("ListRuns")
        .into_inner()
        .runs
        .iter()
        .map(|run| (run.run_id.clone(), run.state()))
        .collect();
    assert_eq!(
        runs,
        [
            (run_b.run_id.clone(), RunState::Planning),
            (run_a.run_id.clone(), RunState::Planning),
        ]
    );
    app.stop().await;
}
