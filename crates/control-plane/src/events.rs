//! The consumer of the events that move runs: the fetcher's `SnapshotReady` and
//! `SnapshotFailed`, the planner's `PlanReady` and `PlanFailed`; and of the event
//! follower's `EventsObserved`, which starts runs.
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
//! An `EventsObserved` starts an event run of its connector ([`Runs::start_event_run`]):
//! one of a connector that is not configured, or that names nothing to sync, is
//! dead-lettered. While another run of the connector is active the observation joins what
//! waits for the connector and is acknowledged ([`StepOutcome::Deferred`], quietly:
//! waiting for a run to end is normal, not a failure); what waits is started as one event
//! run when that run ends ([`crate::pending`]). It is never merged into the active run: a
//! run in FETCHING may or may not have read Keycloak yet.
//!
//! The worker's tick ([`Handler::tick`], every [`Runs::sweep_interval`]) is the control
//! plane's periodic work: it cancels the HELD runs whose hold has expired
//! ([`Runs::expire_holds`]) and starts the events observed that still wait for a free
//! connector ([`Runs::start_all_pending`]). Every replica sweeps; the compare-and-set on each run makes
//! one of them cancel it.

use std::{sync::Arc, time::Duration};

use bus::{
    Topology,
    worker::{ConsumerSpec, Delivery, Handler},
};
use proto::v1;
use tracing::Instrument;

use crate::{
    machine::Event,
    runs::{Runs, RunsError},
};

/// How long a replica may hold an event before JetStream gives it to another.
pub const ACK_WAIT: Duration = Duration::from_secs(30);

/// How long an event whose run could not be written waits before it comes back.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);

/// The durable consumer of the events that move runs: `control-plane` on the events
/// stream, filtered on the four events that move runs and the follower's observations.
pub fn consumer_spec(topology: &Topology) -> ConsumerSpec {
    ConsumerSpec {
        stream: topology.events_stream(),
        name: topology.control_plane_consumer(),
        filter_subjects: vec![
            topology.snapshot_ready(),
            topology.snapshot_failed(),
            topology.plan_ready(),
            topology.plan_failed(),
            topology.events_observed(),
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
    /// The message did not decode, or could not be used, and went to the dead-letter
    /// stream.
    DeadLettered,
    /// An `EventsObserved` started this event run.
    Started { run_id: String },
    /// An `EventsObserved` whose connector is busy with `busy_run_id`: it waits, merged
    /// with any other, for that run to end ([`crate::pending`]).
    Deferred { busy_run_id: String },
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
        let started = self.runs.start_all_pending().await;
        if started > 0 {
            tracing::info!(started, "Started event runs of events observed while busy.");
        }
    }

    /// Decodes the event, moves its run (or starts one), and answers what became of it;
    /// an error (the run could not be written, or a bad message not dead-lettered) hands
    /// it back.
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
            let event = match decode(delivery).await? {
                None => {
                    self.runs.metrics().event_dead_lettered();
                    return Ok(StepOutcome::DeadLettered);
                }
                Some(Decoded::Observed(observed)) => {
                    return self.start_event_run(delivery, observed).await;
                }
                Some(Decoded::Run(event)) => event,
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

impl EventHandler {
    /// Starts the event run `observed` asks for, dead-letters an observation the control
    /// plane cannot use, or hands it back while its connector is busy.
    async fn start_event_run(
        &self,
        delivery: &Delivery<'_>,
        observed: v1::EventsObserved,
    ) -> Result<StepOutcome, EventError> {
        let connector = observed.connector.trim();
        let configured = self.runs.connectors();
        let refusal = if !configured.is_empty() && !configured.iter().any(|name| name == connector)
        {
            Some(format!(
                "events observed for connector `{connector}`, which is not configured \
                 (configured: {})",
                configured.join(", ")
            ))
        } else {
            match &observed.trigger {
                Some(trigger) if names_something(trigger) => None,
                _ => Some(
                    "the events observed name no user, no group and no reason for a full sync"
                        .to_owned(),
                ),
            }
        };
        if let Some(reason) = refusal {
            delivery.dead_letter(&reason).await?;
            self.runs.metrics().event_dead_lettered();
            return Ok(StepOutcome::DeadLettered);
        }
        let trigger = observed.trigger.unwrap_or_default();
        match self.runs.start_event_run(connector, trigger.clone()).await {
            Ok(run) => {
                tracing::Span::current().record("run_id", run.run_id.as_str());
                self.runs.metrics().event_received(OBSERVED);
                Ok(StepOutcome::Started { run_id: run.run_id })
            }
            Err(RunsError::Busy { run_id, state, .. }) => {
                // Normal while a run is under way: no warning. The observation joins what
                // waits for the connector and is acknowledged (`crate::pending`).
                tracing::debug!(
                    connector,
                    busy_run_id = %run_id,
                    state,
                    "The connector is busy; the events observed wait for its run to end."
                );
                self.runs.metrics().event_received(OBSERVED);
                match self.runs.defer_event_run(connector, trigger).await? {
                    Some(run) => Ok(StepOutcome::Started { run_id: run.run_id }),
                    None => Ok(StepOutcome::Deferred {
                        busy_run_id: run_id,
                    }),
                }
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// The kind `EventsObserved` is counted as among the events received.
const OBSERVED: &str = "EventsObserved";

/// Whether an observation names something to sync: a user, a group, or a full sync.
fn names_something(trigger: &v1::EventTrigger) -> bool {
    !trigger.user_ids.is_empty()
        || !trigger.group_ids.is_empty()
        || !trigger.full_sync_reason.trim().is_empty()
}

/// A message the control plane follows, decoded.
enum Decoded {
    /// An event that moves a run.
    Run(Event),
    /// The event follower's observation, which starts a run.
    Observed(v1::EventsObserved),
}

/// The message, decoded by its subject, or `None` when it was dead-lettered: it does not
/// decode, its subject is not one the control plane follows, or (an event that moves a
/// run) it has no run id.
async fn decode(delivery: &Delivery<'_>) -> Result<Option<Decoded>, bus::Error> {
    let topology = delivery.bus().topology();
    let subject = delivery.message().subject.as_str();
    if subject == topology.events_observed() {
        return Ok(delivery
            .decode::<v1::EventsObserved>()
            .await?
            .map(Decoded::Observed));
    }
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
    Ok(event.map(Decoded::Run))
}
