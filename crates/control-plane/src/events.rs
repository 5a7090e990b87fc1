//! The run's state machine, and the consumer that drives it from the bus.
//!
//! [`next`] is the whole reaction to the fetcher's and planner's events, as a pure function
//! of the run and the event; [`count`] and [`settle`] are the reaction to change results.
//! Events can arrive late, twice, or out of order (two replicas share the consumer), so a
//! run only ever moves forward: an event about a stage the run has passed is ignored.
//!
//! [`consume`] follows the events stream through the durable consumer `control-plane`,
//! shared by every replica. An event is acknowledged after the run it changes is written
//! (or found not to need a change); one that does not decode is dead-lettered and the
//! consumer goes on.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use bus::{Bus, health::Health};
use futures::StreamExt;
use proto::v1::{self, RunMode, RunState};
use tokio::sync::watch;
use tracing::Instrument;

use crate::runs::Runs;

/// How long a replica may hold an event before JetStream gives it to another.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// How long an event whose run could not be written waits before it comes back, and how
/// long the consumer waits before it binds again.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Receive errors in a row after which the pull stream is made again.
const MAX_FAILURES_IN_A_ROW: u32 = 10;

/// An event on the bus that moves a run.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    SnapshotReady(v1::SnapshotReady),
    SnapshotFailed(v1::SnapshotFailed),
    PlanReady(v1::PlanReady),
    PlanFailed(v1::PlanFailed),
}

impl Event {
    pub fn run_id(&self) -> &str {
        match self {
            Event::SnapshotReady(event) => &event.run_id,
            Event::SnapshotFailed(event) => &event.run_id,
            Event::PlanReady(event) => &event.run_id,
            Event::PlanFailed(event) => &event.run_id,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Event::SnapshotReady(_) => "SnapshotReady",
            Event::SnapshotFailed(_) => "SnapshotFailed",
            Event::PlanReady(_) => "PlanReady",
            Event::PlanFailed(_) => "PlanFailed",
        }
    }
}

/// What an event does to a run.
#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    /// The run stays as it is: it has finished, or has moved past what the event is about.
    Ignore { why: String },
    /// The run becomes this (timestamps aside, which the store sets).
    To(Box<v1::Run>),
}

/// The run after `event`.
pub fn next(run: &v1::Run, event: &Event) -> Transition {
    let state = run.state();
    if is_terminal(state) {
        return Transition::Ignore {
            why: format!("the run is {}", state_name(state)),
        };
    }
    let before_planning = matches!(state, RunState::Requested | RunState::Fetching);
    let before_plan = before_planning || state == RunState::Planning;
    let passed = || Transition::Ignore {
        why: format!("the run is {} already", state_name(state)),
    };
    let mut next = run.clone();
    match event {
        Event::SnapshotReady(_) => {
            if !before_planning {
                return passed();
            }
            next.set_state(RunState::Planning);
        }
        Event::SnapshotFailed(failed) => {
            if !before_plan {
                return passed();
            }
            next.set_state(RunState::Failed);
            next.reason = format!("fetch failed: {}", failed.reason);
        }
        Event::PlanFailed(failed) => {
            if !before_plan {
                return passed();
            }
            next.set_state(RunState::Failed);
            next.reason = format!("planning failed: {}", failed.reason);
        }
        Event::PlanReady(ready) => {
            if !before_plan {
                return passed();
            }
            next.plan = ready.products.clone();
            next.progress = ready
                .products
                .iter()
                .map(|summary| {
                    let counted = run
                        .progress
                        .iter()
                        .find(|progress| progress.product == summary.product)
                        .copied()
                        .unwrap_or_default();
                    v1::ProductProgress {
                        product: summary.product,
                        planned: summary.changes_by_op.values().sum(),
                        ..counted
                    }
                })
                .collect();
            // Results counted before the plan was known (an applier can be faster than
            // this event) keep their products.
            for counted in &run.progress {
                if !next
                    .progress
                    .iter()
                    .any(|progress| progress.product == counted.product)
                {
                    next.progress.push(*counted);
                }
            }
            let planned: u64 = next.progress.iter().map(|progress| progress.planned).sum();
            let hold_reason = hold_reason(ready);
            if run.mode() == RunMode::Simulate {
                next.set_state(RunState::Succeeded);
                if let Some(hold_reason) = hold_reason {
                    next.reason = format!("a real run would be held: {hold_reason}");
                }
            } else if let Some(hold_reason) = hold_reason {
                next.set_state(RunState::Held);
                next.reason = hold_reason;
            } else if planned == 0 {
                next.set_state(RunState::Succeeded);
            } else {
                next.set_state(RunState::Applying);
                settle(&mut next);
            }
        }
    }
    Transition::To(Box::new(next))
}

/// Adds `results` to the run's progress, product by product.
pub fn count(run: &mut v1::Run, results: &[v1::ChangeResult]) {
    for result in results {
        let index = match run
            .progress
            .iter()
            .position(|progress| progress.product == result.product)
        {
            Some(index) => index,
            None => {
                run.progress.push(v1::ProductProgress {
                    product: result.product,
                    ..v1::ProductProgress::default()
                });
                run.progress.len() - 1
            }
        };
        let progress = &mut run.progress[index];
        match result.outcome() {
            v1::ChangeOutcome::Applied => progress.applied += 1,
            v1::ChangeOutcome::AlreadyDone => progress.already_done += 1,
            v1::ChangeOutcome::Skipped => progress.skipped += 1,
            v1::ChangeOutcome::Failed => progress.failed += 1,
            // The API refuses these; a result is never "planned".
            v1::ChangeOutcome::Unspecified | v1::ChangeOutcome::Planned => {}
        }
    }
}

/// Finishes an applying run once every planned change of every product has a result:
/// SUCCEEDED when none failed, else FAILED with how many did. Answers whether it did.
pub fn settle(run: &mut v1::Run) -> bool {
    if run.state() != RunState::Applying {
        return false;
    }
    let complete = run
        .progress
        .iter()
        .all(|progress| done(progress) >= progress.planned);
    if !complete {
        return false;
    }
    let failed: u64 = run.progress.iter().map(|progress| progress.failed).sum();
    if failed == 0 {
        run.set_state(RunState::Succeeded);
        run.reason.clear();
    } else {
        run.set_state(RunState::Failed);
        run.reason = if failed == 1 {
            "1 change failed".to_owned()
        } else {
            format!("{failed} changes failed")
        };
    }
    true
}

/// Changes of a product that have a result.
pub fn done(progress: &v1::ProductProgress) -> u64 {
    progress.applied + progress.already_done + progress.skipped + progress.failed
}

/// Whether a run in `state` has ended.
pub fn is_terminal(state: RunState) -> bool {
    matches!(
        state,
        RunState::Succeeded | RunState::Failed | RunState::Cancelled
    )
}

/// `APPLYING` for `RUN_STATE_APPLYING`.
pub fn state_name(state: RunState) -> &'static str {
    let name = state.as_str_name();
    name.strip_prefix("RUN_STATE_").unwrap_or(name)
}

fn hold_reason(ready: &v1::PlanReady) -> Option<String> {
    if !ready.held {
        return None;
    }
    if !ready.hold_reason.is_empty() {
        return Some(ready.hold_reason.clone());
    }
    let per_product: Vec<String> = ready
        .products
        .iter()
        .filter(|summary| !summary.hold_reason.is_empty())
        .map(|summary| {
            format!(
                "{}: {}",
                summary.product().as_str_name(),
                summary.hold_reason
            )
        })
        .collect();
    if per_product.is_empty() {
        return Some("the safety limit holds the plan".to_owned());
    }
    Some(per_product.join("; "))
}

/// The durable consumer of the events that move runs, made when the service is built so a
/// bus problem shows at start.
pub struct EventConsumer {
    consumer: PullConsumer,
}

impl EventConsumer {
    /// Creates or binds the durable consumer `control-plane` on the events stream.
    pub async fn create(bus: &Bus) -> Result<EventConsumer, bus::Error> {
        let topology = bus.topology();
        let consumer = bus
            .durable_consumer_of_subjects(
                &topology.events_stream(),
                &topology.control_plane_consumer(),
                &[
                    topology.snapshot_ready(),
                    topology.snapshot_failed(),
                    topology.plan_ready(),
                    topology.plan_failed(),
                ],
                ACK_WAIT,
            )
            .await?;
        Ok(EventConsumer { consumer })
    }

    /// The JetStream consumer, to watch its lag.
    pub fn pull_consumer(&self) -> &PullConsumer {
        &self.consumer
    }
}

/// What became of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// The run moved.
    Advanced,
    /// The run did not need to move, or does not exist.
    Ignored,
    /// The message did not decode and went to the dead-letter stream.
    DeadLettered,
    /// The run could not be written; the message comes back after a delay.
    Retry,
}

/// Follows the events until `stop` turns true, finishing the event in hand. If the
/// consumer's message stream ends or keeps failing (the consumer was deleted, the server
/// restarted), the consumer is bound again, or made again, after a pause. `health` is
/// ready while the consumer is pulled from.
pub async fn consume(
    consumer: EventConsumer,
    runs: Arc<Runs>,
    mut stop: watch::Receiver<bool>,
    health: Health,
) -> Result<(), bus::Error> {
    let name = runs.bus().topology().control_plane_consumer();
    let mut consumer = Some(consumer.consumer);
    loop {
        let pull = match consumer.take() {
            Some(pull) => Ok(pull),
            None => EventConsumer::create(runs.bus())
                .await
                .map(|created| created.consumer),
        };
        match pull {
            Ok(pull) => match pull.messages().await {
                Ok(messages) => {
                    health.set_ready(&name, true);
                    let stopped = follow(messages, &runs, &mut stop).await;
                    health.set_ready(&name, false);
                    if stopped {
                        return Ok(());
                    }
                    tracing::warn!("The event stream ended; binding the consumer again.");
                }
                Err(error) => {
                    tracing::warn!(error = %error, "Cannot pull events; trying again.");
                }
            },
            Err(error) => {
                tracing::warn!(error = %error, "Cannot bind the event consumer; trying again.");
            }
        }
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
            () = tokio::time::sleep(RETRY_DELAY) => {}
        }
    }
}

/// Handles the messages of one pull stream; answers true when `stop` turned true, false
/// when the stream ended or failed too often in a row.
async fn follow(
    mut messages: jetstream::consumer::pull::Stream,
    runs: &Runs,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let mut failures_in_a_row = 0;
    loop {
        let message = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return true,
            message = messages.next() => message,
        };
        match message {
            None => return false,
            Some(Err(error)) => {
                failures_in_a_row += 1;
                tracing::warn!(error = %error, failures_in_a_row, "Receiving events failed.");
                if failures_in_a_row >= MAX_FAILURES_IN_A_ROW {
                    return false;
                }
            }
            Some(Ok(message)) => {
                failures_in_a_row = 0;
                step(runs, &message).await;
            }
        }
    }
}

/// Handles one message: decodes it, moves its run, acknowledges it.
pub async fn step(runs: &Runs, message: &jetstream::Message) -> StepOutcome {
    let span =
        tracing::info_span!("event", subject = %message.subject, run_id = tracing::field::Empty);
    bus::trace::continue_trace(&span, message.headers.as_ref());
    async {
        let outcome = match decode(runs.bus(), message).await {
            Ok(Some(event)) => {
                tracing::Span::current().record("run_id", event.run_id());
                runs.metrics().event_received(event.kind());
                match runs.apply_event(&event).await {
                    Ok(true) => StepOutcome::Advanced,
                    Ok(false) => StepOutcome::Ignored,
                    Err(error) => {
                        tracing::warn!(error = %error, "Could not record an event; it will be retried.");
                        StepOutcome::Retry
                    }
                }
            }
            Ok(None) => {
                runs.metrics().event_dead_lettered();
                return StepOutcome::DeadLettered;
            }
            Err(error) => {
                tracing::warn!(error = %error, "Could not dead-letter an event; it will be retried.");
                StepOutcome::Retry
            }
        };
        let acked = if outcome == StepOutcome::Retry {
            message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await
        } else {
            message.ack().await
        };
        if let Err(error) = acked {
            tracing::warn!(error = %error, "Could not acknowledge an event; it will come again.");
        }
        outcome
    }
    .instrument(span)
    .await
}

/// The event in `message`, or `None` when it was dead-lettered.
async fn decode(bus: &Bus, message: &jetstream::Message) -> Result<Option<Event>, bus::Error> {
    let topology = bus.topology();
    let subject = message.subject.as_str();
    let event = if subject == topology.snapshot_ready() {
        bus.decode_or_dead_letter(message)
            .await?
            .map(Event::SnapshotReady)
    } else if subject == topology.snapshot_failed() {
        bus.decode_or_dead_letter(message)
            .await?
            .map(Event::SnapshotFailed)
    } else if subject == topology.plan_ready() {
        bus.decode_or_dead_letter(message)
            .await?
            .map(Event::PlanReady)
    } else if subject == topology.plan_failed() {
        bus.decode_or_dead_letter(message)
            .await?
            .map(Event::PlanFailed)
    } else {
        bus.dead_letter(message, "the control plane does not consume this subject")
            .await?;
        None
    };
    if let Some(event) = &event
        && event.run_id().is_empty()
    {
        bus.dead_letter(message, "the event has no run id").await?;
        return Ok(None);
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn run(state: RunState, mode: RunMode) -> v1::Run {
        let mut run = v1::Run {
            run_id: "01JD000000000000000000000".to_owned(),
            ..v1::Run::default()
        };
        run.set_state(state);
        run.set_mode(mode);
        run
    }

    fn summary(product: v1::Product, changes: &[(&str, u64)]) -> v1::PlanSummary {
        v1::PlanSummary {
            product: product as i32,
            changes_by_op: changes
                .iter()
                .map(|(op, n)| ((*op).to_owned(), *n))
                .collect::<HashMap<_, _>>(),
            ..v1::PlanSummary::default()
        }
    }

    fn plan_ready(products: Vec<v1::PlanSummary>, held: Option<&str>) -> Event {
        Event::PlanReady(v1::PlanReady {
            schema_version: v1::SCHEMA_VERSION,
            run_id: "01JD000000000000000000000".to_owned(),
            products,
            plan: None,
            held: held.is_some(),
            hold_reason: held.unwrap_or_default().to_owned(),
        })
    }

    fn result(product: v1::Product, outcome: v1::ChangeOutcome) -> v1::ChangeResult {
        let mut result = v1::ChangeResult {
            change_id: "c".to_owned(),
            ..v1::ChangeResult::default()
        };
        result.set_product(product);
        result.set_outcome(outcome);
        result
    }

    fn moved_to(transition: Transition) -> v1::Run {
        match transition {
            Transition::To(run) => *run,
            Transition::Ignore { why } => panic!("ignored: {why}"),
        }
    }

    #[test]
    fn snapshot_ready_moves_a_fetching_or_requested_run_to_planning() {
        for state in [RunState::Requested, RunState::Fetching] {
            let event = Event::SnapshotReady(v1::SnapshotReady::default());
            let next = moved_to(next(&run(state, RunMode::Apply), &event));
            assert_eq!(next.state(), RunState::Planning);
        }
    }

    #[test]
    fn snapshot_ready_is_ignored_once_the_run_is_past_fetching() {
        for state in [
            RunState::Planning,
            RunState::Held,
            RunState::Applying,
            RunState::Succeeded,
            RunState::Cancelled,
        ] {
            let event = Event::SnapshotReady(v1::SnapshotReady::default());
            assert!(
                matches!(
                    next(&run(state, RunMode::Apply), &event),
                    Transition::Ignore { .. }
                ),
                "{state:?}"
            );
        }
    }

    #[test]
    fn snapshot_failed_fails_the_run_with_the_reason() {
        let event = Event::SnapshotFailed(v1::SnapshotFailed {
            reason: "Keycloak answered 401".to_owned(),
            ..v1::SnapshotFailed::default()
        });
        let next = moved_to(next(&run(RunState::Fetching, RunMode::Apply), &event));
        assert_eq!(next.state(), RunState::Failed);
        assert_eq!(next.reason, "fetch failed: Keycloak answered 401");
    }

    #[test]
    fn plan_failed_fails_a_planning_run_and_is_ignored_by_a_cancelled_one() {
        let event = Event::PlanFailed(v1::PlanFailed {
            reason: "no state for jira".to_owned(),
            ..v1::PlanFailed::default()
        });
        let next_run = moved_to(next(&run(RunState::Planning, RunMode::Apply), &event));
        assert_eq!(next_run.state(), RunState::Failed);
        assert_eq!(next_run.reason, "planning failed: no state for jira");
        assert!(matches!(
            next(&run(RunState::Cancelled, RunMode::Apply), &event),
            Transition::Ignore { .. }
        ));
    }

    #[test]
    fn plan_ready_with_changes_moves_an_apply_run_to_applying_with_planned_counts() {
        let event = plan_ready(
            vec![
                summary(
                    v1::Product::Jira,
                    &[
                        ("CHANGE_OP_CREATE_USER", 3),
                        ("CHANGE_OP_ADD_MEMBERSHIP", 2),
                    ],
                ),
                summary(v1::Product::Confluence, &[]),
            ],
            None,
        );
        let next = moved_to(next(&run(RunState::Planning, RunMode::Apply), &event));
        assert_eq!(next.state(), RunState::Applying);
        assert_eq!(next.plan.len(), 2);
        let planned: Vec<(i32, u64)> = next
            .progress
            .iter()
            .map(|progress| (progress.product, progress.planned))
            .collect();
        assert_eq!(
            planned,
            [
                (v1::Product::Jira as i32, 5),
                (v1::Product::Confluence as i32, 0)
            ]
        );
    }

    #[test]
    fn plan_ready_finishes_a_simulated_run_and_one_without_changes() {
        let with_changes = plan_ready(
            vec![summary(v1::Product::Jira, &[("CHANGE_OP_CREATE_USER", 3)])],
            None,
        );
        let simulated = moved_to(next(
            &run(RunState::Planning, RunMode::Simulate),
            &with_changes,
        ));
        assert_eq!(simulated.state(), RunState::Succeeded);
        assert_eq!(simulated.progress[0].planned, 3);

        let nothing = plan_ready(vec![summary(v1::Product::Jira, &[])], None);
        let applied = moved_to(next(&run(RunState::Planning, RunMode::Apply), &nothing));
        assert_eq!(applied.state(), RunState::Succeeded);
    }

    #[test]
    fn a_held_plan_holds_an_apply_run_and_only_notes_it_on_a_simulated_one() {
        let event = plan_ready(
            vec![summary(v1::Product::Jira, &[("CHANGE_OP_DELETE_USER", 50)])],
            Some("50 deletions exceed the limit of 10"),
        );
        let held = moved_to(next(&run(RunState::Planning, RunMode::Apply), &event));
        assert_eq!(held.state(), RunState::Held);
        assert_eq!(held.reason, "50 deletions exceed the limit of 10");

        let simulated = moved_to(next(&run(RunState::Planning, RunMode::Simulate), &event));
        assert_eq!(simulated.state(), RunState::Succeeded);
        assert_eq!(
            simulated.reason,
            "a real run would be held: 50 deletions exceed the limit of 10"
        );
    }

    #[test]
    fn a_held_plan_without_a_reason_names_the_products_holds() {
        let mut jira = summary(v1::Product::Jira, &[("CHANGE_OP_DELETE_USER", 50)]);
        jira.hold_reason = "too many deletions".to_owned();
        let event = plan_ready(vec![jira], Some(""));
        let held = moved_to(next(&run(RunState::Planning, RunMode::Apply), &event));
        assert_eq!(held.reason, "PRODUCT_JIRA: too many deletions");
    }

    #[test]
    fn plan_ready_keeps_results_counted_before_it_and_can_finish_the_run() {
        let mut early = run(RunState::Planning, RunMode::Apply);
        count(
            &mut early,
            &[
                result(v1::Product::Jira, v1::ChangeOutcome::Applied),
                result(v1::Product::Jira, v1::ChangeOutcome::Failed),
            ],
        );
        let event = plan_ready(
            vec![summary(v1::Product::Jira, &[("CHANGE_OP_CREATE_USER", 2)])],
            None,
        );
        let next = moved_to(next(&early, &event));
        assert_eq!(next.progress[0].applied, 1);
        assert_eq!(next.state(), RunState::Failed);
        assert_eq!(next.reason, "1 change failed");
    }

    #[test]
    fn every_event_is_ignored_by_a_finished_run() {
        for state in [RunState::Succeeded, RunState::Failed, RunState::Cancelled] {
            let event = plan_ready(vec![], None);
            assert_eq!(
                next(&run(state, RunMode::Apply), &event),
                Transition::Ignore {
                    why: format!("the run is {}", state_name(state))
                }
            );
        }
    }

    #[test]
    fn settle_finishes_only_when_every_product_has_every_result() {
        let mut applying = run(RunState::Applying, RunMode::Apply);
        applying.progress = vec![
            v1::ProductProgress {
                product: v1::Product::Jira as i32,
                planned: 2,
                ..v1::ProductProgress::default()
            },
            v1::ProductProgress {
                product: v1::Product::Bitbucket as i32,
                planned: 1,
                ..v1::ProductProgress::default()
            },
        ];
        count(
            &mut applying,
            &[
                result(v1::Product::Jira, v1::ChangeOutcome::Applied),
                result(v1::Product::Jira, v1::ChangeOutcome::AlreadyDone),
            ],
        );
        assert!(!settle(&mut applying));
        assert_eq!(applying.state(), RunState::Applying);
        count(
            &mut applying,
            &[result(v1::Product::Bitbucket, v1::ChangeOutcome::Skipped)],
        );
        assert!(settle(&mut applying));
        assert_eq!(applying.state(), RunState::Succeeded);
    }

    #[test]
    fn settle_fails_the_run_with_the_number_of_failed_changes() {
        let mut applying = run(RunState::Applying, RunMode::Apply);
        applying.progress = vec![v1::ProductProgress {
            product: v1::Product::Jira as i32,
            planned: 3,
            ..v1::ProductProgress::default()
        }];
        count(
            &mut applying,
            &[
                result(v1::Product::Jira, v1::ChangeOutcome::Failed),
                result(v1::Product::Jira, v1::ChangeOutcome::Failed),
                result(v1::Product::Jira, v1::ChangeOutcome::Applied),
            ],
        );
        assert!(settle(&mut applying));
        assert_eq!(applying.state(), RunState::Failed);
        assert_eq!(applying.reason, "2 changes failed");
    }

    #[test]
    fn settle_leaves_a_cancelled_run_cancelled() {
        let mut cancelled = run(RunState::Cancelled, RunMode::Apply);
        count(
            &mut cancelled,
            &[result(v1::Product::Jira, v1::ChangeOutcome::Applied)],
        );
        assert!(!settle(&mut cancelled));
        assert_eq!(cancelled.state(), RunState::Cancelled);
        assert_eq!(cancelled.progress[0].applied, 1);
    }
}
