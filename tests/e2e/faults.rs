//! Faults: an applier killed (`kill -9`, scenario 7 of the end-to-end issue) or stopped
//! (SIGTERM, the observability issue) in the middle of a run, and a malformed change set
//! (scenario 8). In each the run completes with nothing lost and nothing done twice.

use std::{collections::BTreeMap, time::Duration};

use e2e::{DEADLINE, Stack, StackOptions};
use proto::v1::{ChangeOutcome, Product, RunMode, RunState};

use crate::directory;

/// A run slow enough on Jira (every answer 25 ms late, two at a time, in change sets of
/// ten) to stop its applier half-way.
async fn slow_jira_stack(people: &[directory::Person]) -> Stack {
    Stack::start(StackOptions {
        realm: directory::realm(people),
        emulator_args: [(
            Product::Jira,
            vec!["--latency-ms".to_owned(), "25".to_owned()],
        )]
        .into(),
        product_config: [(Product::Jira, "max_concurrency = 2".to_owned())].into(),
        // Many small change sets, so a stopped applier has some left to hand on.
        extra_config: "[planner]\nchange_set_size = 10\n".to_owned(),
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts")
}

/// Waits until Jira has taken at least `writes` writes.
async fn wait_for_jira_writes(stack: &Stack, writes: u64) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while stack.writes(Product::Jira).await.unwrap() < writes {
        assert!(tokio::time::Instant::now() < deadline, "Jira got no writes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// After an interrupted run: the run succeeded, Jira holds exactly the directory, every
/// account was created once, and every planned change has one result.
async fn assert_complete(stack: &Stack, run_id: &str, people: &[directory::Person]) {
    let run = stack.wait_for(run_id, e2e::TERMINAL).await.unwrap();
    assert_eq!(run.state(), RunState::Succeeded, "{run:?}");
    let state = stack.emulator_state(Product::Jira).await.unwrap();
    let holdings = directory::holdings(
        &state,
        &directory::logins(people),
        &directory::group_names(),
    )
    .unwrap();
    assert_eq!(holdings, directory::expected(people), "Jira after the run");
    let logins: Vec<&str> = state["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|account| account["login"].as_str())
        .collect();
    let mut unique = logins.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), logins.len(), "duplicate accounts in Jira");
    assert_eq!(
        state["counters"]["writes"]["create_account"].as_u64(),
        Some(holdings.accounts.len() as u64),
        "an account was created twice"
    );
    let changes = stack.changes(run_id, Product::Jira).await.unwrap();
    let mut results: BTreeMap<&str, usize> = BTreeMap::new();
    for record in &changes {
        let change = record.change.as_ref().unwrap();
        *results.entry(change.id.as_str()).or_default() += 1;
        assert!(
            matches!(
                record.outcome(),
                ChangeOutcome::Applied | ChangeOutcome::AlreadyDone
            ),
            "{change:?} ended {:?}: {}",
            record.outcome(),
            record.message
        );
    }
    assert!(
        results.values().all(|count| *count == 1),
        "a change listed twice"
    );
    let creates = changes
        .iter()
        .filter(|record| {
            record.change.as_ref().map(|change| change.op())
                == Some(proto::v1::ChangeOp::CreateUser)
        })
        .count();
    assert_eq!(
        creates,
        holdings.accounts.len(),
        "creates in the run's results"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_applier_loses_nothing_and_duplicates_nothing() {
    let people = directory::people(150);
    let mut stack = slow_jira_stack(&people).await;
    let run = stack.start_sync(RunMode::Apply).await.unwrap();
    wait_for_jira_writes(&stack, 20).await;
    stack.kill_service("applier-jira");
    let run_now = stack
        .wait_for(&run.run_id, &[RunState::Applying, RunState::Succeeded])
        .await
        .unwrap();
    assert_eq!(
        run_now.state(),
        RunState::Applying,
        "the kill came too late to test anything"
    );
    stack.start_service("applier-jira").unwrap();
    assert_complete(&stack, &run.run_id, &people).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_an_applier_cleanly_mid_run() {
    let people = directory::people(150);
    let mut stack = slow_jira_stack(&people).await;
    let run = stack.start_sync(RunMode::Apply).await.unwrap();
    wait_for_jira_writes(&stack, 20).await;
    let status = stack.terminate_service("applier-jira").unwrap();
    assert!(status.success(), "the applier exited {status} on SIGTERM");
    let run_now = stack.get_run(&run.run_id).await.unwrap();
    assert_eq!(
        run_now.state(),
        RunState::Applying,
        "the stop came too late to test anything"
    );
    stack.start_service("applier-jira").unwrap();
    assert_complete(&stack, &run.run_id, &people).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_change_set_is_dead_lettered_and_the_applier_goes_on() {
    let people = directory::people(10);
    let mut stack = Stack::start(StackOptions {
        realm: directory::realm(&people),
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts");
    let topology = bus::Topology::new(&stack.prefix);
    let client = stack.bus().await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let garbage = b"\xff\x00 not a change set".to_vec();
    jetstream
        .publish(topology.changes("jira"), garbage.clone().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut dead = jetstream.get_stream(topology.dead_stream()).await.unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while dead.info().await.unwrap().state.messages == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing was dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = dead.info().await.unwrap().state.first_sequence;
    let letter = dead.get_raw_message(first).await.unwrap();
    assert_eq!(
        letter.payload.as_ref(),
        garbage.as_slice(),
        "the dead letter keeps the message"
    );
    assert!(
        stack.is_running("applier-jira"),
        "the applier died of a bad message"
    );
    stack.sync(RunMode::Apply).await.unwrap();
    let state = stack.emulator_state(Product::Jira).await.unwrap();
    let holdings = directory::holdings(
        &state,
        &directory::logins(&people),
        &directory::group_names(),
    )
    .unwrap();
    assert_eq!(holdings, directory::expected(&people));
}
