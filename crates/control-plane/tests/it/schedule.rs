//! The schedule: with two replicas, each fire time starts exactly one run.

use std::collections::BTreeMap;

use proto::v1::{self, RunState, RunTrigger};

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
        assert_eq!(run.state(), RunState::Fetching);
        *runs_per_fire_time
            .entry(run.requested_by.as_str())
            .or_default() += 1;
    }
    assert!(
        runs_per_fire_time.values().all(|runs| *runs == 1),
        "a fire time started more than one run: {runs_per_fire_time:#?}"
    );
    let requested: Vec<v1::RunRequested> = drain(&requests).await;
    assert_eq!(requested.len(), runs.len());
}
