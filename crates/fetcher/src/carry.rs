//! Deltas that carry what the earlier deltas on their base read (#16).
//!
//! The planner applies a delta to the base alone. A delta that named only user B would
//! then be planned with every other user as the base has them: after an earlier delta
//! renamed A from `x` to `y`, B asking for `x` would find it taken by A's old record and
//! be refused until the next full sync. So each delta also carries the users the earlier
//! deltas on the same base named, as they last read them (a newer read wins, a deletion
//! included), with their memberships; `Snapshot.named_user_ids` says which users this run
//! named itself, the only ones its plan may change.
//!
//! The previous delta is found through the pointer `last-delta.{connector}` of the
//! follower bucket ([`crate::base::Bases::last_delta`]): its base's checksum and its
//! object, written after the delta is stored and before it is announced. A delta of
//! another base, or none, carries nothing. What is carried is bounded by
//! [`MAX_CARRIED_USERS`]: past it a delta starts again from its own users (the stale
//! records come back until the next full sync, as before), so a busy day cannot make every
//! delta as large as the realm.

use std::collections::BTreeSet;

use proto::v1;

/// The most users (kept and deleted) one delta carries from the earlier ones.
pub const MAX_CARRIED_USERS: usize = 2_000;

/// The users `delta` names: the ones it holds and the ones it deletes, sorted.
pub fn named(delta: &v1::Snapshot) -> Vec<String> {
    let named: BTreeSet<&str> = delta
        .users
        .iter()
        .map(|user| user.id.as_str())
        .chain(delta.deleted_user_ids.iter().map(String::as_str))
        .collect();
    named.into_iter().map(str::to_owned).collect()
}

/// What a delta holds of the users it named itself (all of it for a delta that does not
/// list them: an older fetcher's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Own {
    pub users: u64,
    pub deleted: u64,
    pub memberships: u64,
    /// The users (kept and deleted) it carries from earlier deltas.
    pub carried: u64,
}

impl Own {
    pub fn of(delta: &v1::Snapshot) -> Own {
        let named: BTreeSet<&str> = delta.named_user_ids.iter().map(String::as_str).collect();
        let own = |id: &str| !delta.named_listed || named.contains(id);
        let users = delta.users.iter().filter(|user| own(&user.id)).count();
        let deleted = delta.deleted_user_ids.iter().filter(|id| own(id)).count();
        let memberships = delta
            .memberships
            .iter()
            .filter(|membership| own(&membership.user_id))
            .count();
        let carried = delta.users.len() + delta.deleted_user_ids.len() - users - deleted;
        Own {
            users: users as u64,
            deleted: deleted as u64,
            memberships: memberships as u64,
            carried: carried as u64,
        }
    }
}

/// `fresh` (this run's delta, its `named_user_ids` set) with what `previous` holds of the
/// users `fresh` does not name: their records, their memberships (of groups still in the
/// tree, when `fresh` has one) and their deletions. `fresh` alone when `previous` carries
/// more than [`MAX_CARRIED_USERS`] such users.
pub fn carry(previous: v1::Snapshot, mut fresh: v1::Snapshot) -> v1::Snapshot {
    let named: BTreeSet<String> = fresh.named_user_ids.iter().cloned().collect();
    let carried = previous
        .users
        .iter()
        .map(|user| &user.id)
        .chain(&previous.deleted_user_ids)
        .filter(|id| !named.contains(*id))
        .collect::<BTreeSet<_>>()
        .len();
    if carried > MAX_CARRIED_USERS {
        tracing::info!(
            carried,
            max = MAX_CARRIED_USERS,
            "The deltas since the base named too many users to carry; this one starts afresh."
        );
        return fresh;
    }
    let groups: Option<BTreeSet<String>> = fresh
        .groups_included
        .then(|| fresh.groups.iter().map(|group| group.id.clone()).collect());
    fresh.users.extend(
        previous
            .users
            .into_iter()
            .filter(|user| !named.contains(&user.id)),
    );
    fresh.deleted_user_ids.extend(
        previous
            .deleted_user_ids
            .into_iter()
            .filter(|id| !named.contains(id)),
    );
    fresh.memberships.extend(
        previous
            .memberships
            .into_iter()
            .filter(|membership| !named.contains(&membership.user_id))
            .filter(|membership| {
                groups
                    .as_ref()
                    .is_none_or(|groups| groups.contains(&membership.group_id))
            }),
    );
    if !fresh.groups_included && previous.groups_included {
        fresh.groups_included = true;
        fresh.groups = previous.groups;
    }
    fresh
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, username: &str) -> v1::KeycloakUser {
        v1::KeycloakUser {
            id: id.to_owned(),
            username: username.to_owned(),
            enabled: true,
            ..Default::default()
        }
    }

    fn membership(user_id: &str, group_id: &str) -> v1::KeycloakMembership {
        v1::KeycloakMembership {
            user_id: user_id.to_owned(),
            group_id: group_id.to_owned(),
        }
    }

    fn group(id: &str) -> v1::KeycloakGroup {
        v1::KeycloakGroup {
            id: id.to_owned(),
            name: id.to_owned(),
            path: format!("/{id}"),
            ..Default::default()
        }
    }

    fn delta(
        users: Vec<v1::KeycloakUser>,
        deleted: &[&str],
        memberships: Vec<v1::KeycloakMembership>,
    ) -> v1::Snapshot {
        let mut delta = v1::Snapshot {
            delta: true,
            users,
            deleted_user_ids: deleted.iter().map(|id| (*id).to_owned()).collect(),
            memberships,
            ..Default::default()
        };
        delta.named_user_ids = named(&delta);
        delta.named_listed = true;
        delta
    }

    fn ids(users: &[v1::KeycloakUser]) -> BTreeSet<(&str, &str)> {
        users
            .iter()
            .map(|user| (user.id.as_str(), user.username.as_str()))
            .collect()
    }

    #[test]
    fn a_delta_carries_the_earlier_reads_of_the_users_it_does_not_name() {
        // Earlier: a renamed to y (freeing x), b deleted, c in g1.
        let previous = delta(
            vec![user("a", "y"), user("c", "c")],
            &["b"],
            vec![membership("a", "g1"), membership("c", "g1")],
        );
        // Now: d takes x, c was re-read (now in g2), b was created again.
        let fresh = delta(
            vec![user("d", "x"), user("c", "c"), user("b", "b")],
            &[],
            vec![membership("c", "g2"), membership("d", "g1")],
        );

        let carried = carry(previous, fresh);

        assert_eq!(
            carried.named_user_ids,
            ["b", "c", "d"],
            "only this run's users"
        );
        assert_eq!(
            ids(&carried.users),
            BTreeSet::from([("a", "y"), ("b", "b"), ("c", "c"), ("d", "x")])
        );
        assert!(
            carried.deleted_user_ids.is_empty(),
            "a newer read of b wins over its deletion"
        );
        let memberships: BTreeSet<(&str, &str)> = carried
            .memberships
            .iter()
            .map(|m| (m.user_id.as_str(), m.group_id.as_str()))
            .collect();
        assert_eq!(
            memberships,
            BTreeSet::from([("a", "g1"), ("c", "g2"), ("d", "g1")]),
            "c's memberships are the newer read's"
        );
        assert!(!carried.groups_included);
    }

    #[test]
    fn a_deletion_wins_over_an_earlier_read_and_a_new_tree_drops_gone_groups() {
        let mut previous = delta(
            vec![user("a", "a"), user("b", "b")],
            &[],
            vec![membership("a", "g1"), membership("b", "g2")],
        );
        previous.groups_included = true;
        previous.groups = vec![group("g1"), group("g2")];
        let mut fresh = delta(vec![], &["a"], vec![]);
        fresh.groups_included = true;
        fresh.groups = vec![group("g1")];

        let carried = carry(previous, fresh);

        assert_eq!(ids(&carried.users), BTreeSet::from([("b", "b")]));
        assert_eq!(carried.deleted_user_ids, ["a"]);
        assert!(
            carried.memberships.is_empty(),
            "b's membership of g2, gone from the tree, is not carried: {:?}",
            carried.memberships
        );
        assert_eq!(carried.groups.len(), 1);
    }

    #[test]
    fn an_earlier_tree_is_carried_when_the_delta_has_none() {
        let mut previous = delta(vec![], &[], vec![]);
        previous.groups_included = true;
        previous.groups = vec![group("g1")];
        let carried = carry(previous, delta(vec![user("a", "a")], &[], vec![]));
        assert!(carried.groups_included);
        assert_eq!(carried.groups, vec![group("g1")]);
    }

    #[test]
    fn past_the_bound_a_delta_starts_afresh() {
        let previous = delta(
            (0..=MAX_CARRIED_USERS)
                .map(|idx| user(&format!("u{idx}"), &format!("user{idx}")))
                .collect(),
            &[],
            vec![],
        );
        let fresh = delta(vec![user("new", "new")], &[], vec![]);
        let carried = carry(previous, fresh.clone());
        assert_eq!(carried, fresh);
        let at_bound = delta(
            (0..MAX_CARRIED_USERS)
                .map(|idx| user(&format!("u{idx}"), &format!("user{idx}")))
                .collect(),
            &[],
            vec![],
        );
        assert_eq!(
            carry(at_bound, fresh).users.len(),
            MAX_CARRIED_USERS + 1,
            "at the bound, everything is carried"
        );
    }
}
