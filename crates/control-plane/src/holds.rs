//! Runs the safety limit holds: approving one, and the ways a hold ends without approval.
//!
//! - **Approval** ([`Runs::approve`]) needs a reason, recorded on the run with who approved
//!   it and when. It is refused while another run of the connector is active, once the
//!   hold has expired, and once a product the plan was made against has changed since
//!   (the cached state's `cache::fingerprint` is no longer the plan's
//!   `state_fingerprint`): a person approved *that* plan, against *that* directory.
//! - **Expiry.** A run moved to HELD expires `[control_plane] hold_expiry` later
//!   (`hold_expires_at`); approving it then cancels it ("the hold expired at ..."), and so
//!   does the periodic sweep ([`Runs::expire_holds`], the event worker's tick), whichever
//!   comes first.
//! - **Supersession.** An apply run of a connector cancels every HELD run of the same
//!   connector ("superseded by run ..."): the newer plan is the one to review. A simulated
//!   run supersedes nothing.
//!
//! Every cancellation here publishes `RunCancelled`, as `CancelRun` does.

use std::collections::HashMap;
use std::time::Duration;

use proto::v1::{self, RunState};

use crate::{
    machine::{self, hold_expired, state_name},
    runs::{
        CONTROL_PLANE, RECOVERY_WINDOW, Runs, RunsError, check_run_id, connector_label, time_text,
    },
    store::now,
};

/// The answer to an approval without a reason.
pub const REASON_REQUIRED: &str =
    "a reason is required to approve a held run (keysync approve RUN --reason \"...\")";

/// The shortest and longest time between two sweeps for expired holds.
const SWEEP_INTERVAL: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

/// The reason of a run cancelled because its hold expired at `expired_at`.
fn expired_reason(expired_at: &prost_types::Timestamp) -> String {
    format!("the hold expired at {}", time_text(Some(expired_at)))
}

impl Runs {
    /// How often [`Runs::expire_holds`] should run: a quarter of the hold expiry, between
    /// a second and a minute.
    pub fn sweep_interval(&self) -> Duration {
        (self.settings.hold_expiry / 4).clamp(SWEEP_INTERVAL.0, SWEEP_INTERVAL.1)
    }

    /// Moves a HELD run to APPLYING, recording who approved it, why (`reason`, required)
    /// and when, and publishes `RunApproved`, so the planner publishes the stored plan's
    /// change sets. Refused (the run stays HELD) while another run of its connector is
    /// active, or when a product changed since the plan was made; refused with the run
    /// cancelled when its hold has expired. A run superseded by a newer apply run of its
    /// connector is CANCELLED, and refused as such.
    pub async fn approve(
        &self,
        run_id: &str,
        reason: &str,
        approved_by: &str,
    ) -> Result<v1::Run, RunsError> {
        check_run_id(run_id)?;
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(RunsError::Invalid(REASON_REQUIRED.to_owned()));
        }
        let Some(stored) = self.store.get(run_id).await? else {
            return Err(RunsError::NotFound {
                run_id: run_id.to_owned(),
            });
        };
        self.check_approvable(&stored.run).await?;

        let approved_at = now();
        let mut refused = None;
        let mut expired = None;
        let mut hold_reason = String::new();
        let updated = self
            .update(run_id, |stored| {
                (refused, expired) = (None, None);
                if stored.run.state() != RunState::Held {
                    refused = Some(stored.run.state());
                    return false;
                }
                if let Some(expired_at) = hold_expired(&stored.run, &approved_at) {
                    expired = Some(expired_at);
                    return false;
                }
                hold_reason = std::mem::take(&mut stored.run.reason);
                stored.run.approved_by = approved_by.to_owned();
                stored.run.approval_reason = reason.to_owned();
                stored.run.approved_at = Some(approved_at);
                stored.run.set_state(RunState::Applying);
                machine::settle(&mut stored.run);
                true
            })
            .await?;
        if let Some(state) = refused {
            return Err(not_held(run_id, state));
        }
        if expired.is_some() {
            return Err(self.expire(&updated.stored.run).await);
        }
        // Claimed once the run is APPLYING, so that a run started meanwhile sees it active.
        if !updated.finished
            && let Err(error) = self.claim(&updated.stored.run.connector, run_id).await
        {
            self.hold_again(run_id, &hold_reason).await?;
            return Err(error);
        }
        tracing::info!(
            run_id,
            approved_by,
            reason,
            hold_reason = %hold_reason,
            "Run approved."
        );
        if let Err(error) = self.announce_approved(&updated.stored.run).await {
            // Nothing will apply the plan: hold the run again, so approving can be retried.
            self.hold_again(run_id, &hold_reason).await?;
            return Err(error);
        }
        Ok(updated.stored.run)
    }

    /// Publishes the `RunApproved` of an approved run (message id `{run_id}.approved`), so
    /// the planner publishes its plan's change sets; also what recovery publishes again for
    /// an APPLYING run whose approval a stop may have left unannounced.
    pub(crate) async fn announce_approved(&self, run: &v1::Run) -> Result<(), RunsError> {
        let approved = v1::RunApproved {
            schema_version: v1::SCHEMA_VERSION,
            run_id: run.run_id.clone(),
            approved_by: run.approved_by.clone(),
            comment: run.approval_reason.clone(),
        };
        let subject = self.bus.topology().run_approved();
        self.bus
            .publish(&subject, &approved, &format!("{}.approved", run.run_id))
            .await?;
        Ok(())
    }

    /// Refuses to approve `run` unless it is HELD, its hold has not expired (an expired
    /// one is cancelled) and its plan was made against the products as they are now.
    async fn check_approvable(&self, run: &v1::Run) -> Result<(), RunsError> {
        match run.state() {
            RunState::Held => {}
            RunState::Cancelled => {
                // Expired already, by the sweep or an earlier approval: say so again.
                if let Some(expired_at) = run.hold_expires_at
                    && run.reason == expired_reason(&expired_at)
                {
                    return Err(RunsError::HoldExpired {
                        run_id: run.run_id.clone(),
                        expired_at: time_text(Some(&expired_at)),
                    });
                }
                return Err(not_held(&run.run_id, run.state()));
            }
            state => return Err(not_held(&run.run_id, state)),
        }
        if hold_expired(run, &now()).is_some() {
            return Err(self.expire(run).await);
        }
        self.check_plan_is_current(run).await
    }

    /// Refuses a plan made against a product state that is no longer the cached one: for
    /// each product whose summary carries the fingerprint of the state it was made against
    /// (plans made before fingerprints were recorded carry none, and are not checked). A
    /// streamed first sync's plan was made against the state without what its parts created
    /// (`cache::parts`), which the parts' sets may still be creating while the run is held:
    /// that is taken out of the cached state before it is compared.
    async fn check_plan_is_current(&self, run: &v1::Run) -> Result<(), RunsError> {
        let created = if run.streamed_parts > 0 {
            cache::parts::created_by_parts(&self.bus, &run.run_id, run.streamed_parts)
                .await
                .map_err(|source| RunsError::Plan {
                    run_id: run.run_id.clone(),
                    source,
                })?
        } else {
            HashMap::new()
        };
        for summary in &run.plan {
            if summary.state_fingerprint.is_empty() {
                continue;
            }
            let Ok(product) = cache::convert::product_from_proto(summary.product) else {
                continue;
            };
            let state_error = |source| RunsError::State {
                run_id: run.run_id.clone(),
                source: Box::new(source),
            };
            // The fingerprint of the cached state, and the run that made it.
            let current = match created.get(&summary.product) {
                Some(created) => self
                    .cache
                    .load_model_once(product)
                    .await
                    .map_err(state_error)?
                    .map(|mut state| {
                        model::plan::without_parts(&mut state.state, created);
                        (state.fingerprint(), state.run_id().to_owned())
                    }),
                None => self
                    .cache
                    .load_once(product)
                    .await
                    .map_err(state_error)?
                    .map(|(state, _)| (cache::fingerprint(&state), state.run_id.clone())),
            };
            let now = match current {
                Some((fingerprint, _)) if fingerprint == summary.state_fingerprint => continue,
                Some((_, run_id)) if !run_id.is_empty() => {
                    format!("state now from run {run_id}")
                }
                Some(_) => "state now from no recorded run".to_owned(),
                None => "no state is cached now".to_owned(),
            };
            return Err(RunsError::StalePlan(format!(
                "the plan of run {} was made against the {product} state of {}; {product} has \
                 changed since ({now}) — start a new run",
                run.run_id,
                time_text(run.created_at.as_ref()),
            )));
        }
        Ok(())
    }

    /// Cancels `run` if its hold has expired (it may have been cancelled meanwhile), and
    /// answers the error that tells the approver.
    async fn expire(&self, run: &v1::Run) -> RunsError {
        let Some(expired_at) = run.hold_expires_at else {
            return not_held(&run.run_id, run.state());
        };
        let reason = expired_reason(&expired_at);
        let cancelled = self
            .cancel_if(&run.run_id, &reason, CONTROL_PLANE, |run| {
                hold_expired(run, &now()).is_some()
            })
            .await;
        if let Err(error) = cancelled {
            tracing::warn!(run_id = %run.run_id, error = %error, "Could not cancel an expired hold.");
        }
        RunsError::HoldExpired {
            run_id: run.run_id.clone(),
            expired_at: time_text(Some(&expired_at)),
        }
    }

    /// Moves an approved run that could not go ahead back to HELD, as it was.
    async fn hold_again(&self, run_id: &str, hold_reason: &str) -> Result<(), RunsError> {
        self.update(run_id, |stored| {
            if stored.run.state() != RunState::Applying {
                return false;
            }
            stored.run.set_state(RunState::Held);
            stored.run.reason = hold_reason.to_owned();
            stored.run.approved_by.clear();
            stored.run.approval_reason.clear();
            stored.run.approved_at = None;
            true
        })
        .await?;
        Ok(())
    }

    /// Cancels every HELD run whose hold has expired, publishing `RunCancelled` for each;
    /// answers how many. A run that cannot be cancelled now is logged and tried again at
    /// the next sweep.
    pub async fn expire_holds(&self) -> Result<usize, RunsError> {
        let time = now();
        let mut expired = 0;
        for run in self.held_runs().await? {
            let Some(expired_at) = hold_expired(&run, &time) else {
                continue;
            };
            let reason = expired_reason(&expired_at);
            let cancelled = self
                .cancel_if(&run.run_id, &reason, CONTROL_PLANE, |run| {
                    hold_expired(run, &time).is_some()
                })
                .await;
            match cancelled {
                Ok(Some(_)) => expired += 1,
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(run_id = %run.run_id, error = %error, "Could not cancel an expired hold.");
                }
            }
        }
        Ok(expired)
    }

    /// Cancels the HELD runs of the connector of `run`, a new apply run, each with the
    /// reason "superseded by run {new}". Failures are logged: a held run left over can
    /// still expire, and its plan is checked against the products when it is approved.
    pub(crate) async fn supersede(&self, run: &v1::Run) {
        let held = match self.held_runs().await {
            Ok(held) => held,
            Err(error) => {
                tracing::warn!(run_id = %run.run_id, error = %error, "Could not look for held runs to supersede.");
                return;
            }
        };
        let reason = format!("superseded by run {}", run.run_id);
        for held in held {
            if held.connector != run.connector || held.run_id == run.run_id {
                continue;
            }
            let cancelled = self
                .cancel_if(&held.run_id, &reason, CONTROL_PLANE, |held| {
                    held.state() == RunState::Held
                })
                .await;
            match cancelled {
                Ok(Some(_)) => tracing::info!(
                    run_id = %held.run_id,
                    by = %run.run_id,
                    connector = %connector_label(&run.connector),
                    "Held run superseded."
                ),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(run_id = %held.run_id, error = %error, "Could not supersede a held run.");
                }
            }
        }
    }

    /// The HELD runs, newest first, among those created within the recovery window plus
    /// the hold expiry (older ones have expired): only the runs the index has active are
    /// read, once it is loaded; before, every run of the window.
    async fn held_runs(&self) -> Result<Vec<v1::Run>, RunsError> {
        let window = RECOVERY_WINDOW + self.settings.hold_expiry;
        let stored = match self.index.as_ref().filter(|index| index.is_loaded()) {
            Some(index) => {
                let horizon = std::time::SystemTime::now()
                    .checked_sub(window)
                    .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
                let mut stored = Vec::new();
                for run_id in index.since(horizon, true) {
                    if let Some(run) = self.store.get(&run_id).await? {
                        stored.push(run);
                    }
                }
                stored
            }
            None => self.store.recent_runs(window).await?,
        };
        Ok(stored
            .into_iter()
            .filter(|stored| stored.run.state() == RunState::Held)
            .map(|stored| stored.run)
            .collect())
    }
}

fn not_held(run_id: &str, state: RunState) -> RunsError {
    RunsError::WrongState {
        run_id: run_id.to_owned(),
        state: state_name(state),
        expected: "only a HELD run can be approved",
    }
}
