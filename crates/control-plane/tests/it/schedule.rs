//! The schedule: with two replicas, each fire time is fired once; each fire starts a run
//! per connector, or records a skip when the connector's previous run is still active.

use std::collections::BTreeMap;

use proto::v1::{self, RunMode, RunState, RunTrigger};

use crate::helpers::{Options, drain, spawn_app_with};

#[tokio::test]
async fn two_replicas_fire_the_schedule_once_per_fire_time() {
    let schedule =
        "enabled = true\ncron = \"* * * * * *\"\ntimezone = \"Europe/Berlin\"".to_owned();
    let first = spawn_app_with(Options {
        schedule: Some(schedule.clone()),
        ..Options::default()
    })
    .await;
    let second = spawn_app_with(Options {
        nats: Some(first.nats.clone()),
        prefix: Some(first.prefix.clone()),
        schedule: Some(schedule),
        ..Options::default()
    })
    .await;
    let requests = first.observe(&first.bus.topology().run_requested()).await;

    let scheduled_runs = || {
        let mut client = first.client.clone();
        async move {
            client
                .list_runs(v1::ListRunsRequest::default())
                .await
                .expect("ListRuns")
                .into_inner()
                .runs
                .into_iter()
                .filter(|run| run.trigger() == RunTrigger::Schedule)
                .collect::<Vec<_>>()
        }
    };
    first
        .wait_until("the schedule fired three times", || async {
            scheduled_runs().await.len() >= 3
        })
        .await;
    let nats = second.stop().await;
    let prefix = first.prefix.clone();
    first.stop().await;

    // Both replicas are stopped; a third, without the schedule, reads what they did.
    let reader = spawn_app_with(Options {
        nats: Some(nats),
        prefix: Some(prefix),
        ..Options::default()
    })
    .await;
    let runs: Vec<v1::Run> = reader
        .client
        .clone()
        .list_runs(v1::ListRunsRequest {
            page_size: 1000,
            ..v1::ListRunsRequest::default()
        })
        .await
        .expect("ListRuns")
        .into_inner()
        .runs;
    assert!(runs.len() >= 3, "{runs:#?}");
    let mut runs_per_fire_time: BTreeMap<&str, usize> = BTreeMap::new();
    for run in &runs {
        assert_eq!(run.trigger(), RunTrigger::Schedule);
        *runs_per_fire_time
            .entry(run.requested_by.as_str())
            .or_default() += 1;
    }
    assert!(
        runs_per_fire_time.values().all(|runs| *runs == 1),
        "a fire time started more than one run: {runs_per_fire_time:#?}"
    );
    // Nothing plays the fetcher: the first run stays FETCHING, and every later fire is
    // skipped, naming it.
    let first = runs.last().expect("runs");
    assert_eq!(first.state(), RunState::Fetching);
    for skipped in &runs[..runs.len() - 1] {
        assert_eq!(skipped.state(), RunState::Cancelled, "{skipped:#?}");
        assert_eq!(
            skipped.reason,
            format!(
                "skipped: run {} of the default connector was still FETCHING",
                first.run_id
            )
        );
        assert!(skipped.finished_at.is_some());
    }
    let requested: Vec<v1::RunRequested> = drain(&requests).await;
    assert_eq!(requested.len(), 1, "{requested:#?}");
}

#[tokio::test]
async fn each_fire_starts_a_run_per_connector_and_skips_a_busy_one() {
    let mut more_config = String::new();
    for name in ["corp", "lab"] {
        more_config.push_str(&format!(
            "[keycloak.{name}]\nendpoint = \"http://127.0.0.1:9\"\nrealm = \"{name}\"\n\
             client_id = \"keysync\"\nclient_secret = \"s\"\n\n"
        ));
    }
    let app = spawn_app_with(Options {
        schedule: Some("enabled = true\ncron = \"* * * * * *\"".to_owned()),
        more_config,
        ..Options::default()
    })
    .await;
    // A run of corp, by hand, that never ends: every fire skips corp. It may come second,
    // after a fire.
    let mut by_hand = None;
    for _ in 0..10 {
        let busy = match app.try_start(RunMode::Apply, "corp").await {
            Ok(run) => {
                by_hand = Some(run);
                break;
            }
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::FailedPrecondition);
                // "run R of connector corp is still STATE; ..."
                let run_id = status.message().split(' ').nth(1).unwrap_or_default();
                run_id.to_owned()
            }
        };
        // The schedule got there first; end its run and try again.
        app.snapshot_failed(&busy, "ended by the test").await;
        app.wait_for_state(&busy, RunState::Failed).await;
    }
    let by_hand = by_hand.expect("a run by hand starts between two fires");

    let scheduled = || {
        let mut client = app.client.clone();
        async move {
            client
                .list_runs(v1::ListRunsRequest {
                    page_size: 1000,
                    ..v1::ListRunsRequest::default()
                })
                .await
                .expect("ListRuns")
                .into_inner()
                .runs
                .into_iter()
                .filter(|run| run.trigger() == RunTrigger::Schedule)
                .collect::<Vec<_>>()
        }
    };
    app.wait_until("corp was skipped twice after the run by hand", || async {
        scheduled()
            .await
            .iter()
            .filter(|run| run.connector == "corp" && run.reason.contains(&by_hand.run_id))
            .count()
            >= 2
    })
    .await;

    let runs = scheduled().await;
    let (corp, lab): (Vec<&v1::Run>, Vec<&v1::Run>) =
        runs.iter().partition(|run| run.connector == "corp");
    assert!(lab.iter().all(|run| run.connector == "lab"), "{lab:#?}");
    let lab_started: Vec<&&v1::Run> = lab
        .iter()
        .filter(|run| run.state() != RunState::Cancelled)
        .collect();
    assert_eq!(lab_started.len(), 1, "one lab run, then skips: {lab:#?}");
    let lab_run = &lab_started[0].run_id;
    for run in &lab {
        if &run.run_id != lab_run {
            assert_eq!(
                run.reason,
                format!("skipped: run {lab_run} of connector lab was still FETCHING")
            );
        }
    }
    let skipped_for_by_hand = corp
        .iter()
        .filter(|run| {
            run.state() == RunState::Cancelled
                && run.reason
                    == format!(
                        "skipped: run {} of connector corp was still FETCHING",
                        by_hand.run_id
                    )
        })
        .count();
    assert!(skipped_for_by_hand >= 2, "{corp:#?}");
}
