//! The fetcher service end to end with a real nats-server and a real Keycloak: a run
//! request becomes a stored snapshot and a `SnapshotReady`; a failure becomes one
//! `SnapshotFailed` and nothing else; a request that does not decode is dead-lettered and
//! the consumer goes on.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use fetcher::app::StepOutcome;
use proto::v1::{self, Product, RunMode, SnapshotFailed, SnapshotReady};
use test_support::keycloak::{Keycloak, KeycloakOptions, RealmSpec, UserSpec};

use crate::helpers::{
    self, CONNECTOR, Directory, connector, directory, run_requested, small_realm, spawn_app,
};

const STEP_WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn run_request_gets_a_stored_snapshot_and_one_snapshot_ready() -> anyhow::Result<()> {
    let keycloak = Keycloak::shared().await?;
    let realm = keycloak.create_realm(small_realm()).await?;
    let test = spawn_app(connector(&realm)).await?;

    test.request_run(&run_requested("run-1")).await?;
    let outcome = test.app.try_step(STEP_WAIT).await?;
    assert_eq!(
        outcome,
        StepOutcome::SnapshotReady {
            run_id: "run-1".to_owned(),
            users: 3,
            groups: 3,
            memberships: 3,
        }
    );

    let events = test.snapshot_events().await?;
    assert_eq!(events.len(), 1, "{events:?}");
    let (subject, payload) = &events[0];
    assert_eq!(subject, &test.bus.topology().snapshot_ready());
    let ready: SnapshotReady = bus::decode(payload)?;
    assert_eq!(
        (ready.run_id.as_str(), ready.connector.as_str()),
        ("run-1", CONNECTOR)
    );
    assert_eq!((ready.users, ready.groups, ready.memberships), (3, 3, 3));
    assert_eq!(ready.mode, RunMode::Simulate as i32);
    assert_eq!(
        ready.products,
        [Product::Jira as i32, Product::Bitbucket as i32]
    );
    let object = ready.snapshot.clone().expect("an object ref");
    assert_eq!(object.bucket, "kstest-snapshots");
    assert_eq!(object.key, "run-1.pb.zst");
    assert_eq!(object.sha256.len(), 64);

    // The stored object is the exact realm, and its checksum is the announced one.
    let snapshot: v1::Snapshot = test.bus.get_object(&object).await?;
    assert_eq!(snapshot.run_id, "run-1");
    assert_eq!(snapshot.realm, realm.name());
    assert_eq!(snapshot.fetched_at, ready.fetched_at);
    let attributes = BTreeMap::from([(
        "languages".to_owned(),
        vec!["da".to_owned(), "en".to_owned()],
    )]);
    assert_eq!(
        directory(&snapshot),
        Directory {
            users: BTreeMap::from([
                ("bob".to_owned(), (String::new(), false, BTreeMap::new())),
                (
                    "carol".to_owned(),
                    ("carol@example.org".to_owned(), true, BTreeMap::new())
                ),
                (
                    "zoë".to_owned(),
                    ("zoe@example.org".to_owned(), true, attributes)
                ),
            ]),
            groups: BTreeMap::from([
                ("/staff".to_owned(), None),
                ("/staff/devs".to_owned(), Some("/staff".to_owned())),
                (
                    "/staff/devs/backend".to_owned(),
                    Some("/staff/devs".to_owned())
                ),
            ]),
            memberships: BTreeSet::from([
                ("carol".to_owned(), "/staff/devs".to_owned()),
                ("zoë".to_owned(), "/staff".to_owned()),
                ("zoë".to_owned(), "/staff/devs/backend".to_owned()),
            ]),
        }
    );
    let zoe = snapshot
        .users
        .iter()
        .find(|user| user.username == "zoë")
        .expect("zoë");
    assert_eq!(zoe.id, realm.user_id("zoë").await?);
    assert_eq!(test.stored_snapshots().await?, ["run-1.pb.zst"]);
    assert_eq!(
        test.app.try_step(Duration::from_millis(200)).await?,
        StepOutcome::Idle
    );
    Ok(())
}

#[tokio::test]
async fn keycloak_dying_mid_fetch_gets_one_snapshot_failed_and_nothing_else() -> anyhow::Result<()>
{
    let keycloak = Keycloak::start(KeycloakOptions::default()).await?;
    let users: Vec<UserSpec> = (0..300)
        .map(|idx| UserSpec::new(&format!("user-{idx:03}")))
        .collect();
    let realm = keycloak
        .create_realm(RealmSpec::default().group("/staff"))
        .await?;
    realm.import_users(&users, 300).await?;
    let mut settings = connector(&realm);
    // One user per request, one request at a time: the fetch is still running when
    // Keycloak is killed.
    settings.page_size = 1;
    settings.concurrency = 1;
    settings.retries = 1;
    settings.timeout_seconds = 5;
    let test = spawn_app(settings).await?;
    let progress = test.app.progress(CONNECTOR).expect("the connector");

    test.request_run(&run_requested("run-dies")).await?;
    let app = Arc::clone(&test.app);
    let step = tokio::spawn(async move { app.try_step(STEP_WAIT).await });
    let deadline = Instant::now() + Duration::from_secs(60);
    while progress.users() < 3 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the fetch did not start: {progress:?}"
        );
        anyhow::ensure!(!step.is_finished(), "the step ended before the kill");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    keycloak.kill();
    anyhow::ensure!(
        progress.users() < 300,
        "the fetch was over before the kill; the test proves nothing"
    );

    let outcome = step.await??;
    let StepOutcome::SnapshotFailed { run_id, reason } = outcome else {
        anyhow::bail!("expected SnapshotFailed, got {outcome:?}");
    };
    assert_eq!(run_id, "run-dies");
    assert!(reason.contains("fetching realm"), "{reason}");

    let events = test.snapshot_events().await?;
    assert_eq!(events.len(), 1, "{events:?}");
    let (subject, payload) = &events[0];
    assert_eq!(subject, &test.bus.topology().snapshot_failed());
    let failed: SnapshotFailed = bus::decode(payload)?;
    assert_eq!(failed.run_id, "run-dies");
    assert_eq!(failed.connector, CONNECTOR);
    assert_eq!(failed.reason, reason);
    assert!(
        test.stored_snapshots().await?.is_empty(),
        "a snapshot was stored"
    );
    Ok(())
}

#[tokio::test]
async fn malformed_run_request_is_dead_lettered_and_the_next_one_is_still_served()
-> anyhow::Result<()> {
    let keycloak = Keycloak::shared().await?;
    let realm = keycloak.create_realm(small_realm()).await?;
    let test = spawn_app(connector(&realm)).await?;

    test.request_garbage(b"\xff\xff not a protobuf").await?;
    test.request_run(&run_requested("run-2")).await?;
    assert_eq!(
        test.app.try_step(STEP_WAIT).await?,
        StepOutcome::DeadLettered
    );
    let outcome = test.app.try_step(STEP_WAIT).await?;
    assert!(
        matches!(&outcome, StepOutcome::SnapshotReady { run_id, .. } if run_id == "run-2"),
        "{outcome:?}"
    );

    let dead = test.dead_letters().await?;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1.as_ref(), b"\xff\xff not a protobuf");
    let events = test.snapshot_events().await?;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, test.bus.topology().snapshot_ready());
    Ok(())
}

#[tokio::test]
async fn missing_role_gets_snapshot_failed_naming_the_role() -> anyhow::Result<()> {
    let keycloak = Keycloak::shared().await?;
    let realm = keycloak
        .create_realm(RealmSpec::default().client_roles(&[]))
        .await?;
    let test = spawn_app(connector(&realm)).await?;
    test.request_run(&run_requested("run-3")).await?;
    let outcome = test.app.try_step(STEP_WAIT).await?;
    let StepOutcome::SnapshotFailed { reason, .. } = &outcome else {
        anyhow::bail!("expected SnapshotFailed, got {outcome:?}");
    };
    assert!(
        reason.contains("lacks the `realm-management` role `view-users`"),
        "{reason}"
    );
    assert!(test.stored_snapshots().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn run_request_for_an_unknown_connector_gets_snapshot_failed() -> anyhow::Result<()> {
    // No Keycloak is needed: the connector is never reached.
    let settings = keycloak::config::KeycloakSettings::new(
        "http://127.0.0.1:9",
        "corp",
        "keysync",
        config::Secret::new("x"),
    );
    let test = spawn_app(settings).await?;
    let mut request = run_requested("run-4");
    request.connector = "elsewhere".to_owned();
    test.request_run(&request).await?;
    let outcome = test.app.try_step(STEP_WAIT).await?;
    assert_eq!(
        outcome,
        StepOutcome::SnapshotFailed {
            run_id: "run-4".to_owned(),
            reason: "no keycloak connector named `elsewhere`; configured: `corp`".to_owned(),
        }
    );
    Ok(())
}

#[tokio::test]
async fn service_serves_run_requests_until_it_is_stopped() -> anyhow::Result<()> {
    let keycloak = Keycloak::shared().await?;
    let realm = keycloak.create_realm(small_realm()).await?;
    let test = spawn_app(connector(&realm)).await?;
    let app = Arc::into_inner(test.app).expect("the only reference");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));

    let request = run_requested("run-5");
    let subject = test.bus.topology().run_requested();
    test.bus
        .publish(&subject, &request, &request.run_id)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let events = loop {
        let events: Vec<String> = helpers::snapshot_events(&test.bus)
            .await?
            .into_iter()
            .map(|(subject, _)| subject)
            .collect();
        if !events.is_empty() {
            break events;
        }
        anyhow::ensure!(Instant::now() < deadline, "no snapshot event within 60 s");
        anyhow::ensure!(!service.is_finished(), "the service stopped early");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(events, [test.bus.topology().snapshot_ready()]);

    let _ = stop.send(());
    service.await??;
    Ok(())
}
