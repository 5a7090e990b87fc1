//! Held runs: an approval records who, why and when; a hold expires; an apply run
//! supersedes the held runs of its connector; a plan made against a product state that has
//! changed since cannot be approved; nor can a run while another of its connector is active.

use std::time::{Duration, SystemTime};

use proto::v1::{self, Product, RunMode, RunState};

use crate::helpers::{Options, drain, spawn_app, spawn_app_with};

/// RFC 3339 in UTC to the second, as the control plane writes times in messages.
fn time_text(time: &prost_types::Timestamp) -> String {
    jiff::Timestamp::new(time.seconds, 0)
        .expect("a timestamp")
        .to_string()
}

fn as_system_time(time: &prost_types::Timestamp) -> SystemTime {
    SystemTime::try_from(*time).expect("a time")
}

#[tokio::test]
async fn approving_needs_a_reason_and_records_who_approved_why_and_when() {
    let app = spawn_app().await;
    let approvals = app.observe(&app.bus.topology().run_approved()).await;
    let run = app.start_sync(RunMode::Apply, &[]).await;
    let held = app.hold(&run, &[]).await;
    assert!(held.approved_at.is_none());

    let status = app
        .approve(&run.run_id, "  ", Some("alice"))
        .await
        .expect_err("no reason");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "a reason is required to approve a held run (keysync approve RUN --reason \"...\")"
    );
    assert_eq!(app.get_run(&run.run_id).await.state(), RunState::Held);

    let before = SystemTime::now();
    let approved = app
        .approve(&run.run_id, " checked with HR ", Some("alice"))
        .await
        .expect("approved");
    assert_eq!(approved.state(), RunState::Applying);
    assert_eq!(approved.approved_by, "alice");
    assert_eq!(approved.approval_reason, "checked with HR");
    let approved_at = as_system_time(&approved.approved_at.expect("approved_at"));
    assert!(
        approved_at >= before - Duration::from_secs(1),
        "{approved_at:?}"
    );
    assert!(approved.reason.is_empty(), "{}", approved.reason);
    assert_eq!(app.get_run(&run.run_id).await, approved);

    let published: Vec<v1::RunApproved> = drain(&approvals).await;
    assert_eq!(published.len(), 1, "{published:#?}");
    assert_eq!(published[0].approved_by, "alice");
    assert_eq!(published[0].comment, "checked with HR");
}

#[tokio::test]
async fn a_run_held_longer_than_hold_expiry_cannot_be_approved_and_is_cancelled() {
    let app = spawn_app_with(Options {
        hold_expiry: Some("\"3s\"".to_owned()),
        ..Options::default()
    })
    .await;
    let run = app.start_sync(RunMode::Apply, &[]).await;
    let held = app.hold(&run, &[]).await;
    let expires_at = held.hold_expires_at.expect("a held run expires");
    let held_at = as_system_time(&held.updated_at.expect("updated_at"));
    // The machine reads the time just before the store stamps the write.
    let lasts = as_system_time(&expires_at)
        .duration_since(held_at)
        .expect("expires after it was held");
    assert!(
        lasts > Duration::from_secs(2) && lasts <= Duration::from_secs(3),
        "the hold lasts hold_expiry: {lasts:?}"
    );

    app.wait_until("the hold has expired", || async {
        SystemTime::now() > as_system_time(&expires_at)
    })
    .await;
    // Whether the sweep cancelled it first or the approval does, the answer is the same.
    let status = app
        .approve(&run.run_id, "too late", None)
        .await
        .expect_err("expired");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    let at = time_text(&expires_at);
    assert_eq!(
        status.message(),
        format!(
            "the hold of run {} expired at {at}; start a new run",
            run.run_id
        )
    );
    let cancelled = app.get_run(&run.run_id).await;
    assert_eq!(cancelled.state(), RunState::Cancelled);
    assert_eq!(cancelled.reason, format!("the hold expired at {at}"));
    assert!(cancelled.approved_by.is_empty());
}

#[tokio::test]
async fn the_sweep_cancels_a_run_whose_hold_expired_and_announces_it() {
    let app = spawn_app_with(Options {
        hold_expiry: Some("1".to_owned()),
        ..Options::default()
    })
    .await;
    let cancellations = app.observe(&app.bus.topology().run_cancelled()).await;
    let run = app.start_sync(RunMode::Apply, &[]).await;
    app.snapshot_ready(&run).await;
    app.plan_ready(&crate::helpers::plan(
        &run,
        crate::helpers::fixture_changes(),
        Some("held"),
    ))
    .await;

    // Nobody approves: the run is cancelled by itself.
    let cancelled = app.wait_for_state(&run.run_id, RunState::Cancelled).await;
    let expires_at = cancelled.hold_expires_at.expect("it was held");
    let reason = format!("the hold expired at {}", time_text(&expires_at));
    assert_eq!(cancelled.reason, reason);
    let finished_at = as_system_time(&cancelled.finished_at.expect("finished"));
    assert!(
        finished_at >= as_system_time(&expires_at),
        "not before it expired"
    );
    let published: Vec<v1::RunCancelled> = drain(&cancellations).await;
    assert_eq!(published.len(), 1, "{published:#?}");
    assert_eq!(published[0].run_id, run.run_id);
    assert_eq!(published[0].reason, reason);
}

#[tokio::test]
async fn an_apply_run_supersedes_the_held_runs_of_its_connector_and_a_simulation_does_not() {
    let app = spawn_app().await;
    let cancellations = app.observe(&app.bus.topology().run_cancelled()).await;
    let held = app.start_sync(RunMode::Apply, &[]).await;
    app.hold(&held, &[]).await;
    let other = app
        .try_start(RunMode::Apply, "lab")
        .await
        .expect("another connector");
    app.hold(&other, &[]).await;

    // A simulation may start (a held run is not active) and supersedes nothing.
    let simulated = app
        .try_start(RunMode::Simulate, "")
        .await
        .expect("a simulation");
    app.snapshot_failed(&simulated.run_id, "down").await;
    app.wait_for_state(&simulated.run_id, RunState::Failed)
        .await;
    assert_eq!(app.get_run(&held.run_id).await.state(), RunState::Held);

    let newer = app
        .try_start(RunMode::Apply, "")
        .await
        .expect("an apply run");
    let superseded = app.get_run(&held.run_id).await;
    assert_eq!(superseded.state(), RunState::Cancelled);
    assert_eq!(
        superseded.reason,
        format!("superseded by run {}", newer.run_id)
    );
    assert_eq!(
        app.get_run(&other.run_id).await.state(),
        RunState::Held,
        "a held run of another connector stays"
    );
    let published: Vec<v1::RunCancelled> = drain(&cancellations).await;
    let cancelled: Vec<(&str, &str)> = published
        .iter()
        .map(|cancelled| (cancelled.run_id.as_str(), cancelled.reason.as_str()))
        .collect();
    assert_eq!(
        cancelled,
        [(held.run_id.as_str(), superseded.reason.as_str())]
    );

    let status = app
        .approve(&held.run_id, "too late", None)
        .await
        .expect_err("superseded");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("CANCELLED"),
        "{}",
        status.message()
    );
}

fn jira_state(run_id: &str, logins: &[&str]) -> v1::ProductState {
    v1::ProductState {
        schema_version: v1::SCHEMA_VERSION,
        product: Product::Jira as i32,
        accounts: logins
            .iter()
            .map(|login| v1::CachedAccount {
                id: format!("id-{login}"),
                login: (*login).to_owned(),
                email: format!("{login}@example.org"),
                active: true,
                ..v1::CachedAccount::default()
            })
            .collect(),
        run_id: run_id.to_owned(),
        ..v1::ProductState::default()
    }
}

#[tokio::test]
async fn a_plan_made_against_a_product_state_that_changed_since_cannot_be_approved() {
    let app = spawn_app().await;
    let cache = cache::Cache::new(app.bus.clone());
    let run = app.start_sync(RunMode::Apply, &[]).await;
    let planned_against = jira_state(&run.run_id, &["alice", "bob"]);
    let fingerprint = cache::fingerprint(&planned_against);
    app.hold(&run, &[(Product::Jira, &fingerprint)]).await;
    let made = format!(
        "the plan of run {} was made against the jira state of {}; jira has changed since",
        run.run_id,
        time_text(&run.created_at.expect("created_at"))
    );

    // No state cached at all.
    let status = app
        .approve(&run.run_id, "checked", None)
        .await
        .expect_err("no state");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        format!("{made} (no state is cached now) — start a new run")
    );

    // Another run changed the product since.
    let later = ulid::Ulid::new().to_string();
    cache
        .store(
            model::state::Product::Jira,
            &jira_state(&later, &["alice", "bob", "carol"]),
        )
        .await
        .expect("stores a state");
    let status = app
        .approve(&run.run_id, "checked", None)
        .await
        .expect_err("stale");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        format!("{made} (state now from run {later}) — start a new run")
    );
    let still = app.get_run(&run.run_id).await;
    assert_eq!(still.state(), RunState::Held, "the run stays held");
    assert!(still.approved_by.is_empty());

    // The same accounts again, read by another run at another time: the plan holds.
    let mut same = planned_against.clone();
    same.run_id = ulid::Ulid::new().to_string();
    same.read_at = Some(prost_types::Timestamp::from(SystemTime::now()));
    same.accounts.reverse();
    cache
        .store(model::state::Product::Jira, &same)
        .await
        .expect("stores a state");
    let approved = app
        .approve(&run.run_id, "checked", None)
        .await
        .expect("the plan is current");
    assert_eq!(approved.state(), RunState::Applying);
}

/// A streamed first sync's parts create accounts while the run is held (a part only
/// creates); its complete plan was made against the state without them. Approving it checks
/// the cached state without what the parts created: their accounts are this run's work, and
/// anything else changed since still refuses the approval.
#[tokio::test]
async fn a_held_streamed_first_sync_is_checked_without_what_its_parts_created() {
    let app = spawn_app().await;
    let cache = cache::Cache::new(app.bus.clone());
    let run = app.start_sync(RunMode::Apply, &[]).await;
    let carol = crate::helpers::change(
        "j-carol",
        Product::Jira,
        v1::ChangeOp::CreateUser,
        "kc-carol",
        "carol",
        "carol@example.org",
    );
    app.part_ready(&run, 1, vec![carol]).await;
    app.wait_until("the part is recorded", || async {
        app.get_run(&run.run_id).await.streamed_parts == 1
    })
    .await;
    let planned_against = jira_state(&run.run_id, &["alice", "bob"]);
    let fingerprint = cache::fingerprint(&planned_against);
    app.hold(&run, &[(Product::Jira, &fingerprint)]).await;

    // The part's account is in the product now, and so is one nobody planned.
    let with = |logins: &[&str]| {
        let mut state = jira_state(&ulid::Ulid::new().to_string(), logins);
        for account in &mut state.accounts {
            if account.login == "carol" {
                account.managed = true;
                account.keycloak_user_id = "kc-carol".to_owned();
            }
        }
        state
    };
    let changed = with(&["alice", "bob", "carol", "dave"]);
    cache
        .store(model::state::Product::Jira, &changed)
        .await
        .expect("stores a state");
    let status = app
        .approve(&run.run_id, "checked", None)
        .await
        .expect_err("dave came since");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status
            .message()
            .contains(&format!("(state now from run {})", changed.run_id)),
        "{}",
        status.message()
    );

    // Only the part's account: the plan is current.
    cache
        .store(
            model::state::Product::Jira,
            &with(&["alice", "bob", "carol"]),
        )
        .await
        .expect("stores a state");
    let approved = app
        .approve(&run.run_id, "checked", None)
        .await
        .expect("the plan is current");
    assert_eq!(approved.state(), RunState::Applying);
}

#[tokio::test]
async fn a_held_run_cannot_be_approved_while_another_run_of_its_connector_is_active() {
    let app = spawn_app().await;
    let held = app.start_sync(RunMode::Apply, &[]).await;
    app.hold(&held, &[]).await;
    let simulated = app
        .try_start(RunMode::Simulate, "")
        .await
        .expect("a simulation");

    let status = app
        .approve(&held.run_id, "checked", None)
        .await
        .expect_err("busy");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        format!(
            "run {} of the default connector is still FETCHING; wait for it or cancel it",
            simulated.run_id
        )
    );
    let still = app.get_run(&held.run_id).await;
    assert_eq!(still.state(), RunState::Held);
    assert_eq!(still.reason, "3 removals exceed the limit of 1");
    assert!(still.approved_by.is_empty() && still.approved_at.is_none());

    app.client
        .clone()
        .cancel_run(v1::CancelRunRequest {
            run_id: simulated.run_id.clone(),
            reason: String::new(),
        })
        .await
        .expect("CancelRun");
    let approved = app
        .approve(&held.run_id, "checked", None)
        .await
        .expect("approved once the simulation ended");
    assert_eq!(approved.state(), RunState::Applying);
    // The approved run holds the connector now.
    let status = app
        .try_start(RunMode::Simulate, "")
        .await
        .expect_err("busy");
    assert!(
        status.message().contains(&held.run_id) && status.message().contains("APPLYING"),
        "{}",
        status.message()
    );
}
