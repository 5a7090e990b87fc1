//! Everything is in JetStream: a control plane that stops and starts again (or another
//! replica) carries on where the first one was.

use proto::v1::{self, ChangeOutcome, Product, RunMode, RunState};

use crate::helpers::{Options, fixture_changes, plan, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_restarted_app_still_has_every_run_and_finishes_a_run_from_new_reports() {
    let first = spawn_app().await;
    let simulated = first.start_sync(RunMode::Simulate, &[]).await;
    first.snapshot_ready(&simulated).await;
    first
        .plan_ready(&plan(&simulated, fixture_changes(), None))
        .await;
    first
        .wait_for_state(&simulated.run_id, RunState::Succeeded)
        .await;
    let applied = first.start_sync(RunMode::Apply, &[]).await;
    first.snapshot_ready(&applied).await;
    first
        .plan_ready(&plan(&applied, fixture_changes(), None))
        .await;
    first
        .wait_for_state(&applied.run_id, RunState::Applying)
        .await;
    first
        .report(
            &applied.run_id,
            Product::Jira,
            &[("j-1", ChangeOutcome::Applied)],
        )
        .await;
    let prefix = first.prefix.clone();
    let nats = first.stop().await;

    let second = spawn_app_with(Options {
        nats: Some(nats),
        prefix: Some(prefix),
        ..Options::default()
    })
    .await;
    let runs = second
        .client
        .clone()
        .list_runs(v1::ListRunsRequest::default())
        .await
        .expect("ListRuns")
        .into_inner()
        .runs;
    let listed: Vec<(String, RunState)> = runs
        .iter()
        .map(|run| (run.run_id.clone(), run.state()))
        .collect();
    assert_eq!(
        listed,
        [
            (applied.run_id.clone(), RunState::Applying),
            (simulated.run_id.clone(), RunState::Succeeded)
        ]
    );
    assert_eq!(second.get_run(&applied.run_id).await.progress[0].applied, 1);

    // The repeat of j-1 is not counted again.
    second
        .report(
            &applied.run_id,
            Product::Jira,
            &[
                ("j-1", ChangeOutcome::Applied),
                ("j-2", ChangeOutcome::Applied),
                ("j-3", ChangeOutcome::Applied),
            ],
        )
        .await;
    let reported = second
        .report(
            &applied.run_id,
            Product::Confluence,
            &[("c-1", ChangeOutcome::Applied)],
        )
        .await;
    assert_eq!(reported, (1, "RUN_STATE_SUCCEEDED".to_owned()));
    let finished = second.get_run(&applied.run_id).await;
    assert_eq!(finished.progress[0].applied, 3);

    // The plan is still browsable.
    let changes = second
        .client
        .clone()
        .list_changes(v1::ListChangesRequest {
            run_id: simulated.run_id.clone(),
            ..v1::ListChangesRequest::default()
        })
        .await
        .expect("ListChanges")
        .into_inner();
    assert_eq!(changes.total, 4);
}

#[tokio::test]
async fn two_replicas_share_the_runs_and_each_event_moves_a_run_once() {
    let first = spawn_app().await;
    let second = spawn_app_with(Options {
        nats: Some(first.nats.clone()),
        prefix: Some(first.prefix.clone()),
        ..Options::default()
    })
    .await;
    let run = first.start_sync(RunMode::Apply, &[]).await;
    assert_eq!(
        second.get_run(&run.run_id).await.state(),
        RunState::Fetching
    );

    first.snapshot_ready(&run).await;
    second
        .plan_ready(&plan(&run, fixture_changes(), None))
        .await;
    second.wait_for_state(&run.run_id, RunState::Applying).await;
    // Reports through both replicas at once, with a repeat: counted once each.
    let (a, b) = tokio::join!(
        first.report(
            &run.run_id,
            Product::Jira,
            &[
                ("j-1", ChangeOutcome::Applied),
                ("j-2", ChangeOutcome::Applied)
            ],
        ),
        second.report(
            &run.run_id,
            Product::Jira,
            &[
                ("j-2", ChangeOutcome::Applied),
                ("j-3", ChangeOutcome::Applied)
            ],
        ),
    );
    assert_eq!(a.0 + b.0, 3, "{a:?} {b:?}");
    second
        .report(
            &run.run_id,
            Product::Confluence,
            &[("c-1", ChangeOutcome::Applied)],
        )
        .await;
    let finished = first.get_run(&run.run_id).await;
    assert_eq!(finished.state(), RunState::Succeeded);
    assert_eq!(finished.progress[0].applied, 3);
}
