//! With an OTLP endpoint configured, spans and metrics reach a real OTLP/gRPC receiver,
//! and a context carried across a process boundary keeps one trace id.
//! (One test per binary: telemetry installs process-wide globals.)

use std::{collections::HashMap, time::Duration};

use test_support::otlp::OtlpReceiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_reach_the_collector_under_one_trace() {
    let receiver = OtlpReceiver::start().await.expect("receiver");
    // SAFETY: the only test in this binary; nothing else reads the environment now.
    unsafe { std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()) };
    let telemetry = telemetry::init("keysync-test", "info").expect("init");
    assert!(telemetry.exports_traces() && telemetry.exports_metrics());

    // The sending side: a run span, its context written into message headers.
    let mut headers = HashMap::new();
    {
        let run = tracing::info_span!("run", run_id = "01JZRUN");
        telemetry::inject(&run, &mut headers);
    }
    assert!(headers.contains_key("traceparent"), "headers: {headers:?}");

    // The receiving side continues the trace.
    {
        let apply = tracing::info_span!("apply");
        telemetry::set_parent(&apply, &headers);
        let _entered = apply.enter();
        tracing::info!("Applying.");
    }
    opentelemetry::global::meter("keysync")
        .u64_counter("keysync_test_changes_total")
        .build()
        .add(3, &[]);
    telemetry.flush();

    let arrived = receiver
        .wait_until(Duration::from_secs(20), |received| {
            received.spans().len() >= 2
                && received.metric_names().contains(&(
                    "keysync-test".to_owned(),
                    "keysync_test_changes_total".to_owned(),
                ))
        })
        .await;
    let spans = receiver.spans();
    assert!(
        arrived,
        "spans: {spans:?}, metrics: {:?}",
        receiver.metric_names()
    );
    let run = spans
        .iter()
        .find(|span| span.name == "run")
        .expect("run span");
    let apply = spans
        .iter()
        .find(|span| span.name == "apply")
        .expect("apply span");
    assert_eq!(run.service, "keysync-test");
    assert_eq!(apply.trace_id, run.trace_id, "one run, one trace");
    assert_eq!(apply.parent_span_id, run.span_id);
    assert!(run.parent_span_id.is_empty());
}
