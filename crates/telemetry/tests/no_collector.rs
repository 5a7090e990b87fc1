//! With no OTLP endpoint configured nothing is exported and nothing errors, yet spans
//! still carry trace context, so a run's trace passes through this service.

#[tokio::test]
async fn without_an_endpoint_nothing_is_exported_but_context_still_flows() {
    // SAFETY: the only test in this binary; nothing else reads the environment now.
    unsafe {
        std::env::remove_var("OTEL_EXPORTER_OTLP_ENDPOINT");
        std::env::remove_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        std::env::remove_var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
    }
    let telemetry = telemetry::init("keysync-test", "info").expect("init");
    assert!(!telemetry.exports_traces());
    assert!(!telemetry.exports_metrics());

    let mut incoming = std::collections::HashMap::new();
    incoming.insert(
        "traceparent".to_owned(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
    );
    let span = tracing::info_span!("plan");
    telemetry::set_parent(&span, &incoming);
    let mut outgoing = std::collections::HashMap::new();
    telemetry::inject(&span, &mut outgoing);
    let traceparent = outgoing.get("traceparent").expect("traceparent");
    assert!(
        traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "the trace id passes through: {traceparent}"
    );
    assert!(
        !traceparent.contains("00f067aa0ba902b7"),
        "a new span id for this hop"
    );
    drop(telemetry);
}
