//! The state refresh at the start of a run: the product as it is now, keysync's knowledge
//! kept, and `StateFailed` when the product cannot be read.

use std::time::Duration;

use applier::StepOutcome;
use emulator::store::Seed;
use futures::StreamExt;
use model::state::Product;
use proto::v1::{self, RunMode};

use crate::helpers::{Options, TestEnv, seed_account};

#[tokio::test]
async fn the_applier_caches_its_products_state_and_announces_it_when_a_run_is_requested() {
    let mut options = Options::new(&[Product::Confluence]);
    options.seeds = vec![Seed {
        accounts: vec![
            seed_account("admin", "Administrator"),
            seed_account("bob", "Bob Example"),
        ],
        ..Seed::default()
    }];
    let env = TestEnv::spawn_with(options).await;
    let run_id = env.start_run(RunMode::Simulate).await;
    let outcome = env
        .applier(Product::Confluence)
        .try_step()
        .await
        .expect("steps");
    assert_eq!(
        outcome,
        StepOutcome::StateReady {
            run_id: run_id.clone(),
            accounts: 2
        }
    );
    let (state, object) = env
        .cache
        .load(Product::Confluence)
        .await
        .expect("loads")
        .expect("cached");
    assert_eq!(state.run_id, run_id);
    assert_eq!(object.key, "confluence");
    let logins: Vec<&str> = state
        .accounts
        .iter()
        .map(|account| account.login.as_str())
        .collect();
    assert_eq!(logins, ["admin", "bob"]);
    assert!(state.accounts.iter().all(|account| !account.managed));

    let ready = next_event(&env, &env.bus.topology().state_ready("confluence")).await;
    let ready: v1::StateReady = bus::decode(&ready.payload).expect("a StateReady");
    assert_eq!(
        (ready.run_id.as_str(), ready.accounts),
        (run_id.as_str(), 2)
    );
    assert_eq!(ready.state, Some(object));
}

#[tokio::test]
async fn a_run_for_other_products_leaves_the_state_alone() {
    let env = TestEnv::spawn(&[Product::Jira]).await;
    let requested = v1::RunRequested {
        schema_version: v1::SCHEMA_VERSION,
        run_id: "01JOTHERPRODUCTS0000000000".to_owned(),
        mode: RunMode::Apply as i32,
        products: vec![v1::Product::Bitbucket as i32],
        ..Default::default()
    };
    env.bus
        .publish(
            &env.bus.topology().run_requested(),
            &requested,
            "other-products",
        )
        .await
        .expect("publishes");
    assert_eq!(
        env.applier(Product::Jira).try_step().await.expect("steps"),
        StepOutcome::Ignored
    );
    assert!(
        env.cache
            .load(Product::Jira)
            .await
            .expect("loads")
            .is_none()
    );
}

#[tokio::test]
async fn a_product_that_cannot_be_read_fails_the_state_of_the_run() {
    let mut options = Options::new(&[Product::Bitbucket]);
    options.product_token = "not-the-token".to_owned();
    let env = TestEnv::spawn_with(options).await;
    let run_id = env.start_run(RunMode::Apply).await;
    let StepOutcome::StateFailed { reason, .. } = env
        .applier(Product::Bitbucket)
        .try_step()
        .await
        .expect("steps")
    else {
        panic!("the state cannot be read");
    };
    assert!(
        reason.contains("401") || reason.contains("credentials"),
        "{reason}"
    );
    let failed = next_event(&env, &env.bus.topology().state_failed("bitbucket")).await;
    let failed: v1::StateFailed = bus::decode(&failed.payload).expect("a StateFailed");
    assert_eq!(
        (failed.run_id.as_str(), failed.reason.as_str()),
        (run_id.as_str(), reason.as_str())
    );
    assert!(
        env.cache
            .load(Product::Bitbucket)
            .await
            .expect("loads")
            .is_none()
    );
    assert!(
        !reason.contains("not-the-token"),
        "the token leaked into the reason"
    );
}

/// The first message on `subject` of the events stream.
async fn next_event(env: &TestEnv, subject: &str) -> async_nats::jetstream::Message {
    let consumer = env
        .bus
        .durable_consumer(
            &env.bus.topology().events_stream(),
            "test-events",
            subject,
            Duration::from_secs(30),
        )
        .await
        .expect("a consumer");
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .expect("fetch");
    batch.next().await.expect("a message").expect("a message")
}
