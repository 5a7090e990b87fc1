//! Telemetry, set up in one place for every service: `tracing` logs to stderr, spans as
//! OpenTelemetry traces and `opentelemetry::global::meter` instruments as metrics.
//!
//! Export follows the standard `OTEL_*` variables: traces and metrics go over OTLP/gRPC
//! to `OTEL_EXPORTER_OTLP_ENDPOINT` (or the per-signal `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! / `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`); `OTEL_TRACES_EXPORTER=none`,
//! `OTEL_METRICS_EXPORTER=none` or `OTEL_SDK_DISABLED=true` turn a signal off. With no
//! endpoint configured nothing is exported and nothing errors; spans still carry trace
//! ids, so a run's context passes through a service that does not export.
//!
//! Every process is a resource with `service.name` and, unless `OTEL_RESOURCE_ATTRIBUTES`
//! names one, `service.instance.id` = `{hostname}:{pid}` (the pod's name on Kubernetes),
//! so the replicas of a service stay apart where metrics are aggregated (the collector's
//! Prometheus exporter makes it the `instance` label, and `service.name` the `job`).
//!
//! A run is one trace: [`inject`] writes the current span's context (W3C
//! `traceparent`) into a carrier (NATS headers in `bus`, gRPC metadata here), and
//! [`set_parent`] continues it on the other side.
//!
//! Architecture invariant: no other crate builds a subscriber or an exporter.

mod shutdown;

pub use shutdown::shutdown_signal;

/// An error and its causes, `: `-separated on one line, for a log field or a reason a
/// person reads (`reading the snapshot: connection refused`).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

use opentelemetry::{
    Context, Key, KeyValue, global,
    propagation::{Extractor, Injector},
    trace::TracerProvider as _,
};
use opentelemetry_sdk::{
    Resource, metrics::SdkMeterProvider, propagation::TraceContextPropagator,
    trace::SdkTracerProvider,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building the OTLP {signal} exporter")]
    Exporter {
        signal: &'static str,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("installing the tracing subscriber")]
    Subscriber(#[source] tracing_subscriber::util::TryInitError),
}

/// What [`init`] set up; dropping it flushes and stops the exporters.
pub struct Telemetry {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    exports_traces: bool,
    exports_metrics: bool,
}

impl Telemetry {
    /// Whether spans leave the process (an OTLP endpoint is configured).
    pub fn exports_traces(&self) -> bool {
        self.exports_traces
    }

    pub fn exports_metrics(&self) -> bool {
        self.exports_metrics
    }

    /// Exports what is buffered now (tests and graceful shutdown).
    pub fn flush(&self) {
        let _ = self.tracer_provider.force_flush();
        let _ = self.meter_provider.force_flush();
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.flush();
        let _ = self.tracer_provider.shutdown();
        let _ = self.meter_provider.shutdown();
    }
}

/// Where the variables say a signal should go, if anywhere.
fn otlp_enabled(signal_exporter_var: &str, signal_endpoint_var: &str) -> bool {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|value| !value.trim().is_empty())
    };
    if var("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true")) {
        return false;
    }
    if var(signal_exporter_var).is_some_and(|value| value.eq_ignore_ascii_case("none")) {
        return false;
    }
    var(signal_endpoint_var).is_some() || var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
}

/// Installs the global subscriber, propagator, tracer and meter provider for
/// `service_name`. Logs use `RUST_LOG`, else `default_filter` (e.g. `info`); spans at
/// INFO and above are traced whatever the log filter says. Set
/// `KEYSYNC_LOG_FORMAT=json` for JSON lines. Call once, inside the tokio runtime.
pub fn init(service_name: &'static str, default_filter: &str) -> Result<Telemetry, Error> {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let mut resource = Resource::builder().with_service_name(service_name).build();
    if resource
        .get(&Key::from_static_str("service.instance.id"))
        .is_none()
    {
        resource = Resource::builder()
            .with_service_name(service_name)
            .with_attribute(KeyValue::new("service.instance.id", instance_id()))
            .build();
    }

    let exports_traces = otlp_enabled("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let mut tracer_builder = SdkTracerProvider::builder().with_resource(resource.clone());
    if exports_traces {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|source| Error::Exporter {
                signal: "traces",
                source,
            })?;
        tracer_builder = tracer_builder.with_batch_exporter(exporter);
    }
    let tracer_provider = tracer_builder.build();
    global::set_tracer_provider(tracer_provider.clone());

    let exports_metrics = otlp_enabled(
        "OTEL_METRICS_EXPORTER",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    );
    let mut meter_builder = SdkMeterProvider::builder().with_resource(resource);
    if exports_metrics {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .build()
            .map_err(|source| Error::Exporter {
                signal: "metrics",
                source,
            })?;
        meter_builder = meter_builder.with_periodic_exporter(exporter);
    }
    let meter_provider = meter_builder.build();
    global::set_meter_provider(meter_provider.clone());

    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("KEYSYNC_LOG_FORMAT").is_ok_and(|format| format == "json");
    let fmt_layer = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };
    // The log filter applies to the log output only: spans at INFO and above always
    // reach OpenTelemetry, so a quiet log level never breaks a run's trace.
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer_provider.tracer(service_name))
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::registry()
        .with(fmt_layer.with_filter(filter))
        .with(otel_layer)
        .try_init()
        .map_err(Error::Subscriber)?;

    Ok(Telemetry {
        tracer_provider,
        meter_provider,
        exports_traces,
        exports_metrics,
    })
}

/// `{hostname}:{pid}`: the host (pod) name from `HOSTNAME` or the kernel, else `unknown`.
fn instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    format!("{host}:{}", std::process::id())
}

/// Writes `span`'s trace context into `carrier`.
pub fn inject(span: &tracing::Span, carrier: &mut dyn Injector) {
    let context = span.context();
    global::get_text_map_propagator(|propagator| propagator.inject_context(&context, carrier));
}

/// Makes the trace context in `carrier`, if any, the parent of `span`.
pub fn set_parent(span: &tracing::Span, carrier: &dyn Extractor) {
    let context: Context =
        global::get_text_map_propagator(|propagator| propagator.extract(carrier));
    let _ = span.set_parent(context);
}

/// gRPC metadata as a propagation carrier.
pub struct GrpcMetadata<'a>(pub &'a mut tonic::metadata::MetadataMap);

impl Injector for GrpcMetadata<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Read-only gRPC metadata as a propagation carrier.
pub struct GrpcMetadataReader<'a>(pub &'a tonic::metadata::MetadataMap);

impl Extractor for GrpcMetadataReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                tonic::metadata::KeyRef::Ascii(key) => Some(key.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// A tonic client interceptor that sends the current span's trace context.
pub fn grpc_client_interceptor(
    mut request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    inject(
        &tracing::Span::current(),
        &mut GrpcMetadata(request.metadata_mut()),
    );
    Ok(request)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_instance_id_is_the_host_and_the_process() {
        let id = super::instance_id();
        let (host, pid) = id.rsplit_once(':').expect("host:pid");
        assert!(!host.is_empty(), "{id}");
        assert_eq!(pid, std::process::id().to_string());
    }
}
