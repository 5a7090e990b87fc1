//! A message published inside a span carries its trace context in the NATS headers, and
//! the consumer continues the same trace. (Its own binary: telemetry is process-global.)

use std::time::Duration;

use bus::{Bus, Topology};
use futures::StreamExt;
use opentelemetry::trace::TraceContextExt;
use proto::v1::{self, RunRequested};
use test_support::nats::NatsServer;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

fn trace_id(span: &tracing::Span) -> String {
    span.context().span().span_context().trace_id().to_string()
}

#[tokio::test]
async fn consumer_continues_the_publishers_trace() {
    let _telemetry = telemetry::init("bus-test", "warn").expect("telemetry");
    let nats = NatsServer::start().expect("nats-server");
    let bus = Bus::connect(&nats.url(), Topology::new("tr"))
        .await
        .expect("bus");
    let subject = bus.topology().run_requested();
    let run_span = tracing::info_span!("start_sync");
    let published_trace = trace_id(&run_span);
    let request = RunRequested {
        schema_version: v1::SCHEMA_VERSION,
        run_id: "run-1".to_owned(),
        ..RunRequested::default()
    };
    bus.publish(&subject, &request, "run-1")
        .instrument(run_span)
        .await
        .expect("publish");

    let consumer = bus
        .durable_consumer(
            &bus.topology().events_stream(),
            "fetcher",
            &subject,
            Duration::from_secs(30),
        )
        .await
        .expect("consumer");
    let mut messages = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .expect("fetch");
    let message = messages.next().await.expect("a message").expect("message");
    let traceparent = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get("traceparent"))
        .map(|value| value.to_string())
        .expect("traceparent header");
    assert!(
        traceparent.contains(&published_trace),
        "{traceparent} vs {published_trace}"
    );

    let fetch_span = tracing::info_span!("fetch");
    bus::trace::continue_trace(&fetch_span, message.headers.as_ref());
    assert_eq!(trace_id(&fetch_span), published_trace);
}
