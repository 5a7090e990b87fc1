//! [`Planner`]: what the planner does with one message of a run, and with the runs whose
//! states are late. The loop around it (pulling, keep-alive, acknowledging only after
//! `Ok`, handing a message back after an error of the bus, dead letters, rebinding) is
//! `bus::worker`'s.
//!
//! A message is dispatched by its subject: `SnapshotReady`, `StateReady` and `StateFailed`
//! are recorded in the run's join ([`crate::join`]), after which the run is planned or
//! failed when it can be; `RunApproved` publishes the stored
//! plan's change sets. A failure of the run's data fails the run (`PlanFailed`); a failure
//! of the bus is an `Err`, and the message comes again.

use std::time::{Duration, SystemTime};

use bus::Bus;
use bus::worker::{Delivery, Handler};
use cache::Cache;
use cache::working::ModelState;
use model::policy::ValidPolicy;
use model::snapshot::Snapshot;
use model::state::Product;
use opentelemetry::KeyValue;
use proto::v1;
use settings::planner::Policies;
use telemetry::error_chain;
use tracing::Instrument;

use crate::delta::{Bases, Input};
use crate::join::{Decision, Join, Joins, Status};
use crate::metrics::Metrics;
use crate::{Error, change_sets, convert};

/// What handling one message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// No message arrived.
    Idle,
    /// A message that does not decode went to the dead-letter stream.
    DeadLettered,
    /// The message is recorded; the run waits for more.
    Waiting { run_id: String },
    /// The plan is stored and announced; `change_sets` were published (none when held or
    /// simulated).
    Planned {
        run_id: String,
        held: bool,
        change_sets: usize,
    },
    /// `PlanFailed` was published.
    Failed { run_id: String, reason: String },
    /// An approval published the stored plan's change sets.
    Approved { run_id: String, change_sets: usize },
    /// A part of a streamed first sync was planned and its change sets published
    /// ([`crate::parts`]).
    PartPlanned {
        run_id: String,
        part: u32,
        change_sets: usize,
    },
    /// The message changed nothing: its run is finished, or it is not for the planner.
    Ignored,
}

/// Whether a run's failure lies in its data (it fails the run) or in the bus (retry).
pub(crate) enum Failure {
    Run(String),
    Bus(Error),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure::Bus(error)
    }
}

/// The planner's handler: the joins, the enabled products' policies and how to cut and
/// time runs.
pub struct Planner {
    pub(crate) bus: Bus,
    pub(crate) cache: Cache,
    pub(crate) joins: Joins,
    pub(crate) enabled: Vec<Product>,
    pub(crate) policies: Policies,
    pub(crate) change_set_size: usize,
    pub(crate) state_timeout: Duration,
    pub(crate) metrics: Metrics,
    /// Asked whether a run was approved before its plan is published.
    pub(crate) control: control_client::Control,
    /// The last base snapshot of each connector's deltas, so a burst of event runs loads
    /// it once.
    pub(crate) bases: Bases,
}

impl Handler for Planner {
    type Outcome = StepOutcome;
    type Error = Error;

    async fn handle(&self, delivery: &Delivery<'_>) -> Result<StepOutcome, Error> {
        let topology = self.bus.topology();
        let message = delivery.message();
        let subject = message.subject.as_str();
        let prefix = topology.prefix();
        let headers = message.headers.as_ref();
        if subject == topology.snapshot_ready() {
            let Some(ready) = delivery.decode::<v1::SnapshotReady>().await? else {
                return Ok(StepOutcome::DeadLettered);
            };
            if ready.part > 0 {
                let span = run_span(&ready.run_id, "snapshot_part", headers);
                return Box::pin(self.plan_part(delivery, ready))
                    .instrument(span)
                    .await;
            }
            let span = run_span(&ready.run_id, "snapshot_ready", headers);
            let run_id = ready.run_id.clone();
            return self
                .record(&run_id, move |join| {
                    join.add_snapshot(ready.clone(), SystemTime::now())
                })
                .instrument(span)
                .await;
        }
        if subject.starts_with(&format!("{prefix}.state.ready.")) {
            let Some(ready) = delivery.decode::<v1::StateReady>().await? else {
                return Ok(StepOutcome::DeadLettered);
            };
            let span = run_span(&ready.run_id, "state_ready", headers);
            let run_id = ready.run_id.clone();
            return self
                .record(&run_id, move |join| join.add_state(ready.clone()))
                .instrument(span)
                .await;
        }
        if subject.starts_with(&format!("{prefix}.state.failed.")) {
            let Some(failed) = delivery.decode::<v1::StateFailed>().await? else {
                return Ok(StepOutcome::DeadLettered);
            };
            let span = run_span(&failed.run_id, "state_failed", headers);
            let run_id = failed.run_id.clone();
            return self
                .record(&run_id, move |join| join.add_failure(failed.clone()))
                .instrument(span)
                .await;
        }
        if subject == topology.run_approved() {
            let Some(approved) = delivery.decode::<v1::RunApproved>().await? else {
                return Ok(StepOutcome::DeadLettered);
            };
            let span = run_span(&approved.run_id, "run_approved", headers);
            return self.approve(delivery, &approved).instrument(span).await;
        }
        tracing::debug!(subject, "Ignored a message the planner does not handle.");
        Ok(StepOutcome::Ignored)
    }

    /// A quarter of the state timeout, from 200 ms to 5 s.
    fn tick_interval(&self) -> Option<Duration> {
        Some((self.state_timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(5)))
    }

    async fn tick(&self) {
        if let Err(error) = self.check_deadlines().await {
            tracing::warn!(
                error = %error_chain(&error),
                "Could not check the runs waiting for a state."
            );
        }
    }
}

impl Planner {
    /// Fails every run whose states did not arrive in time. Answers the failed run ids.
    pub async fn check_deadlines(&self) -> Result<Vec<String>, Error> {
        let mut failed = Vec::new();
        for run_id in self.joins.run_ids().await? {
            let Some(join) = self.joins.get(&run_id).await? else {
                continue;
            };
            if join.snapshot.is_none() {
                continue;
            }
            if let Decision::Fail { reason } =
                join.decide(&self.enabled, self.state_timeout, SystemTime::now())
            {
                let span = tracing::info_span!("plan_run", run_id = %run_id);
                self.fail_run(&run_id, &reason).instrument(span).await?;
                failed.push(run_id);
            }
        }
        Ok(failed)
    }

    /// Records a message in its run's join, then plans or fails the run if it can.
    async fn record(&self, run_id: &str, change: impl Fn(&mut Join)) -> Result<StepOutcome, Error> {
        let join = self
            .joins
            .update(run_id, |join| {
                if !join.is_finished() {
                    change(join);
                }
            })
            .await?;
        match join.decide(&self.enabled, self.state_timeout, SystemTime::now()) {
            Decision::Done => Ok(StepOutcome::Ignored),
            Decision::Wait { missing } => {
                tracing::info!(
                    ?missing,
                    "The run waits for its snapshot or product states."
                );
                Ok(StepOutcome::Waiting {
                    run_id: run_id.to_owned(),
                })
            }
            Decision::Fail { reason } => {
                self.fail_run(run_id, &reason).await?;
                Ok(StepOutcome::Failed {
                    run_id: run_id.to_owned(),
                    reason,
                })
            }
            Decision::Plan { products } => self.plan_run(run_id, &join, &products).await,
        }
    }

    /// Plans a complete run, stores and announces the plan, and publishes its change sets
    /// when the run may write.
    pub(crate) async fn plan_run(
        &self,
        run_id: &str,
        join: &Join,
        products: &[(Product, v1::ObjectRef)],
    ) -> Result<StepOutcome, Error> {
        let plan = match self.build_plan(run_id, join, products).await {
            Ok(plan) => plan,
            Err(Failure::Bus(error)) => return Err(error),
            Err(Failure::Run(reason)) => {
                self.fail_run(run_id, &reason).await?;
                return Ok(StepOutcome::Failed {
                    run_id: run_id.to_owned(),
                    reason,
                });
            }
        };
        let mut plan = plan;
        plan.change_set_size = self.change_set_size as u32;
        if join.parts_planned > 0 {
            Box::pin(self.merge_parts(run_id, join, &mut plan)).await?;
        }
        let topology = self.bus.topology();
        let object = self
            .bus
            .put_object(&topology.plans_bucket(), &format!("{run_id}.pb.zst"), &plan)
            .await?;
        // An APPLY plan's change sets, cut now so their manifest goes with `PlanReady`: the
        // control plane records it, and appliers apply only the sets it lists.
        let applies = plan.mode == v1::RunMode::Apply as i32;
        let sets = if applies {
            change_sets::split(&plan, self.change_set_size)
        } else {
            Vec::new()
        };
        let parts_manifest = self.parts_manifest(join).await?;
        let manifest = if sets.is_empty() && parts_manifest.is_none() {
            None
        } else {
            let mut manifest = parts_manifest.unwrap_or_default();
            manifest.schema_version = v1::SCHEMA_VERSION;
            manifest.run_id = run_id.to_owned();
            // The parts' sets may still be in flight: an applier checks them against this.
            manifest
                .sets
                .extend(bus::integrity::manifest(run_id, sets.iter().map(|(_, set)| set)).sets);
            Some(
                self.bus
                    .put_object(
                        &topology.plans_bucket(),
                        &format!("{run_id}.sets.pb.zst"),
                        &manifest,
                    )
                    .await?,
            )
        };
        let ready = v1::PlanReady {
            schema_version: v1::SCHEMA_VERSION,
            run_id: run_id.to_owned(),
            products: plan.products.clone(),
            plan: Some(object),
            held: plan.held,
            hold_reason: plan.hold_reason.clone(),
            change_sets: manifest,
            part: 0,
        };
        self.bus
            .publish(&topology.plan_ready(), &ready, &format!("{run_id}/plan"))
            .await?;
        let change_sets = if plan.held {
            0
        } else {
            self.publish_change_sets(sets).await?
        };
        self.joins
            .update(run_id, |join| join.status = Status::Planned as i32)
            .await?;
        let outcome = if plan.held { "held" } else { "planned" };
        self.metrics
            .plans
            .add(1, &[KeyValue::new("outcome", outcome)]);
        tracing::info!(
            changes = plan.changes.len(),
            held = plan.held,
            hold_reason = %plan.hold_reason,
            mode = ?v1::RunMode::try_from(plan.mode).unwrap_or_default(),
            change_sets,
            "Planned the run."
        );
        Ok(StepOutcome::Planned {
            run_id: run_id.to_owned(),
            held: plan.held,
            change_sets,
        })
    }

    async fn build_plan(
        &self,
        run_id: &str,
        join: &Join,
        products: &[(Product, v1::ObjectRef)],
    ) -> Result<v1::Plan, Failure> {
        let Some(ready) = &join.snapshot else {
            return Err(Failure::Run("the run has no snapshot".to_owned()));
        };
        let Input { snapshot, scope } = self.load_input(ready).await?;
        // What the summaries count and name: for a delta, only the users in its scope, so
        // the users no event named count neither as skipped nor as unchanged.
        let counted = scope.as_ref().map(|scope| Snapshot {
            users: snapshot
                .users
                .iter()
                .filter(|user| scope.contains(&user.id))
                .cloned()
                .collect(),
            ..Snapshot::default()
        });
        let mut assembly = Assembly {
            plan: v1::Plan {
                schema_version: v1::SCHEMA_VERSION,
                run_id: run_id.to_owned(),
                mode: ready.mode,
                connector: ready.connector.clone(),
                ..Default::default()
            },
            counted: counted.as_ref().unwrap_or(&snapshot),
            delta: scope.is_some(),
            hold_reasons: Vec::new(),
            losing_by_product: Vec::new(),
            states: Vec::new(),
            now: SystemTime::now(),
        };
        match &scope {
            // A delta keeps each state for the next one (it then reads only what the
            // appliers recorded since), and plans the products at once, one thread each:
            // each plan reads the whole snapshot and state, and an edit waits for them.
            Some(scope) => {
                let mut loaded = Vec::with_capacity(products.len());
                for (product, object) in products {
                    let state = self.load_state(*product, object, true).await?;
                    loaded.push((*product, state, self.policy(*product, &ready.connector)?));
                }
                let plans = std::thread::scope(|threads| {
                    let planning: Vec<_> = loaded
                        .iter()
                        .map(|(_, state, policy)| {
                            threads.spawn(|| {
                                model::plan::plan_scoped(&snapshot, &state.state, policy, scope)
                            })
                        })
                        .collect();
                    planning
                        .into_iter()
                        .map(|thread| thread.join())
                        .collect::<Result<Vec<_>, _>>()
                });
                let plans =
                    plans.map_err(|_| Failure::Run("planning a product panicked".to_owned()))?;
                for ((product, state, policy), product_plan) in loaded.into_iter().zip(plans) {
                    self.add_product(&mut assembly, product, state, &policy, &product_plan)
                        .await?;
                }
            }
            // A full plan reads each state whole and keeps none: one product at a time.
            None => {
                // A streamed first sync's complete plan is that of the state it began with.
                let created = if join.parts_planned > 0 {
                    Box::pin(self.parts_created(run_id, join)).await?
                } else {
                    Default::default()
                };
                for (product, object) in products {
                    let mut state = self.load_state(*product, object, false).await?;
                    let wire = cache::convert::product_to_proto(*product) as i32;
                    if let Some(created) = created.get(&wire) {
                        model::plan::without_parts(&mut state.state, created);
                    }
                    let policy = self.policy(*product, &ready.connector)?;
                    let product_plan = model::plan::plan(&snapshot, &state.state, &policy);
                    self.add_product(&mut assembly, *product, state, &policy, &product_plan)
                        .await?;
                }
            }
        }
        let Assembly {
            mut plan,
            hold_reasons,
            losing_by_product,
            states,
            now,
            ..
        } = assembly;
        plan.held = !hold_reasons.is_empty();
        // Only a held plan is checked against the states it was made against (approving it
        // is refused once one has changed), so only a held delta pays for their fingerprints.
        if plan.held {
            for (index, state) in &states {
                if let Some(summary) = plan.products.get_mut(*index) {
                    summary.state_fingerprint = state.fingerprint();
                }
            }
        }
        drop(states);
        plan.hold_reason = hold_reasons.join("; ");
        // What an applied delta takes away counts toward the window of the next ones.
        if !plan.held && plan.mode == v1::RunMode::Apply as i32 {
            for (product, losing) in losing_by_product {
                self.joins
                    .record_losing(&ready.connector, product.as_str(), run_id, losing, now)
                    .await
                    .map_err(Failure::Bus)?;
            }
        }
        Ok(plan)
    }

    /// The state of `product` the run's `StateReady` announced, or a newer one.
    pub(crate) async fn load_state(
        &self,
        product: Product,
        object: &v1::ObjectRef,
        keep: bool,
    ) -> Result<ModelState, Failure> {
        match self
            .cache
            .load_announced_or_newer(product, object, keep)
            .await
        {
            Ok((loaded, newer)) => {
                if newer {
                    tracing::info!(
                        %product,
                        "The announced state was replaced by a newer one; planning against that."
                    );
                }
                Ok(loaded)
            }
            Err(error) if error.is_permanent() => Err(Failure::Run(format!(
                "the state of {product} is unusable: {}",
                error_chain(&error)
            ))),
            Err(error) => Err(Failure::Bus(error.into())),
        }
    }

    pub(crate) fn policy(&self, product: Product, connector: &str) -> Result<ValidPolicy, Failure> {
        self.policies
            .get(product, connector)
            .ok_or_else(|| Failure::Run(format!("{product} has no policy")))
    }

    /// Adds one product's plan to the run's: its changes and summary, and its hold (for a
    /// delta, also the hold of what the connector's event runs took away in the last hour).
    async fn add_product(
        &self,
        assembly: &mut Assembly<'_>,
        product: Product,
        loaded: ModelState,
        policy: &ValidPolicy,
        product_plan: &model::plan::Plan,
    ) -> Result<(), Failure> {
        for diagnostic in &product_plan.diagnostics {
            tracing::debug!(
                %product,
                kind = ?diagnostic.kind,
                subject = %diagnostic.subject,
                message = %diagnostic.message,
                "The plan reports a problem."
            );
        }
        let convert::WirePlan {
            changes,
            conflicts,
            diagnostics,
            mut summary,
        } = convert::plan_to_proto(product_plan, &loaded.state, assembly.counted);
        let connector = assembly.plan.connector.clone();
        if let Some(hold) = &product_plan.hold {
            assembly
                .hold_reasons
                .push(format!("{product}: {}", hold.reason));
        } else if assembly.delta {
            // A delta is also judged with the event runs of the last hour before it.
            let losing = product_plan.safety.losing_access as u64;
            let before = self
                .joins
                .window_losing(&connector, product.as_str(), assembly.now)
                .await
                .map_err(Failure::Bus)?;
            let managed = product_plan.safety.managed_accounts as u64;
            match crate::window::hold_reason(before, losing, managed, &policy.policy().safety) {
                Some(reason) => {
                    summary.hold_reason = reason.clone();
                    assembly.hold_reasons.push(format!("{product}: {reason}"));
                }
                None if losing > 0 => assembly.losing_by_product.push((product, losing)),
                None => {}
            }
        }
        let plan = &mut assembly.plan;
        plan.changes.extend(changes);
        plan.conflicts.extend(conflicts);
        plan.diagnostics.extend(diagnostics);
        // The note on `scope.required_groups` is about who a full read leaves out; a
        // delta names its users, and its plan says nothing of anyone else.
        if !assembly.delta {
            plan.diagnostics
                .extend(convert::scope_diagnostic(policy, product));
        }
        // A full plan is as large as the directory: it fingerprints each state now rather
        // than keep them all until it knows whether it holds.
        if assembly.delta {
            assembly.states.push((plan.products.len(), loaded));
        } else {
            summary.state_fingerprint = loaded.fingerprint();
        }
        plan.products.push(summary);
        Ok(())
    }

    pub(crate) async fn publish_change_sets(
        &self,
        sets: Vec<(Product, v1::ChangeSet)>,
    ) -> Result<usize, Error> {
        for (product, _) in &sets {
            self.metrics
                .change_sets
                .add(1, &[KeyValue::new("product", product.as_str())]);
        }
        change_sets::publish(&self.bus, sets).await
    }

    /// Publishes the stored plan's change sets for an approved run, once the control plane
    /// confirms the approval: a `RunApproved` that anyone able to publish on the bus could
    /// have sent is not evidence by itself.
    async fn approve(
        &self,
        delivery: &Delivery<'_>,
        approved: &v1::RunApproved,
    ) -> Result<StepOutcome, Error> {
        let run_id = approved.run_id.as_str();
        let run = match self.confirmed_approval(run_id).await? {
            Ok(run) => run,
            Err(reason) => {
                tracing::warn!(
                    approved_by = %approved.approved_by,
                    reason,
                    "Refused an approval the control plane does not confirm."
                );
                delivery.dead_letter(&reason).await?;
                return Ok(StepOutcome::DeadLettered);
            }
        };
        let key = format!("{run_id}.pb.zst");
        let stored = self
            .bus
            .get_latest_object::<v1::Plan>(&self.bus.topology().plans_bucket(), &key)
            .await;
        let plan = match stored {
            Ok(Some((plan, _))) => plan,
            Ok(None) => {
                let reason = "approved, but no plan is stored for the run".to_owned();
                self.fail_run(run_id, &reason).await?;
                return Ok(StepOutcome::Failed {
                    run_id: run_id.to_owned(),
                    reason,
                });
            }
            Err(error) if error.is_permanent() => {
                let reason = format!(
                    "approved, but the stored plan is unusable: {}",
                    error_chain(&error)
                );
                self.fail_run(run_id, &reason).await?;
                return Ok(StepOutcome::Failed {
                    run_id: run_id.to_owned(),
                    reason,
                });
            }
            Err(error) => return Err(error.into()),
        };
        if plan.mode != v1::RunMode::Apply as i32 {
            tracing::warn!(approved_by = %approved.approved_by, "Ignored the approval of a simulated run.");
            return Ok(StepOutcome::Ignored);
        }
        if run.trigger() == v1::RunTrigger::Event {
            self.count_approved_losses(&plan).await?;
        }
        let size = match plan.change_set_size {
            0 => self.change_set_size,
            size => size as usize,
        };
        let change_sets = self
            .publish_change_sets(change_sets::split(&plan, size))
            .await?;
        tracing::info!(approved_by = %approved.approved_by, change_sets, "Published the approved plan.");
        Ok(StepOutcome::Approved {
            run_id: run_id.to_owned(),
            change_sets,
        })
    }

    /// What an approved event run takes away counts toward the window of the next event
    /// runs of its connector, like an applied one's: approving a held deletion must not
    /// let the next ones through as if it had not happened.
    async fn count_approved_losses(&self, plan: &v1::Plan) -> Result<(), Error> {
        let now = std::time::SystemTime::now();
        for summary in &plan.products {
            let losing = summary
                .safety
                .as_ref()
                .map(|safety| safety.losing_access)
                .unwrap_or_default();
            let Ok(product) = cache::convert::product_from_proto(summary.product) else {
                continue;
            };
            if losing > 0 {
                self.joins
                    .record_losing(&plan.connector, product.as_str(), &plan.run_id, losing, now)
                    .await?;
            }
        }
        Ok(())
    }

    /// The run, when the control plane confirms that `run_id` was approved; else why not:
    /// an approved run is APPLYING (or further, if it finished or was cancelled since)
    /// with who approved it recorded.
    async fn confirmed_approval(&self, run_id: &str) -> Result<Result<v1::Run, String>, Error> {
        let run = match self.control.get_run(run_id).await {
            Ok(run) => run,
            Err(error) if error.is_unknown_run() => {
                return Ok(Err(format!(
                    "the control plane knows no run {run_id}: {}",
                    error_chain(&error)
                )));
            }
            Err(error) => return Err(error.into()),
        };
        let state = run.state();
        let before_approval = matches!(
            state,
            v1::RunState::Requested
                | v1::RunState::Fetching
                | v1::RunState::Planning
                | v1::RunState::Held
        );
        Ok(if before_approval || run.approved_by.is_empty() {
            Err(format!(
                "the control plane records no approval of run {run_id} (it is {})",
                state.as_str_name()
            ))
        } else {
            Ok(run)
        })
    }

    /// Publishes `PlanFailed` and marks the run failed. Publishing first means a crash in
    /// between publishes again (deduplicated), never not at all.
    async fn fail_run(&self, run_id: &str, reason: &str) -> Result<(), Error> {
        let failed = v1::PlanFailed {
            schema_version: v1::SCHEMA_VERSION,
            run_id: run_id.to_owned(),
            reason: reason.to_owned(),
        };
        self.bus
            .publish(
                &self.bus.topology().plan_failed(),
                &failed,
                &format!("{run_id}/plan-failed"),
            )
            .await?;
        self.joins
            .update(run_id, |join| join.status = Status::Failed as i32)
            .await?;
        self.metrics
            .plans
            .add(1, &[KeyValue::new("outcome", "failed")]);
        tracing::warn!(reason, "The run failed to plan.");
        Ok(())
    }
}

/// A run's plan while its products are added to it ([`Planner::add_product`]).
struct Assembly<'a> {
    plan: v1::Plan,
    /// The users the summaries count: a delta's scope, else the whole snapshot.
    counted: &'a Snapshot,
    delta: bool,
    hold_reasons: Vec<String>,
    losing_by_product: Vec<(Product, u64)>,
    /// A delta's states as it planned against them (with the index of their summary), for
    /// the fingerprints of a held plan.
    states: Vec<(usize, ModelState)>,
    now: SystemTime,
}

/// The span of one message of one run, continuing the run's trace.
fn run_span(
    run_id: &str,
    event: &'static str,
    headers: Option<&async_nats::HeaderMap>,
) -> tracing::Span {
    let span = tracing::info_span!("plan_run", run_id = %run_id, event);
    bus::trace::continue_trace(&span, headers);
    span
}
