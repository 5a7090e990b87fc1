//! The schedule: with two replicas, each fire time of each connector is fired once; each
//! connector's schedule fires on its own, only when enabled, and records a skip when the
//! connector's previous run is still active.

use std::collections::{BTreeMap, BTreeSet};

use proto::v1::{self, RunMode, RunState, RunTrigger};

use crate::helpers::{Options, TestApp, drain, spawn_app_with};

/// `[keycloak.<name>]` sections for `names`.
fn connectors(names: &[&str]) -> String {
    let mut config = String::new();
    for name in names {
        config.push_str(&format!(
            "[keycloak.{name}]\nendpoint = \"http://127.0.0.1:9\"\nrealm = \"{name}\"\n\
             client_id = \"keysync\"\nclient_secret = \"s\"\n\n"
        ));
    }
    config
}

/// Every run `app` lists (up to 1000), newest first.
async fn all_runs(app: &TestApp) -> Vec<v1::Run> {
    app.client
        .clone()
        .list_runs(v1::ListRunsRequest {
            page_size: 1000,
            ..v1::ListRunsRequest::default()
        })
        .await
        .expect("ListRuns")
        .into_inner()
        .runs
}

/// The scheduled runs `app` lists, newest first.
async fn scheduled_runs(app: &TestApp) -> Vec<v1::Run> {
    all_runs(app)
        .await
        .into_iter()
        .filter(|run| run.trigger() == RunTrigger::Schedule)
        .collect()
}

/// Starts two replicas with `schedule` (the keys of `[control_plane.schedule]` and any
/// per-connector sections after them) and the connectors `names` (none: the default
/// connector, named ""), waits until each connector was fired three times, stops them,
/// and checks that each fire time of each connector started one run (the first) or
/// recorded one skip (every later one, as nothing plays the fetcher). Returns the fire
/// times (`requested_by`) of each connector.
async fn two_replicas_fire_each_connector_once_per_fire_time(
    schedule: &str,
    names: &[&str],
) -> BTreeMap<String, BTreeSet<String>> {
    let more_config = connectors(names);
    let first = spawn_app_with(Options {
        schedule: Some(schedule.to_owned()),
        more_config: more_config.clone(),
        ..Options::default()
    })
    .await;
    let second = spawn_app_with(Options {
        nats: Some(first.nats.clone()),
        prefix: Some(first.prefix.clone()),
        schedule: Some(schedule.to_owned()),
        more_config: more_config.clone(),
        ..Options::default()
    })
    .await;
    let requests = first.observe(&first.bus.topology().run_requested()).await;
    let expected: Vec<String> = match names {
        [] => vec![String::new()],
        names => names.iter().map(|name| (*name).to_owned()).collect(),
    };

    first
        .wait_until(
            "the schedule fired three times for each connector",
            || async {
                let runs = scheduled_runs(&first).await;
                expected.iter().all(|connector| {
                    runs.iter()
                        .filter(|run| &run.connector == connector)
                        .count()
                        >= 3
                })
            },
        )
        .await;
    let nats = second.stop().await;
    let prefix = first.prefix.clone();
    first.stop().await;

    // Both replicas are stopped; a third, without the schedule, reads what they did.
    let reader = spawn_app_with(Options {
        nats: Some(nats),
        prefix: Some(prefix),
        more_config,
        ..Options::default()
    })
    .await;
    let runs = all_runs(&reader).await;
    let mut fire_times: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for connector in &expected {
        let runs: Vec<&v1::Run> = runs
            .iter()
            .filter(|run| &run.connector == connector)
            .collect();
        assert!(runs.len() >= 3, "{connector:?}: {runs:#?}");
        let mut runs_per_fire_time: BTreeMap<&str, usize> = BTreeMap::new();
        for run in &runs {
            assert_eq!(run.trigger(), RunTrigger::Schedule);
            *runs_per_fire_time
                .entry(run.requested_by.as_str())
                .or_default() += 1;
        }
        assert!(
            runs_per_fire_time.values().all(|runs| *runs == 1),
            "a fire time of {connector:?} started more than one run: {runs_per_fire_time:#?}"
        );
        // Nothing plays the fetcher: the connector's first run stays FETCHING, and every
        // later fire is skipped, naming it.
        let first = runs.last().expect("runs");
        assert_eq!(first.state(), RunState::Fetching);
        let label = if connector.is_empty() {
            "the default connector".to_owned()
        } else {
            format!("connector {connector}")
        };
        for skipped in &runs[..runs.len() - 1] {
            assert_eq!(skipped.state(), RunState::Cancelled, "{skipped:#?}");
            assert_eq!(
                skipped.reason,
                format!(
                    "skipped: run {} of {label} was still FETCHING",
                    first.run_id
                )
            );
            assert!(skipped.finished_at.is_some());
        }
        fire_times.insert(
            connector.clone(),
            runs_per_fire_time
                .keys()
                .map(|time| (*time).to_owned())
                .collect(),
        );
    }
    assert_eq!(
        runs.len(),
        fire_times.values().map(BTreeSet::len).sum::<usize>(),
        "only the expected connectors ran: {runs:#?}"
    );
    let requested: Vec<v1::RunRequested> = drain(&requests).await;
    let mut requested: Vec<&str> = requested
        .iter()
        .map(|request| request.connector.as_str())
        .collect();
    requested.sort_unstable();
    assert_eq!(requested, expected, "one run requested per connector");
    fire_times
}

#[tokio::test]
async fn two_replicas_fire_the_schedule_once_per_fire_time() {
    two_replicas_fire_each_connector_once_per_fire_time(
        "enabled = true\ncron = \"* * * * * *\"\ntimezone = \"Europe/Berlin\"",
        &[],
    )
    .await;
}

#[tokio::test]
async fn two_connectors_on_one_cron_each_fire_once_per_fire_time_with_two_replicas() {
    // Both enabled in their own sections, one inheriting the cron, the other repeating it.
    let fire_times = two_replicas_fire_each_connector_once_per_fire_time(
        "cron = \"* * * * * *\"\ntimezone = \"Europe/Berlin\"\n\
         [control_plane.schedule.connectors.corp]\nenabled = true\n\
         [control_plane.schedule.connectors.lab]\nenabled = true\ncron = \"* * * * * *\"",
        &["corp", "lab"],
    )
    .await;
    // Fire-time claims are per connector: a time one connector claimed, the other fired
    // too.
    let both: Vec<&String> = fire_times["corp"]
        .intersection(&fire_times["lab"])
        .collect();
    assert!(!both.is_empty(), "{fire_times:#?}");
}

#[tokio::test]
async fn only_the_connector_whose_schedule_is_enabled_gets_scheduled_runs() {
    // The default section has a fast cron but is off (by default); corp turns its own
    // schedule on, lab has no section.
    let app = spawn_app_with(Options {
        schedule: Some(
            "cron = \"* * * * * *\"\n\
             [control_plane.schedule.connectors.corp]\nenabled = true\ncron = \"*/1 * * * * *\""
                .to_owned(),
        ),
        more_config: connectors(&["corp", "lab"]),
        ..Options::default()
    })
    .await;
    let requests = app.observe(&app.bus.topology().run_requested()).await;
    app.wait_until("corp's schedule fired three times", || async {
        scheduled_runs(&app).await.len() >= 3
    })
    .await;
    let runs = all_runs(&app).await;
    assert!(
        runs.iter().all(|run| run.connector == "corp"),
        "lab's schedule is off: {runs:#?}"
    );
    let first = runs.last().expect("runs");
    assert_eq!(first.state(), RunState::Fetching);
    assert!(
        first
            .requested_by
            .starts_with("schedule `*/1 * * * * *` at "),
        "{first:#?}"
    );
    let requested: Vec<v1::RunRequested> = drain(&requests).await;
    assert_eq!(requested.len(), 1, "{requested:#?}");
    assert_eq!(requested[0].connector, "corp");
}

#[tokio::test]
async fn each_fire_starts_a_run_per_connector_and_skips_a_busy_one() {
    let app = spawn_app_with(Options {
        schedule: Some("enabled = true\ncron = \"* * * * * *\"".to_owned()),
        more_config: connectors(&["corp", "lab"]),
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

    app.wait_until("corp was skipped twice after the run by hand", || async {
        scheduled_runs(&app)
            .await
            .iter()
            .filter(|run| run.connector == "corp" && run.reason.contains(&by_hand.run_id))
            .count()
            >= 2
    })
    .await;

    let runs = scheduled_runs(&app).await;
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
