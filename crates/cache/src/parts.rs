//! What the parts of a streamed first sync created, read back from the changes the planner
//! stored for each part (`{run_id}.part-{n}.pb.zst` in the plans bucket). The planner plans
//! the complete snapshot against the states without it (`model::plan::without_parts`), and
//! the control plane checks a held run's plan against the cached states without it: the
//! parts' accounts were made by the run being approved, not by a change since.

use std::collections::HashMap;

use bus::Bus;
use bus::objects::ObjectError;
use model::plan::Created;
use model::snapshot::UserId;
use proto::v1;

/// The key of part `part`'s changes in the plans bucket.
pub fn part_key(run_id: &str, part: u32) -> String {
    format!("{run_id}.part-{part}.pb.zst")
}

/// Adds what a part's `changes` create to `created`, by wire product: the accounts (their
/// Keycloak user and login) and the groups.
pub fn add_created(changes: &[v1::Change], created: &mut HashMap<i32, Created>) {
    for change in changes {
        if change.op == v1::ChangeOp::CreateUser as i32 {
            if let Some(fields) = &change.fields {
                created.entry(change.product).or_default().accounts.push((
                    UserId::new(change.keycloak_user_id.clone()),
                    fields.login.clone(),
                ));
            }
        } else if change.op == v1::ChangeOp::CreateGroup as i32 {
            created
                .entry(change.product)
                .or_default()
                .groups
                .push(change.group.clone());
        }
    }
}

/// The changes part `part` of `run_id` stored, if they are stored.
pub async fn stored_part(
    bus: &Bus,
    run_id: &str,
    part: u32,
) -> Result<Option<v1::Plan>, ObjectError> {
    let key = part_key(run_id, part);
    let stored = bus
        .get_latest_object::<v1::Plan>(&bus.topology().plans_bucket(), &key)
        .await?;
    if stored.is_none() {
        tracing::warn!(part, key, "A planned part's changes are not stored.");
    }
    Ok(stored.map(|(plan, _)| plan))
}

/// What parts `1..=parts` of `run_id` created, by wire product; a part whose changes are not
/// stored adds nothing.
pub async fn created_by_parts(
    bus: &Bus,
    run_id: &str,
    parts: u32,
) -> Result<HashMap<i32, Created>, ObjectError> {
    let mut created = HashMap::new();
    for part in 1..=parts {
        if let Some(stored) = stored_part(bus, run_id, part).await? {
            add_created(&stored.changes, &mut created);
        }
    }
    Ok(created)
}
