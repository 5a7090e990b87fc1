//! The applier's metrics, exported by the `telemetry` crate's meter provider (OTLP):
//!
//! - `keysync_changes_applied_total{product, op, outcome}`: changes handled;
//! - `keysync_state_refreshes_total{product, outcome}`: product state reads per run;
//! - `keysync_dead_letters_total{service, product}`: messages dead-lettered;
//! - `keysync_retries_total{product, kind}`: `report` (a `ReportResults` call retried),
//!   `sequence` (a change set handed back to wait for its predecessor), `plan` (one handed
//!   back until the control plane has recorded its run's plan) and `product_api`
//!   (a product API request retried after a 429, 502, 503, 504 or a transport error);
//! - `keysync_product_api_request_duration_seconds{product, method, endpoint, status_class}`:
//!   every HTTP attempt to the product, state reads included; `status_class` is `2xx`,
//!   `3xx`, `4xx`, `5xx` or `error` (no answer);
//! - `keysync_product_api_rate_limited_total{product, method, endpoint}`: 429 answers.
//!
//! The product API ones come from the client's [`atlassian::RequestObserver`] hook
//! ([`ProductApiMetrics`]), so the `atlassian` crate records nothing itself.

use std::sync::Arc;

use atlassian::{RequestEvent, RequestObserver};
use opentelemetry::{
    KeyValue, global,
    metrics::{Counter, Histogram},
};

/// Bucket boundaries of one product API request, in seconds: 5 ms to a minute.
const REQUEST_DURATION_BOUNDARIES: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// The instruments, made once.
pub struct Metrics {
    pub changes: Counter<u64>,
    pub dead_letters: Counter<u64>,
    pub retries: Counter<u64>,
    pub refreshes: Counter<u64>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let meter = global::meter("keysync");
        Metrics {
            changes: meter
                .u64_counter("keysync_changes_applied_total")
                .with_description(
                    "Changes handled by the appliers, by product, operation and outcome.",
                )
                .build(),
            dead_letters: meter
                .u64_counter("keysync_dead_letters_total")
                .with_description("Messages that went to the dead-letter stream, by service.")
                .build(),
            retries: retries_counter(),
            refreshes: meter
                .u64_counter("keysync_state_refreshes_total")
                .with_description(
                    "Product state reads at the start of a run, by product and outcome.",
                )
                .build(),
        }
    }
}

impl Metrics {
    /// Starts the counters of rare events of `product` at zero, so that they are exported
    /// (and a dashboard shows 0, not "no data") before the first one happens.
    pub fn start_at_zero(&self, product: model::state::Product) {
        let product = KeyValue::new("product", product.as_str());
        self.dead_letters
            .add(0, &[KeyValue::new("service", "applier"), product.clone()]);
        for kind in ["report", "sequence", "plan", "product_api"] {
            self.retries
                .add(0, &[product.clone(), KeyValue::new("kind", kind)]);
        }
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

fn retries_counter() -> Counter<u64> {
    global::meter("keysync")
        .u64_counter("keysync_retries_total")
        .with_description(
            "Retries by product and kind: report (ReportResults), sequence (a change set handed \
             back to wait for its predecessor), plan (one handed back until the control plane \
             has recorded its run's plan), product_api (a product request after a 429, 5xx or \
             transport error).",
        )
        .build()
}

/// Records every HTTP attempt of a product client: its latency, whether it is retried,
/// and 429s.
pub struct ProductApiMetrics {
    duration: Histogram<f64>,
    rate_limited: Counter<u64>,
    retries: Counter<u64>,
}

impl ProductApiMetrics {
    /// The observer to give the product client (`atlassian::Client::with_observer`).
    pub fn observer() -> Arc<dyn RequestObserver> {
        let meter = global::meter("keysync");
        Arc::new(ProductApiMetrics {
            duration: meter
                .f64_histogram("keysync_product_api_request_duration_seconds")
                .with_description(
                    "Product REST API requests (every attempt), by product, method, endpoint \
                     and status class.",
                )
                .with_unit("s")
                .with_boundaries(REQUEST_DURATION_BOUNDARIES.to_vec())
                .build(),
            rate_limited: meter
                .u64_counter("keysync_product_api_rate_limited_total")
                .with_description(
                    "Product REST API answers 429 Too Many Requests, by product, method and \
                     endpoint.",
                )
                .build(),
            retries: retries_counter(),
        })
    }
}

/// `2xx`, `3xx`, `4xx`, `5xx`, or `error` for no answer.
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => "other",
        None => "error",
    }
}

impl RequestObserver for ProductApiMetrics {
    fn observe(&self, event: &RequestEvent<'_>) {
        let product = KeyValue::new("product", event.product.to_string());
        let method = KeyValue::new("method", event.method.to_owned());
        let endpoint = KeyValue::new("endpoint", event.endpoint);
        self.duration.record(
            event.elapsed.as_secs_f64(),
            &[
                product.clone(),
                method.clone(),
                endpoint.clone(),
                KeyValue::new("status_class", status_class(event.status)),
            ],
        );
        if event.status == Some(429) {
            self.rate_limited
                .add(1, &[product.clone(), method, endpoint]);
        }
        if event.retried {
            self.retries
                .add(1, &[product, KeyValue::new("kind", "product_api")]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_are_few() {
        let classes: Vec<_> = [
            Some(200),
            Some(204),
            Some(302),
            Some(404),
            Some(429),
            Some(503),
            None,
        ]
        .into_iter()
        .map(status_class)
        .collect();
        assert_eq!(classes, ["2xx", "2xx", "3xx", "4xx", "4xx", "5xx", "error"]);
    }
}
