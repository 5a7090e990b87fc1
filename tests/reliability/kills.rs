//! R1: `kill -9` of one service in the middle of a run, then a restart; the run ends
//! SUCCEEDED with exactly the expected state, nothing lost, nothing done twice.
//!
//! The fetcher is killed once the run is FETCHING (pages of 5 users), the planner once it
//! is PLANNING, an applier and the control plane once the applier's product (Jira for the
//! control plane) has taken a share of its writes that changes from run to run (20%, 45%,
//! 70%). The fast subset kills the Jira applier in a run of 150 people (~1,000 changes);
//! the full suite kills each service, each of the three appliers, in a run of 320 people
//! (~2,150 changes).

use proto::v1::{Product, RunMode, RunState};

use crate::{
    directory,
    tally::{self, Outcome, Shape, Tally},
};

/// The service a scenario kills.
#[derive(Clone, Copy, Debug)]
enum Target {
    Fetcher,
    Planner,
    Applier(Product),
    ControlPlane,
}

impl Target {
    fn service(self) -> String {
        match self {
            Target::Fetcher => "fetcher".to_owned(),
            Target::Planner => "planner".to_owned(),
            Target::Applier(product) => format!("applier-{}", product_name(product)),
            Target::ControlPlane => "control-plane".to_owned(),
        }
    }
}

fn product_name(product: Product) -> &'static str {
    match product {
        Product::Confluence => "confluence",
        Product::Bitbucket => "bitbucket",
        _ => "jira",
    }
}

/// The share of Jira's writes after which run `run` is broken into.
fn share(run: usize) -> f64 {
    [0.2, 0.45, 0.7][run % 3]
}

/// The full suite's run: ~2,150 changes, Jira answering 10 ms late two at a time.
fn full_shape() -> Shape {
    Shape::new(320, 10)
}

/// One run with `target` killed in its middle and restarted at once.
async fn killed_run(target: Target, shape: &Shape, run: usize) -> anyhow::Result<Outcome> {
    let people = directory::people(shape.people);
    let mut stack = tally::start_stack(&people, shape).await?;
    let started = stack.start_sync(RunMode::Apply).await?;
    let jira_writes = tally::writes_of(&people);
    let (wanted, seen) = match target {
        Target::Fetcher => {
            let seen = tally::wait_state(&stack, &started.run_id, RunState::Fetching).await?;
            (RunState::Fetching, seen)
        }
        Target::Planner => {
            let seen = tally::wait_state(&stack, &started.run_id, RunState::Planning).await?;
            (RunState::Planning, seen)
        }
        Target::Applier(product) => {
            let writes = (jira_writes as f64 * share(run)) as u64;
            tally::wait_writes(&stack, product, writes).await?;
            (RunState::Applying, RunState::Applying)
        }
        Target::ControlPlane => {
            let writes = (jira_writes as f64 * share(run)) as u64;
            tally::wait_writes(&stack, Product::Jira, writes).await?;
            (RunState::Applying, RunState::Applying)
        }
    };
    let watched = match target {
        Target::Applier(product) => product,
        _ => Product::Jira,
    };
    stack.kill_service(&target.service());
    let at_kill = stack.writes(watched).await?;
    stack.start_service(&target.service())?;
    let run_record = tally::wait_terminal(&stack, &started.run_id, tally::RUN_DEADLINE).await?;
    let mut outcome = tally::check_complete(&stack, &run_record, &people).await?;
    if seen != wanted || at_kill >= jira_writes {
        outcome.notes.push(format!(
            "the kill came late: the run was {seen:?}, {watched:?} had {at_kill} of {jira_writes} writes"
        ));
    }
    Ok(outcome)
}

/// Runs R1 against `target` as often as the suite says.
async fn scenario(scenario: &str, target: Target, shape: Shape) {
    let mut tally = Tally::new(scenario);
    for run in 0..tally::runs() {
        let outcome = killed_run(target, &shape, run).await;
        tally.add(run, outcome);
    }
    tally.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_jira_applier_killed_mid_run() {
    let shape = if tally::full() {
        full_shape()
    } else {
        Shape::new(150, 20)
    };
    scenario("R1-applier-jira", Target::Applier(Product::Jira), shape).await;
}

/// The Confluence or Bitbucket applier killed: that product answers 10 ms late, so its
/// writes last long enough to be broken into.
async fn other_applier(scenario_name: &str, product: Product) {
    if tally::skipped_unless_full(scenario_name) {
        return;
    }
    let mut shape = full_shape();
    shape
        .emulator_args
        .insert(product, vec!["--latency-ms".to_owned(), "10".to_owned()]);
    scenario(scenario_name, Target::Applier(product), shape).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_confluence_applier_killed_mid_run() {
    other_applier("R1-applier-confluence", Product::Confluence).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_bitbucket_applier_killed_mid_run() {
    other_applier("R1-applier-bitbucket", Product::Bitbucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_fetcher_killed_mid_fetch() {
    if tally::skipped_unless_full("R1-fetcher") {
        return;
    }
    // Pages of 5 users: the fetch lasts long enough to be broken into.
    let shape = Shape {
        page_size: 5,
        ..full_shape()
    };
    scenario("R1-fetcher", Target::Fetcher, shape).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_planner_killed_mid_plan() {
    if tally::skipped_unless_full("R1-planner") {
        return;
    }
    scenario("R1-planner", Target::Planner, full_shape()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_control_plane_killed_mid_run() {
    if tally::skipped_unless_full("R1-control-plane") {
        return;
    }
    scenario("R1-control-plane", Target::ControlPlane, full_shape()).await;
}
