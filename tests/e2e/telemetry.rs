//! The observability issue's end-to-end checks: one run is one trace, with spans from
//! the control plane, the fetcher, the planner and every applier; and every metric the
//! Grafana dashboard queries is one the services emit during a real run.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use e2e::{Stack, StackOptions};
use proto::v1::{Product, RunMode};
use test_support::otlp::OtlpReceiver;

use crate::directory;

const SERVICES: [&str; 6] = [
    "keysync-control-plane",
    "keysync-fetcher",
    "keysync-planner",
    "keysync-applier-jira",
    "keysync-applier-confluence",
    "keysync-applier-bitbucket",
];

/// The services' environment: export traces and metrics to `receiver`, often enough
/// that a test need not wait long.
fn exporting_to(receiver: &OtlpReceiver) -> Vec<(String, String)> {
    vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
            receiver.endpoint(),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "200".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL".to_owned(), "500".to_owned()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_is_one_trace_across_every_service() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let people = directory::people(12);
    let stack = Stack::start(StackOptions {
        realm: directory::realm(&people),
        service_env: exporting_to(&receiver),
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts");
    stack.sync(RunMode::Apply).await.unwrap();

    // The trace that holds spans of every service.
    let services_by_trace = |receiver: &OtlpReceiver| {
        let mut by_trace: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for span in receiver.spans() {
            by_trace
                .entry(span.trace_id)
                .or_default()
                .insert(span.service);
        }
        by_trace
    };
    // The run's trace: spans from every service, hanging together (every span but the
    // root has its parent in the trace). Parents end, and so are exported, after their
    // children: wait for them too.
    let roots = |receiver: &OtlpReceiver, trace_id: &str| {
        let spans: Vec<_> = receiver
            .spans()
            .into_iter()
            .filter(|span| span.trace_id == trace_id)
            .collect();
        let ids: BTreeSet<String> = spans.iter().map(|span| span.span_id.clone()).collect();
        spans
            .into_iter()
            .filter(|span| !ids.contains(&span.parent_span_id))
            .collect::<Vec<_>>()
    };
    let run_trace = |receiver: &OtlpReceiver| {
        services_by_trace(receiver)
            .into_iter()
            .find(|(_, services)| SERVICES.iter().all(|service| services.contains(*service)))
            .map(|(trace_id, _)| trace_id)
    };
    let complete = |receiver: &OtlpReceiver| {
        run_trace(receiver).is_some_and(|trace_id| roots(receiver, &trace_id).len() == 1)
    };
    let found = receiver.wait_until(Duration::from_secs(60), complete).await;
    let Some(trace_id) = run_trace(&receiver) else {
        panic!(
            "no trace spans every service; services per trace: {:#?}",
            services_by_trace(&receiver)
        );
    };
    let roots = roots(&receiver, &trace_id);
    assert!(found, "the run's trace has more than one root: {roots:#?}");
    assert_eq!(roots[0].service, "keysync-control-plane");
    assert_eq!(roots[0].name, "StartSync");
    drop(stack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_emitted() {
    let dashboard =
        test_support::deps::workspace_root().join("deploy/grafana/keysync-dashboard.json");
    let queried = test_support::dashboard::metric_names(&dashboard).unwrap();
    assert!(!queried.is_empty(), "the dashboard queries nothing");
    let receiver = OtlpReceiver::start().await.unwrap();
    let people = directory::people(40);
    let mut stack = Stack::start(StackOptions {
        realm: directory::realm(&people),
        // A rate-limited Jira; the noisy neighbour below makes the applier meet 429s.
        emulator_args: [(
            Product::Jira,
            vec!["--rate-limit".to_owned(), "10".to_owned()],
        )]
        .into(),
        service_env: exporting_to(&receiver),
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts");
    // A dead letter on the way: a change set nobody can decode.
    let topology = bus::Topology::new(&stack.prefix);
    async_nats::jetstream::new(stack.bus().await.unwrap())
        .publish(
            topology.changes("confluence"),
            b"\x00garbage".to_vec().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    stack.sync(RunMode::Simulate).await.unwrap();
    // The real sync shares Jira's rate limit with a noisy neighbour (another integration
    // on the same account) that keeps the bucket empty, so the applier's pacer, which
    // follows the X-RateLimit headers, still meets 429s. The neighbour stops once the
    // applier has reported one.
    let run = stack.start_sync(RunMode::Apply).await.unwrap();
    let neighbour = {
        let url = format!("{}/rest/api/2/myself", stack.emulators[&Product::Jira].url);
        let http = reqwest::Client::new();
        tokio::spawn(async move {
            loop {
                let _ = http.get(&url).send().await;
            }
        })
    };
    let rate_limited = |receiver: &OtlpReceiver| {
        receiver.metric_names().iter().any(|(service, name)| {
            service == "keysync-applier-jira" && name == "keysync_product_api_rate_limited_total"
        })
    };
    let throttled = receiver
        .wait_until(Duration::from_secs(60), rate_limited)
        .await;
    neighbour.abort();
    assert!(
        throttled,
        "the Jira applier never reported a 429: the rate-limit metric is not exercised"
    );
    let run = stack.wait_for(&run.run_id, e2e::TERMINAL).await.unwrap();
    assert_eq!(run.state(), proto::v1::RunState::Succeeded, "{run:?}");
    let emitted = |receiver: &OtlpReceiver| {
        receiver
            .metric_names()
            .into_iter()
            .map(|(_, name)| name)
            .collect::<BTreeSet<String>>()
    };
    receiver
        .wait_until(Duration::from_secs(60), |receiver| {
            queried.is_subset(&emitted(receiver))
        })
        .await;
    let emitted = emitted(&receiver);
    let missing: Vec<&String> = queried.difference(&emitted).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics no service emitted in a real run: {missing:?}\nemitted: {emitted:?}"
    );
    assert!(stack.is_running("applier-confluence"));
}
