//! The reaper: every replica's periodic task that fails the runs past their state's
//! deadline ([`crate::deadlines`]), so that no run stays FETCHING, PLANNING or APPLYING
//! forever. HELD runs are left to their hold expiry ([`crate::holds`]).
//!
//! Every `[control_plane] deadline_sweep_seconds` it lists the runs of the recovery window
//! (a week; it reads again only those it has not seen ended) and, for each that
//! [`deadlines::overdue`] names, writes FAILED with the reason through the store's
//! compare-and-set, deciding again on the run as it is at the write: of several replicas
//! reaping at once exactly one fails a run, and a run that moved on meanwhile (its plan
//! came, its last result was counted) is left alone. Before an APPLYING run is failed,
//! the results recorded but not yet counted are counted, so a run whose last report
//! finished it is not failed for a count a stopped replica left behind. Failing a run frees
//! its connector, as every end does; late events and results find it ended and change
//! nothing but its counts.

use std::{collections::HashSet, sync::Arc, time::SystemTime};

use prost_types::Timestamp;
use proto::v1::{self, RunState};
use tokio::sync::watch;

use crate::{
    deadlines,
    machine::is_terminal,
    runs::{RECOVERY_WINDOW, Runs, RunsError},
    store::now,
};

/// One replica's reaper. It remembers the runs it has seen ended, which never move again,
/// so that a sweep lists the run ids and reads only the runs that may still be overdue.
pub struct Reaper {
    runs: Arc<Runs>,
    ended: HashSet<String>,
}

impl Reaper {
    pub fn new(runs: Arc<Runs>) -> Reaper {
        Reaper {
            runs,
            ended: HashSet::new(),
        }
    }

    /// Fails every run of the recovery window whose state's deadline has passed at `now`;
    /// answers how many it failed. A run that cannot be read or failed now is logged and
    /// tried at the next sweep.
    pub async fn sweep(&mut self, now: &Timestamp) -> Result<usize, RunsError> {
        let horizon = SystemTime::now()
            .checked_sub(RECOVERY_WINDOW)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut listed = HashSet::new();
        let mut failed = 0;
        for run_id in self.runs.store.run_ids().await? {
            let Ok(ulid) = ulid::Ulid::from_string(&run_id) else {
                continue;
            };
            if ulid.datetime() < horizon {
                break;
            }
            listed.insert(run_id.clone());
            if self.ended.contains(&run_id) {
                continue;
            }
            let stored = match self.runs.store.get(&run_id).await {
                Ok(Some(stored)) => stored,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(run_id, error = %error, "Could not read a run to check its deadline.");
                    continue;
                }
            };
            if is_terminal(stored.run.state()) {
                self.ended.insert(run_id);
                continue;
            }
            let deadlines = self.runs.settings.deadlines;
            if deadlines::overdue(&stored.run, stored.state_since, now, &deadlines).is_none() {
                continue;
            }
            match self.runs.fail_overdue(&stored.run, now).await {
                Ok(true) => {
                    failed += 1;
                    self.ended.insert(run_id);
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(run_id, error = %error, "Could not fail a run past its deadline.");
                }
            }
        }
        // Forget the runs that left the window.
        self.ended.retain(|run_id| listed.contains(run_id));
        Ok(failed)
    }
}

impl Runs {
    /// Fails `run` if it is past its deadline at `now` as it is stored at the write (an
    /// APPLYING run's uncounted results counted first); answers whether this call failed
    /// it.
    async fn fail_overdue(&self, run: &v1::Run, now: &Timestamp) -> Result<bool, RunsError> {
        let run_id = run.run_id.as_str();
        if run.state() == RunState::Applying {
            self.count_results(run_id).await?;
        }
        let deadlines = self.settings.deadlines;
        let updated = self
            .update_if_exists(run_id, |stored| {
                let Some(reason) =
                    deadlines::overdue(&stored.run, stored.state_since, now, &deadlines)
                else {
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

/// Reaps every `deadline_sweep_seconds` until `stop` turns true.
pub async fn run(runs: Arc<Runs>, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(runs.settings.deadlines.sweep_interval);
    let mut reaper = Reaper::new(runs);
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
