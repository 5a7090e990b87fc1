//! One active run per Keycloak connector: the connector a run reads is resolved from the
//! configured ones, claimed in the store (so two replicas agree), refused while another
//! run of it is active, and taken over from a run that ended or never came to exist.

use std::time::{Duration, SystemTime};

use control_plane::store::{Claim, Store};
use proto::v1::{self, RunMode, RunState};

use crate::helpers::{Options, spawn_app, spawn_app_with};

/// `[keycloak.NAME]` sections that pass the checks; nothing is called.
fn connectors(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| {
            format!(
                "[keycloak.{name}]\nendpoint = \"http://127.0.0.1:9\"\nrealm = \"{name}\"\n\
                 client_id = \"keysync\"\nclient_secret = \"s\"\n\n"
            )
        })
        .collect()
}

#[tokio::test]
async fn a_second_run_of_a_connector_is_refused_until_the_first_has_ended() {
    let app = spawn_app().await;
    let first = app
        .try_start(RunMode::Apply, "")
        .await
        .expect("the first run");

    for mode in [RunMode::Apply, RunMode::Simulate] {
        let status = app.try_start(mode, "").await.expect_err("busy");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            status.message(),
            format!(
                "run {} of the default connector is still FETCHING; wait for it or cancel it",
                first.run_id
            )
        );
    }
    // Another connector is another matter.
    let lab = app.try_start(RunMode::Apply, "lab").await.expect("lab");
    let status = app
        .try_start(RunMode::Apply, "lab")
        .await
        .expect_err("busy");
    assert_eq!(
        status.message(),
        format!(
            "run {} of connector lab is still FETCHING; wait for it or cancel it",
            lab.run_id
        )
    );

    app.snapshot_failed(&first.run_id, "down").await;
    app.wait_for_state(&first.run_id, RunState::Failed).await;
    let second = app
        .try_start(RunMode::Apply, "")
        .await
        .expect("the first run has ended");
    assert_eq!(second.state(), RunState::Fetching);
    let runs = app
        .client
        .clone()
        .list_runs(v1::ListRunsRequest::default())
        .await
        .expect("ListRuns")
        .into_inner()
        .runs;
    assert_eq!(runs.len(), 3, "a refused start records no run: {runs:#?}");
}

#[tokio::test]
async fn the_connector_is_the_only_one_configured_and_must_be_named_among_several() {
    let one = spawn_app_with(Options {
        more_config: connectors(&["corp"]),
        ..Options::default()
    })
    .await;
    let run = one
        .try_start(RunMode::Simulate, "")
        .await
        .expect("the only connector");
    assert_eq!(run.connector, "corp");
    let requested = one.observe(&one.bus.topology().run_requested()).await;
    let published: Vec<v1::RunRequested> = crate::helpers::drain(&requested).await;
    assert_eq!(published[0].connector, "corp");
    let status = one
        .try_start(RunMode::Simulate, "nope")
        .await
        .expect_err("not configured");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("`nope`") && status.message().contains("`corp`"),
        "{}",
        status.message()
    );
    // Named or not, it is the same connector, busy.
    let status = one
        .try_start(RunMode::Simulate, "corp")
        .await
        .expect_err("busy");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);

    let several = spawn_app_with(Options {
        more_config: connectors(&["corp", "lab"]),
        ..Options::default()
    })
    .await;
    let status = several
        .try_start(RunMode::Simulate, "")
        .await
        .expect_err("which one?");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "several Keycloak connectors are configured (`corp`, `lab`); name one"
    );
    let lab = several
        .try_start(RunMode::Simulate, " lab ")
        .await
        .expect("named");
    assert_eq!(lab.connector, "lab");
}

#[tokio::test]
async fn two_replicas_starting_runs_of_one_connector_at_once_start_exactly_one() {
    let first = spawn_app().await;
    let second = spawn_app_with(Options {
        nats: Some(first.nats.clone()),
        prefix: Some(first.prefix.clone()),
        ..Options::default()
    })
    .await;

    let attempts = (0..8).map(|attempt| {
        let app = if attempt % 2 == 0 { &first } else { &second };
        app.try_start(RunMode::Apply, "corp")
    });
    let answers = futures::future::join_all(attempts).await;

    let started: Vec<&v1::Run> = answers
        .iter()
        .filter_map(|answer| answer.as_ref().ok())
        .collect();
    assert_eq!(started.len(), 1, "{answers:#?}");
    for refused in answers.iter().filter_map(|answer| answer.as_ref().err()) {
        assert_eq!(
            refused.code(),
            tonic::Code::FailedPrecondition,
            "{refused:?}"
        );
        assert!(
            refused.message().contains(&started[0].run_id),
            "{}",
            refused.message()
        );
    }
}

#[tokio::test]
async fn a_claim_left_by_a_run_that_ended_or_never_existed_is_taken_over() {
    let app = spawn_app().await;
    let store = Store::open(&app.bus).await.expect("the store");

    // A run that ended but whose claim was not released (its replica stopped first).
    let ended = app.try_start(RunMode::Apply, "").await.expect("a run");
    app.snapshot_failed(&ended.run_id, "down").await;
    app.wait_for_state(&ended.run_id, RunState::Failed).await;
    assert_eq!(
        store
            .claim_connector("", &ended.run_id)
            .await
            .expect("claims"),
        Claim::Claimed
    );
    app.try_start(RunMode::Apply, "")
        .await
        .expect("the ended run's claim is taken over");

    // A claim whose run was never created: it holds for a grace period, then not.
    let young = ulid::Ulid::new().to_string();
    assert_eq!(
        store
            .claim_connector("young", &young)
            .await
            .expect("claims"),
        Claim::Claimed
    );
    let status = app
        .try_start(RunMode::Apply, "young")
        .await
        .expect_err("maybe being created");
    assert_eq!(
        status.message(),
        format!("run {young} of connector young is still REQUESTED; wait for it or cancel it")
    );
    let old = ulid::Ulid::from_datetime(SystemTime::now() - Duration::from_secs(600)).to_string();
    assert_eq!(
        store.claim_connector("old", &old).await.expect("claims"),
        Claim::Claimed
    );
    let run = app
        .try_start(RunMode::Apply, "old")
        .await
        .expect("a claim of a run that never existed is taken over");
    assert_eq!(
        store.claim_connector("old", &old).await.expect("claims"),
        Claim::Busy {
            run_id: run.run_id.clone(),
            state: RunState::Fetching
        }
    );
}
