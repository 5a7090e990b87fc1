//! The consumer of the events that move runs: the fetcher's `SnapshotReady` and
//! `SnapshotFailed`, the planner's `PlanReady` and `PlanFailed`.
//!
//! The events stream is followed through the durable consumer `control-plane`
//! ([`consumer_spec`]), shared by every replica, by the one message loop every service runs
//! (`bus::worker`); [`EventHandler`] is what the control plane does with one message: decode
//! it by its subject, then apply it to its run ([`Runs::apply_event`], through the state
//! machine in [`crate::machine`]). An event is acknowledged after the run it changes is
//! written (or found not to need a change); one that does not decode is dead-lettered and
//! the consumer goes on; one whose run could not be written comes again after
//! [`RETRY_DELAY`].
//!
//! The worker's tick ([`Handler::tick`], every [`Runs::sweep_interval`]) is the control
//! plane's periodic work: it cancels the HELD runs whose hold has expired
//! ([`Runs::expire_holds`]). Every replica sweeps; the compare-and-set on each run makes
//! one of them cancel it.

use std::{sync::Arc, time::Duration};

use bus::{
    Topology,
    worker::{ConsumerSpec, Delivery, Handler},
};
use proto::v1;
use tracing::Instrument;

use crate::{machine::Event, runs::Runs};

/// How long a replica may hold an event before JetStream gives it to another.
pub const ACK_WAIT: Duration = Duration::from_secs(30);

/// How long an event whose run could not be written waits before it comes back.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);

/// The durable consumer of the events that move runs: `control-plane` on the events
/// stream, filtered on the four events the control plane follows.
pub fn consumer_spec(topology: &Topology) -> ConsumerSpec {
    ConsumerSpec {
        stream: topology.events_stream(),
        name: topology.control_plane_consumer(),
        filter_subjects: vec![
            topology.snapshot_ready(),
            topology.snapshot_failed(),
            topology.plan_ready(),
            topology.plan_failed(),
        ],
        ack_wait: ACK_WAIT,
    }
}

/// What became of one message that was handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// The run moved.
    Advanced,
    /// The run did not need to move, or does not exist.
    Ignored,
    /// The message did not decode and went to the dead-letter stream.
    DeadLettered,
}

/// Why an event could not be handled now; it comes again after [`RETRY_DELAY`].
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The message could not be decoded or dead-lettered.
    #[error(transparent)]
    Bus(#[from] bus::Error),
    /// The run could not be written.
    #[error(transparent)]
    Runs(#[from] crate::runs::RunsError),
}

/// What the control plane does with one event: moves its run.
pub struct EventHandler {
    runs: Arc<Runs>,
}

impl EventHandler {
    pub fn new(runs: Arc<Runs>) -> EventHandler {
        EventHandler { runs }
    }
}

impl Handler for EventHandler {
    type Outcome = StepOutcome;
    type Error = EventError;

    fn tick_interval(&self) -> Option<Duration> {
        Some(self.runs.sweep_interval())
    }

    /// Cancels the runs whose hold has expired.
    async fn tick(&self) {
        match self.runs.expire_holds().await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "Cancelled held runs whose hold expired."),
            Err(error) => tracing::warn!(
                error = %telemetry::error_chain(&error),
                "Could not look for expired holds."
            ),
        }
    }

    /// Decodes the event, moves its run, and answers what became of it; an error (the run
    /// could not be written, or a bad message not dead-lettered) hands it back.
    async fn handle(&self, delivery: &Delivery<'_>) -> Result<StepOutcome, EventError> {
        let message = delivery.message();
        let span = tracing::info_span!(
            "event",
            subject = %message.subject,
            run_id = tracing::field::Empty
        );
        bus::trace::continue_trace(&span, message.headers.as_ref());
        async {
            // An error is logged by the worker, which hands the event back.
            let Some(event) = decode(delivery).await? else {
                self.runs.metrics().event_dead_lettered();
                return Ok(StepOutcome::DeadLettered);
            };
            tracing::Span::current().record("run_id", event.run_id());
            self.runs.metrics().event_received(event.kind());
            Ok(if self.runs.apply_event(&event).await? {
                StepOutcome::Advanced
            } else {
                StepOutcome::Ignored
            })
        }
        .instrument(span)
        .await
    }
}

/// The event in the message, by its subject, or `None` when it was dead-lettered: it does
/// not decode, its subject is not one the control plane follows, or it has no run id.
async fn decode(delivery: &Delivery<'_>) -> Result<Option<Event>, bus::Error> {
    let topology = delivery.bus().topology();
    let subject = delivery.message().subject.as_str();
    let event = if subject == topology.snapshot_ready() {
        delivery
            .decode::<v1::SnapshotReady>()
            .await?
            .map(Event::SnapshotReady)
    } else if subject == topology.snapshot_failed() {
        delivery
            .decode::<v1::SnapshotFailed>()
            .await?
            .map(Event::SnapshotFailed)
    } else if subject == topology.plan_ready() {
        delivery
            .decode::<v1::PlanReady>()
            .await?
            .map(Event::PlanReady)
    } else if subject == topology.plan_failed() {
        delivery
            .decode::<v1::PlanFailed>()
            .await?
            .map(Event::PlanFailed)
    } else {
        delivery
            .dead_letter("the control plane does not consume this subject")
            .await?;
        None
    };
    if let Some(event) = &event
        && event.run_id().is_empty()
    {
        delivery.dead_letter("the event has no run id").await?;
        return Ok(None);
    }
    Ok(event)
}
