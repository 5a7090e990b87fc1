//! The fetcher's consumer deleted under it: the service turns unready, binds it again,
//! and serves the next request; nothing is lost and nothing is fetched twice.

use std::{sync::Arc, time::Duration};

use proto::v1::SnapshotReady;
use test_support::{http, keycloak::Keycloak, rebind};
use tokio::time::Instant;

use crate::helpers::{self, connector, run_requested, spawn_app};

async fn request(bus: &bus::Bus, run_id: &str) -> anyhow::Result<()> {
    let subject = bus.topology().run_requested();
    bus.publish(&subject, &run_requested(run_id), run_id)
        .await?;
    Ok(())
}

/// Waits until the fetcher announced a snapshot for `run_id`.
async fn wait_for_snapshot(bus: &bus::Bus, run_id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = helpers::snapshot_events(bus)
            .await?
            .into_iter()
            .any(|(_, payload)| {
                bus::decode::<SnapshotReady>(&payload).is_ok_and(|ready| ready.run_id == run_id)
            });
        if ready {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "no snapshot of {run_id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_deleted_consumer_is_bound_again_and_no_request_is_lost_or_served_twice()
-> anyhow::Result<()> {
    let keycloak = Keycloak::shared().await?;
    let realm = keycloak.create_realm(helpers::small_realm()).await?;
    let test = spawn_app(connector(&realm)).await?;
    let app = Arc::into_inner(test.app).expect("the only reference");
    let health = app.health().clone();
    let address = app.health_addr().expect("the probes are configured");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    http::wait_for_status(address, "/readyz", 200, Duration::from_secs(10)).await?;

    request(&test.bus, "run-a").await?;
    wait_for_snapshot(&test.bus, "run-a").await?;
    let stream = test.bus.topology().events_stream();
    let consumer = &test.bus.topology().fetcher_consumer();
    rebind::delete_consumer_and_wait(
        test.bus.jetstream(),
        &stream,
        consumer,
        || health.transitions(),
        || health.readiness().is_ok(),
        Some(address),
    )
    .await?;
    request(&test.bus, "run-b").await?;
    wait_for_snapshot(&test.bus, "run-b").await?;

    let delivered = rebind::delivered(test.bus.jetstream(), &stream, consumer).await?;
    assert_eq!(
        delivered,
        rebind::Delivered::ONE,
        "the consumer made again delivered run-b only, and once"
    );
    assert_eq!(helpers::snapshot_events(&test.bus).await?.len(), 2);
    let _ = stop.send(());
    service.await??;
    Ok(())
}
