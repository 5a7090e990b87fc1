//! R5: after a first successful sync of a populated realm, a realm that lost 60% of its
//! users, and a realm with no users at all: the run is HELD (the default safety policy)
//! and no product takes a single write.

use e2e::{PRODUCTS, Stack};
use proto::v1::{RunMode, RunState};
use reqwest::Method;

use crate::{
    directory::{self, Person},
    tally::{self, Outcome, Shape, Tally},
};

/// Every product's successful writes so far.
async fn all_writes(stack: &Stack) -> anyhow::Result<Vec<u64>> {
    let mut writes = Vec::new();
    for product in PRODUCTS {
        writes.push(stack.writes(product).await?);
    }
    Ok(writes)
}

/// Deletes `people` from the realm.
async fn delete(stack: &Stack, people: &[&Person]) -> anyhow::Result<()> {
    for person in people {
        let id = stack.realm.user_id(&person.username).await?;
        stack
            .realm
            .admin(Method::DELETE, &format!("users/{id}"), None)
            .await?;
    }
    Ok(())
}

/// One run: a first sync of 20 people, then `keep` of every 5 people kept (2: 60% gone;
/// 0: the realm emptied), then a run that must be HELD with no write anywhere.
async fn held_run(keep: usize) -> anyhow::Result<Outcome> {
    let people = directory::people(20);
    let stack = tally::start_stack(&people, &Shape::new(people.len(), 0)).await?;
    stack.sync(RunMode::Apply).await?;
    let gone: Vec<&Person> = people
        .iter()
        .enumerate()
        .filter(|(index, _)| index % 5 >= keep)
        .map(|(_, person)| person)
        .collect();
    delete(&stack, &gone).await?;
    let before = all_writes(&stack).await?;
    let started = stack.start_sync(RunMode::Apply).await?;
    let run = stack
        .wait_for(
            &started.run_id,
            &[
                RunState::Held,
                RunState::Succeeded,
                RunState::Failed,
                RunState::Cancelled,
            ],
        )
        .await?;
    let mut outcome = Outcome {
        succeeded: run.state() == RunState::Held && !run.reason.is_empty(),
        ..Outcome::default()
    };
    outcome
        .notes
        .push(format!("run ended {:?}: {}", run.state(), run.reason));
    let after = all_writes(&stack).await?;
    outcome.expected_state = after == before;
    if after != before {
        outcome
            .notes
            .push(format!("writes before the run {before:?}, after {after:?}"));
    }
    if run.state() == RunState::Held {
        stack.cancel(&run.run_id).await?;
    }
    Ok(outcome)
}

/// Runs R5 as often as the suite says.
async fn scenario(scenario: &str, keep: usize) {
    let mut tally = Tally::new(scenario);
    for run in 0..tally::runs() {
        let outcome = held_run(keep).await;
        tally.add(run, outcome);
    }
    tally.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_a_realm_that_lost_60_percent_is_held() {
    scenario("R5-lost-60-percent", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_an_empty_realm_is_held() {
    scenario("R5-empty-realm", 0).await;
}
