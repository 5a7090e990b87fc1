//! Splitting a stored plan into the change sets the appliers consume, and publishing them.
//!
//! A product's changes are cut, in plan order, into sets of at most `change_set_size`;
//! each set knows its `sequence` (from 0) and the run's `total_sets` for the product, and
//! is published on `{prefix}.changes.{product}` with the message id
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
/// product's changes in plan order.
pub fn split(plan: &v1::Plan, change_set_size: usize) -> Vec<(Product, v1::ChangeSet)> {
    let mut by_product: Vec<(Product, Vec<&v1::Change>)> = Vec::new();
    for change in &plan.changes {
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
        let total_sets = changes.len().div_ceil(size) as u32;
        for (sequence, chunk) in changes.chunks(size).enumerate() {
            sets.push((
                product,
                v1::ChangeSet {
                    schema_version: v1::SCHEMA_VERSION,
                    run_id: plan.run_id.clone(),
                    product: cache::convert::product_to_proto(product) as i32,
                    sequence: sequence as u32,
                    total_sets,
                    changes: chunk.iter().map(|&change| change.clone()).collect(),
                    stored: None,
                    connector: plan.connector.clone(),
                },
            ));
        }
    }
    sets
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
    fn a_plan_without_changes_has_no_sets() {
        assert!(split(&v1::Plan::default(), 500).is_empty());
    }
}
