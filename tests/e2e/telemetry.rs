//! The observability issue's end-to-end checks: one run is one trace, with spans from
//! the control plane, the fetcher, the planner and every applier; and every metric the
//! Grafana dashboard queries is one the services emit during a real run.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use e2e::{Stack, StackOptions};
use proto::v1::RunMode;
use test_support::otlp::OtlpReceiver;

use crate::directory;

const SERVICES: [&str; 6] = [
    "keysync-control-plane",
    "fetcher",
    "planner",
    "applier-jira",
    "applier-confluence",
    "applier-bitbucket",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_is_one_trace_across_every_service() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let people = directory::people(12);
    let stack = Stack::start(StackOptions {
        realm: directory::realm(&people),
        service_env: vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                receiver.endpoint(),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "200".to_owned()),
            ("OTEL_METRIC_EXPORT_INTERVAL".to_owned(), "500".to_owned()),
        ],
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
