//! R3: the products answer about a third of their calls with 503 or with 429 and a
//! Retry-After, for the whole run (reads of the product state included); the run ends
//! SUCCEEDED with exactly the expected state.
//!
//! Jira and Bitbucket answer every third request 503 (`--fail-503-every 3`); Confluence
//! every fourth, and throttles past 20 requests a second (`--rate-limit 20`: 429 with
//! Retry-After). The appliers' pacer reads the emulator's `X-RateLimit-*` headers and stays
//! under that limit, so every product also answers every 23rd request 429 with
//! `Retry-After: 1` whatever the rate (`--fail-429-every 23`: a limit the pacer cannot see
//! coming), and the scenario checks that each served them. The share of faults each
//! emulator served is printed.

use proto::v1::{Product, RunMode};

use crate::{
    directory,
    tally::{self, Outcome, Shape, Tally},
};

/// Every product answers every this many requests 429 (`--fail-429-every`).
const INJECTED_429_EVERY: u64 = 23;

/// One run against failing products; `faults` gets each emulator's share of faults.
async fn throttled_run(shape: &Shape, faults: &mut Vec<String>) -> anyhow::Result<Outcome> {
    let people = directory::people(shape.people);
    let stack = tally::start_stack(&people, shape).await?;
    let started = stack.start_sync(RunMode::Apply).await?;
    let run = tally::wait_terminal(&stack, &started.run_id, tally::RUN_DEADLINE).await?;
    for product in e2e::PRODUCTS {
        let counters = &stack.emulator_state(product).await?["counters"];
        let count = |key: &str| counters[key].as_u64().unwrap_or(0);
        let requests = count("requests").max(1);
        // Every 23rd request of the run was a 429, rate or not.
        anyhow::ensure!(
            count("throttled") >= requests / INJECTED_429_EVERY,
            "{product:?} answered {} 429s to {requests} requests",
            count("throttled")
        );
        faults.push(format!(
            "{product:?}: {} of {requests} requests 503, {} 429 ({:.0}%)",
            count("unavailable"),
            count("throttled"),
            100.0 * (count("unavailable") + count("throttled")) as f64 / requests as f64
        ));
    }
    tally::check_complete(&stack, &run, &people).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_products_answer_503_and_429_throughout() {
    if tally::skipped_unless_full("R3-503-429") {
        return;
    }
    let every = |n: &str| {
        vec![
            "--fail-503-every".to_owned(),
            n.to_owned(),
            "--fail-429-every".to_owned(),
            INJECTED_429_EVERY.to_string(),
        ]
    };
    let mut shape = Shape::new(200, 0);
    shape.emulator_args = [
        (Product::Jira, every("3")),
        (Product::Confluence, {
            let mut args = every("4");
            args.extend(["--rate-limit".to_owned(), "20".to_owned()]);
            args
        }),
        (Product::Bitbucket, every("3")),
    ]
    .into();
    let mut tally = Tally::new("R3-503-429");
    for run in 0..tally::runs() {
        let mut faults = Vec::new();
        let outcome = throttled_run(&shape, &mut faults).await;
        tally.add(run, outcome);
        for fault in faults {
            tally.note(format!("run {run}: {fault}"));
        }
    }
    tally.finish();
}
