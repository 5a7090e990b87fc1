//! The parts of a streamed first sync: what the planner publishes before the complete
//! snapshot, and how the complete plan takes them in.
//!
//! The fetcher announces a first sync's users a part at a time (`SnapshotReady.part`,
//! numbered from 1) before the complete snapshot, which says how many parts came before it
//! (`SnapshotReady.parts`). A part is planned in order, once the run's product states are
//! there, with [`model::plan::plan_part`]: only the groups, accounts and memberships that
//! the complete plan will also make, unchanged, so the appliers start writing while
//! Keycloak is still being read. Each part:
//!
//! - stores its changes (`{run_id}.part-{n}.pb.zst` in the plans bucket);
//! - cuts them into change sets numbered after the earlier parts' (`Join::streamed`), each
//!   naming its part;
//! - stores the manifest of every part's sets so far (`{run_id}.sets-part-{n}.pb.zst`, a
//!   new object each time, so a manifest the control plane recorded never changes under
//!   it) and announces it in a `PlanReady` naming the part, which the control plane
//!   records without moving the run;
//! - publishes the sets, then records the part in the run's join.
//!
//! The complete snapshot is planned once every part it announced is (`Join::decide`), as
//! any run, against the state as it is then less what the parts created
//! ([`Planner::parts_created`], `model::plan::without_parts`): the state the run began
//! with, so the plan, its holds and its counts are those of a run that streamed nothing.
//! [`Planner::merge_parts`] then marks each change a part published
//! (`Change.streamed_part`); one the complete plan does not make (the directory changed
//! during the fetch) is added, marked, so the stored plan lists everything the run did
//! and the run waits for every result. The plan's own sets
//! leave the marked changes out and are numbered after the parts' (`PlanSummary.
//! streamed_sets`), so they wait for them, and its manifest lists the parts' sets too.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use bus::worker::Delivery;
use model::plan::Created;
use model::state::Product;
use proto::v1;

use crate::delta::Input;
use crate::join::{Decision, Join};
use crate::runs::{Failure, Planner, StepOutcome};
use crate::{Error, change_sets, convert};

/// How long a part waits before it comes again: for the run's product states, or for the
/// part before it.
const PART_RETRY: Duration = Duration::from_millis(500);

impl Planner {
    /// Plans part `ready.part` of a streamed first sync, publishes its change sets, and
    /// plans the complete snapshot if it was waiting only for this part.
    pub(crate) async fn plan_part(
        &self,
        delivery: &Delivery<'_>,
        ready: v1::SnapshotReady,
    ) -> Result<StepOutcome, Error> {
        let run_id = ready.run_id.clone();
        let part = ready.part;
        let join = self.joins.get(&run_id).await?.unwrap_or_default();
        if join.is_finished()
            || part <= join.parts_planned
            || ready.mode != v1::RunMode::Apply as i32
        {
            return Ok(StepOutcome::Ignored);
        }
        let now = SystemTime::now();
        let mut probe = Join {
            snapshot: None,
            ..join.clone()
        };
        probe.add_snapshot(ready.clone(), now);
        let products = match probe.decide(&self.enabled, self.state_timeout, now) {
            Decision::Plan { products } if part == join.parts_planned + 1 => products,
            Decision::Plan { .. } | Decision::Wait { .. } => {
                delivery.retry_after(PART_RETRY);
                return Ok(StepOutcome::Waiting { run_id });
            }
            // The complete snapshot fails the run for the same reason.
            Decision::Fail { .. } | Decision::Done => return Ok(StepOutcome::Ignored),
        };
        let plan = match Box::pin(self.part_plan(&ready, &join, &products)).await {
            Ok(plan) => plan,
            Err(Failure::Bus(error)) => return Err(error),
            // The complete plan makes every change the part would have.
            Err(Failure::Run(reason)) => {
                tracing::warn!(
                    part,
                    reason,
                    "A part could not be planned; the complete plan will make its changes."
                );
                v1::Plan {
                    run_id: run_id.clone(),
                    ..Default::default()
                }
            }
        };
        let topology = self.bus.topology();
        self.bus
            .put_object(
                &topology.plans_bucket(),
                &cache::parts::part_key(&run_id, part),
                &plan,
            )
            .await?;
        let first = |product: i32| streamed_sets(&join.streamed, product);
        let sets = change_sets::split_part(&plan, self.change_set_size, part, first);
        let mut manifest =
            self.parts_manifest(&join)
                .await?
                .unwrap_or_else(|| v1::ChangeSetManifest {
                    schema_version: v1::SCHEMA_VERSION,
                    run_id: run_id.clone(),
                    sets: Vec::new(),
                });
        manifest
            .sets
            .extend(bus::integrity::manifest(&run_id, sets.iter().map(|(_, set)| set)).sets);
        let manifest = self
            .bus
            .put_object(
                &topology.plans_bucket(),
                &format!("{run_id}.sets-part-{part}.pb.zst"),
                &manifest,
            )
            .await?;
        let streamed = accumulate(&join.streamed, &plan, &sets);
        let announced = v1::PlanReady {
            schema_version: v1::SCHEMA_VERSION,
            run_id: run_id.clone(),
            products: streamed.clone(),
            plan: None,
            held: false,
            hold_reason: String::new(),
            change_sets: Some(manifest.clone()),
            part,
        };
        self.bus
            .publish(
                &topology.plan_ready(),
                &announced,
                &format!("{run_id}/plan-part-{part}"),
            )
            .await?;
        let change_sets = self.publish_change_sets(sets).await?;
        let groups: Vec<String> = plan
            .changes
            .iter()
            .filter(|change| change.op == v1::ChangeOp::CreateGroup as i32)
            .map(|change| change.id.clone())
            .collect();
        let join = self
            .joins
            .update(&run_id, |join| {
                if join.parts_planned + 1 == part {
                    join.parts_planned = part;
                    join.streamed = streamed.clone();
                    join.streamed_groups.extend(groups.iter().cloned());
                    join.parts_manifest = Some(manifest.clone());
                }
            })
            .await?;
        tracing::info!(
            part,
            changes = plan.changes.len(),
            change_sets,
            "Planned a part of a streamed first sync and published its change sets."
        );
        // The complete snapshot may have been waiting for this part alone.
        if join.snapshot.is_some()
            && let Decision::Plan { products } =
                join.decide(&self.enabled, self.state_timeout, SystemTime::now())
        {
            return Box::pin(self.plan_run(&run_id, &join, &products)).await;
        }
        Ok(StepOutcome::PartPlanned {
            run_id,
            part,
            change_sets,
        })
    }

    /// The changes of the part `ready` announces, product by product, less the groups an
    /// earlier part created.
    async fn part_plan(
        &self,
        ready: &v1::SnapshotReady,
        join: &Join,
        products: &[(Product, v1::ObjectRef)],
    ) -> Result<v1::Plan, Failure> {
        let Input { snapshot, .. } = self.load_input(ready).await?;
        let created: HashSet<&str> = join.streamed_groups.iter().map(String::as_str).collect();
        let mut plan = v1::Plan {
            schema_version: v1::SCHEMA_VERSION,
            run_id: ready.run_id.clone(),
            mode: ready.mode,
            connector: ready.connector.clone(),
            change_set_size: self.change_set_size as u32,
            ..Default::default()
        };
        for (product, object) in products {
            let state = self.load_state(*product, object, false).await?;
            let policy = self.policy(*product, &ready.connector)?;
            let planned =
                model::plan::plan_part(&snapshot, &state.state, &policy, ready.realm_users);
            let wire = convert::plan_to_proto(&planned, &state.state, &snapshot);
            let changes: Vec<v1::Change> = wire
                .changes
                .into_iter()
                .filter(|change| {
                    change.op != v1::ChangeOp::CreateGroup as i32
                        || !created.contains(change.id.as_str())
                })
                .collect();
            let mut summary = v1::PlanSummary {
                product: cache::convert::product_to_proto(*product) as i32,
                ..Default::default()
            };
            count(&mut summary, &changes);
            plan.products.push(summary);
            plan.changes.extend(changes);
        }
        Ok(plan)
    }

    /// Marks in `plan` (the complete plan of a streamed first sync) each change a part
    /// published, adds (marked, and counted in its product's summary) those it no longer
    /// makes, and numbers its products' sets after the parts'.
    pub(crate) async fn merge_parts(
        &self,
        run_id: &str,
        join: &Join,
        plan: &mut v1::Plan,
    ) -> Result<(), Error> {
        let mut index: HashMap<String, usize> = plan
            .changes
            .iter()
            .enumerate()
            .map(|(at, change)| (change.id.clone(), at))
            .collect();
        let (mut marked, mut added) = (0u64, 0u64);
        for part in 1..=join.parts_planned {
            let Some(stored) = self.stored_part(run_id, part).await? else {
                continue;
            };
            for mut change in stored.changes {
                match index.get(&change.id) {
                    Some(&at) => {
                        let known = &mut plan.changes[at];
                        if known.streamed_part == 0 {
                            known.streamed_part = part;
                            marked += 1;
                        }
                    }
                    None => {
                        change.streamed_part = part;
                        if let Some(summary) = plan
                            .products
                            .iter_mut()
                            .find(|summary| summary.product == change.product)
                        {
                            count(summary, std::slice::from_ref(&change));
                        }
                        index.insert(change.id.clone(), plan.changes.len());
                        plan.changes.push(change);
                        added += 1;
                    }
                }
            }
        }
        for summary in &mut plan.products {
            summary.streamed_sets = streamed_sets(&join.streamed, summary.product);
        }
        tracing::info!(
            parts = join.parts_planned,
            marked,
            added,
            "Took the parts of the streamed first sync into the complete plan."
        );
        Ok(())
    }

    /// What the parts of the run created, by product (`Change.product`): taken out of the
    /// states the complete plan reads ([`model::plan::without_parts`]), so it plans the
    /// state the run began with.
    pub(crate) async fn parts_created(
        &self,
        run_id: &str,
        join: &Join,
    ) -> Result<HashMap<i32, Created>, Error> {
        Ok(cache::parts::created_by_parts(&self.bus, run_id, join.parts_planned).await?)
    }

    /// The changes part `part` of the run stored, read again by the complete plan: once for
    /// what the parts created, once to mark what they published, so that no more than one
    /// part's changes are in memory beside the plan.
    async fn stored_part(&self, run_id: &str, part: u32) -> Result<Option<v1::Plan>, Error> {
        Ok(cache::parts::stored_part(&self.bus, run_id, part).await?)
    }

    /// The manifest of the parts' change sets, if the run streamed any.
    pub(crate) async fn parts_manifest(
        &self,
        join: &Join,
    ) -> Result<Option<v1::ChangeSetManifest>, Error> {
        match &join.parts_manifest {
            Some(object) => Ok(Some(self.bus.get_object(object).await?)),
            None => Ok(None),
        }
    }
}

/// How many change sets of `product` the parts in `streamed` published.
fn streamed_sets(streamed: &[v1::PlanSummary], product: i32) -> u32 {
    streamed
        .iter()
        .find(|summary| summary.product == product)
        .map_or(0, |summary| summary.streamed_sets)
}

/// Counts `changes` in `summary.changes_by_op`.
fn count(summary: &mut v1::PlanSummary, changes: &[v1::Change]) {
    for change in changes {
        let op = v1::ChangeOp::try_from(change.op)
            .unwrap_or_default()
            .as_str_name()
            .to_owned();
        *summary.changes_by_op.entry(op).or_default() += 1;
    }
}

/// `streamed` with the part's changes (`plan`) and change sets (`sets`) added.
fn accumulate(
    streamed: &[v1::PlanSummary],
    plan: &v1::Plan,
    sets: &[(Product, v1::ChangeSet)],
) -> Vec<v1::PlanSummary> {
    let mut streamed = streamed.to_vec();
    for summary in &plan.products {
        let index = match streamed
            .iter()
            .position(|known| known.product == summary.product)
        {
            Some(index) => index,
            None => {
                streamed.push(v1::PlanSummary {
                    product: summary.product,
                    ..Default::default()
                });
                streamed.len() - 1
            }
        };
        let known = &mut streamed[index];
        for (op, changes) in &summary.changes_by_op {
            *known.changes_by_op.entry(op.clone()).or_default() += changes;
        }
        known.streamed_sets += sets
            .iter()
            .filter(|(_, set)| set.product == summary.product)
            .count() as u32;
    }
    streamed
}
