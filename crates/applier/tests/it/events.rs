//! Event runs (#16): a run that names a few users or groups announces the product state
//! the applier has cached instead of reading the whole product again; with nothing cached,
//! or when only a full sync will do, it reads the product as any run does.

use std::time::Duration;

use applier::StepOutcome;
use async_nats::jetstream::consumer::PullConsumer;
use emulator::store::Seed;
use futures::StreamExt;
use model::state::Product;
use proto::v1::{self, RunMode};

use crate::helpers::{Options, TestEnv, seed_account};

/// Confluence with two accounts.
async fn spawn() -> TestEnv {
    let mut options = Options::new(&[Product::Confluence]);
    options.seeds = vec![Seed {
        accounts: vec![
            seed_account("admin", "Administrator"),
            seed_account("bob", "Bob Example"),
        ],
        ..Seed::default()
    }];
    TestEnv::spawn_with(options).await
}

/// Publishes the `RunRequested` of an event run that names alice, needing a full sync
/// when `full_sync_reason` is not empty.
async fn request_event_run(env: &TestEnv, run_id: &str, full_sync_reason: &str) {
    let requested = v1::RunRequested {
        schema_version: v1::SCHEMA_VERSION,
        run_id: run_id.to_owned(),
        mode: RunMode::Apply as i32,
        event: Some(v1::EventTrigger {
            user_ids: vec!["u-alice".to_owned()],
            group_ids: Vec::new(),
            events: 1,
            full_sync_reason: full_sync_reason.to_owned(),
        }),
        ..Default::default()
    };
    env.bus
        .publish(&env.bus.topology().run_requested(), &requested, run_id)
        .await
        .expect("publishes RunRequested");
}

/// A consumer of Confluence's `StateReady`s, from the first.
async fn state_readies(env: &TestEnv) -> PullConsumer {
    env.bus
        .durable_consumer(
            &env.bus.topology().events_stream(),
            "test-state-ready",
            &env.bus.topology().state_ready("confluence"),
            Duration::from_secs(30),
        )
        .await
        .expect("a consumer")
}

async fn next_state_ready(consumer: &PullConsumer) -> v1::StateReady {
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .expect("fetch");
    let message = batch.next().await.expect("a message").expect("a message");
    message.ack().await.expect("ack");
    bus::decode(&message.payload).expect("a StateReady")
}

#[tokio::test]
async fn an_event_run_announces_the_cached_state_without_reading_the_product() {
    let env = spawn().await;
    let readies = state_readies(&env).await;
    let first = env.start_run(RunMode::Simulate).await;
    let applier = env.applier(Product::Confluence);
    assert!(matches!(
        applier.try_step().await.expect("steps"),
        StepOutcome::StateReady { .. }
    ));
    let (_, cached) = env
        .cache
        .load(Product::Confluence)
        .await
        .expect("loads")
        .expect("the first run cached the state");
    assert_eq!(
        next_state_ready(&readies).await.state.as_ref(),
        Some(&cached)
    );

    let requests = env.requests(Product::Confluence);
    let run_id = "01JEVENTRUNCACHED000000000";
    request_event_run(&env, run_id, "").await;
    assert_eq!(
        applier.try_step().await.expect("steps"),
        StepOutcome::StateReady {
            run_id: run_id.to_owned(),
            accounts: 2
        }
    );
    assert_eq!(
        env.requests(Product::Confluence),
        requests,
        "the event run read nothing from the product"
    );
    let ready = next_state_ready(&readies).await;
    assert_eq!(ready.run_id, run_id);
    assert_eq!(ready.state.as_ref(), Some(&cached), "the cached object");
    assert_eq!((ready.accounts, ready.groups), (2, 0));
    let (state, now) = env
        .cache
        .load(Product::Confluence)
        .await
        .expect("loads")
        .expect("cached");
    assert_eq!((state.run_id.as_str(), now), (first.as_str(), cached));
}

#[tokio::test]
async fn an_event_run_with_nothing_cached_reads_the_product() {
    let env = spawn().await;
    let readies = state_readies(&env).await;
    let run_id = "01JEVENTRUNUNCACHED0000000";
    request_event_run(&env, run_id, "").await;
    let requests = env.requests(Product::Confluence);
    assert_eq!(
        env.applier(Product::Confluence)
            .try_step()
            .await
            .expect("steps"),
        StepOutcome::StateReady {
            run_id: run_id.to_owned(),
            accounts: 2
        }
    );
    assert!(env.requests(Product::Confluence) > requests);
    let (state, object) = env
        .cache
        .load(Product::Confluence)
        .await
        .expect("loads")
        .expect("the run cached the state");
    assert_eq!(state.run_id, run_id);
    assert_eq!(next_state_ready(&readies).await.state, Some(object));
}

#[tokio::test]
async fn an_event_run_that_needs_a_full_sync_reads_the_product() {
    let env = spawn().await;
    env.start_run(RunMode::Simulate).await;
    let applier = env.applier(Product::Confluence);
    assert!(matches!(
        applier.try_step().await.expect("steps"),
        StepOutcome::StateReady { .. }
    ));
    let requests = env.requests(Product::Confluence);
    let run_id = "01JEVENTRUNFULLSYNC0000000";
    request_event_run(&env, run_id, "a gap in the event watermark").await;
    assert!(matches!(
        applier.try_step().await.expect("steps"),
        StepOutcome::StateReady { .. }
    ));
    assert!(env.requests(Product::Confluence) > requests);
    let (state, _) = env
        .cache
        .load(Product::Confluence)
        .await
        .expect("loads")
        .expect("cached");
    assert_eq!(state.run_id, run_id, "the state was read again");
}
