//! Snapshots in the object store against a real nats-server: the fetcher stores one under
//! `{run_id}.pb.zst` in `{prefix}-snapshots`, and the planner loads it back unchanged.

use std::collections::HashMap;

use bus::{Bus, Topology};
use proto::v1::{self, KeycloakGroup, KeycloakMembership, KeycloakUser, Snapshot, StringList};
use test_support::nats::NatsServer;

#[tokio::test]
async fn a_stored_snapshot_loads_back_unchanged_from_the_snapshots_bucket() {
    let nats = NatsServer::start().expect("nats-server");
    let bus = Bus::connect(&nats.url(), Topology::new("s1"))
        .await
        .expect("bus");
    let bucket = bus.topology().snapshots_bucket();
    assert_eq!(bucket, "s1-snapshots");
    let snapshot = Snapshot {
        parts: Default::default(),
        schema_version: v1::SCHEMA_VERSION,
        run_id: "run-1".to_owned(),
        connector: "corp".to_owned(),
        realm: "corp".to_owned(),
        fetched_at: None,
        users: (0..1_000)
            .map(|idx| KeycloakUser {
                id: format!("u{idx}"),
                username: format!("user{idx}"),
                enabled: true,
                attributes: HashMap::from([(
                    "department".to_owned(),
                    StringList {
                        values: vec!["engineering".to_owned()],
                    },
                )]),
                ..Default::default()
            })
            .collect(),
        groups: vec![KeycloakGroup {
            id: "g1".to_owned(),
            name: "staff".to_owned(),
            path: "/staff".to_owned(),
            parent_id: String::new(),
        }],
        memberships: vec![KeycloakMembership {
            user_id: "u1".to_owned(),
            group_id: "g1".to_owned(),
        }],
        deleted_user_ids: Vec::new(),
        delta: false,
        groups_included: false,
        named_user_ids: Vec::new(),
        named_listed: false,
    };
    let object = bus
        .put_object(&bucket, "run-1.pb.zst", &snapshot)
        .await
        .expect("put");
    let loaded: Snapshot = bus.get_object(&object).await.expect("get");
    assert_eq!(loaded, snapshot);
}
