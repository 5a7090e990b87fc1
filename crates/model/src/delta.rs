//! Event-driven sync's pure core: a [`Delta`] is what the event follower re-read from
//! Keycloak for the users and groups a burst of events named, never the events' own
//! representations. [`patch`] brings the last full [`Snapshot`] up to date with it, and
//! [`scope`] says which users the delta may change: those it names, and the members of the
//! groups it removed, renamed or moved (their product memberships follow the group's path).
//! The plan of a delta is [`crate::plan::plan_scoped`] of the patched snapshot over that
//! scope, so it follows the same policy, holds and appliers as a full sync and never
//! touches a user it does not name.
//!
//! Full sync stays the reconciler: what no event named (an LDAP import, events expired
//! before they were read) is caught by the next full sync.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::snapshot::{GroupId, KeycloakGroup, KeycloakMembership, KeycloakUser, Snapshot, UserId};

/// What the event follower re-read for one burst of events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// The named users Keycloak still has, as they are now.
    pub users: Vec<KeycloakUser>,
    /// The named users Keycloak no longer has.
    pub deleted: Vec<UserId>,
    /// Every direct group membership of each user of `users`, as it is now.
    pub memberships: Vec<KeycloakMembership>,
    /// The whole group tree as it is now, when an event named a group; `None`: the tree is
    /// as the last snapshot has it.
    pub groups: Option<Vec<KeycloakGroup>>,
}

impl Delta {
    /// The users the delta names: re-read or deleted.
    pub fn named(&self) -> BTreeSet<UserId> {
        self.users
            .iter()
            .map(|user| user.id.clone())
            .chain(self.deleted.iter().cloned())
            .collect()
    }

    /// Whether the delta names nothing.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.deleted.is_empty() && self.groups.is_none()
    }
}

/// `base` with `delta` applied: the named users replaced by their re-read selves (or gone),
/// with their memberships; the group tree replaced when the delta has one, and the
/// memberships of the groups it no longer has dropped, as Keycloak drops them.
pub fn patch(base: &Snapshot, delta: &Delta) -> Snapshot {
    let named: HashSet<&UserId> = delta
        .users
        .iter()
        .map(|user| &user.id)
        .chain(&delta.deleted)
        .collect();
    let groups = delta.groups.clone().unwrap_or_else(|| base.groups.clone());
    // Hashed: at 100,000 users every one of half a million memberships is looked up here.
    let group_ids: HashSet<&GroupId> = groups.iter().map(|group| &group.id).collect();
    let users = base
        .users
        .iter()
        .filter(|user| !named.contains(&user.id))
        .chain(&delta.users)
        .cloned()
        .collect();
    let memberships = base
        .memberships
        .iter()
        .filter(|membership| !named.contains(&membership.user_id))
        .filter(|membership| delta.groups.is_none() || group_ids.contains(&membership.group_id))
        .chain(&delta.memberships)
        .cloned()
        .collect();
    Snapshot {
        users,
        groups,
        memberships,
    }
}

/// The users a plan of `delta` over `base` may change: the named ones, and the members (in
/// `base`) of every group the delta's tree removed, renamed or moved.
pub fn scope(base: &Snapshot, delta: &Delta) -> BTreeSet<UserId> {
    scope_of(base, delta, delta.named())
}

/// [`scope`] for a delta that also carries users earlier deltas named (to patch the base
/// with what they read), where only `named`, the users this run named, may change.
pub fn scope_of(base: &Snapshot, delta: &Delta, named: BTreeSet<UserId>) -> BTreeSet<UserId> {
    let mut scope = named;
    let Some(groups) = &delta.groups else {
        return scope;
    };
    let now: BTreeMap<&GroupId, &str> = groups
        .iter()
        .map(|group| (&group.id, group.path.as_str()))
        .collect();
    let changed: BTreeSet<&GroupId> = base
        .groups
        .iter()
        .filter(|group| now.get(&group.id) != Some(&group.path.as_str()))
        .map(|group| &group.id)
        .collect();
    scope.extend(
        base.memberships
            .iter()
            .filter(|membership| changed.contains(&membership.group_id))
            .map(|membership| membership.user_id.clone()),
    );
    scope
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> KeycloakUser {
        KeycloakUser {
            id: UserId::new(id),
            username: id.to_owned(),
            email: None,
            first_name: None,
            last_name: None,
            enabled: true,
            email_verified: false,
            attributes: BTreeMap::new(),
            federation_link: None,
        }
    }

    fn group(id: &str, path: &str) -> KeycloakGroup {
        KeycloakGroup {
            id: GroupId::new(id),
            name: path.trim_start_matches('/').to_owned(),
            path: path.to_owned(),
            parent_id: None,
        }
    }

    fn member(user: &str, group: &str) -> KeycloakMembership {
        KeycloakMembership {
            user_id: UserId::new(user),
            group_id: GroupId::new(group),
        }
    }

    fn base() -> Snapshot {
        Snapshot {
            users: vec![user("ann"), user("bo"), user("cy")],
            groups: vec![group("g1", "/staff"), group("g2", "/ops")],
            memberships: vec![member("ann", "g1"), member("bo", "g1"), member("cy", "g2")],
        }
    }

    #[test]
    fn a_patch_replaces_the_named_users_and_their_memberships_and_keeps_the_rest() {
        let mut renamed = user("ann");
        renamed.username = "anna".to_owned();
        let delta = Delta {
            users: vec![renamed.clone(), user("dee")],
            deleted: vec![UserId::new("bo")],
            memberships: vec![member("ann", "g2"), member("dee", "g1")],
            groups: None,
        };
        let patched = patch(&base(), &delta);
        let usernames: BTreeSet<&str> = patched
            .users
            .iter()
            .map(|user| user.username.as_str())
            .collect();
        assert_eq!(usernames, BTreeSet::from(["anna", "cy", "dee"]));
        let memberships: BTreeSet<(&str, &str)> = patched
            .memberships
            .iter()
            .map(|m| (m.user_id.as_str(), m.group_id.as_str()))
            .collect();
        assert_eq!(
            memberships,
            BTreeSet::from([("ann", "g2"), ("cy", "g2"), ("dee", "g1")])
        );
        assert_eq!(patched.groups, base().groups);
        assert_eq!(
            scope(&base(), &delta),
            BTreeSet::from([UserId::new("ann"), UserId::new("bo"), UserId::new("dee")])
        );
    }

    #[test]
    fn a_group_removed_or_renamed_puts_its_members_in_scope_and_drops_its_memberships() {
        let delta = Delta {
            groups: Some(vec![group("g2", "/operations")]),
            ..Delta::default()
        };
        let patched = patch(&base(), &delta);
        assert_eq!(patched.memberships, vec![member("cy", "g2")]);
        assert_eq!(
            scope(&base(), &delta),
            BTreeSet::from([UserId::new("ann"), UserId::new("bo"), UserId::new("cy")])
        );
        let unchanged = Delta {
            groups: Some(base().groups),
            ..Delta::default()
        };
        assert!(scope(&base(), &unchanged).is_empty());
    }
}
