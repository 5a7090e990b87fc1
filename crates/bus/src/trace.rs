//! NATS message headers as an OpenTelemetry propagation carrier, so one run is one trace
//! across the services: [`crate::Bus::publish`] writes the current span's `traceparent`,
//! and a consumer continues it with [`continue_trace`].

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector};

/// Headers being written.
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

/// Headers of a received message.
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// Makes the trace in `headers`, if any, the parent of `span`.
pub fn continue_trace(span: &tracing::Span, headers: Option<&HeaderMap>) {
    if let Some(headers) = headers {
        telemetry::set_parent(span, &HeaderExtractor(headers));
    }
}
