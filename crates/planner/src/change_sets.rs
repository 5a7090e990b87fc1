//! Splitting a stored plan into the change sets the appliers consume, and publishing them.
//!
//! A product's changes are cut, in plan order, into sets of at most `change_set_size` that
//! never mix two phases (`model::plan::ChangeOp::phase`: creations, then memberships, then
//! removals, …); each set knows its `sequence` (from 0), the run's `total_sets` for the
//! product, and `depends_on`, the sequence of its phase's first set: the sets before it
//! must be finished first (so a complete plan's sets wait for every part's of a streamed
//! first sync, numbered before them), while the sets of one phase may be applied at the same time by
//! any applier replica. Each set is published on `{prefix}.changes.{product}` with the message id
//! `{run_id}/{product}/{sequence}`, so publishing a plan twice (a redelivered message, a
//! repeated approval) is deduplicated by JetStream. A set too large for one NATS message
//! goes to the plans bucket as `{run_id}/{product}/{sequence}.pb.zst`, and the message
//! carries only its [`v1::ObjectRef`] in `stored`.

use bus::Bus;
use cache::convert::product_from_proto;
use model::state::Product;
use prost::Message;
use proto::v1;

use crate::Error;

/// Room left in a NATS message for the headers (message id, trace context).
const HEADER_ALLOWANCE: usize = 8 * 1024;

/// The change sets of `plan`, product by product in the order the plan lists them, each
/// product's changes in plan order. A change a part of a streamed first sync published
/// already (`streamed_part`) is in none; the sets of a product are numbered after the
/// parts' (`PlanSummary.streamed_sets`).
pub fn split(plan: &v1::Plan, change_set_size: usize) -> Vec<(Product, v1::ChangeSet)> {
    let first = |product: i32| {
        plan.products
            .iter()
            .find(|summary| summary.product == product)
            .map_or(0, |summary| summary.streamed_sets)
    };
    cut(plan, change_set_size, first, 0)
}

/// The change sets of part `part` of a streamed first sync: [`split`], numbered after the
/// sets the earlier parts published (`first`), each naming its part.
pub fn split_part(
    plan: &v1::Plan,
    change_set_size: usize,
    part: u32,
    first: impl Fn(i32) -> u32,
) -> Vec<(Product, v1::ChangeSet)> {
    cut(plan, change_set_size, first, part)
}

fn cut(
    plan: &v1::Plan,
    change_set_size: usize,
    first: impl Fn(i32) -> u32,
    part: u32,
) -> Vec<(Product, v1::ChangeSet)> {
    let mut by_product: Vec<(Product, Vec<&v1::Change>)> = Vec::new();
    for change in plan
        .changes
        .iter()
        .filter(|change| change.streamed_part == 0)
    {
        let Ok(product) = product_from_proto(change.product) else {
            continue;
        };
        match by_product.iter_mut().find(|(known, _)| *known == product) {
            Some((_, changes)) => changes.push(change),
            None => by_product.push((product, vec![change])),
        }
    }
    let size = change_set_size.max(1);
    let mut sets = Vec::new();
    for (product, changes) in by_product {
        let wire_product = cache::convert::product_to_proto(product) as i32;
        let first = first(wire_product);
        // (depends_on, changes) per set: chunks of one phase each.
        let mut chunks: Vec<(u32, &[&v1::Change])> = Vec::new();
        for run in changes.chunk_by(|left, right| phase(left) == phase(right)) {
            let first_of_phase = first + chunks.len() as u32;
            chunks.extend(run.chunks(size).map(|chunk| (first_of_phase, chunk)));
        }
        let total_sets = first + chunks.len() as u32;
        for (index, (depends_on, chunk)) in chunks.into_iter().enumerate() {
            sets.push((
                product,
                v1::ChangeSet {
                    schema_version: v1::SCHEMA_VERSION,
                    run_id: plan.run_id.clone(),
                    product: wire_product,
                    sequence: first + index as u32,
                    total_sets,
                    changes: chunk.iter().map(|&change| change.clone()).collect(),
                    stored: None,
                    connector: plan.connector.clone(),
                    depends_on: Some(depends_on),
                    part,
                },
            ));
        }
    }
    sets
}

/// The phase of a change's operation; an unknown operation is a phase of its own, last.
fn phase(change: &&v1::Change) -> usize {
    v1::ChangeOp::try_from(change.op)
        .ok()
        .and_then(cache::convert::op_from_proto)
        .map_or(usize::MAX, model::plan::ChangeOp::phase)
}

/// Publishes `sets`, storing the ones too large for a message. Answers how many were
/// published.
pub async fn publish(bus: &Bus, sets: Vec<(Product, v1::ChangeSet)>) -> Result<usize, Error> {
    let max_payload = bus.client().server_info().max_payload;
    let count = sets.len();
    for (product, mut set) in sets {
        let message_id = format!("{}/{product}/{}", set.run_id, set.sequence);
        if set.encoded_len() + HEADER_ALLOWANCE > max_payload {
            let key = format!("{message_id}.pb.zst");
            let object = bus
                .put_object(&bus.topology().plans_bucket(), &key, &set)
                .await?;
            set.changes.clear();
            set.stored = Some(object);
        }
        bus.publish(&bus.topology().changes(product.as_str()), &set, &message_id)
            .await?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(product: v1::Product, id: usize) -> v1::Change {
        v1::Change {
            id: format!("{id:016x}"),
            product: product as i32,
            op: v1::ChangeOp::CreateUser as i32,
            ..Default::default()
        }
    }

    #[test]
    fn a_plan_splits_per_product_in_plan_order_with_sequences_and_totals() {
        let mut changes: Vec<v1::Change> = (0..5).map(|id| change(v1::Product::Jira, id)).collect();
        changes.extend((5..7).map(|id| change(v1::Product::Bitbucket, id)));
        let plan = v1::Plan {
            run_id: "run-1".to_owned(),
            changes,
            ..Default::default()
        };
        let sets = split(&plan, 2);
        let shape: Vec<(Product, u32, u32, Vec<String>)> = sets
            .iter()
            .map(|(product, set)| {
                let ids = set
                    .changes
                    .iter()
                    .map(|change| change.id[15..].to_owned())
                    .collect();
                (*product, set.sequence, set.total_sets, ids)
            })
            .collect();
        let ids = |ids: &[&str]| ids.iter().map(|id| (*id).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            shape,
            [
                (Product::Jira, 0, 3, ids(&["0", "1"])),
                (Product::Jira, 1, 3, ids(&["2", "3"])),
                (Product::Jira, 2, 3, ids(&["4"])),
                (Product::Bitbucket, 0, 1, ids(&["5", "6"])),
            ]
        );
        assert!(sets.iter().all(|(_, set)| set.run_id == "run-1"));
    }

    #[test]
    fn a_set_holds_one_phase_and_depends_on_the_first_set_of_its_phase() {
        let ops = [
            v1::ChangeOp::CreateUser,
            v1::ChangeOp::CreateUser,
            v1::ChangeOp::CreateUser,
            v1::ChangeOp::AddMembership,
            v1::ChangeOp::DeactivateUser,
            v1::ChangeOp::DeleteUser,
            v1::ChangeOp::RemoveGroup,
        ];
        let changes = ops
            .iter()
            .enumerate()
            .map(|(id, op)| v1::Change {
                op: *op as i32,
                ..change(v1::Product::Jira, id)
            })
            .collect();
        let plan = v1::Plan {
            run_id: "run-1".to_owned(),
            changes,
            ..Default::default()
        };
        let shape: Vec<(u32, Option<u32>, usize)> = split(&plan, 2)
            .iter()
            .map(|(_, set)| (set.sequence, set.depends_on, set.changes.len()))
            .collect();
        // Creations in two sets (0, 1) that depend on nothing; the membership (2) after
        // both; deactivation and deletion share a phase (3); the group removal (4) last.
        assert_eq!(
            shape,
            [
                (0, Some(0), 2),
                (1, Some(0), 1),
                (2, Some(2), 1),
                (3, Some(3), 2),
                (4, Some(4), 1),
            ]
        );
    }

    #[test]
    fn a_plan_without_changes_has_no_sets() {
        assert!(split(&v1::Plan::default(), 500).is_empty());
    }
}
