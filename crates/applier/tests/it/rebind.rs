//! The applier's consumer of run requests deleted under it: the applier turns unready,
//! binds it again, and reads the product's state for the next run; no request is lost and
//! none is served twice.

use std::time::Duration;

use model::state::Product;
use proto::v1::{self, RunMode};
use test_support::{http, nats::stream_messages, rebind};
use tokio::time::Instant;

use crate::helpers::TestEnv;

/// The run ids of every `StateReady` of `product` on the events stream, oldest first.
async fn states_ready(env: &TestEnv, product: &str) -> Vec<String> {
    let topology = env.bus.topology();
    stream_messages(
        env.bus.jetstream(),
        &topology.events_stream(),
        &topology.state_ready(product),
    )
    .await
    .expect("reads the events")
    .into_iter()
    .map(|(_, payload)| {
        bus::decode::<v1::StateReady>(&payload)
            .expect("a StateReady")
            .run_id
    })
    .collect()
}

async fn request_run(env: &TestEnv, run_id: &str) {
    let requested = v1::RunRequested {
        schema_version: v1::SCHEMA_VERSION,
        run_id: run_id.to_owned(),
        mode: RunMode::Simulate as i32,
        ..Default::default()
    };
    env.bus
        .publish(&env.bus.topology().run_requested(), &requested, run_id)
        .await
        .expect("publishes");
}

async fn wait_for_state(env: &TestEnv, run_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !states_ready(env, "jira")
        .await
        .iter()
        .any(|ready| ready == run_id)
    {
        assert!(Instant::now() < deadline, "no state read for {run_id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_deleted_consumer_is_bound_again_and_no_run_request_is_lost_or_served_twice() {
    let env = TestEnv::spawn(&[Product::Jira]).await;
    let mut settings = env.applier_settings.clone();
    settings.health.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let app = applier::App::build(settings, Product::Jira)
        .await
        .expect("an applier replica");
    let address = app.health_addr().expect("the probes are configured");
    let health = app.health().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    http::wait_for_status(address, "/readyz", 200, Duration::from_secs(10))
        .await
        .expect("ready");

    request_run(&env, "01JREBINDA0000000000000000").await;
    wait_for_state(&env, "01JREBINDA0000000000000000").await;
    let topology = env.bus.topology();
    let consumer = topology.applier_state_consumer("jira");
    rebind::delete_consumer_and_wait(
        env.bus.jetstream(),
        &topology.events_stream(),
        &consumer,
        || health.transitions(),
        || health.readiness().is_ok(),
        Some(address),
    )
    .await
    .expect("the consumer is bound again");
    request_run(&env, "01JREBINDB0000000000000000").await;
    wait_for_state(&env, "01JREBINDB0000000000000000").await;

    let delivered = rebind::delivered(env.bus.jetstream(), &topology.events_stream(), &consumer)
        .await
        .expect("the consumer's info");
    assert_eq!(
        delivered,
        rebind::Delivered::ONE,
        "the consumer made again delivered the second run request only, and once"
    );
    assert_eq!(
        states_ready(&env, "jira").await,
        ["01JREBINDA0000000000000000", "01JREBINDB0000000000000000"]
    );
    let _ = stop.send(());
    running
        .await
        .expect("the applier task ends")
        .expect("the applier stops cleanly");
}
