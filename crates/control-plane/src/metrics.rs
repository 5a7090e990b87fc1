//! The control plane's metrics, exported by the `telemetry` crate's meter provider (OTLP):
//! runs started and finished by outcome, run duration, events received and dead-lettered
//! (also counted in the shared `keysync_dead_letters_total{service="control-plane"}`, by
//! the message loop, `bus::worker`), change results by product and outcome, and scheduled
//! runs skipped because their connector was busy, by connector.

use opentelemetry::{
    KeyValue, global,
    metrics::{Counter, Histogram},
};

/// The instruments, made once.
pub struct Metrics {
    runs_started: Counter<u64>,
    runs_finished: Counter<u64>,
    run_duration: Histogram<f64>,
    events_received: Counter<u64>,
    events_dead_lettered: Counter<u64>,
    change_results: Counter<u64>,
    schedule_skipped: Counter<u64>,
}

/// Bucket boundaries of the run duration, in seconds: a second to four hours.
const RUN_DURATION_BOUNDARIES: [f64; 14] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 10800.0,
    14400.0,
];

impl Default for Metrics {
    fn default() -> Metrics {
        let meter = global::meter("keysync-control-plane");
        let metrics = Metrics {
            runs_started: meter
                .u64_counter("keysync_runs_started_total")
                .with_description("Runs started, by trigger and mode.")
                .build(),
            runs_finished: meter
                .u64_counter("keysync_runs_finished_total")
                .with_description("Runs that ended, by outcome and mode.")
                .build(),
            run_duration: meter
                .f64_histogram("keysync_run_duration_seconds")
                .with_description("From a run's creation to its end, by outcome.")
                .with_unit("s")
                .with_boundaries(RUN_DURATION_BOUNDARIES.to_vec())
                .build(),
            events_received: meter
                .u64_counter("keysync_control_plane_events_received_total")
                .with_description("Bus events the control plane received, by kind.")
                .build(),
            events_dead_lettered: meter
                .u64_counter("keysync_control_plane_events_dropped_total")
                .with_description("Bus events that did not decode and were dead-lettered.")
                .build(),
            change_results: meter
                .u64_counter("keysync_change_results_total")
                .with_description(
                    "Change results recorded (repeats not counted), by product and outcome.",
                )
                .build(),
            schedule_skipped: meter
                .u64_counter("keysync_schedule_skipped_total")
                .with_description(
                    "Scheduled runs not started because a run of their connector was active, by connector.",
                )
                .build(),
        };
        // Rare events start at zero, so that they are exported (and a dashboard shows 0,
        // not "no data") before the first one happens.
        metrics.events_dead_lettered.add(0, &[]);
        metrics
    }
}

impl Metrics {
    pub fn run_started(&self, trigger: &'static str, mode: &'static str) {
        self.runs_started.add(
            1,
            &[
                KeyValue::new("trigger", trigger),
                KeyValue::new("mode", mode),
            ],
        );
    }

    pub fn run_finished(&self, outcome: &'static str, mode: &'static str, seconds: f64) {
        let attributes = [
            KeyValue::new("outcome", outcome),
            KeyValue::new("mode", mode),
        ];
        self.runs_finished.add(1, &attributes);
        self.run_duration.record(seconds, &attributes[..1]);
    }

    pub fn event_received(&self, kind: &'static str) {
        self.events_received.add(1, &[KeyValue::new("kind", kind)]);
    }

    /// An event went to the dead-letter stream (which the worker counts in the shared
    /// `keysync_dead_letters_total` itself).
    pub fn event_dead_lettered(&self) {
        self.events_dead_lettered.add(1, &[]);
    }

    /// A scheduled run of `connector` was skipped.
    pub fn schedule_skipped(&self, connector: &str) {
        self.schedule_skipped
            .add(1, &[KeyValue::new("connector", connector.to_owned())]);
    }

    /// Starts the skips of `connector` at zero, so they are exported before the first one.
    pub fn schedule_skipped_start(&self, connector: &str) {
        self.schedule_skipped
            .add(0, &[KeyValue::new("connector", connector.to_owned())]);
    }

    pub fn change_results(&self, product: &'static str, outcome: &'static str, recorded: u64) {
        self.change_results.add(
            recorded,
            &[
                KeyValue::new("product", product),
                KeyValue::new("outcome", outcome),
            ],
        );
    }
}
