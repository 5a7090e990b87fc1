//! What the control API and the bus's events do to runs, without gRPC: start, cancel,
//! record results, and react to the bus's events, each through the state machine
//! ([`crate::machine`]) and a compare-and-set in the store ([`crate::store`]); what
//! concerns held runs (approval, expiry, supersession) is in [`crate::holds`]. The tonic
//! service, the event consumer and the schedule call these; what the API reads is in
//! `history`, which depends on this module and never the other way round.
//!
//! **One active run per connector.** [`Runs::start`] resolves the run's Keycloak connector
//! (the only one configured when none is named) and claims it in the store
//! ([`Store::claim_connector`]) before it creates the run; while another run of the
//! connector is REQUESTED, FETCHING, PLANNING or APPLYING the start is refused
//! ([`RunsError::Busy`]). A HELD run does not hold its connector: it waits for a person, and
//! the next apply run of its connector supersedes it. A run releases its claim when it
//! ends; a claim whose run has ended or never came to exist is taken over, so a stopped
//! replica cannot block a connector.
//!
//! **Event runs.** [`Runs::start_event_run`] starts the run the event follower asked for
//! (trigger EVENT, carrying the `EventTrigger`): claimed like any other, but it supersedes
//! no HELD run, since it may plan only some users.

use std::{sync::Arc, time::Duration};

use bus::{Bus, objects::ObjectError};
use cache::Cache;
use futures::{StreamExt, TryStreamExt};
use proto::v1::{self, ChangeOutcome, Product, RunMode, RunState, RunTrigger};

use crate::{
    deadlines::Deadlines,
    machine::{self, Context, Event, Transition, state_name},
    metrics::Metrics,
    run_index::RunIndex,
    store::{Claim, Store, StoreError, StoredRun, Updated, now},
};

/// How many results of one report are written at once.
const RECORD_CONCURRENCY: usize = 16;

/// How long [`recover`] waits for the index of runs to catch up with the bucket.
const INDEX_WAIT: Duration = Duration::from_secs(30);

/// How far back [`recover`] looks for runs left unfinished by a stop.
pub(crate) const RECOVERY_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// Who the control plane names as the canceller of the runs it cancels itself.
pub(crate) const CONTROL_PLANE: &str = "the control plane";

/// Who requested the runs started for the event follower's `EventsObserved`.
pub const EVENT_FOLLOWER: &str = "keysync event follower";

/// Why a run operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RunsError {
    #[error("`{run_id}` is not a run id (a ULID)")]
    InvalidRunId { run_id: String },
    #[error("{0}")]
    Invalid(String),
    #[error("run {run_id} does not exist")]
    NotFound { run_id: String },
    #[error("run {run_id} is {state}; {expected}")]
    WrongState {
        run_id: String,
        state: &'static str,
        expected: &'static str,
    },
    /// Another run of the connector is active.
    #[error(
        "run {run_id} of {} is still {state}; wait for it or cancel it",
        connector_label(connector)
    )]
    Busy {
        run_id: String,
        connector: String,
        state: &'static str,
    },
    #[error("the hold of run {run_id} expired at {expired_at}; start a new run")]
    HoldExpired { run_id: String, expired_at: String },
    /// The product changed since the held plan was made.
    #[error("{0}")]
    StalePlan(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] bus::Error),
    #[error("reading the plan of run {run_id}")]
    Plan {
        run_id: String,
        #[source]
        source: ObjectError,
    },
    #[error("reading the cached state to check the plan of run {run_id}")]
    State {
        run_id: String,
        #[source]
        source: Box<cache::Error>,
    },
}

/// A run to start.
#[derive(Clone, Debug)]
pub struct StartRun {
    pub mode: RunMode,
    /// Empty means every configured product.
    pub products: Vec<Product>,
    /// Empty means the only configured connector (several configured: refused), or, when
    /// the control plane has none configured, the fetcher's default.
    pub connector: String,
    pub trigger: RunTrigger,
    pub requested_by: String,
}

/// What the runs are held to, from the settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunsSettings {
    /// The names of the `[keycloak.*]` connectors. Empty: a run's connector is passed to
    /// the fetcher as it was asked for.
    pub connectors: Vec<String>,
    /// How long a run stays HELD before it can no longer be approved
    /// (`[control_plane] hold_expiry`).
    pub hold_expiry: Duration,
    /// How long a run may stay in each state before the reaper fails it
    /// (`[control_plane] *_deadline_seconds`).
    pub deadlines: Deadlines,
}

impl Default for RunsSettings {
    fn default() -> RunsSettings {
        RunsSettings {
            connectors: Vec::new(),
            hold_expiry: Duration::from_secs(24 * 3600),
            deadlines: Deadlines::default(),
        }
    }
}

/// The runs of one deployment and the bus they are driven by.
pub struct Runs {
    pub(crate) bus: Bus,
    pub(crate) store: Arc<Store>,
    pub(crate) cache: Cache,
    pub(crate) metrics: Metrics,
    pub(crate) settings: RunsSettings,
    /// The index of runs by id, once [`Runs::with_index`] gave one: the hold sweeps read
    /// only the runs it has active instead of every run of the window.
    pub(crate) index: Option<Arc<RunIndex>>,
}

impl Runs {
    /// Writes the runs of `store` (shared with [`crate::history::History`], which reads
    /// them) and publishes their messages on `bus`.
    pub fn new(bus: Bus, store: Arc<Store>, settings: RunsSettings) -> Runs {
        let metrics = Metrics::default();
        for connector in &settings.connectors {
            metrics.schedule_skipped_start(connector);
        }
        Runs {
            cache: Cache::new(bus.clone()),
            bus,
            store,
            metrics,
            settings,
            index: None,
        }
    }

    /// The same, finding the runs to sweep through `index`.
    pub fn with_index(mut self, index: Arc<RunIndex>) -> Runs {
        self.index = Some(index);
        self
    }

    /// The configured connectors; empty when the control plane has none configured.
    pub fn connectors(&self) -> &[String] {
        &self.settings.connectors
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Resolves and claims the run's connector, creates the run, publishes `RunRequested`
    /// (message id = run id) and moves the run to FETCHING. An apply run then supersedes
    /// the HELD runs of its connector.
    pub async fn start(&self, start: StartRun) -> Result<v1::Run, RunsError> {
        let run = self.create_and_request(start, None).await?;
        if run.mode() == RunMode::Apply {
            self.supersede(&run).await;
        }
        Ok(run)
    }

    /// Starts the event run the event follower asked for (`EventsObserved`): an apply
    /// run of every product of `connector`, trigger EVENT, carrying what the events
    /// named (`event`), which `RunRequested` passes on to the fetcher. Refused with
    /// [`RunsError::Busy`] while another run of the connector is active, as any start.
    ///
    /// It supersedes nothing: an event run plans only the users the events named (unless
    /// it asks for a full sync), so a HELD full run of the connector still holds changes
    /// the event run does not make, and stays for a person to approve or let expire.
    pub async fn start_event_run(
        &self,
        connector: &str,
        event: v1::EventTrigger,
    ) -> Result<v1::Run, RunsError> {
        let start = StartRun {
            mode: RunMode::Apply,
            products: Vec::new(),
            connector: connector.to_owned(),
            trigger: RunTrigger::Event,
            requested_by: EVENT_FOLLOWER.to_owned(),
        };
        self.create_and_request(start, Some(event)).await
    }

    /// What every start does: checks the request, resolves and claims the connector,
    /// creates the run (with `event`, for an event run), counts it and requests its fetch.
    async fn create_and_request(
        &self,
        start: StartRun,
        event: Option<v1::EventTrigger>,
    ) -> Result<v1::Run, RunsError> {
        if start.mode == RunMode::Unspecified {
            return Err(RunsError::Invalid(
                "mode must be RUN_MODE_SIMULATE or RUN_MODE_APPLY".to_owned(),
            ));
        }
        let mut products: Vec<Product> = Vec::new();
        for product in start.products {
            if product == Product::Unspecified {
                return Err(RunsError::Invalid(
                    "PRODUCT_UNSPECIFIED is not a product".to_owned(),
                ));
            }
            if !products.contains(&product) {
                products.push(product);
            }
        }
        let connector = self.resolve_connector(&start.connector)?;
        let run_id = self.store.new_run_id();
        self.claim(&connector, &run_id).await?;
        let created_at = now();
        let mut run = v1::Run {
            run_id,
            connector,
            products: products.iter().map(|product| *product as i32).collect(),
            created_at: Some(created_at),
            updated_at: Some(created_at),
            requested_by: start.requested_by,
            event,
            ..v1::Run::default()
        };
        run.set_mode(start.mode);
        run.set_state(RunState::Requested);
        run.set_trigger(start.trigger);
        let created = self
            .store
            .create(&StoredRun {
                run: run.clone(),
                plan: None,
                results_counted_through: 0,
                state_since: run.created_at,
            })
            .await;
        if let Err(error) = created {
            self.release(&run).await;
            return Err(error.into());
        }
        tracing::info!(
            run_id = %run.run_id,
            connector = %run.connector,
            mode = mode_name(run.mode()),
            trigger = trigger_name(run.trigger()),
            requested_by = %run.requested_by,
            "Run requested."
        );
        self.metrics
            .run_started(trigger_name(run.trigger()), mode_name(run.mode()));
        self.request_fetch(&run).await
    }

    /// The connector of a run that asked for `asked`: that one, if it is configured; the
    /// only one configured, if none was asked for; as asked when none is configured.
    fn resolve_connector(&self, asked: &str) -> Result<String, RunsError> {
        let asked = asked.trim();
        let configured = &self.settings.connectors;
        if configured.is_empty() {
            return Ok(asked.to_owned());
        }
        let names = || {
            configured
                .iter()
                .map(|name| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if asked.is_empty() {
            return match configured.as_slice() {
                [only] => Ok(only.clone()),
                _ => Err(RunsError::Invalid(format!(
                    "several Keycloak connectors are configured ({}); name one",
                    names()
                ))),
            };
        }
        if configured.iter().any(|name| name == asked) {
            Ok(asked.to_owned())
        } else {
            Err(RunsError::Invalid(format!(
                "no Keycloak connector `{asked}` is configured (configured: {})",
                names()
            )))
        }
    }

    /// Claims `connector` for the run `run_id`, or answers which run keeps it busy.
    pub(crate) async fn claim(&self, connector: &str, run_id: &str) -> Result<(), RunsError> {
        match self.store.claim_connector(connector, run_id).await? {
            Claim::Claimed => Ok(()),
            Claim::Busy { run_id, state } => Err(RunsError::Busy {
                run_id,
                connector: connector.to_owned(),
                state: state_name(state),
            }),
        }
    }

    /// Frees the run's connector if the run holds it. A failure is only logged: a claim
    /// whose run has ended is taken over by the next run.
    pub(crate) async fn release(&self, run: &v1::Run) {
        if let Err(error) = self
            .store
            .release_connector(&run.connector, &run.run_id)
            .await
        {
            tracing::warn!(
                run_id = %run.run_id,
                connector = %run.connector,
                error = %error,
                "Could not release the connector; the next run takes it over."
            );
        }
    }

    /// Records a scheduled run that did not start because its connector was busy: a run
    /// of trigger SCHEDULE, CANCELLED from the start, with `reason`, so that `keysync runs`
    /// shows the skip.
    pub async fn record_skip(
        &self,
        connector: &str,
        requested_by: String,
        reason: String,
    ) -> Result<v1::Run, RunsError> {
        let time = now();
        let mut run = v1::Run {
            run_id: self.store.new_run_id(),
            connector: connector.to_owned(),
            created_at: Some(time),
            updated_at: Some(time),
            finished_at: Some(time),
            reason,
            requested_by,
            ..v1::Run::default()
        };
        run.set_mode(RunMode::Apply);
        run.set_state(RunState::Cancelled);
        run.set_trigger(RunTrigger::Schedule);
        self.store
            .create(&StoredRun {
                run: run.clone(),
                plan: None,
                results_counted_through: 0,
                state_since: run.created_at,
            })
            .await?;
        self.metrics.schedule_skipped(connector);
        tracing::warn!(
            run_id = %run.run_id,
            connector,
            reason = %run.reason,
            "Scheduled run skipped."
        );
        Ok(run)
    }

    /// Publishes the run's `RunRequested` and moves it from REQUESTED to FETCHING; a run
    /// that could not be requested fails.
    async fn request_fetch(&self, run: &v1::Run) -> Result<v1::Run, RunsError> {
        let requested = v1::RunRequested {
            schema_version: v1::SCHEMA_VERSION,
            run_id: run.run_id.clone(),
            mode: run.mode,
            products: run.products.clone(),
            connector: run.connector.clone(),
            requested_at: run.created_at,
            requested_by: run.requested_by.clone(),
            event: run.event.clone(),
        };
        let subject = self.bus.topology().run_requested();
        if let Err(error) = self.bus.publish(&subject, &requested, &run.run_id).await {
            let reason = format!("the run could not be requested: {error}");
            self.update_if_exists(&run.run_id, |stored| {
                if stored.run.state() != RunState::Requested {
                    return false;
                }
                stored.run.set_state(RunState::Failed);
                stored.run.reason = reason.clone();
                true
            })
            .await?;
            return Err(error.into());
        }
        let updated = self
            .update(&run.run_id, |stored| {
                // The fetcher may be faster than this write, and the events with it.
                if stored.run.state() != RunState::Requested {
                    return false;
                }
                stored.run.set_state(RunState::Fetching);
                true
            })
            .await?;
        Ok(updated.stored.run)
    }

    /// Moves a run that has not ended to CANCELLED and publishes `RunCancelled`. Cancelling
    /// a cancelled run announces it again, so a caller can retry.
    pub async fn cancel(
        &self,
        run_id: &str,
        reason: &str,
        cancelled_by: &str,
    ) -> Result<v1::Run, RunsError> {
        check_run_id(run_id)?;
        let reason = if reason.trim().is_empty() {
            format!("cancelled by {cancelled_by}")
        } else {
            reason.trim().to_owned()
        };
        let mut refused = None;
        let updated = self
            .update(run_id, |stored| {
                refused = None;
                match stored.run.state() {
                    RunState::Cancelled => false,
                    RunState::Succeeded | RunState::Failed => {
                        refused = Some(stored.run.state());
                        false
                    }
                    _ => {
                        stored.run.set_state(RunState::Cancelled);
                        stored.run.reason = reason.clone();
                        true
                    }
                }
            })
            .await?;
        if let Some(state) = refused {
            return Err(RunsError::WrongState {
                run_id: run_id.to_owned(),
                state: state_name(state),
                expected: "only a run that has not ended can be cancelled",
            });
        }
        let run = updated.stored.run;
        tracing::info!(run_id, cancelled_by, reason = %run.reason, "Run cancelled.");
        self.announce_cancelled(&run).await?;
        Ok(run)
    }

    /// Moves the run `run_id` to CANCELLED with `reason` if `condition` holds of it (read
    /// again on every compare-and-set attempt), and publishes `RunCancelled`. Answers the
    /// cancelled run, or `None` when the condition did not hold or there is no such run.
    pub(crate) async fn cancel_if<F>(
        &self,
        run_id: &str,
        reason: &str,
        cancelled_by: &str,
        condition: F,
    ) -> Result<Option<v1::Run>, RunsError>
    where
        F: Fn(&v1::Run) -> bool,
    {
        let updated = self
            .update_if_exists(run_id, |stored| {
                if machine::is_terminal(stored.run.state()) || !condition(&stored.run) {
                    return false;
                }
                stored.run.set_state(RunState::Cancelled);
                stored.run.reason = reason.to_owned();
                true
            })
            .await?;
        let Some(updated) = updated.filter(|updated| updated.written) else {
            return Ok(None);
        };
        let run = updated.stored.run;
        tracing::info!(run_id, cancelled_by, reason = %run.reason, "Run cancelled.");
        self.announce_cancelled(&run).await?;
        Ok(Some(run))
    }

    /// Publishes the `RunCancelled` of a cancelled run.
    async fn announce_cancelled(&self, run: &v1::Run) -> Result<(), RunsError> {
        let cancelled = v1::RunCancelled {
            schema_version: v1::SCHEMA_VERSION,
            run_id: run.run_id.clone(),
            reason: run.reason.clone(),
        };
        let subject = self.bus.topology().run_cancelled();
        self.bus
            .publish(&subject, &cancelled, &format!("{}.cancelled", run.run_id))
            .await?;
        Ok(())
    }

    /// Records `results` of one product, each once by (run, change id), and counts them in
    /// the run's progress, which may finish it. Answers how many were new and the run's
    /// state after them: an applier learns from it that the run was cancelled.
    pub async fn report(
        &self,
        run_id: &str,
        product: Product,
        results: Vec<v1::ChangeResult>,
    ) -> Result<(u32, RunState), RunsError> {
        check_run_id(run_id)?;
        let mut checked = Vec::with_capacity(results.len());
        for mut result in results {
            if result.run_id.is_empty() {
                result.run_id = run_id.to_owned();
            }
            if result.run_id != run_id {
                return Err(RunsError::Invalid(format!(
                    "a result of run {} was reported for run {run_id}",
                    result.run_id
                )));
            }
            if result.change_id.is_empty() {
                return Err(RunsError::Invalid("a result has no change_id".to_owned()));
            }
            if result.product() == Product::Unspecified {
                result.set_product(product);
            }
            if result.product() == Product::Unspecified
                || (product != Product::Unspecified && result.product() != product)
            {
                return Err(RunsError::Invalid(format!(
                    "the result of change {} is for {}, not for the reported product {}",
                    result.change_id,
                    result.product().as_str_name(),
                    product.as_str_name()
                )));
            }
            if matches!(
                result.outcome(),
                ChangeOutcome::Unspecified | ChangeOutcome::Planned
            ) {
                return Err(RunsError::Invalid(format!(
                    "the result of change {} has outcome {}; a result is applied, already done, skipped or failed",
                    result.change_id,
                    result.outcome().as_str_name()
                )));
            }
            if result.schema_version == 0 {
                result.schema_version = v1::SCHEMA_VERSION;
            }
            checked.push(result);
        }
        if self.store.get(run_id).await?.is_none() {
            return Err(RunsError::NotFound {
                run_id: run_id.to_owned(),
            });
        }
        let store = &self.store;
        let recorded: Vec<(bool, Product, ChangeOutcome)> = futures::stream::iter(checked)
            .map(|result| async move {
                let new = store.record_result(&result).await?;
                Ok::<_, StoreError>((new, result.product(), result.outcome()))
            })
            .buffer_unordered(RECORD_CONCURRENCY)
            .try_collect()
            .await?;
        let mut new = 0u32;
        for (is_new, product, outcome) in recorded {
            if is_new {
                new += 1;
                self.metrics
                    .change_results(product_name(product), outcome_name(outcome), 1);
            }
        }
        // Counted even when nothing is new: a repeat may be the retry of a report whose
        // results were recorded by a replica that stopped before counting them.
        let state = self.count_results(run_id).await?;
        Ok((new, state))
    }

    /// Counts the run's results recorded since it was last counted; answers its state.
    pub(crate) async fn count_results(&self, run_id: &str) -> Result<RunState, RunsError> {
        let updated = self
            .store
            .count_results(run_id, |stored, recorded| {
                let results: Vec<v1::ChangeResult> = recorded
                    .iter()
                    .map(|recorded| recorded.result.clone())
                    .collect();
                machine::count(&mut stored.run, &results);
                machine::settle(&mut stored.run);
                true
            })
            .await?;
        let Some(updated) = updated else {
            return Err(RunsError::NotFound {
                run_id: run_id.to_owned(),
            });
        };
        self.note_finished(&updated).await;
        Ok(updated.stored.run.state())
    }

    /// Applies an event from the bus to its run. Answers whether the run changed; an
    /// event for an unknown run changes nothing.
    pub async fn apply_event(&self, event: &Event) -> Result<bool, RunsError> {
        let run_id = event.run_id();
        let mut ignored = None;
        let hold_expiry = self.settings.hold_expiry;
        let updated = self
            .update_if_exists(run_id, |stored| {
                let context = Context {
                    now: now(),
                    hold_expiry,
                };
                match machine::next(&stored.run, event, &context) {
                    Transition::Ignore { why } => {
                        ignored = Some(why);
                        false
                    }
                    Transition::To(run) => {
                        ignored = None;
                        stored.run = *run;
                        if let Event::PlanReady(ready) = event
                            && ready.part == 0
                        {
                            stored.plan = ready.plan.clone();
                        }
                        true
                    }
                }
            })
            .await?;
        let Some(updated) = updated else {
            tracing::info!(
                run_id,
                event = event.kind(),
                "Ignored an event of an unknown run."
            );
            return Ok(false);
        };
        if let Some(why) = ignored {
            tracing::info!(run_id, event = event.kind(), why = %why, "Ignored an event.");
            return Ok(false);
        }
        let run = &updated.stored.run;
        tracing::info!(
            run_id,
            event = event.kind(),
            state = state_name(run.state()),
            reason = %run.reason,
            "Run advanced."
        );
        Ok(updated.written)
    }

    /// [`Store::update`] for a run that must exist.
    pub(crate) async fn update<F>(&self, run_id: &str, change: F) -> Result<Updated, RunsError>
    where
        F: FnMut(&mut StoredRun) -> bool,
    {
        match self.update_if_exists(run_id, change).await? {
            Some(updated) => Ok(updated),
            None => Err(RunsError::NotFound {
                run_id: run_id.to_owned(),
            }),
        }
    }

    /// [`Store::update`], noting a run that ended and releasing its connector.
    pub(crate) async fn update_if_exists<F>(
        &self,
        run_id: &str,
        change: F,
    ) -> Result<Option<Updated>, RunsError>
    where
        F: FnMut(&mut StoredRun) -> bool,
    {
        let updated = self.store.update(run_id, change).await?;
        if let Some(updated) = &updated {
            self.note_finished(updated).await;
        }
        Ok(updated)
    }

    /// Counts and logs a run that ended with `updated`, and frees its connector.
    async fn note_finished(&self, updated: &Updated) {
        if !updated.finished {
            return;
        }
        let run = &updated.stored.run;
        self.release(run).await;
        // Events observed while the run held the connector start now, as one event run.
        // Boxed: starting a run can end one (a request that cannot be published fails it).
        if let Err(error) = Box::pin(self.start_pending(&run.connector)).await {
            tracing::warn!(
                connector = %run.connector,
                error = %telemetry::error_chain(&error),
                "Could not start the events observed while the connector was busy; the next sweep will."
            );
        }
        let seconds = match (run.created_at, run.finished_at) {
            (Some(created), Some(finished)) => {
                (finished.seconds - created.seconds) as f64
                    + f64::from(finished.nanos - created.nanos) / 1e9
            }
            _ => 0.0,
        };
        let outcome = state_name(run.state());
        self.metrics
            .run_finished(outcome, mode_name(run.mode()), seconds.max(0.0));
        tracing::info!(
            run_id = %run.run_id,
            state = outcome,
            reason = %run.reason,
            seconds,
            "Run ended."
        );
    }
}

/// Picks up what a stop left, republishing whatever a run's state still needs from the
/// control plane. Looks at the runs of the last week:
///
/// - REQUESTED: `RunRequested` may never have been published (the run is written first),
///   so it is published again (message id = run id) and the run moves to FETCHING. A
///   FETCHING run's request was published before it was written so, and needs nothing.
/// - APPLYING with an approval recorded: `RunApproved` may never have been published (the
///   approval is written first), so it is published again (message id
///   `{run_id}.approved`). Downstream this is idempotent: the planner publishes the
///   approved plan's change sets again only once `GetRun` confirms the approval, with the
///   same message ids (JetStream drops repeats within its duplicate window), and an
///   applier acknowledges without writing any set below its run's mark (`{product}.{run_id}`
///   in the applier bucket), whose changes it reported already.
/// - PLANNING, HELD, APPLYING, CANCELLED: results recorded but not yet counted are counted.
///
/// A run that still never moves is failed at its state's deadline ([`crate::reaper`]).
pub async fn recover(runs: Arc<Runs>) -> Result<(), RunsError> {
    for stored in runs_to_recover(&runs).await? {
        let run_id = stored.run.run_id.clone();
        let outcome = match stored.run.state() {
            RunState::Requested => runs.request_fetch(&stored.run).await.map(|_| ()),
            RunState::Applying if !stored.run.approved_by.is_empty() => {
                match runs.announce_approved(&stored.run).await {
                    Ok(()) => runs.count_results(&run_id).await.map(|_| ()),
                    Err(error) => Err(error),
                }
            }
            RunState::Planning | RunState::Held | RunState::Applying | RunState::Cancelled => {
                runs.count_results(&run_id).await.map(|_| ())
            }
            _ => Ok(()),
        };
        if let Err(error) = outcome {
            tracing::warn!(run_id, error = %error, "Could not recover a run.");
        }
    }
    Ok(())
}

/// The runs of the [`RECOVERY_WINDOW`] that [`recover`] may have to act on. Through the
/// index once it is current (it names only those in a state that may need it, so thousands
/// of finished event runs a day are not read); else every run of the window, from the
/// bucket.
async fn runs_to_recover(runs: &Runs) -> Result<Vec<StoredRun>, RunsError> {
    const MAY_NEED_RECOVERY: [RunState; 5] = [
        RunState::Requested,
        RunState::Planning,
        RunState::Held,
        RunState::Applying,
        RunState::Cancelled,
    ];
    let Some(index) = &runs.index else {
        return Ok(runs.store.recent_runs(RECOVERY_WINDOW).await?);
    };
    if let Err(error) = index.wait_current(INDEX_WAIT).await {
        tracing::warn!(error = %error, "Recovering from the runs bucket: the index is not current.");
        return Ok(runs.store.recent_runs(RECOVERY_WINDOW).await?);
    }
    let horizon = std::time::SystemTime::now()
        .checked_sub(RECOVERY_WINDOW)
        .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
    let mut stored = Vec::new();
    for run_id in index.since_in(horizon, &MAY_NEED_RECOVERY) {
        if let Some(run) = runs.store.get(&run_id).await? {
            stored.push(run);
        }
    }
    Ok(stored)
}

/// "connector `corp`", or "the default connector" for the empty name.
pub(crate) fn connector_label(connector: &str) -> String {
    if connector.is_empty() {
        "the default connector".to_owned()
    } else {
        format!("connector {connector}")
    }
}

/// A time in messages: RFC 3339 in UTC, to the second.
pub(crate) fn time_text(time: Option<&prost_types::Timestamp>) -> String {
    let Some(time) = time else {
        return "an unknown time".to_owned();
    };
    match jiff::Timestamp::new(time.seconds, 0) {
        Ok(time) => time.to_string(),
        Err(_) => format!("{}s after 1970", time.seconds),
    }
}

/// A run id must be a ULID: it is a key in the store.
pub(crate) fn check_run_id(run_id: &str) -> Result<(), RunsError> {
    match ulid::Ulid::from_string(run_id) {
        Ok(_) => Ok(()),
        Err(_) => Err(RunsError::InvalidRunId {
            run_id: run_id.to_owned(),
        }),
    }
}

pub fn mode_name(mode: RunMode) -> &'static str {
    match mode {
        RunMode::Unspecified => "unspecified",
        RunMode::Simulate => "simulate",
        RunMode::Apply => "apply",
    }
}

pub fn trigger_name(trigger: RunTrigger) -> &'static str {
    match trigger {
        RunTrigger::Unspecified => "unspecified",
        RunTrigger::Api => "api",
        RunTrigger::Schedule => "schedule",
        RunTrigger::Event => "event",
    }
}

fn product_name(product: Product) -> &'static str {
    match product {
        Product::Unspecified => "unspecified",
        Product::Jira => "jira",
        Product::Confluence => "confluence",
        Product::Bitbucket => "bitbucket",
    }
}

fn outcome_name(outcome: ChangeOutcome) -> &'static str {
    let name = outcome.as_str_name();
    name.strip_prefix("CHANGE_OUTCOME_").unwrap_or(name)
}
