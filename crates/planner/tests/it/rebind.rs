//! The planner's consumer deleted under it: the planner turns unready, binds it again, and
//! handles the next message; nothing is lost and nothing is handled twice.

use std::time::Duration;

use async_nats::jetstream::consumer::{self, DeliverPolicy};
use futures::StreamExt;
use model::state::Product;
use proto::v1::{self, RunMode};
use test_support::{http, rebind};

use crate::helpers::{TestPlanner, realm, state};

/// Every `PlanReady` and `PlanFailed` on the events stream so far, as (subject, run id),
/// read from the start by a consumer of the test's own.
async fn plan_events(planner: &TestPlanner) -> Vec<(String, String)> {
    let topology = planner.bus.topology();
    let stream = planner
        .bus
        .jetstream()
        .get_stream(topology.events_stream())
        .await
        .expect("the events stream");
    let reader = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: format!("{}.plan.>", topology.prefix()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("a reader of plan events");
    let pending = reader.cached_info().num_pending as usize;
    let mut events = Vec::with_capacity(pending);
    if pending == 0 {
        return events;
    }
    let mut messages = reader
        .fetch()
        .max_messages(pending)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .expect("fetches plan events");
    while let Some(message) = messages.next().await {
        let message = message.expect("a plan event");
        let subject = message.subject.to_string();
        let run_id = if subject == topology.plan_ready() {
            bus::decode::<v1::PlanReady>(&message.payload)
                .expect("a PlanReady")
                .run_id
        } else {
            bus::decode::<v1::PlanFailed>(&message.payload)
                .expect("a PlanFailed")
                .run_id
        };
        events.push((subject, run_id));
    }
    events
}

#[tokio::test]
async fn a_deleted_consumer_is_bound_again_and_no_message_is_lost_or_handled_twice() {
    let planner = TestPlanner::spawn(500).await;
    let mut settings = planner.settings.clone();
    settings.health.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let app = planner::App::build(settings)
        .await
        .expect("the running planner starts");
    let health = app.health().clone();
    let address = app.health_addr().expect("the probes are configured");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    http::wait_for_status(address, "/readyz", 200, Duration::from_secs(10))
        .await
        .expect("ready");

    // Run A is planned by the consumer bound at start.
    let run_a = "01JRUNBEFOREREBIND";
    planner
        .publish_snapshot(run_a, RunMode::Apply, &[Product::Jira], realm())
        .await;
    planner
        .publish_state(run_a, state(Product::Jira, vec![]))
        .await;
    let ready = planner
        .next_plan_event_within(Duration::from_secs(20))
        .await
        .ready();
    assert_eq!(ready.run_id, run_a);

    let topology = planner.bus.topology().clone();
    let stream = topology.events_stream();
    rebind::delete_consumer_and_wait(
        planner.bus.jetstream(),
        &stream,
        &planner.bus.topology().planner_consumer(),
        || health.transitions(),
        || health.readiness().is_ok(),
        Some(address),
    )
    .await
    .expect("the consumer is bound again");

    // Run B, one message, is handled by the consumer made again: an approval the control
    // plane does not confirm (it knows no such run), it is dead-lettered.
    let run_b = "01JRUNAFTERREBIND";
    planner.publish_approved(run_b).await;
    let mut dead = planner
        .bus
        .jetstream()
        .get_stream(topology.dead_stream())
        .await
        .expect("the dead-letter stream");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while dead.info().await.expect("info").state.messages == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "run B's approval is not handled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reason = dead
        .get_last_raw_message_by_subject(&topology.dead_letter(&topology.run_approved()))
        .await
        .expect("run B's approval is dead-lettered")
        .headers;
    let reason = reason
        .get(bus::DEAD_REASON_HEADER)
        .expect("a reason")
        .as_str()
        .to_owned();
    assert!(reason.contains(run_b), "{reason}");

    let delivered = rebind::delivered(
        planner.bus.jetstream(),
        &stream,
        &planner.bus.topology().planner_consumer(),
    )
    .await
    .expect("the consumer's info");
    assert_eq!(
        delivered,
        rebind::Delivered::ONE,
        "the consumer made again delivered run B's message only, and once"
    );
    assert_eq!(
        plan_events(&planner).await,
        [(topology.plan_ready(), run_a.to_owned()),],
        "run A was planned once"
    );
    let _ = stop.send(());
    running
        .await
        .expect("the planner task ends")
        .expect("the planner stops cleanly");
}
