//! `model`'s snapshot to the wire's, by hand: the wire types stay in `proto`, the plan
//! types in `model`, and only this service knows both. The conversion consumes the
//! snapshot, so strings move instead of being copied where the types allow it.

use model::{
    delta::Delta,
    snapshot::{KeycloakGroup, KeycloakMembership, KeycloakUser, Snapshot},
};
use proto::v1;

/// What the wire snapshot carries besides the directory.
pub struct SnapshotHeader<'a> {
    pub run_id: &'a str,
    pub connector: &'a str,
    pub realm: &'a str,
    pub fetched_at: prost_types::Timestamp,
}

pub fn snapshot_to_proto(snapshot: Snapshot, header: &SnapshotHeader<'_>) -> v1::Snapshot {
    let Snapshot {
        users,
        groups,
        memberships,
    } = snapshot;
    v1::Snapshot {
        schema_version: v1::SCHEMA_VERSION,
        run_id: header.run_id.to_owned(),
        connector: header.connector.to_owned(),
        realm: header.realm.to_owned(),
        fetched_at: Some(header.fetched_at),
        users: users.into_iter().map(user_to_proto).collect(),
        groups: groups.into_iter().map(group_to_proto).collect(),
        memberships: memberships.into_iter().map(membership_to_proto).collect(),
        ..Default::default()
    }
}

/// An event run's delta as a delta snapshot: the named users Keycloak still has with their
/// memberships, those it no longer has, and the group tree only when the delta has one
/// (`groups_included`; else the tree is the base's). It names them all
/// (`named_user_ids`): what it carries from earlier deltas is added later (`crate::carry`).
pub fn delta_to_proto(delta: Delta, header: &SnapshotHeader<'_>) -> v1::Snapshot {
    let Delta {
        users,
        deleted,
        memberships,
        groups,
    } = delta;
    let mut snapshot = v1::Snapshot {
        schema_version: v1::SCHEMA_VERSION,
        run_id: header.run_id.to_owned(),
        connector: header.connector.to_owned(),
        realm: header.realm.to_owned(),
        fetched_at: Some(header.fetched_at),
        users: users.into_iter().map(user_to_proto).collect(),
        memberships: memberships.into_iter().map(membership_to_proto).collect(),
        delta: true,
        deleted_user_ids: deleted
            .into_iter()
            .map(|id| id.as_str().to_owned())
            .collect(),
        groups_included: groups.is_some(),
        groups: groups
            .unwrap_or_default()
            .into_iter()
            .map(group_to_proto)
            .collect(),
        named_user_ids: Vec::new(),
        named_listed: true,
        parts: 0,
    };
    snapshot.named_user_ids = crate::carry::named(&snapshot);
    snapshot
}

fn user_to_proto(user: KeycloakUser) -> v1::KeycloakUser {
    v1::KeycloakUser {
        id: user.id.as_str().to_owned(),
        username: user.username,
        email: user.email.unwrap_or_default(),
        first_name: user.first_name.unwrap_or_default(),
        last_name: user.last_name.unwrap_or_default(),
        enabled: user.enabled,
        email_verified: user.email_verified,
        attributes: user
            .attributes
            .into_iter()
            .map(|(key, values)| (key, v1::StringList { values }))
            .collect(),
        federation_link: user.federation_link.unwrap_or_default(),
        // `model` does not keep it; 0 means unknown.
        created_timestamp: 0,
    }
}

fn group_to_proto(group: KeycloakGroup) -> v1::KeycloakGroup {
    v1::KeycloakGroup {
        id: group.id.as_str().to_owned(),
        name: group.name,
        path: group.path,
        parent_id: group
            .parent_id
            .map(|parent| parent.as_str().to_owned())
            .unwrap_or_default(),
    }
}

fn membership_to_proto(membership: KeycloakMembership) -> v1::KeycloakMembership {
    v1::KeycloakMembership {
        user_id: membership.user_id.as_str().to_owned(),
        group_id: membership.group_id.as_str().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use model::snapshot::{GroupId, UserId};

    use super::*;

    #[test]
    fn a_delta_is_marked_and_carries_its_tree_only_when_it_has_one() {
        let header = SnapshotHeader {
            run_id: "run-2",
            connector: "corp",
            realm: "corp-realm",
            fetched_at: prost_types::Timestamp::default(),
        };
        let ann = KeycloakUser {
            id: UserId::new("u1"),
            username: "ann".to_owned(),
            email: None,
            first_name: None,
            last_name: None,
            enabled: true,
            email_verified: false,
            attributes: BTreeMap::new(),
            federation_link: None,
        };
        let membership = KeycloakMembership {
            user_id: UserId::new("u1"),
            group_id: GroupId::new("g1"),
        };
        let without_tree = delta_to_proto(
            Delta {
                users: vec![ann.clone()],
                deleted: vec![UserId::new("u9")],
                memberships: vec![membership.clone()],
                groups: None,
            },
            &header,
        );
        assert!(without_tree.delta);
        assert!(!without_tree.groups_included);
        assert!(without_tree.groups.is_empty());
        assert_eq!(without_tree.deleted_user_ids, ["u9"]);
        assert_eq!(without_tree.users.len(), 1);
        assert_eq!(without_tree.memberships.len(), 1);
        assert_eq!(without_tree.run_id, "run-2");

        let with_empty_tree = delta_to_proto(
            Delta {
                groups: Some(Vec::new()),
                ..Delta::default()
            },
            &header,
        );
        assert!(with_empty_tree.groups_included);
        assert!(with_empty_tree.groups.is_empty());
    }

    #[test]
    fn every_field_reaches_the_wire_and_absent_values_are_empty() {
        let ann = UserId::new("u1");
        let staff = GroupId::new("g1");
        let devs = GroupId::new("g2");
        let snapshot = Snapshot {
            users: vec![
                KeycloakUser {
                    id: ann.clone(),
                    username: "ann".to_owned(),
                    email: Some("ann@example.org".to_owned()),
                    first_name: Some("Ann".to_owned()),
                    last_name: Some("Ørsted".to_owned()),
                    enabled: true,
                    email_verified: true,
                    attributes: BTreeMap::from([(
                        "languages".to_owned(),
                        vec!["da".to_owned(), "en".to_owned()],
                    )]),
                    federation_link: Some("ldap-1".to_owned()),
                },
                KeycloakUser {
                    id: UserId::new("u2"),
                    username: "bob".to_owned(),
                    email: None,
                    first_name: None,
                    last_name: None,
                    enabled: false,
                    email_verified: false,
                    attributes: BTreeMap::new(),
                    federation_link: None,
                },
            ],
            groups: vec![
                KeycloakGroup {
                    id: staff.clone(),
                    name: "staff".to_owned(),
                    path: "/staff".to_owned(),
                    parent_id: None,
                },
                KeycloakGroup {
                    id: devs.clone(),
                    name: "devs".to_owned(),
                    path: "/staff/devs".to_owned(),
                    parent_id: Some(staff),
                },
            ],
            memberships: vec![KeycloakMembership {
                user_id: ann,
                group_id: devs,
            }],
        };
        let fetched_at = prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 0,
        };
        let wire = snapshot_to_proto(
            snapshot,
            &SnapshotHeader {
                run_id: "run-1",
                connector: "corp",
                realm: "corp-realm",
                fetched_at,
            },
        );
        assert_eq!(
            wire,
            v1::Snapshot {
                parts: Default::default(),
                schema_version: v1::SCHEMA_VERSION,
                run_id: "run-1".to_owned(),
                connector: "corp".to_owned(),
                realm: "corp-realm".to_owned(),
                fetched_at: Some(fetched_at),
                users: vec![
                    v1::KeycloakUser {
                        id: "u1".to_owned(),
                        username: "ann".to_owned(),
                        email: "ann@example.org".to_owned(),
                        first_name: "Ann".to_owned(),
                        last_name: "Ørsted".to_owned(),
                        enabled: true,
                        email_verified: true,
                        attributes: [(
                            "languages".to_owned(),
                            v1::StringList {
                                values: vec!["da".to_owned(), "en".to_owned()]
                            }
                        )]
                        .into_iter()
                        .collect(),
                        federation_link: "ldap-1".to_owned(),
                        created_timestamp: 0,
                    },
                    v1::KeycloakUser {
                        id: "u2".to_owned(),
                        username: "bob".to_owned(),
                        ..Default::default()
                    },
                ],
                groups: vec![
                    v1::KeycloakGroup {
                        id: "g1".to_owned(),
                        name: "staff".to_owned(),
                        path: "/staff".to_owned(),
                        parent_id: String::new(),
                    },
                    v1::KeycloakGroup {
                        id: "g2".to_owned(),
                        name: "devs".to_owned(),
                        path: "/staff/devs".to_owned(),
                        parent_id: "g1".to_owned(),
                    },
                ],
                memberships: vec![v1::KeycloakMembership {
                    user_id: "u1".to_owned(),
                    group_id: "g2".to_owned(),
                }],
                deleted_user_ids: Vec::new(),
                delta: false,
                groups_included: false,
                named_user_ids: Vec::new(),
                named_listed: false,
            }
        );
    }
}
