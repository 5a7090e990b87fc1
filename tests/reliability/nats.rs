//! R2: nats-server killed (`kill -9`) in the middle of a run and started again on the same
//! port with the same JetStream store; the services, not restarted, reconnect and the run
//! ends SUCCEEDED with exactly the expected state.
//!
//! The harness's `NatsServer` cannot start again, so [`restart`] starts a second
//! nats-server with the same flags; the first one's store directory lives as long as the
//! stack.
//!
//! R2-cluster: a three-node JetStream cluster (`test_support::nats_cluster`, three
//! nats-servers on loopback) behind every service, with `[bus] replicas = 3` (through
//! `KEYSYNC_BUS__REPLICAS`); once Jira has taken a third of its writes one node is killed
//! (`kill -9`) and stays down: the meta leader on even runs, the node every service first
//! connected to on odd ones. The run must end SUCCEEDED with exactly the expected state,
//! every service still running, and every stream of the cluster (the buckets' included)
//! with three replicas, before the kill (or the run is not attempted further) and after.
//!
//! `[bus] nats_url` names the first node only: `bus` hands the string to async-nats's
//! `connect(&str)`, which parses one address, so a comma-separated list is refused
//! ("invalid port number"). The services learn the other two nodes from the cluster
//! (`connect_urls` in the server's `INFO`; async-nats keeps discovered servers), which is
//! what lets them move to another node when theirs dies.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use e2e::{Stack, StackOptions};
use futures::StreamExt;
use proto::v1::{Product, RunMode};
use test_support::{
    nats_cluster::NatsCluster,
    process::{Tethered, log_dir, log_tail},
};

use crate::{
    directory,
    tally::{self, Outcome, Shape, Tally},
};

/// The services of a stack, which must survive NATS going away.
const SERVICES: [&str; 6] = [
    "control-plane",
    "fetcher",
    "planner",
    "applier-jira",
    "applier-confluence",
    "applier-bitbucket",
];

/// Kills the stack's nats-server and starts another on its port and store; answers it
/// once JetStream is healthy again. `down` is how long NATS stays away.
pub async fn restart(stack: &mut Stack, down: Duration) -> anyhow::Result<Tethered> {
    let port = stack.nats.port();
    let monitor = stack.nats.monitor_url();
    let monitor_port = monitor
        .rsplit(':')
        .next()
        .context("the monitor URL has a port")?
        .to_owned();
    let store = stack.nats.store_dir().display().to_string();
    stack.nats.kill();
    tokio::time::sleep(down).await;
    let binary = test_support::deps::existing_path("KEYSYNC_NATS_SERVER")?;
    let log = log_dir().join(format!("nats-{port}-restarted.log"));
    let args: Vec<String> = [
        "-js",
        "-a",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-m",
        &monitor_port,
        "-sd",
        &store,
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let mut server = Tethered::spawn(&binary, &args, &[], &log)?;
    let http = reqwest::Client::new();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.exited() {
            bail!("nats-server exited with {status}:\n{}", log_tail(&log, 20));
        }
        let healthy = http
            .get(format!("{monitor}/healthz?js-enabled-only=true"))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success());
        if healthy {
            return Ok(server);
        }
        if Instant::now() > until {
            bail!(
                "the restarted nats-server is not healthy:\n{}",
                log_tail(&log, 20)
            );
        }
        tokio::time::sleep(tally::POLL).await;
    }
}

/// One run with NATS restarted once Jira has taken a third of its writes.
async fn restarted_run(shape: &Shape, run: usize) -> anyhow::Result<Outcome> {
    let people = directory::people(shape.people);
    let mut stack = tally::start_stack(&people, shape).await?;
    let started = stack.start_sync(RunMode::Apply).await?;
    let jira_writes = tally::writes_of(&people);
    tally::wait_writes(&stack, Product::Jira, jira_writes / 3).await?;
    // Down for a moment the first time, longer the next ones: the clients' reconnect
    // attempts meet a refused port for a while.
    let down = Duration::from_millis([0, 2_000, 5_000][run % 3]);
    let _nats = restart(&mut stack, down).await?;
    let at_restart = stack.writes(Product::Jira).await?;
    let run_record = tally::wait_terminal(&stack, &started.run_id, tally::RUN_DEADLINE).await?;
    let mut outcome = tally::check_complete(&stack, &run_record, &people).await?;
    for service in SERVICES {
        if !stack.is_running(service) {
            outcome.succeeded = false;
            outcome
                .notes
                .push(format!("{service} exited when NATS went away"));
        }
    }
    if at_restart >= jira_writes {
        outcome
            .notes
            .push("NATS came back after the run's writes".to_owned());
    }
    Ok(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_nats_restarted_mid_run() {
    let shape = if tally::full() {
        Shape::new(320, 10)
    } else {
        Shape::new(150, 20)
    };
    let mut tally = Tally::new("R2-nats-restart");
    for run in 0..tally::runs() {
        let outcome = restarted_run(&shape, run).await;
        tally.add(run, outcome);
    }
    tally.finish();
}

/// A stack whose services use `cluster`, with streams of three replicas.
async fn cluster_stack(
    people: &[directory::Person],
    shape: &Shape,
    cluster: &NatsCluster,
) -> anyhow::Result<Stack> {
    Stack::start(StackOptions {
        realm: directory::realm(people),
        emulator_args: [(
            Product::Jira,
            vec!["--latency-ms".to_owned(), shape.jira_latency_ms.to_string()],
        )]
        .into(),
        product_config: [(Product::Jira, "max_concurrency = 2".to_owned())].into(),
        extra_config: format!(
            "[planner]\nchange_set_size = {}\n\n[fetcher]\nack_wait_seconds = 5\n",
            shape.change_set_size
        ),
        service_env: vec![
            (
                "KEYSYNC_KEYCLOAK__E2E__PAGE_SIZE".to_owned(),
                shape.page_size.to_string(),
            ),
            ("KEYSYNC_BUS__REPLICAS".to_owned(), "3".to_owned()),
        ],
        // One node: see the module doc.
        nats_url: Some(cluster.nodes[0].url()),
        ..StackOptions::default()
    })
    .await
    .context("the stack starts on the cluster")
}

/// The streams of the cluster (key-value buckets and object stores included) that have
/// fewer than three replicas, as `NAME=R`.
async fn unreplicated_streams(cluster: &NatsCluster) -> anyhow::Result<Vec<String>> {
    let client = async_nats::connect(cluster.live_url()?)
        .await
        .context("connecting to the cluster")?;
    let jetstream = async_nats::jetstream::new(client);
    let mut streams = jetstream.streams();
    let mut short = Vec::new();
    let mut seen = 0;
    while let Some(info) = streams.next().await {
        let info = info.map_err(|error| anyhow::anyhow!("listing streams: {error}"))?;
        seen += 1;
        if info.config.num_replicas < 3 {
            short.push(format!("{}={}", info.config.name, info.config.num_replicas));
        }
    }
    if seen == 0 {
        bail!("the cluster has no streams");
    }
    Ok(short)
}

/// One run with a node of the cluster killed once Jira has taken a third of its writes.
async fn cluster_run(shape: &Shape, run: usize) -> anyhow::Result<Outcome> {
    let people = directory::people(shape.people);
    let mut cluster = NatsCluster::start().await?;
    let mut stack = cluster_stack(&people, shape, &cluster).await?;
    let started = stack.start_sync(RunMode::Apply).await?;
    let jira_writes = tally::writes_of(&people);
    tally::wait_writes(&stack, Product::Jira, jira_writes / 3).await?;
    // Without three replicas of everything, losing a node loses data: the run would only
    // stall until the deadline, so say why at once.
    let short = unreplicated_streams(&cluster).await?;
    if !short.is_empty() {
        return Ok(Outcome {
            notes: vec![format!(
                "before the kill, streams with fewer than 3 replicas: {short:?}"
            )],
            ..Outcome::default()
        });
    }
    let leader = cluster.meta_leader().await?;
    let leader = cluster
        .index_of(&leader)
        .with_context(|| format!("no node named {leader}"))?;
    let victim = if run.is_multiple_of(2) { leader } else { 0 };
    cluster.kill(victim);
    let at_kill = stack.writes(Product::Jira).await?;
    let run_record = tally::wait_terminal(&stack, &started.run_id, tally::RUN_DEADLINE).await?;
    let mut outcome = tally::check_complete(&stack, &run_record, &people).await?;
    for service in SERVICES {
        if !stack.is_running(service) {
            outcome.succeeded = false;
            outcome
                .notes
                .push(format!("{service} exited when a NATS node went away"));
        }
    }
    let short = unreplicated_streams(&cluster).await?;
    if !short.is_empty() {
        outcome.succeeded = false;
        outcome
            .notes
            .push(format!("streams with fewer than 3 replicas: {short:?}"));
    }
    if at_kill >= jira_writes {
        outcome
            .notes
            .push("the node was killed after the run's writes".to_owned());
    }
    Ok(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_cluster() {
    if tally::skipped_unless_full("R2-cluster") {
        return;
    }
    let shape = Shape::new(320, 10);
    let mut tally = Tally::new("R2-cluster");
    for run in 0..tally::runs() {
        let outcome = cluster_run(&shape, run).await;
        tally.add(run, outcome);
    }
    tally.finish();
}
