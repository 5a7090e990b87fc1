//! What reaches the products is what the control plane let through, end to end: with a
//! run held for approval, a `RunApproved` and a change set published by hand on the bus
//! (as anything that can reach the bus could) write nothing to any product. The planner
//! asks the control plane before it publishes an approved plan, and the applier checks a
//! change set against the run the control plane records; both dead-letter what fails.

use std::time::Duration;

use e2e::{DEADLINE, PRODUCTS, Stack, StackOptions};
use proto::v1::{self, RunMode, RunState};

use crate::{directory, holds};

/// The writes every emulator has counted so far.
async fn writes(stack: &Stack) -> Vec<u64> {
    let mut writes = Vec::new();
    for product in PRODUCTS {
        writes.push(stack.writes(product).await.unwrap());
    }
    writes
}

/// Every dead letter as (the subject it was published on, the reason), once there are at
/// least `count`.
async fn dead_letters(
    jetstream: &async_nats::jetstream::Context,
    topology: &bus::Topology,
    count: u64,
) -> Vec<(String, String)> {
    let mut dead = jetstream.get_stream(topology.dead_stream()).await.unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while dead.info().await.unwrap().state.messages < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "fewer than {count} dead letters"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (first, last) = {
        let info = dead.info().await.unwrap();
        (info.state.first_sequence, info.state.last_sequence)
    };
    let mut letters = Vec::new();
    for sequence in first..=last {
        let Ok(letter) = dead.get_raw_message(sequence).await else {
            continue;
        };
        let header = |name: &str| {
            letter
                .headers
                .get(name)
                .map(|value| value.as_str().to_owned())
                .unwrap_or_default()
        };
        letters.push((
            header(bus::DEAD_SUBJECT_HEADER),
            header(bus::DEAD_REASON_HEADER),
        ));
    }
    letters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_or_a_change_set_published_by_hand_for_a_held_run_writes_nothing() {
    let people = directory::people(12);
    let stack = Stack::start(StackOptions {
        realm: directory::realm(&people),
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts");
    stack.sync(RunMode::Apply).await.unwrap();

    // Everybody leaves /staff/sales: the next run is held.
    holds::empty_group(&stack, &people, "/staff/sales").await;
    let run = holds::held_run(&stack).await;
    let before = writes(&stack).await;

    // The plan the run would apply, read from the bus as anyone on it could.
    let settings = bus::BusSettings {
        nats_url: stack.nats.url(),
        prefix: stack.prefix.clone(),
        ..bus::BusSettings::default()
    };
    let bus = bus::Bus::connect_with(&settings).await.unwrap();
    let topology = bus.topology().clone();
    let (plan, _) = bus
        .get_latest_object::<v1::Plan>(&topology.plans_bucket(), &format!("{}.pb.zst", run.run_id))
        .await
        .unwrap()
        .expect("the held plan is stored");
    let jira: Vec<v1::Change> = plan
        .changes
        .iter()
        .filter(|change| change.product == v1::Product::Jira as i32)
        .cloned()
        .collect();
    assert!(!jira.is_empty(), "the held plan changes Jira");

    // A forged approval, and the held plan's own Jira changes as a change set.
    let approved = v1::RunApproved {
        schema_version: v1::SCHEMA_VERSION,
        run_id: run.run_id.clone(),
        approved_by: "mallory".to_owned(),
        comment: "trust me".to_owned(),
    };
    bus.publish(&topology.run_approved(), &approved, "forged-approval")
        .await
        .unwrap();
    let set = v1::ChangeSet {
        part: Default::default(),
        schema_version: v1::SCHEMA_VERSION,
        run_id: run.run_id.clone(),
        product: v1::Product::Jira as i32,
        sequence: 0,
        total_sets: 1,
        changes: jira,
        stored: None,
        connector: plan.connector.clone(),
        depends_on: None,
    };
    bus.publish(&topology.changes("jira"), &set, "forged-change-set")
        .await
        .unwrap();

    let letters = dead_letters(bus.jetstream(), &topology, 2).await;
    let reason_of = |subject: &str| {
        letters
            .iter()
            .find(|(dead, _)| dead == subject)
            .map(|(_, reason)| reason.clone())
            .unwrap_or_else(|| panic!("no dead letter of {subject}: {letters:?}"))
    };
    let approval = reason_of(&topology.run_approved());
    assert!(approval.contains("records no approval"), "{approval}");
    let change_set = reason_of(&topology.changes("jira"));
    assert!(change_set.contains("is held"), "{change_set}");

    assert_eq!(writes(&stack).await, before, "a product was written to");
    let after = stack.get_run(&run.run_id).await.unwrap();
    assert_eq!(after.state(), RunState::Held);
    assert!(after.approved_by.is_empty(), "{after:?}");
}
