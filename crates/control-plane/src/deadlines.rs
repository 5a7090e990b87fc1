//! Runs always end: how long a run may stay in each state, and the reason a run past its
//! deadline fails with, as pure functions of the run and the time (no IO, no clock).
//!
//! A run can otherwise wait forever: a dead-lettered `SnapshotReady` or change set, a
//! product whose applier is not running, a replica that stopped between recording an
//! approval and publishing it. Every replica's reaper ([`crate::reaper`]) looks every
//! `[control_plane] deadline_sweep_seconds` (5 s) and fails the runs [`overdue`] names:
//!
//! | state                 | counted from                  | deadline (default)                          |
//! |-----------------------|-------------------------------|---------------------------------------------|
//! | REQUESTED, FETCHING   | the run's creation            | `fetch_deadline_seconds` (1800 s)           |
//! | PLANNING              | entering PLANNING             | `plan_deadline_seconds` (600 s)             |
//! | APPLYING              | entering APPLYING (approval)  | `apply_deadline_seconds` (600 s) + `apply_deadline_per_change_ms` (100 ms) per planned change |
//! | HELD                  | —                             | none: a hold waits for a person, and `hold_expiry` ends it |
//!
//! The apply deadline scales with the run's size: its plan summaries count the changes of
//! each product, so a run of 400 changes has 640 s. A run past it fails naming every
//! product with changes unreported ("apply deadline of 640 s passed with jira: 120 of 400
//! changes unreported"); a product that reported nothing at all is named as having no
//! applier ("no applier for confluence reported anything").
//!
//! Sooner than that, a run APPLYING for `absent_applier_seconds` (60 s) fails when a product
//! with changes unreported has no applier replica running ([`absent_applier`]): each replica
//! announces itself every 10 s in a bucket that forgets an announcement after 30 s
//! (`bus::liveness`), since the control plane may not read the appliers' consumers.
//!
//! When a run entered its state is stored beside it (`StoredRun::state_since`); a run
//! stored before that was recorded counts from its approval (APPLYING) or its last write.

use std::{collections::BTreeSet, time::Duration};

use prost_types::Timestamp;
use proto::v1::{self, Product, RunState};
use settings::control_plane::ControlPlaneSettings;

use crate::machine::{done, later, state_name};

/// How long a run may stay in each state, from `[control_plane]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// REQUESTED and FETCHING, from the run's creation.
    pub fetch: Duration,
    /// PLANNING.
    pub plan: Duration,
    /// APPLYING, before the changes are counted.
    pub apply: Duration,
    /// What each planned change adds to the apply deadline.
    pub apply_per_change: Duration,
    /// How often the reaper looks for runs past their deadline.
    pub sweep_interval: Duration,
    /// How long an APPLYING run waits on a product with no running applier.
    pub absent_applier: Duration,
}

impl Default for Deadlines {
    /// The documented defaults: 1800 s, 600 s, 600 s + 100 ms per change, every 5 s.
    fn default() -> Deadlines {
        Deadlines {
            fetch: Duration::from_secs(1800),
            plan: Duration::from_secs(600),
            apply: Duration::from_secs(600),
            apply_per_change: Duration::from_millis(100),
            sweep_interval: Duration::from_secs(5),
            absent_applier: Duration::from_secs(60),
        }
    }
}

impl Deadlines {
    pub fn from_settings(settings: &ControlPlaneSettings) -> Deadlines {
        Deadlines {
            fetch: Duration::from_secs(settings.fetch_deadline_seconds),
            plan: Duration::from_secs(settings.plan_deadline_seconds),
            apply: Duration::from_secs(settings.apply_deadline_seconds),
            apply_per_change: Duration::from_millis(settings.apply_deadline_per_change_ms),
            // Zero is refused by the settings' checks; never spin.
            sweep_interval: Duration::from_secs(settings.deadline_sweep_seconds.max(1)),
            absent_applier: Duration::from_secs(settings.absent_applier_seconds),
        }
    }

    /// The apply deadline of a run of `planned` changes: the base plus the per-change time
    /// for each, saturating.
    pub fn apply_for(&self, planned: u64) -> Duration {
        let per_change = u32::try_from(planned)
            .map(|planned| self.apply_per_change.saturating_mul(planned))
            .unwrap_or(Duration::MAX);
        self.apply.saturating_add(per_change)
    }

    /// How long `run` may stay in its state; `None` for HELD and ended runs, which have no
    /// deadline here.
    pub fn limit(&self, run: &v1::Run) -> Option<Duration> {
        match run.state() {
            RunState::Requested | RunState::Fetching => Some(self.fetch),
            RunState::Planning => Some(self.plan),
            RunState::Applying => Some(self.apply_for(planned(run))),
            _ => None,
        }
    }
}

/// Every planned change of the run, all products together.
pub fn planned(run: &v1::Run) -> u64 {
    run.progress
        .iter()
        .map(|progress| progress.planned)
        .fold(0u64, u64::saturating_add)
}

/// When the deadline of `run` started counting: its creation while it fetches, else when it
/// entered its state (`state_since`), or for runs stored before that was recorded its
/// approval (APPLYING) or its last write.
pub fn counted_from(run: &v1::Run, state_since: Option<Timestamp>) -> Option<Timestamp> {
    match run.state() {
        RunState::Requested | RunState::Fetching => run.created_at.or(state_since),
        RunState::Applying => state_since.or(run.approved_at).or(run.updated_at),
        _ => state_since.or(run.updated_at),
    }
    .or(run.created_at)
}

/// When the run's deadline passes, if its state has one.
pub fn due_at(
    run: &v1::Run,
    state_since: Option<Timestamp>,
    deadlines: &Deadlines,
) -> Option<Timestamp> {
    let limit = deadlines.limit(run)?;
    let from = counted_from(run, state_since)?;
    Some(later(from, limit))
}

/// The reason to fail `run` with at `now`, if the deadline of its state has passed
/// (at the deadline exactly included); `None` for a run within it, HELD, or ended.
pub fn overdue(
    run: &v1::Run,
    state_since: Option<Timestamp>,
    now: &Timestamp,
    deadlines: &Deadlines,
) -> Option<String> {
    let due = due_at(run, state_since, deadlines)?;
    if (now.seconds, now.nanos) < (due.seconds, due.nanos) {
        return None;
    }
    let limit = deadlines.limit(run)?;
    let limit_text = seconds_text(limit);
    let state = run.state();
    Some(match state {
        RunState::Requested | RunState::Fetching => format!(
            "fetch deadline of {limit_text} passed while {}: the fetcher reported no snapshot",
            state_name(state)
        ),
        RunState::Planning => {
            format!(
                "plan deadline of {limit_text} passed while PLANNING: the planner reported no plan"
            )
        }
        _ => apply_reason(run, &limit_text),
    })
}

/// The reason to fail an APPLYING `run` at `now` because a product with changes
/// unreported has no running applier (`live` are the products that have one,
/// `bus::liveness`), once the run has been APPLYING for `deadlines.absent_applier`; `None`
/// otherwise. A replica that announced itself within the last 30 s counts as running, so a
/// restarting applier does not fail the run.
pub fn absent_applier(
    run: &v1::Run,
    state_since: Option<Timestamp>,
    now: &Timestamp,
    deadlines: &Deadlines,
    live: &BTreeSet<String>,
) -> Option<String> {
    if run.state() != RunState::Applying {
        return None;
    }
    let due = later(counted_from(run, state_since)?, deadlines.absent_applier);
    if (now.seconds, now.nanos) < (due.seconds, due.nanos) {
        return None;
    }
    let absent: Vec<String> = run
        .progress
        .iter()
        .filter(|progress| done(progress) < progress.planned)
        .filter(|progress| !live.contains(&product_name(progress.product)))
        .map(|progress| {
            format!(
                "{} ({} of {} changes unreported)",
                product_name(progress.product),
                progress.planned - done(progress),
                progress.planned
            )
        })
        .collect();
    if absent.is_empty() {
        return None;
    }
    Some(format!(
        "no applier is running for {}: none announced itself for {}",
        absent.join(", "),
        seconds_text(deadlines.absent_applier)
    ))
}

/// "apply deadline of 640 s passed with jira: 120 of 400 changes unreported; no applier for
/// confluence reported anything (3 of 3 changes unreported)".
fn apply_reason(run: &v1::Run, limit_text: &str) -> String {
    let products: Vec<String> = run
        .progress
        .iter()
        .filter(|progress| done(progress) < progress.planned)
        .map(|progress| {
            let name = product_name(progress.product);
            let reported = done(progress);
            let unreported = progress.planned - reported;
            let changes = if progress.planned == 1 { "change" } else { "changes" };
            if reported == 0 {
                format!(
                    "no applier for {name} reported anything ({unreported} of {} {changes} unreported)",
                    progress.planned
                )
            } else {
                format!("{name}: {unreported} of {} {changes} unreported", progress.planned)
            }
        })
        .collect();
    if products.is_empty() {
        return format!("apply deadline of {limit_text} passed");
    }
    format!(
        "apply deadline of {limit_text} passed with {}",
        products.join("; ")
    )
}

/// `jira` for `PRODUCT_JIRA`; a number the wire does not know is named as such.
pub fn product_name(product: i32) -> String {
    match Product::try_from(product) {
        Ok(product) => {
            let name = product.as_str_name();
            name.strip_prefix("PRODUCT_").unwrap_or(name).to_lowercase()
        }
        Err(_) => format!("product {product}"),
    }
}

/// `600 s`, or `600.4 s` when the duration is not whole seconds (to the millisecond).
pub fn seconds_text(duration: Duration) -> String {
    let millis = duration.subsec_millis();
    if millis == 0 {
        return format!("{} s", duration.as_secs());
    }
    let fraction = format!("{millis:03}");
    format!(
        "{}.{} s",
        duration.as_secs(),
        fraction.trim_end_matches('0')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREATED: i64 = 1_795_356_000;

    fn at(seconds: i64) -> Timestamp {
        Timestamp { seconds, nanos: 0 }
    }

    fn run(state: RunState) -> v1::Run {
        let mut run = v1::Run {
            run_id: "01JD000000000000000000000".to_owned(),
            created_at: Some(at(CREATED)),
            updated_at: Some(at(CREATED + 5)),
            ..v1::Run::default()
        };
        run.set_state(state);
        run
    }

    fn progress(product: Product, planned: u64, applied: u64, failed: u64) -> v1::ProductProgress {
        v1::ProductProgress {
            product: product as i32,
            planned,
            applied,
            failed,
            ..v1::ProductProgress::default()
        }
    }

    #[test]
    fn the_defaults_are_the_documented_ones_and_the_settings_set_them() {
        let deadlines = Deadlines::default();
        assert_eq!(deadlines.fetch, Duration::from_secs(1800));
        assert_eq!(deadlines.plan, Duration::from_secs(600));
        assert_eq!(deadlines.apply_for(0), Duration::from_secs(600));
        assert_eq!(deadlines.apply_for(400), Duration::from_secs(640));
        assert_eq!(deadlines.apply_for(3), Duration::from_millis(600_300));
        assert_eq!(deadlines.sweep_interval, Duration::from_secs(5));
        assert_eq!(deadlines.apply_for(u64::MAX), Duration::MAX, "saturates");
    }

    #[test]
    fn the_settings_keys_set_the_deadlines_and_zero_is_refused() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let token = dir.path().join("token");
        std::fs::write(&token, "t0123456789abcdef0123456789abcdef\n").expect("writes");
        let load = |keys: &str| {
            let file = dir.path().join("keysync.toml");
            let toml = format!(
                "[control_plane]\ntoken_file = \"{}\"\n{keys}",
                token.display()
            );
            std::fs::write(&file, toml).expect("writes");
            settings::control_plane::Settings::load(Some(&file))
        };
        let defaults = load("").expect("loads");
        assert_eq!(
            Deadlines::from_settings(&defaults.control_plane),
            Deadlines::default()
        );
        let set = load(
            "fetch_deadline_seconds = 60\nplan_deadline_seconds = 30\napply_deadline_seconds = 20\n\
             apply_deadline_per_change_ms = 0\ndeadline_sweep_seconds = 1\n",
        )
        .expect("loads");
        assert_eq!(
            Deadlines::from_settings(&set.control_plane),
            Deadlines {
                fetch: Duration::from_secs(60),
                plan: Duration::from_secs(30),
                apply: Duration::from_secs(20),
                apply_per_change: Duration::ZERO,
                sweep_interval: Duration::from_secs(1),
                absent_applier: Duration::from_secs(60),
            }
        );
        for key in [
            "fetch_deadline_seconds",
            "plan_deadline_seconds",
            "apply_deadline_seconds",
            "deadline_sweep_seconds",
        ] {
            let error = load(&format!("{key} = 0\n")).expect_err(key).to_string();
            assert!(error.contains(&format!("control_plane.{key}")), "{error}");
        }
    }

    #[test]
    fn the_apply_deadline_counts_every_products_planned_changes() {
        let mut applying = run(RunState::Applying);
        applying.progress = vec![
            progress(Product::Jira, 300, 0, 0),
            progress(Product::Confluence, 100, 0, 0),
        ];
        assert_eq!(
            Deadlines::default().limit(&applying),
            Some(Duration::from_secs(640))
        );
        assert_eq!(Deadlines::default().limit(&run(RunState::Held)), None);
        for ended in [RunState::Succeeded, RunState::Failed, RunState::Cancelled] {
            assert_eq!(Deadlines::default().limit(&run(ended)), None, "{ended:?}");
        }
    }

    #[test]
    fn fetching_counts_from_creation_and_the_other_states_from_entering_them() {
        let deadlines = Deadlines::default();
        let since = Some(at(CREATED + 100));
        let fetching = run(RunState::Fetching);
        assert_eq!(
            due_at(&fetching, since, &deadlines),
            Some(at(CREATED + 1800))
        );
        let planning = run(RunState::Planning);
        assert_eq!(
            due_at(&planning, since, &deadlines),
            Some(at(CREATED + 700))
        );
        // Stored before `state_since` was recorded: the last write, or the approval.
        assert_eq!(due_at(&planning, None, &deadlines), Some(at(CREATED + 605)));
        let mut approved = run(RunState::Applying);
        approved.approved_at = Some(at(CREATED + 50));
        assert_eq!(due_at(&approved, None, &deadlines), Some(at(CREATED + 650)));
        assert_eq!(
            due_at(&approved, since, &deadlines),
            Some(at(CREATED + 700))
        );
    }

    #[test]
    fn a_run_is_overdue_from_its_deadline_on_and_the_reason_names_the_state() {
        let deadlines = Deadlines::default();
        let fetching = run(RunState::Fetching);
        assert_eq!(
            overdue(&fetching, None, &at(CREATED + 1799), &deadlines),
            None
        );
        assert_eq!(
            overdue(&fetching, None, &at(CREATED + 1800), &deadlines).as_deref(),
            Some(
                "fetch deadline of 1800 s passed while FETCHING: the fetcher reported no snapshot"
            )
        );
        let planning = run(RunState::Planning);
        let since = Some(at(CREATED + 10));
        assert_eq!(
            overdue(&planning, since, &at(CREATED + 609), &deadlines),
            None
        );
        assert_eq!(
            overdue(&planning, since, &at(CREATED + 610), &deadlines).as_deref(),
            Some("plan deadline of 600 s passed while PLANNING: the planner reported no plan")
        );
    }

    #[test]
    fn an_overdue_apply_names_each_product_with_changes_unreported() {
        let deadlines = Deadlines {
            apply: Duration::from_secs(900),
            apply_per_change: Duration::ZERO,
            ..Deadlines::default()
        };
        let mut applying = run(RunState::Applying);
        applying.progress = vec![
            progress(Product::Jira, 400, 270, 10),
            progress(Product::Bitbucket, 5, 5, 0),
            progress(Product::Confluence, 1, 0, 0),
        ];
        let since = Some(at(CREATED));
        assert_eq!(
            overdue(&applying, since, &at(CREATED + 899), &deadlines),
            None
        );
        assert_eq!(
            overdue(&applying, since, &at(CREATED + 900), &deadlines).as_deref(),
            Some(
                "apply deadline of 900 s passed with jira: 120 of 400 changes unreported; \
                 no applier for confluence reported anything (1 of 1 change unreported)"
            )
        );
    }

    #[test]
    fn a_held_or_ended_run_is_never_overdue() {
        let deadlines = Deadlines::default();
        let far = at(CREATED + 365 * 24 * 3600);
        let mut held = run(RunState::Held);
        held.progress = vec![progress(Product::Jira, 3, 0, 0)];
        assert_eq!(overdue(&held, Some(at(CREATED)), &far, &deadlines), None);
        for ended in [RunState::Succeeded, RunState::Failed, RunState::Cancelled] {
            assert_eq!(
                overdue(&run(ended), None, &far, &deadlines),
                None,
                "{ended:?}"
            );
        }
    }

    #[test]
    fn a_product_with_no_running_applier_fails_the_run_after_the_grace_only() {
        let deadlines = Deadlines::default();
        let mut applying = run(RunState::Applying);
        applying.progress = vec![
            progress(Product::Jira, 4, 4, 0),
            progress(Product::Confluence, 3, 1, 0),
            progress(Product::Bitbucket, 2, 0, 0),
        ];
        let since = Some(at(CREATED + 10));
        let live: BTreeSet<String> = ["bitbucket".to_owned()].into();
        let early = at(CREATED + 69);
        assert_eq!(
            absent_applier(&applying, since, &early, &deadlines, &live),
            None
        );
        let late = at(CREATED + 70);
        assert_eq!(
            absent_applier(&applying, since, &late, &deadlines, &live).as_deref(),
            Some(
                "no applier is running for confluence (2 of 3 changes unreported): none announced itself for 60 s"
            )
        );
        // Jira has no applier either, but nothing left to apply; Bitbucket's is running.
        let all: BTreeSet<String> = ["confluence".to_owned(), "bitbucket".to_owned()].into();
        assert_eq!(
            absent_applier(&applying, since, &late, &deadlines, &all),
            None
        );
        let held = run(RunState::Held);
        assert_eq!(
            absent_applier(&held, since, &late, &deadlines, &BTreeSet::new()),
            None
        );
    }

    #[test]
    fn seconds_are_written_whole_or_to_the_millisecond() {
        assert_eq!(seconds_text(Duration::from_secs(600)), "600 s");
        assert_eq!(seconds_text(Duration::from_millis(600_400)), "600.4 s");
        assert_eq!(seconds_text(Duration::from_millis(1_050)), "1.05 s");
        assert_eq!(product_name(Product::Jira as i32), "jira");
        assert_eq!(product_name(42), "product 42");
    }
}
