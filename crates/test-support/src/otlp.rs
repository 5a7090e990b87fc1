//! An in-process OTLP/gRPC receiver on a free port: point `OTEL_EXPORTER_OTLP_ENDPOINT`
//! at [`OtlpReceiver::endpoint`] and read back what was exported.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use anyhow::Context;
use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    common::v1::{AnyValue, KeyValue, any_value},
};
use tokio::sync::Notify;

/// One received span, flattened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedSpan {
    /// The exporting service (`service.name` of the resource).
    pub service: String,
    pub name: String,
    /// Lower-case hex, 32 characters.
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// Every text the span carries besides its ids, as `(key, value)`: its attributes, its
    /// events' names (`event`) and attributes (`event.<key>`), its links' attributes
    /// (`link.<key>`), its status message (`status.message`) and the attributes of its
    /// resource (`resource.<key>`); values rendered as text (arrays and maps as JSON-ish
    /// text). For checks that no secret is exported.
    pub attributes: Vec<(String, String)>,
}

#[derive(Default)]
struct Received {
    spans: Mutex<Vec<ReceivedSpan>>,
    metrics: Mutex<BTreeSet<(String, String)>>,
    arrived: Notify,
}

/// The receiver; it stops when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    received: Arc<Received>,
    _server: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    pub async fn start() -> anyhow::Result<OtlpReceiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the OTLP receiver")?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Received::default());
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Traces(received.clone())))
            .add_service(MetricsServiceServer::new(Metrics(received.clone())))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
        let server = tokio::spawn(async move {
            let _ = server.await;
        });
        Ok(OtlpReceiver {
            addr,
            received,
            _server: server,
        })
    }

    /// `http://127.0.0.1:PORT`, the value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received
            .spans
            .lock()
            .map(|spans| spans.clone())
            .unwrap_or_default()
    }

    /// `(service, metric name)` of every metric received.
    pub fn metric_names(&self) -> BTreeSet<(String, String)> {
        self.received
            .metrics
            .lock()
            .map(|metrics| metrics.clone())
            .unwrap_or_default()
    }

    /// Waits until `done` holds for what was received, or `timeout` passes.
    pub async fn wait_until(
        &self,
        timeout: std::time::Duration,
        mut done: impl FnMut(&OtlpReceiver) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.received.arrived.notified();
            if done(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return done(self);
            }
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self._server.abort();
    }
}

fn service_name(resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    resource
        .into_iter()
        .flat_map(|resource| resource.attributes.iter())
        .find(|attribute| attribute.key == "service.name")
        .and_then(|attribute| attribute.value.as_ref())
        .and_then(|value| match &value.value {
            Some(any_value::Value::StringValue(name)) => Some(name.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// `value` as text: strings as they are, other scalars printed, arrays and maps joined.
fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|value| value.value.as_ref()) {
        None => String::new(),
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::BoolValue(value)) => value.to_string(),
        Some(any_value::Value::IntValue(value)) => value.to_string(),
        Some(any_value::Value::DoubleValue(value)) => value.to_string(),
        Some(any_value::Value::BytesValue(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        Some(any_value::Value::ArrayValue(array)) => {
            let items: Vec<String> = array.values.iter().map(|item| text(Some(item))).collect();
            format!("[{}]", items.join(", "))
        }
        Some(any_value::Value::KvlistValue(list)) => {
            let items: Vec<String> = list
                .values
                .iter()
                .map(|pair| format!("{}: {}", pair.key, text(pair.value.as_ref())))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        // An index into a dictionary this receiver does not keep.
        Some(other) => format!("{other:?}"),
    }
}

/// `(prefix + key, value as text)` of every attribute.
fn flatten<'a>(
    prefix: &'a str,
    attributes: &'a [KeyValue],
) -> impl Iterator<Item = (String, String)> + 'a {
    attributes
        .iter()
        .map(move |pair| (format!("{prefix}{}", pair.key), text(pair.value.as_ref())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

struct Traces(Arc<Received>);

#[tonic::async_trait]
impl TraceService for Traces {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut flat = Vec::new();
        for resource_spans in &request.get_ref().resource_spans {
            let service = service_name(resource_spans.resource.as_ref());
            let resource: Vec<(String, String)> = resource_spans
                .resource
                .iter()
                .flat_map(|resource| flatten("resource.", &resource.attributes))
                .collect();
            for scope_spans in &resource_spans.scope_spans {
                for span in &scope_spans.spans {
                    let mut attributes: Vec<(String, String)> =
                        flatten("", &span.attributes).collect();
                    for event in &span.events {
                        attributes.push(("event".to_owned(), event.name.clone()));
                        attributes.extend(flatten("event.", &event.attributes));
                    }
                    for link in &span.links {
                        attributes.extend(flatten("link.", &link.attributes));
                    }
                    if let Some(status) = &span.status {
                        attributes.push(("status.message".to_owned(), status.message.clone()));
                    }
                    attributes.extend(resource.iter().cloned());
                    flat.push(ReceivedSpan {
                        attributes,
                        service: service.clone(),
                        name: span.name.clone(),
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                    });
                }
            }
        }
        if let Ok(mut spans) = self.0.spans.lock() {
            spans.extend(flat);
        }
        self.0.arrived.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

struct Metrics(Arc<Received>);

#[tonic::async_trait]
impl MetricsService for Metrics {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut names = Vec::new();
        for resource_metrics in &request.get_ref().resource_metrics {
            let service = service_name(resource_metrics.resource.as_ref());
            for scope_metrics in &resource_metrics.scope_metrics {
                for metric in &scope_metrics.metrics {
                    names.push((service.clone(), metric.name.clone()));
                }
            }
        }
        if let Ok(mut metrics) = self.0.metrics.lock() {
            metrics.extend(names);
        }
        self.0.arrived.notify_waiters();
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}
