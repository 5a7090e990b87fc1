//! The fetcher's instruments (OTLP, through the `telemetry` crate):
//! `keysync_fetcher_runs_received_total`, `keysync_fetcher_snapshots_ready_total{connector}`,
//! `keysync_fetcher_snapshots_failed_total{connector}`,
//! `keysync_fetcher_requests_dropped_total` (the worker counts the same messages in
//! `keysync_dead_letters_total{service}`),
//! `keysync_fetcher_fetch_duration_seconds{connector, outcome}` (one whole realm read), and
//! the Keycloak Admin API calls it took, `keysync_fetcher_keycloak_requests_total` and
//! `keysync_fetcher_keycloak_retries_total{connector}`.

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram},
};

pub(crate) struct Metrics {
    pub(crate) received: Counter<u64>,
    pub(crate) ready: Counter<u64>,
    pub(crate) failed: Counter<u64>,
    dropped: Counter<u64>,
    pub(crate) fetch_duration: Histogram<f64>,
    pub(crate) keycloak_requests: Counter<u64>,
    pub(crate) keycloak_retries: Counter<u64>,
}

/// Bucket boundaries of a whole fetch, in seconds: a tenth of a second to an hour.
const FETCH_DURATION_BOUNDARIES: [f64; 14] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let meter = opentelemetry::global::meter("keysync");
        Metrics {
            received: meter
                .u64_counter("keysync_fetcher_runs_received_total")
                .with_description("Run requests received.")
                .build(),
            ready: meter
                .u64_counter("keysync_fetcher_snapshots_ready_total")
                .with_description("Snapshots stored and announced, by connector.")
                .build(),
            failed: meter
                .u64_counter("keysync_fetcher_snapshots_failed_total")
                .with_description("Runs that got SnapshotFailed, by connector.")
                .build(),
            dropped: meter
                .u64_counter("keysync_fetcher_requests_dropped_total")
                .with_description("Run requests dead-lettered because they do not decode.")
                .build(),
            fetch_duration: meter
                .f64_histogram("keysync_fetcher_fetch_duration_seconds")
                .with_description(
                    "Reading one whole realm from Keycloak, by connector and outcome (ok, error).",
                )
                .with_unit("s")
                .with_boundaries(FETCH_DURATION_BOUNDARIES.to_vec())
                .build(),
            keycloak_requests: meter
                .u64_counter("keysync_fetcher_keycloak_requests_total")
                .with_description("Keycloak Admin API responses received, by connector.")
                .build(),
            keycloak_retries: meter
                .u64_counter("keysync_fetcher_keycloak_retries_total")
                .with_description("Keycloak Admin API requests retried, by connector.")
                .build(),
        }
    }

    /// Starts the counters of rare events at zero, so that they are exported (and a
    /// dashboard shows 0, not "no data") before the first one happens.
    pub(crate) fn start_at_zero(&self, connectors: impl Iterator<Item = String>) {
        self.received.add(0, &[]);
        self.dropped.add(0, &[]);
        for connector in connectors {
            let connector = [KeyValue::new("connector", connector)];
            self.ready.add(0, &connector);
            self.failed.add(0, &connector);
            self.keycloak_requests.add(0, &connector);
            self.keycloak_retries.add(0, &connector);
        }
    }

    pub(crate) fn dropped(&self) {
        self.dropped.add(1, &[]);
    }
}
