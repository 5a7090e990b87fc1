//! The planner's instruments (OTLP, through the `telemetry` crate):
//! `keysync_plans_total{outcome}` (planned, held, failed) and
//! `keysync_change_sets_published_total{product}`. Messages that do not decode are counted
//! by the worker in `keysync_dead_letters_total{service, kind}` (`bus::worker`).

use opentelemetry::{KeyValue, metrics::Counter};

/// Counters, made once.
pub(crate) struct Metrics {
    pub(crate) plans: Counter<u64>,
    pub(crate) change_sets: Counter<u64>,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let meter = opentelemetry::global::meter("keysync");
        Metrics {
            plans: meter
                .u64_counter("keysync_plans_total")
                .with_description("Runs planned, by outcome (planned, held, failed).")
                .build(),
            change_sets: meter
                .u64_counter("keysync_change_sets_published_total")
                .with_description("Change sets the planner published, by product.")
                .build(),
        }
    }

    /// Starts the counters of rare events at zero, so that they are exported (and a
    /// dashboard shows 0, not "no data") before the first one happens.
    pub(crate) fn start_at_zero(&self) {
        for outcome in ["planned", "held", "failed"] {
            self.plans.add(0, &[KeyValue::new("outcome", outcome)]);
        }
    }
}
