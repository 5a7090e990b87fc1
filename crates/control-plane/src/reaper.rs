//! The reaper: every replica's periodic task that fails the runs past their state's
//! deadline ([`crate::deadlines`]), so that no run stays FETCHING, PLANNING or APPLYING
//! forever. HELD runs are left to their hold expiry ([`crate::holds`]).
//!
//! Every `[control_plane] deadline_sweep_seconds` it takes the runs of the recovery window
//! (a week) from the [`RunIndex`], reads only those the index does not have ended (an
//! ended run never moves again, so the index's state, however recent, is enough to skip
//! it) and, for each that [`deadlines::overdue`] names, or that is APPLYING with changes
//! for a product no applier has announced itself for ([`deadlines::absent_applier`],
//! `bus::liveness`, read once per sweep), writes FAILED with the reason
//! through the store's compare-and-set, deciding again on the run as it is at the write:
//! of several replicas
//! reaping at once exactly one fails a run, and a run that moved on meanwhile (its plan
//! came, its last result was counted) is left alone. Before an APPLYING run is failed,
//! the results recorded but not yet counted are counted, so a run whose last report
//! finished it is not failed for a count a stopped replica left behind. Failing a run frees
//! its connector, as every end does; late events and results find it ended and change
//! nothing but its counts.

use std::{collections::BTreeSet, sync::Arc, time::SystemTime};

use prost_types::Timestamp;
use proto::v1::{self, RunState};
use tokio::sync::watch;

use crate::{
    deadlines,
    machine::is_terminal,
    run_index::RunIndex,
    runs::{RECOVERY_WINDOW, Runs, RunsError},
    store::{StoredRun, now},
};

/// One replica's reaper.
pub struct Reaper {
    runs: Arc<Runs>,
    index: Arc<RunIndex>,
}

impl Reaper {
    pub fn new(runs: Arc<Runs>, index: Arc<RunIndex>) -> Reaper {
        Reaper { runs, index }
    }

    /// Fails every run of the recovery window whose state's deadline has passed at `now`;
    /// answers how many it failed. A run that cannot be read or failed now is logged and
    /// tried at the next sweep; before the index of runs is loaded, nothing is swept.
    pub async fn sweep(&mut self, now: &Timestamp) -> Result<usize, RunsError> {
        if !self.index.is_loaded() {
            return Ok(0);
        }
        let horizon = SystemTime::now()
            .checked_sub(RECOVERY_WINDOW)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut failed = 0;
        // The products with a running applier, read once per sweep and only when an
        // APPLYING run needs them; `None` when unknown (that check is skipped).
        let mut live: Option<Option<BTreeSet<String>>> = None;
        for run_id in self.index.since(horizon, true) {
            let stored = match self.runs.store.get(&run_id).await {
                Ok(Some(stored)) => stored,
                Ok(None) => {
                    self.index.remove(&run_id);
                    continue;
                }
                Err(error) => {
                    tracing::warn!(run_id, error = %error, "Could not read a run to check its deadline.");
                    continue;
                }
            };
            if is_terminal(stored.run.state()) {
                continue;
            }
            if stored.run.state() == RunState::Applying && live.is_none() {
                live = Some(match bus::liveness::live_products(&self.runs.bus).await {
                    Ok(live) => Some(live),
                    Err(error) => {
                        tracing::warn!(
                            error = %telemetry::error_chain(&error),
                            "Could not read which appliers are running."
                        );
                        None
                    }
                });
            }
            let live = live.as_ref().and_then(Option::as_ref);
            let deadlines = self.runs.settings.deadlines;
            if reason(&stored, now, &deadlines, live).is_none() {
                continue;
            }
            match self.runs.fail_overdue(&stored.run, now, live).await {
                Ok(true) => failed += 1,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(run_id, error = %error, "Could not fail a run past its deadline.");
                }
            }
        }
        Ok(failed)
    }
}

impl Runs {
    /// Fails `run` if it is past its deadline at `now` as it is stored at the write (an
    /// APPLYING run's uncounted results counted first); answers whether this call failed
    /// it.
    async fn fail_overdue(
        &self,
        run: &v1::Run,
        now: &Timestamp,
        live: Option<&BTreeSet<String>>,
    ) -> Result<bool, RunsError> {
        let run_id = run.run_id.as_str();
        if run.state() == RunState::Applying {
            self.count_results(run_id).await?;
        }
        let deadlines = self.settings.deadlines;
        let updated = self
            .update_if_exists(run_id, |stored| {
                let Some(reason) = reason(stored, now, &deadlines, live) else {
                    return false;
                };
                stored.run.set_state(RunState::Failed);
                stored.run.reason = reason;
                true
            })
            .await?;
        let Some(updated) = updated.filter(|updated| updated.written) else {
            return Ok(false);
        };
        tracing::warn!(
            run_id,
            reason = %updated.stored.run.reason,
            "Run failed: its deadline passed."
        );
        Ok(true)
    }
}

/// Why `stored` must fail at `now`: its state's deadline passed, or it is APPLYING with
/// changes for a product no applier is running for (`live`, when known).
fn reason(
    stored: &StoredRun,
    now: &Timestamp,
    deadlines: &deadlines::Deadlines,
    live: Option<&BTreeSet<String>>,
) -> Option<String> {
    deadlines::overdue(&stored.run, stored.state_since, now, deadlines).or_else(|| {
        live.and_then(|live| {
            deadlines::absent_applier(&stored.run, stored.state_since, now, deadlines, live)
        })
    })
}

/// Reaps every `deadline_sweep_seconds` until `stop` turns true.
pub async fn run(runs: Arc<Runs>, index: Arc<RunIndex>, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(runs.settings.deadlines.sweep_interval);
    let mut reaper = Reaper::new(runs, index);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            _ = interval.tick() => {}
        }
        match reaper.sweep(&now()).await {
            Ok(0) => {}
            Ok(failed) => tracing::info!(failed, "Failed runs past their deadline."),
            Err(error) => tracing::warn!(
                error = %telemetry::error_chain(&error),
                "Could not look for runs past their deadline."
            ),
        }
    }
}
