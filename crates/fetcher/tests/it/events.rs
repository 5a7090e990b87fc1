//! Event-driven sync in the fetcher (#16), against a real Keycloak and nats-server: an event
//! run naming users reads only those into a delta snapshot announced with the connector's
//! last full snapshot as its base (with the group tree once a group was named on that
//! base); without a base (none yet, or gone) it reads the whole
//! realm; and the follower publishes one `EventsObserved` per edit, with the message id
//! every replica reading the same events would give it.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use fetcher::{
    app::StepOutcome,
    follow::{Follower, Named},
    observe::{self, Observation},
};
use keycloak::client::Client;
use proto::v1::{self, RunRequested, SnapshotReady};
use reqwest::Method;
use serde_json::json;
use test_support::keycloak::{Keycloak, TestRealm};

use crate::helpers::{CONNECTOR, TestApp, connector, run_requested, small_realm, spawn_app};

const STEP_WAIT: Duration = Duration::from_secs(10);

fn event_run(run_id: &str, user_ids: &[&str], group_ids: &[&str]) -> RunRequested {
    RunRequested {
        event: Some(v1::EventTrigger {
            user_ids: user_ids.iter().map(|id| (*id).to_owned()).collect(),
            group_ids: group_ids.iter().map(|id| (*id).to_owned()).collect(),
            events: (user_ids.len() + group_ids.len()) as u64,
            full_sync_reason: String::new(),
        }),
        ..run_requested(run_id)
    }
}

/// Every SnapshotReady published so far, oldest first.
async fn snapshots_ready(test: &TestApp) -> anyhow::Result<Vec<SnapshotReady>> {
    let ready = test.bus.topology().snapshot_ready();
    test.snapshot_events()
        .await?
        .into_iter()
        .filter(|(subject, _)| *subject == ready)
        .map(|(_, payload)| Ok(bus::decode::<SnapshotReady>(&payload)?))
        .collect()
}

/// The snapshot `ready` announces, as stored.
async fn stored(test: &TestApp, ready: &SnapshotReady) -> anyhow::Result<v1::Snapshot> {
    let object = ready.snapshot.as_ref().expect("an object ref");
    Ok(test.bus.get_object(object).await?)
}

/// The ids of a snapshot's users, in its order.
fn user_ids(snapshot: &v1::Snapshot) -> Vec<&str> {
    snapshot.users.iter().map(|user| user.id.as_str()).collect()
}

#[tokio::test]
async fn an_event_run_after_a_full_run_reads_only_what_it_names() -> anyhow::Result<()> {
    let keycloak = Keycloak::shared().await?;
    let realm = keycloak.create_realm(small_realm()).await?;
    let test = spawn_app(connector(&realm)).await?;
    test.request_run(&run_requested("run-full")).await?;
    assert!(matches!(
        test.app.try_step(STEP_WAIT).await?,
        StepOutcome::SnapshotReady { users: 3, .. }
    ));

    // zoë is named and still there; bob is named and deleted; carol is not named.
    let zoe = realm.user_id("zoë").await?;
    let bob = realm.user_id("bob").await?;
    realm
        .admin(Method::DELETE, &format!("users/{bob}"), None)
        .await?;
    test.request_run(&event_run("run-users", &[&zoe, &bob], &[]))
        .await?;
    assert_eq!(
        test.app.try_step(STEP_WAIT).await?,
        StepOutcome::DeltaReady {
            run_id: "run-users".to_owned(),
            users: 1,
            memberships: 2,
            deleted: 1,
            groups_included: false,
            base: "run-full.pb.zst".to_owned(),
        }
    );
    let ready = snapshots_ready(&test).await?;
    assert_eq!(ready.len(), 2, "{ready:?}");
    let (full, delta) = (&ready[0], &ready[1]);
    assert_eq!(full.base, None, "a full snapshot has no base");
    assert_eq!(
        delta.base, full.snapshot,
        "the delta applies to the full run's snapshot"
    );
    assert_eq!((delta.users, delta.groups, delta.memberships), (1, 0, 2));
    assert_eq!(delta.mode, v1::RunMode::Simulate as i32);
    let object = delta.snapshot.clone().expect("an object ref");
    assert_eq!(object.key, "run-users.pb.zst");
    let snapshot: v1::Snapshot = test.bus.get_object(&object).await?;
    assert!(snapshot.delta);
    assert!(!snapshot.groups_included);
    assert!(snapshot.groups.is_empty());
    assert_eq!(user_ids(&snapshot), [zoe.as_str()]);
    assert_eq!(snapshot.deleted_user_ids, [bob.as_str()]);
    assert!(
        snapshot
            .memberships
            .iter()
            .all(|membership| membership.user_id == zoe),
        "{:?}",
        snapshot.memberships
    );

    // A group named: the whole tree comes along, and no user.
    let staff = realm.group_id("/staff").await?;
    test.request_run(&event_run("run-group", &[], &[&staff]))
        .await?;
    assert_eq!(
        test.app.try_step(STEP_WAIT).await?,
        StepOutcome::DeltaReady {
            run_id: "run-group".to_owned(),
            users: 0,
            memberships: 0,
            deleted: 0,
            groups_included: true,
            base: "run-full.pb.zst".to_owned(),
        }
    );
    let snapshot = stored(&test, &snapshots_ready(&test).await?[2]).await?;
    assert!(snapshot.delta && snapshot.groups_included);
    // It carries what the delta before it on the same base read, and names none of it:
    // the planner patches the base with zoë and bob as they are now, and plans neither.
    assert!(snapshot.named_listed);
    assert!(
        snapshot.named_user_ids.is_empty(),
        "{:?}",
        snapshot.named_user_ids
    );
    assert_eq!(user_ids(&snapshot), [zoe.as_str()]);
    assert_eq!(snapshot.deleted_user_ids, [bob.as_str()]);
    assert_eq!(
        snapshot.memberships.len(),
        2,
        "zoë's, in groups of the tree"
    );
    assert_eq!(
        snapshot
            .groups
            .iter()
            .map(|group| group.path.as_str())
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(["/staff", "/staff/devs", "/staff/devs/backend"])
    );

    // The tree may differ from the base's now (the group was renamed, say), and each delta
    // is applied to the base alone: a later delta naming only users carries the tree too.
    test.request_run(&event_run("run-after-group", &[&zoe], &[]))
        .await?;
    assert_eq!(
        test.app.try_step(STEP_WAIT).await?,
        StepOutcome::DeltaReady {
            run_id: "run-after-group".to_owned(),
            users: 1,
            memberships: 2,
            deleted: 0,
            groups_included: true,
            base: "run-full.pb.zst".to_owned(),
        }
    );

    // A new full snapshot is the new base, with the tree as it is: users alone again.
    test.request_run(&run_requested("run-full-2")).await?;
    assert!(matches!(
        test.app.try_step(STEP_WAIT).await?,
        StepOutcome::SnapshotReady { .. }
    ));
    test.request_run(&event_run("run-users-2", &[&zoe], &[]))
        .await?;
    assert_eq!(
        test.app.try_step(STEP_WAIT).await?,
        StepOutcome::DeltaReady {
            run_id: "run-users-2".to_owned(),
            users: 1,
            memberships: 2,
            deleted: 0,
            groups_included: false,
            base: "run-full-2.pb.zst".to_owned(),
        }
    );
    // ... and carries nothing of the deltas on the old base: bob's deletion is in it.
    let ready = snapshots_ready(&test).await?;
    let snapshot = stored(&test, ready.last().expect("a SnapshotReady")).await?;
    assert_eq!(snapshot.named_user_ids, [zoe.as_str()]);
    assert!(
        snapshot.deleted_user_ids.is_empty(),
        "{:?}",
        snapshot.deleted_user_ids
    );
    assert_eq!(snapshot.users.len(), 1);
    Ok(())
}

#[tokio::test]
async fn an_event_run_without_a_base_reads_the_whole_realm() -> anyhow::Result<()> {
    let keycloak = Keycloak::shared().await?;
    let realm = keycloak.create_realm(small_realm()).await?;
    let test = spawn_app(connector(&realm)).await?;
    let zoe = realm.user_id("zoë").await?;

    // No full run yet: no base.
    test.request_run(&event_run("run-1", &[&zoe], &[])).await?;
    assert_eq!(
        test.app.try_step(STEP_WAIT).await?,
        StepOutcome::SnapshotReady {
            run_id: "run-1".to_owned(),
            users: 3,
            groups: 3,
            memberships: 3,
        }
    );
    let ready = snapshots_ready(&test).await?;
    assert_eq!(ready[0].base, None);
    let snapshot: v1::Snapshot = test
        .bus
        .get_object(ready[0].snapshot.as_ref().expect("an object ref"))
        .await?;
    assert!(!snapshot.delta);

    // That full snapshot is now the base of the next event run ...
    test.request_run(&event_run("run-2", &[&zoe], &[])).await?;
    assert!(matches!(
        test.app.try_step(STEP_WAIT).await?,
        StepOutcome::DeltaReady { base, .. } if base == "run-1.pb.zst"
    ));

    // ... until it is gone: then the whole realm again.
    test.bus
        .jetstream()
        .get_object_store(test.app.snapshot_bucket())
        .await?
        .delete("run-1.pb.zst")
        .await?;
    test.request_run(&event_run("run-3", &[&zoe], &[])).await?;
    assert!(matches!(
        test.app.try_step(STEP_WAIT).await?,
        StepOutcome::SnapshotReady { users: 3, .. }
    ));

    // A full sync reason wins over the ids.
    let mut forced = event_run("run-4", &[&zoe], &[]);
    if let Some(event) = forced.event.as_mut() {
        event.full_sync_reason = "a gap in the watermark".to_owned();
    }
    test.request_run(&forced).await?;
    assert!(matches!(
        test.app.try_step(STEP_WAIT).await?,
        StepOutcome::SnapshotReady { users: 3, .. }
    ));
    Ok(())
}

/// Turns on the user and admin events the follower reads.
async fn record_events(realm: &TestRealm<'_>) -> anyhow::Result<()> {
    realm.save_events(&keycloak::events::USER_EVENT_TYPES).await
}

/// Every EventsObserved published so far, oldest first.
async fn events_observed(test: &TestApp) -> anyhow::Result<Vec<v1::EventsObserved>> {
    let topology = test.bus.topology();
    test_support::nats::stream_messages(
        test.bus.jetstream(),
        &topology.events_stream(),
        &topology.events_observed(),
    )
    .await?
    .into_iter()
    .map(|(_, payload)| Ok(bus::decode::<v1::EventsObserved>(&payload)?))
    .collect()
}

#[tokio::test]
async fn the_follower_publishes_one_message_per_edit_and_nothing_after() -> anyhow::Result<()> {
    let keycloak = Keycloak::shared().await?;
    let realm = keycloak.create_realm(small_realm()).await?;
    record_events(&realm).await?;
    let mut settings = connector(&realm);
    settings.events.enabled = true;
    settings.events.batch_window_ms = 0;
    let test = spawn_app(settings.clone()).await?;
    let step = || async {
        test.app
            .observe_step(CONNECTOR)
            .await
            .expect("the connector's events are followed")
    };

    // The first start: a full sync, once.
    let Observation::Published { trigger, .. } = step().await? else {
        panic!("the first start publishes");
    };
    assert!(!trigger.full_sync_reason.is_empty(), "{trigger:?}");
    assert_eq!(step().await?, Observation::Nothing);
    assert_eq!(events_observed(&test).await?.len(), 1);

    // An edit: dan is created. A second replica that reads the same events gives the
    // same message id, so JetStream keeps one message.
    realm
        .admin(
            Method::POST,
            "users",
            Some(&json!({ "username": "dan", "enabled": true })),
        )
        .await?;
    let dan = realm.user_id("dan").await?;
    let replica = Follower::open(
        &test.bus,
        CONNECTOR,
        Client::new(settings.clone())?,
        Duration::ZERO,
    )
    .await?;
    let replica_poll = replica.poll_named().await?;
    assert!(matches!(&replica_poll.followed, Named::Ids { users, .. } if users.contains(&dan)));
    let Observation::Published {
        message_id,
        trigger,
    } = step().await?
    else {
        panic!("the edit is published");
    };
    assert_eq!(trigger.user_ids, [dan.as_str()]);
    assert!(trigger.events >= 1);
    assert_eq!(trigger.full_sync_reason, "");
    assert_eq!(
        message_id,
        observe::message_id(CONNECTOR, replica_poll.watermarks())
    );
    let duplicate = v1::EventsObserved {
        schema_version: v1::SCHEMA_VERSION,
        connector: CONNECTOR.to_owned(),
        trigger: Some(trigger.clone()),
        observed_at: None,
    };
    test.bus
        .publish(
            &test.bus.topology().events_observed(),
            &duplicate,
            &message_id,
        )
        .await?;
    let observed = events_observed(&test).await?;
    assert_eq!(observed.len(), 2, "{observed:?}");
    assert_eq!(observed[1].connector, CONNECTOR);
    assert_eq!(observed[1].trigger.as_ref(), Some(&trigger));
    assert!(observed[1].observed_at.is_some());

    // Committed: the next iteration publishes nothing.
    assert_eq!(step().await?, Observation::Nothing);
    assert_eq!(events_observed(&test).await?.len(), 2);
    Ok(())
}

#[tokio::test]
async fn the_service_follows_the_events_until_it_stops() -> anyhow::Result<()> {
    use futures::StreamExt;

    let keycloak = Keycloak::shared().await?;
    let realm = keycloak.create_realm(small_realm()).await?;
    record_events(&realm).await?;
    let mut settings = connector(&realm);
    settings.events.enabled = true;
    settings.events.poll_interval_ms = 100;
    let test = spawn_app(settings).await?;
    let app = Arc::into_inner(test.app).expect("the only reference");
    // A consumer of the test's own, made before the service runs, so it sees the first
    // message whenever it comes.
    let topology = test.bus.topology();
    let watcher = test
        .bus
        .durable_consumer(
            &topology.events_stream(),
            "test-observer",
            &topology.events_observed(),
            Duration::from_secs(30),
        )
        .await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));

    // The follower's first start asks for a full sync of the connector.
    let mut batch = watcher
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(60))
        .messages()
        .await?;
    let message = batch
        .next()
        .await
        .ok_or_else(|| anyhow::anyhow!("no EventsObserved within 60 s"))?
        .map_err(|error| anyhow::anyhow!("pulling: {error}"))?;
    let observed: v1::EventsObserved = bus::decode(&message.payload)?;
    assert_eq!(observed.connector, CONNECTOR);
    let trigger = observed.trigger.expect("a trigger");
    assert!(!trigger.full_sync_reason.is_empty(), "{trigger:?}");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), service).await???;
    Ok(())
}
