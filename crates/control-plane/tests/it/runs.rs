//! A run's life through the API and the bus: start, the fetcher's and planner's events,
//! the appliers' reports, approval, cancellation, failures, watching, listing.

use async_nats::jetstream;
use bus::DEAD_SUBJECT_HEADER;
use futures::StreamExt;
use proto::v1::{self, ChangeOp, ChangeOutcome, Product, RunMode, RunState, RunTrigger};

use crate::helpers::{DEADLINE, drain, fixture_changes, plan, spawn_app};

#[tokio::test]
async fn start_sync_publishes_one_run_requested_and_the_run_reads_fetching() {
    let app = spawn_app().await;
    let requests = app.observe(&app.bus.topology().run_requested()).await;

    let run = app
        .start_sync(
            RunMode::Apply,
            &[Product::Jira, Product::Jira, Product::Bitbucket],
        )
        .await;

    assert_eq!(run.state(), RunState::Fetching);
    assert_eq!(run.trigger(), RunTrigger::Api);
    assert_eq!(run.mode(), RunMode::Apply);
    assert_eq!(
        run.products,
        [Product::Jira as i32, Product::Bitbucket as i32],
        "products are deduplicated"
    );
    assert!(
        ulid::Ulid::from_string(&run.run_id).is_ok(),
        "{}",
        run.run_id
    );
    assert_eq!(app.get_run(&run.run_id).await, run);
    let published: Vec<v1::RunRequested> = drain(&requests).await;
    assert_eq!(published.len(), 1, "{published:#?}");
    assert_eq!(published[0].run_id, run.run_id);
    assert_eq!(published[0].mode(), RunMode::Apply);
    assert_eq!(published[0].products, run.products);
    assert_eq!(published[0].requested_at, run.created_at);
}

#[tokio::test]
async fn start_sync_without_a_mode_is_an_invalid_argument() {
    let app = spawn_app().await;
    let status = app
        .client
        .clone()
        .start_sync(v1::StartSyncRequest::default())
        .await
        .expect_err("no mode");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("mode"), "{}", status.message());
}

#[tokio::test]
async fn an_apply_run_moves_through_planning_and_applying_to_succeeded_counting_a_repeated_report_once()
 {
    let app = spawn_app().await;
    let run = app
        .start_sync(RunMode::Apply, &[Product::Jira, Product::Confluence])
        .await;

    app.snapshot_ready(&run).await;
    app.wait_for_state(&run.run_id, RunState::Planning).await;

    app.plan_ready(&plan(&run, fixture_changes(), None)).await;
    let applying = app.wait_for_state(&run.run_id, RunState::Applying).await;
    let planned: Vec<(i32, u64)> = applying
        .progress
        .iter()
        .map(|progress| (progress.product, progress.planned))
        .collect();
    assert_eq!(
        planned,
        [(Product::Jira as i32, 3), (Product::Confluence as i32, 1)]
    );
    assert_eq!(applying.plan.len(), 2);

    let first = app
        .report(
            &run.run_id,
            Product::Jira,
            &[
                ("j-1", ChangeOutcome::Applied),
                ("j-2", ChangeOutcome::AlreadyDone),
            ],
        )
        .await;
    assert_eq!(first, (2, "RUN_STATE_APPLYING".to_owned()));
    // The applier's retry of the same report records nothing new.
    let repeat = app
        .report(
            &run.run_id,
            Product::Jira,
            &[
                ("j-1", ChangeOutcome::Applied),
                ("j-2", ChangeOutcome::AlreadyDone),
            ],
        )
        .await;
    assert_eq!(repeat, (0, "RUN_STATE_APPLYING".to_owned()));
    let jira = app.get_run(&run.run_id).await.progress[0];
    assert_eq!((jira.applied, jira.already_done), (1, 1));

    app.report(
        &run.run_id,
        Product::Jira,
        &[("j-3", ChangeOutcome::Skipped)],
    )
    .await;
    let last = app
        .report(
            &run.run_id,
            Product::Confluence,
            &[("c-1", ChangeOutcome::Applied)],
        )
        .await;
    assert_eq!(last, (1, "RUN_STATE_SUCCEEDED".to_owned()));

    let finished = app.get_run(&run.run_id).await;
    assert_eq!(finished.state(), RunState::Succeeded);
    assert!(finished.finished_at.is_some());
    let progress: Vec<(u64, u64, u64, u64, u64)> = finished
        .progress
        .iter()
        .map(|p| (p.planned, p.applied, p.already_done, p.skipped, p.failed))
        .collect();
    assert_eq!(progress, [(3, 1, 1, 1, 0), (1, 1, 0, 0, 0)]);
}

#[tokio::test]
async fn a_run_with_failed_changes_fails_with_how_many() {
    let app = spawn_app().await;
    let run = app.start_sync(RunMode::Apply, &[]).await;
    app.snapshot_ready(&run).await;
    app.plan_ready(&plan(&run, fixture_changes(), None)).await;
    app.wait_for_state(&run.run_id, RunState::Applying).await;

    app.report(
        &run.run_id,
        Product::Jira,
        &[
            ("j-1", ChangeOutcome::Failed),
            ("j-2", ChangeOutcome::Failed),
            ("j-3", ChangeOutcome::Applied),
        ],
    )
    .await;
    app.report(
        &run.run_id,
        Product::Confluence,
        &[("c-1", ChangeOutcome::Applied)],
    )
    .await;

    let failed = app.get_run(&run.run_id).await;
    assert_eq!(failed.state(), RunState::Failed);
    assert_eq!(failed.reason, "2 changes failed");
}

#[tokio::test]
async fn a_simulated_run_succeeds_after_plan_ready_and_lists_its_planned_changes_with_filters() {
    let app = spawn_app().await;
    let run = app.start_sync(RunMode::Simulate, &[]).await;
    app.snapshot_ready(&run).await;
    app.plan_ready(&plan(&run, fixture_changes(), None)).await;

    let done = app.wait_for_state(&run.run_id, RunState::Succeeded).await;
    assert_eq!(done.progress[0].planned, 3);
    assert_eq!(done.progress[0].applied, 0);

    let list = |request: v1::ListChangesRequest| {
        let mut client = app.client.clone();
        async move {
            client
                .list_changes(request)
                .await
                .expect("ListChanges")
                .into_inner()
        }
    };
    let ids = |response: &v1::ListChangesResponse| -> Vec<String> {
        response
            .changes
            .iter()
            .map(|record| record.change.as_ref().expect("a change").id.clone())
            .collect()
    };
    let all = list(v1::ListChangesRequest {
        run_id: run.run_id.clone(),
        ..v1::ListChangesRequest::default()
    })
    .await;
    assert_eq!(ids(&all), ["j-1", "j-2", "j-3", "c-1"], "plan order");
    assert_eq!(all.total, 4);
    assert!(
        all.changes
            .iter()
            .all(|record| record.outcome() == ChangeOutcome::Planned)
    );

    let mut jira_creates = v1::ListChangesRequest {
        run_id: run.run_id.clone(),
        ..v1::ListChangesRequest::default()
    };
    jira_creates.set_product(Product::Jira);
    jira_creates.set_op(ChangeOp::CreateUser);
    assert_eq!(ids(&list(jira_creates).await), ["j-1"]);

    let by_email = list(v1::ListChangesRequest {
        run_id: run.run_id.clone(),
        user: "bob@EXAMPLE.org".to_owned(),
        ..v1::ListChangesRequest::default()
    })
    .await;
    assert_eq!(ids(&by_email), ["j-3"]);
    let by_keycloak_id = list(v1::ListChangesRequest {
        run_id: run.run_id.clone(),
        user: "KC-ALICE".to_owned(),
        ..v1::ListChangesRequest::default()
    })
    .await;
    assert_eq!(ids(&by_keycloak_id), ["j-1", "j-2", "c-1"]);

    let mut applied = v1::ListChangesRequest {
        run_id: run.run_id.clone(),
        ..v1::ListChangesRequest::default()
    };
    applied.set_outcome(ChangeOutcome::Applied);
    assert_eq!(list(applied).await.total, 0);

    let first_page = list(v1::ListChangesRequest {
        run_id: run.run_id.clone(),
        page_size: 3,
        ..v1::ListChangesRequest::default()
    })
    .await;
    assert_eq!(ids(&first_page), ["j-1", "j-2", "j-3"]);
    let second_page = list(v1::ListChangesRequest {
        run_id: run.run_id.clone(),
        page_size: 3,
        page_token: first_page.next_page_token.clone(),
        ..v1::ListChangesRequest::default()
    })
    .await;
    assert_eq!(ids(&second_page), ["c-1"]);
    assert!(second_page.next_page_token.is_empty());
}

#[tokio::test]
async fn list_changes_joins_the_results_of_an_applied_run() {
    let app = spawn_app().await;
    let run = app.start_sync(RunMode::Apply, &[]).await;
    app.snapshot_ready(&run).await;
    app.plan_ready(&plan(&run, fixture_changes(), None)).await;
    app.wait_for_state(&run.run_id, RunState::Applying).await;
    app.report(
        &run.run_id,
        Product::Jira,
        &[("j-2", ChangeOutcome::Failed)],
    )
    .await;

    let mut failed = v1::ListChangesRequest {
        run_id: run.run_id.clone(),
        ..v1::ListChangesRequest::default()
    };
    failed.set_outcome(ChangeOutcome::Failed);
    let response = app
        .client
        .clone()
        .list_changes(failed)
        .await
        .expect("ListChanges")
        .into_inner();
    assert_eq!(response.total, 1);
    let record = &response.changes[0];
    assert_eq!(record.change.as_ref().expect("a change").id, "j-2");
    assert_eq!(record.message, "Failed");

    let mut planned = v1::ListChangesRequest {
        run_id: run.run_id.clone(),
        ..v1::ListChangesRequest::default()
    };
    planned.set_outcome(ChangeOutcome::Planned);
    let response = app
        .client
        .clone()
        .list_changes(planned)
        .await
        .expect("ListChanges")
        .into_inner();
    assert_eq!(response.total, 3);
}

#[tokio::test]
async fn approving_a_held_run_publishes_run_approved_and_moves_it_to_applying() {
    let app = spawn_app().await;
    let approvals = app.observe(&app.bus.topology().run_approved()).await;
    let run = app.start_sync(RunMode::Apply, &[]).await;
    app.snapshot_ready(&run).await;
    app.plan_ready(&plan(
        &run,
        fixture_changes(),
        Some("3 deletions exceed the limit of 1"),
    ))
    .await;
    let held = app.wait_for_state(&run.run_id, RunState::Held).await;
    assert_eq!(held.reason, "3 deletions exceed the limit of 1");

    let approved = app
        .client
        .clone()
        .approve_run(v1::ApproveRunRequest {
            run_id: run.run_id.clone(),
            comment: "checked with HR".to_owned(),
        })
        .await
        .expect("ApproveRun")
        .into_inner();

    assert_eq!(approved.state(), RunState::Applying);
    assert_eq!(approved.progress[0].planned, 3);
    let published: Vec<v1::RunApproved> = drain(&approvals).await;
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].run_id, run.run_id);
    assert_eq!(published[0].comment, "checked with HR");
}

#[tokio::test]
async fn approving_a_run_that_is_not_held_is_a_failed_precondition_naming_its_state() {
    let app = spawn_app().await;
    let run = app.start_sync(RunMode::Apply, &[]).await;

    let status = app
        .approve(&run.run_id, "checked", None)
        .await
        .expect_err("not held");

    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("FETCHING"),
        "{}",
        status.message()
    );
    assert_eq!(app.get_run(&run.run_id).await.state(), RunState::Fetching);
}

#[tokio::test]
async fn cancelling_a_run_publishes_run_cancelled_and_later_reports_do_not_revive_it() {
    let app = spawn_app().await;
    let cancellations = app.observe(&app.bus.topology().run_cancelled()).await;
    let run = app.start_sync(RunMode::Apply, &[]).await;
    app.snapshot_ready(&run).await;
    app.plan_ready(&plan(&run, fixture_changes(), None)).await;
    app.wait_for_state(&run.run_id, RunState::Applying).await;

    let cancelled = app
        .client
        .clone()
        .cancel_run(v1::CancelRunRequest {
            run_id: run.run_id.clone(),
            reason: "wrong realm".to_owned(),
        })
        .await
        .expect("CancelRun")
        .into_inner();
    assert_eq!(cancelled.state(), RunState::Cancelled);
    assert_eq!(cancelled.reason, "wrong realm");
    let published: Vec<v1::RunCancelled> = drain(&cancellations).await;
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].reason, "wrong realm");

    // Every change reports in: recorded, but the run stays cancelled, and the applier is
    // told so.
    let reported = app
        .report(
            &run.run_id,
            Product::Jira,
            &[
                ("j-1", ChangeOutcome::Applied),
                ("j-2", ChangeOutcome::Applied),
                ("j-3", ChangeOutcome::Applied),
            ],
        )
        .await;
    assert_eq!(reported, (3, "RUN_STATE_CANCELLED".to_owned()));
    app.report(
        &run.run_id,
        Product::Confluence,
        &[("c-1", ChangeOutcome::Applied)],
    )
    .await;
    let after = app.get_run(&run.run_id).await;
    assert_eq!(after.state(), RunState::Cancelled);
    assert_eq!(after.progress[0].applied, 3);

    // A late event does not revive it either: once the event after it (for another run)
    // is processed, so is the late one.
    let other = app.start_sync(RunMode::Apply, &[]).await;
    app.snapshot_ready(&run).await;
    app.snapshot_ready(&other).await;
    app.wait_for_state(&other.run_id, RunState::Planning).await;
    assert_eq!(app.get_run(&run.run_id).await.state(), RunState::Cancelled);

    // Cancelling again announces it again, so a caller can retry.
    let again = app
        .client
        .clone()
        .cancel_run(v1::CancelRunRequest {
            run_id: run.run_id.clone(),
            reason: String::new(),
        })
        .await
        .expect("cancelling a cancelled run again")
        .into_inner();
    assert_eq!(again.reason, "wrong realm");
}

#[tokio::test]
async fn cancelling_a_finished_run_is_a_failed_precondition() {
    let app = spawn_app().await;
    let run = app.start_sync(RunMode::Simulate, &[]).await;
    app.snapshot_ready(&run).await;
    app.plan_ready(&plan(&run, fixture_changes(), None)).await;
    app.wait_for_state(&run.run_id, RunState::Succeeded).await;

    let status = app
        .client
        .clone()
        .cancel_run(v1::CancelRunRequest {
            run_id: run.run_id.clone(),
            reason: String::new(),
        })
        .await
        .expect_err("finished");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("SUCCEEDED"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn snapshot_failed_fails_the_run_with_the_reason() {
    let app = spawn_app().await;
    let run = app.start_sync(RunMode::Apply, &[]).await;

    app.snapshot_failed(&run.run_id, "Keycloak answered 401 Unauthorized")
        .await;

    let failed = app.wait_for_state(&run.run_id, RunState::Failed).await;
    assert!(
        failed.reason.contains("Keycloak answered 401 Unauthorized"),
        "{}",
        failed.reason
    );
    assert!(failed.finished_at.is_some());
}

#[tokio::test]
async fn watch_run_streams_each_state_until_the_run_ends() {
    let app = spawn_app().await;
    let run = app.start_sync(RunMode::Apply, &[Product::Confluence]).await;
    let mut updates = app
        .client
        .clone()
        .watch_run(v1::WatchRunRequest {
            run_id: run.run_id.clone(),
        })
        .await
        .expect("WatchRun")
        .into_inner();
    let mut next_state = async || {
        tokio::time::timeout(DEADLINE, updates.next())
            .await
            .expect("an update in time")
            .map(|run| run.expect("a run").state())
    };

    assert_eq!(next_state().await, Some(RunState::Fetching));
    app.snapshot_ready(&run).await;
    assert_eq!(next_state().await, Some(RunState::Planning));
    let confluence_only: Vec<v1::Change> = fixture_changes()
        .into_iter()
        .filter(|change| change.product() == Product::Confluence)
        .collect();
    app.plan_ready(&plan(&run, confluence_only, None)).await;
    assert_eq!(next_state().await, Some(RunState::Applying));
    app.report(
        &run.run_id,
        Product::Confluence,
        &[("c-1", ChangeOutcome::Applied)],
    )
    .await;
    assert_eq!(next_state().await, Some(RunState::Succeeded));
    assert_eq!(next_state().await, None, "the stream ends with the run");
}

#[tokio::test]
async fn list_runs_pages_newest_first_and_filters_by_state() {
    let app = spawn_app().await;
    let mut started = Vec::new();
    // One connector each: runs of one connector go one at a time.
    for connector in ["a", "b", "c", "d", "e"] {
        started.push(
            app.try_start(RunMode::Simulate, connector)
                .await
                .expect("StartSync"),
        );
    }
    app.snapshot_failed(&started[1].run_id, "down").await;
    app.wait_for_state(&started[1].run_id, RunState::Failed)
        .await;

    let mut client = app.client.clone();
    let first = client
        .list_runs(v1::ListRunsRequest {
            page_size: 3,
            ..v1::ListRunsRequest::default()
        })
        .await
        .expect("ListRuns")
        .into_inner();
    let second = client
        .list_runs(v1::ListRunsRequest {
            page_size: 3,
            page_token: first.next_page_token.clone(),
            ..v1::ListRunsRequest::default()
        })
        .await
        .expect("ListRuns")
        .into_inner();
    let listed: Vec<String> = first
        .runs
        .iter()
        .chain(&second.runs)
        .map(|run| run.run_id.clone())
        .collect();
    let newest_first: Vec<String> = started.iter().rev().map(|run| run.run_id.clone()).collect();
    assert_eq!(listed, newest_first);
    assert!(second.next_page_token.is_empty());

    let mut failed_only = v1::ListRunsRequest::default();
    failed_only.states.push(RunState::Failed as i32);
    let failed = client
        .list_runs(failed_only)
        .await
        .expect("ListRuns")
        .into_inner();
    assert_eq!(failed.runs.len(), 1);
    assert_eq!(failed.runs[0].run_id, started[1].run_id);
}

#[tokio::test]
async fn an_unknown_run_is_not_found_and_a_malformed_id_an_invalid_argument() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let unknown = client
        .get_run(v1::GetRunRequest {
            run_id: ulid::Ulid::new().to_string(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let malformed = client
        .get_run(v1::GetRunRequest {
            run_id: "../etc".to_owned(),
        })
        .await
        .expect_err("malformed");
    assert_eq!(malformed.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn a_malformed_event_is_dead_lettered_and_the_next_one_processed() {
    let app = spawn_app().await;
    let run = app.start_sync(RunMode::Apply, &[]).await;
    let subject = app.bus.topology().snapshot_ready();
    app.bus
        .jetstream()
        .publish(subject.clone(), "not protobuf \u{1}\u{2}".into())
        .await
        .expect("publishes")
        .await
        .expect("stored");

    app.snapshot_ready(&run).await;
    app.wait_for_state(&run.run_id, RunState::Planning).await;

    let dead = app
        .bus
        .durable_consumer(
            &app.bus.topology().dead_stream(),
            "dead-observer",
            &format!("{}.dead.>", app.prefix),
            std::time::Duration::from_secs(30),
        )
        .await
        .expect("a consumer of dead letters");
    let mut batch = dead
        .fetch()
        .max_messages(10)
        .expires(std::time::Duration::from_secs(2))
        .messages()
        .await
        .expect("fetches");
    let mut dead_letters: Vec<jetstream::Message> = Vec::new();
    while let Some(message) = batch.next().await {
        dead_letters.push(message.expect("a message"));
    }
    assert_eq!(dead_letters.len(), 1);
    let headers = dead_letters[0].headers.as_ref().expect("headers");
    assert_eq!(
        headers.get(DEAD_SUBJECT_HEADER).map(|value| value.as_str()),
        Some(subject.as_str())
    );
}

#[tokio::test]
async fn the_event_consumer_is_made_again_when_it_is_deleted() {
    let app = spawn_app().await;
    let run = app.start_sync(RunMode::Apply, &[]).await;
    let stream = app
        .bus
        .jetstream()
        .get_stream(app.bus.topology().events_stream())
        .await
        .expect("the events stream");
    stream
        .delete_consumer(&app.bus.topology().control_plane_consumer())
        .await
        .expect("deletes the consumer");

    app.snapshot_ready(&run).await;

    app.wait_for_state(&run.run_id, RunState::Planning).await;
}
