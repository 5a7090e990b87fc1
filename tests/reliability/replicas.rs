//! R7: two replicas of every applier and two of the control plane, through a run of
//! ~20,000 changes (3,000 people, every product answering 10 ms late); one replica of
//! each applier is killed (`kill -9`) once its product has taken 30% of its writes, one
//! control plane once Jira has taken 60%, and none comes back. The run ends SUCCEEDED,
//! nothing lost, nothing done twice.
//!
//! The harness names one process per service, so the second replicas are started here,
//! from the same binaries and configuration; the second control plane listens on its own
//! port (`KEYSYNC_CONTROL_PLANE__LISTEN`). With no load balancer in front of the API, the
//! services and the test reach the first control plane only, so the one killed is the
//! second: it shares the event consumer, and the events it held come back to the first.

use std::path::PathBuf;

use anyhow::Context;
use e2e::Stack;
use proto::v1::{Product, RunMode};
use test_support::process::{Tethered, free_port, log_dir};

use crate::{
    directory,
    tally::{self, Outcome, Shape, Tally},
};

/// The directory of the service binaries (the harness builds them before a stack starts):
/// `target/<profile>`, next to this test's `deps`.
fn binaries() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .and_then(std::path::Path::parent)
        .context("the test binary is not in target/<profile>/deps")?
        .to_owned())
}

/// Starts a second replica of `program` with `args` after `--config`.
fn second_replica(
    stack: &Stack,
    program: &str,
    args: &[&str],
    env: &[(&str, String)],
) -> anyhow::Result<Tethered> {
    let mut all_args = vec![
        "--config".to_owned(),
        stack.config_path().display().to_string(),
    ];
    all_args.extend(args.iter().map(|arg| (*arg).to_owned()));
    let mut all_env = vec![("RUST_LOG", "info".to_owned())];
    all_env.extend(env.iter().cloned());
    // One file per replica: the three second appliers must not write over each other.
    let name = args
        .last()
        .map_or(program.to_owned(), |last| format!("{program}-{last}"));
    let log = log_dir().join(format!("{}-{name}-replica-2.log", stack.prefix));
    Tethered::spawn(&binaries()?.join(program), &all_args, &all_env, &log)
}

/// One run with a replica of each killed mid-run.
async fn replicated_run(shape: &Shape) -> anyhow::Result<Outcome> {
    let people = directory::people(shape.people);
    let mut stack = tally::start_stack(&people, shape).await?;
    let mut env: Vec<(&str, String)> = shape
        .service_env
        .iter()
        .map(|(key, value)| (key.as_str(), value.clone()))
        .collect();
    env.push((
        "KEYSYNC_KEYCLOAK__E2E__PAGE_SIZE",
        shape.page_size.to_string(),
    ));
    let mut appliers = Vec::new();
    for product in ["jira", "confluence", "bitbucket"] {
        appliers.push((
            product,
            second_replica(&stack, "applier", &["--product", product], &env)?,
        ));
    }
    env.push((
        "KEYSYNC_CONTROL_PLANE__LISTEN",
        format!("127.0.0.1:{}", free_port()?),
    ));
    let mut control_plane = second_replica(&stack, "control-plane", &[], &env)?;
    let started = stack.start_sync(RunMode::Apply).await?;
    let writes = tally::writes_of(&people);
    for (product, service) in [
        (Product::Jira, "applier-jira"),
        (Product::Confluence, "applier-confluence"),
        (Product::Bitbucket, "applier-bitbucket"),
    ] {
        tally::wait_writes(&stack, product, writes * 3 / 10).await?;
        stack.kill_service(service);
    }
    tally::wait_writes(&stack, Product::Jira, writes * 6 / 10).await?;
    control_plane.kill();
    // 20,000 changes take longer than the other scenarios' runs.
    let run = tally::wait_terminal(&stack, &started.run_id, 3 * tally::RUN_DEADLINE).await?;
    let mut outcome = tally::check_complete(&stack, &run, &people).await?;
    for (product, applier) in &mut appliers {
        if applier.exited().is_some() {
            outcome
                .notes
                .push(format!("the second {product} applier exited"));
            outcome.succeeded = false;
        }
    }
    Ok(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r7_replicas_one_of_each_killed() {
    if tally::skipped_unless_full("R7-replicas") {
        return;
    }
    let mut tally = Tally::new("R7-replicas");
    for run in 0..tally::runs() {
        let mut shape = Shape::new(3_000, 10);
        for product in [Product::Confluence, Product::Bitbucket] {
            shape
                .emulator_args
                .insert(product, vec!["--latency-ms".to_owned(), "10".to_owned()]);
        }
        let outcome = replicated_run(&shape).await;
        tally.add(run, outcome);
    }
    tally.finish();
}
