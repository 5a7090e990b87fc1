//! The run's state machine, as pure functions: no IO, no clock, no bus.
//!
//! [`next`] is the whole reaction to the fetcher's and planner's events, as a pure function
//! of the run, the event and the [`Context`] (the time of the transition and how long a
//! hold lasts, which the caller reads and passes in); [`count`] and [`settle`] are the
//! reaction to change results. Events can arrive late, twice, or out of order (two
//! replicas share the consumer), so a run only ever moves forward: an event about a stage
//! the run has passed is ignored.
//!
//! A run is *active* ([`is_active`]) from REQUESTED to APPLYING, except HELD: a held run
//! waits for a person, and a new run of its connector may start (and supersedes it).

use std::time::Duration;

use prost_types::Timestamp;
use proto::v1::{self, RunMode, RunState};

/// What a transition needs to know of the world, read by the caller.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Context {
    /// The time of the transition.
    pub now: Timestamp,
    /// How long a run may stay HELD before it can no longer be approved.
    pub hold_expiry: Duration,
}

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

/// The run after `event`, at `context.now`.
pub fn next(run: &v1::Run, event: &Event, context: &Context) -> Transition {
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
        Event::SnapshotReady(ready) if ready.part > 0 => {
            return Transition::Ignore {
                why: "a part of a streamed first sync moves no run".to_owned(),
            };
        }
        Event::PlanReady(ready) if ready.part > 0 => {
            if !before_plan || ready.part <= run.streamed_parts {
                return passed();
            }
            record_part(&mut next, ready);
        }
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
            // What appliers check each change set against before they write.
            next.change_sets = ready.change_sets.clone();
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
                next.hold_expires_at = Some(later(context.now, context.hold_expiry));
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

/// Records the PlanReady of a part of a streamed first sync (`planner::parts`): the
/// manifest of every part's change sets so far, which appliers check the parts' sets
/// against while the run is still fetching or planning, and the parts' changes as planned
/// (the complete plan's PlanReady counts them again, with its own). The state stays.
fn record_part(run: &mut v1::Run, ready: &v1::PlanReady) {
    run.streamed_parts = ready.part;
    run.change_sets = ready.change_sets.clone();
    for summary in &ready.products {
        let planned = summary.changes_by_op.values().sum();
        match run
            .progress
            .iter_mut()
            .find(|progress| progress.product == summary.product)
        {
            Some(progress) => progress.planned = planned,
            None => run.progress.push(v1::ProductProgress {
                product: summary.product,
                planned,
                ..v1::ProductProgress::default()
            }),
        }
    }
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

/// Whether a run in `state` keeps its connector busy: REQUESTED, FETCHING, PLANNING or
/// APPLYING. A HELD run waits for a person and does not.
pub fn is_active(state: RunState) -> bool {
    matches!(
        state,
        RunState::Requested | RunState::Fetching | RunState::Planning | RunState::Applying
    )
}

/// When the hold of `run` expired, if it is HELD and its hold has expired by `now`. A run
/// held before holds expired has no expiry.
pub fn hold_expired(run: &v1::Run, now: &Timestamp) -> Option<Timestamp> {
    if run.state() != RunState::Held {
        return None;
    }
    let expires_at = run.hold_expires_at?;
    ((expires_at.seconds, expires_at.nanos) <= (now.seconds, now.nanos)).then_some(expires_at)
}

/// `time` plus `duration`, saturating at the end of time.
pub fn later(time: Timestamp, duration: Duration) -> Timestamp {
    let seconds = i64::try_from(duration.as_secs()).unwrap_or(i64::MAX);
    let mut nanos = time.nanos + duration.subsec_nanos() as i32;
    let mut seconds = time.seconds.saturating_add(seconds);
    if nanos >= 1_000_000_000 {
        nanos -= 1_000_000_000;
        seconds = seconds.saturating_add(1);
    }
    Timestamp { seconds, nanos }
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
            part: Default::default(),
            schema_version: v1::SCHEMA_VERSION,
            run_id: "01JD000000000000000000000".to_owned(),
            products,
            plan: None,
            held: held.is_some(),
            hold_reason: held.unwrap_or_default().to_owned(),
            change_sets: Some(manifest()),
        })
    }

    fn manifest() -> v1::ObjectRef {
        v1::ObjectRef {
            bucket: "keysync-plans".to_owned(),
            key: "01JD000000000000000000000.sets.pb.zst".to_owned(),
            sha256: "ab".repeat(32),
            size: 64,
        }
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

    const CONTEXT: Context = Context {
        now: Timestamp {
            seconds: 1_795_356_000,
            nanos: 0,
        },
        hold_expiry: Duration::from_secs(3600),
    };

    fn next(run: &v1::Run, event: &Event) -> Transition {
        super::next(run, event, &CONTEXT)
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
    fn a_part_records_its_manifest_without_moving_the_run_and_the_complete_plan_counts_it_all() {
        let part = |number: u32, created: u64| {
            let Event::PlanReady(mut ready) = plan_ready(
                vec![summary(
                    v1::Product::Jira,
                    &[("CHANGE_OP_CREATE_USER", created)],
                )],
                None,
            ) else {
                unreachable!("a PlanReady")
            };
            ready.part = number;
            if let Some(manifest) = &mut ready.change_sets {
                manifest.key = format!("run.sets-part-{number}.pb.zst");
            }
            Event::PlanReady(ready)
        };
        let fetching = run(RunState::Fetching, RunMode::Apply);
        let first = moved_to(next(&fetching, &part(1, 10)));
        assert_eq!(first.state(), RunState::Fetching);
        assert_eq!(first.streamed_parts, 1);
        assert_eq!(first.progress[0].planned, 10);
        assert_eq!(
            first.change_sets.as_ref().map(|object| object.key.as_str()),
            Some("run.sets-part-1.pb.zst")
        );
        let second = moved_to(next(&first, &part(2, 20)));
        assert_eq!(second.streamed_parts, 2);
        assert_eq!(second.progress[0].planned, 20);
        // An older part arriving late never replaces a newer manifest.
        assert!(matches!(
            next(&second, &part(1, 10)),
            Transition::Ignore { .. }
        ));
        // Nor does a part move a run past planning, or a part's snapshot move it at all.
        let snapshot = Event::SnapshotReady(v1::SnapshotReady {
            part: 3,
            ..v1::SnapshotReady::default()
        });
        assert!(matches!(
            next(&second, &snapshot),
            Transition::Ignore { .. }
        ));
        let complete = plan_ready(
            vec![summary(v1::Product::Jira, &[("CHANGE_OP_CREATE_USER", 25)])],
            None,
        );
        let applying = moved_to(next(&second, &complete));
        assert_eq!(applying.state(), RunState::Applying);
        assert_eq!(applying.progress[0].planned, 25);
        assert!(matches!(
            next(&applying, &part(3, 30)),
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
        assert_eq!(
            next.change_sets,
            Some(manifest()),
            "what appliers check sets against"
        );
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
        assert_eq!(
            held.hold_expires_at,
            Some(Timestamp {
                seconds: 1_795_356_000 + 3600,
                nanos: 0
            }),
            "the hold expires hold_expiry after the transition"
        );

        let simulated = moved_to(next(&run(RunState::Planning, RunMode::Simulate), &event));
        assert_eq!(simulated.state(), RunState::Succeeded);
        assert_eq!(simulated.hold_expires_at, None);
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

    #[test]
    fn a_hold_expires_at_its_time_and_only_a_held_run_has_one_that_counts() {
        let mut held = run(RunState::Held, RunMode::Apply);
        assert_eq!(hold_expired(&held, &CONTEXT.now), None, "no expiry: never");
        let expires_at = later(CONTEXT.now, Duration::from_millis(1500));
        assert_eq!(
            expires_at,
            Timestamp {
                seconds: 1_795_356_001,
                nanos: 500_000_000
            }
        );
        held.hold_expires_at = Some(expires_at);
        assert_eq!(hold_expired(&held, &CONTEXT.now), None);
        let just_before = Timestamp {
            seconds: 1_795_356_001,
            nanos: 499_999_999,
        };
        assert_eq!(hold_expired(&held, &just_before), None);
        assert_eq!(hold_expired(&held, &expires_at), Some(expires_at));
        let mut cancelled = held.clone();
        cancelled.set_state(RunState::Cancelled);
        assert_eq!(hold_expired(&cancelled, &expires_at), None);
    }

    #[test]
    fn every_state_up_to_applying_but_held_is_active() {
        let active: Vec<RunState> = [
            RunState::Requested,
            RunState::Fetching,
            RunState::Planning,
            RunState::Held,
            RunState::Applying,
            RunState::Succeeded,
            RunState::Failed,
            RunState::Cancelled,
        ]
        .into_iter()
        .filter(|state| is_active(*state))
        .collect();
        assert_eq!(
            active,
            [
                RunState::Requested,
                RunState::Fetching,
                RunState::Planning,
                RunState::Applying
            ]
        );
    }
}
