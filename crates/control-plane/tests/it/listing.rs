//! The listings at the scale of a test: `ListRuns` pages through the index of runs in id
//! order and sees at once the runs another replica writes (and no longer those deleted);
//! `ListChanges` streams a plan of a few hundred changes with the same totals, pages and
//! filters as a plain walk over the plan computes.

use std::{collections::HashMap, sync::Arc};

use control_plane::store::{Store, StoredRun};
use proto::v1::{self, ChangeOp, ChangeOutcome, Product, RunMode, RunState};

use crate::helpers::{Options, TestApp, change, plan, spawn_app, spawn_app_with};

async fn list_runs(app: &TestApp, states: &[RunState], page_size: u32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .client
            .clone()
            .list_runs(v1::ListRunsRequest {
                states: states.iter().map(|state| *state as i32).collect(),
                page_size,
                page_token: token.clone(),
                triggers: Vec::new(),
            })
            .await
            .expect("ListRuns")
            .into_inner();
        assert!(page.runs.len() <= page_size as usize);
        ids.extend(page.runs.into_iter().map(|run| run.run_id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        assert_eq!(
            Some(&page.next_page_token),
            ids.last(),
            "the token is the last id"
        );
        token = page.next_page_token;
    }
}

fn stored(run_id: String, state: RunState) -> StoredRun {
    let mut run = v1::Run {
        run_id,
        connector: "corp".to_owned(),
        ..v1::Run::default()
    };
    run.set_state(state);
    run.set_mode(RunMode::Apply);
    StoredRun {
        run,
        plan: None,
        results_counted_through: 0,
        state_since: None,
    }
}

#[tokio::test]
async fn list_runs_pages_in_id_order_and_sees_what_another_replica_writes_at_once() {
    let app = spawn_app().await;
    // Another replica on the same bus: its store writes runs this app did not make.
    let other = Store::open(&app.bus).await.expect("opens the buckets");
    let mut created = Vec::new();
    for index in 0..11 {
        let state = if index % 3 == 0 {
            RunState::Failed
        } else {
            RunState::Succeeded
        };
        let run_id = other.new_run_id();
        other
            .create(&stored(run_id.clone(), state))
            .await
            .expect("creates");
        created.push((run_id, state));
    }
    let second = spawn_app_with(Options {
        nats: Some(Arc::clone(&app.nats)),
        prefix: Some(app.prefix.clone()),
        ..Options::default()
    })
    .await;
    let started = second.start_sync(RunMode::Simulate, &[]).await;
    created.push((started.run_id.clone(), started.state()));

    let mut newest_first: Vec<String> = created.iter().map(|(id, _)| id.clone()).collect();
    newest_first.sort_unstable_by(|left, right| right.cmp(left));
    assert_eq!(list_runs(&app, &[], 4).await, newest_first);
    assert_eq!(list_runs(&app, &[], 50).await, newest_first);
    let failed: Vec<String> = newest_first
        .iter()
        .filter(|id| created.contains(&((*id).clone(), RunState::Failed)))
        .cloned()
        .collect();
    assert_eq!(failed.len(), 4);
    assert_eq!(list_runs(&app, &[RunState::Failed], 3).await, failed);

    // Written by the other replica just now: the very next page has it.
    let newest = other.new_run_id();
    other
        .create(&stored(newest.clone(), RunState::Failed))
        .await
        .expect("creates");
    assert_eq!(list_runs(&app, &[], 1).await[0], newest);
    assert_eq!(list_runs(&app, &[RunState::Failed], 2).await[0], newest);

    // Deleted: gone from the next listing.
    let bucket = app
        .bus
        .jetstream()
        .get_key_value(format!("{}-runs", app.prefix))
        .await
        .expect("the runs bucket");
    bucket.delete(&newest).await.expect("deletes");
    let listed = list_runs(&app, &[], 5).await;
    assert!(!listed.contains(&newest));
    assert_eq!(listed, newest_first);
    second.stop().await;
}

/// 300 changes over the three products and three ops, with users named after their index.
fn many_changes() -> Vec<v1::Change> {
    let products = [Product::Jira, Product::Confluence, Product::Bitbucket];
    let ops = [
        ChangeOp::CreateUser,
        ChangeOp::UpdateUser,
        ChangeOp::AddMembership,
    ];
    (0..300)
        .map(|index| {
            change(
                &format!("c-{index:03}"),
                products[index % 3],
                ops[(index / 3) % 3],
                &format!("kc-{}", index % 50),
                &format!("user{index}"),
                &format!("user{index}@example.org"),
            )
        })
        .collect()
}

/// Which changes of the plan a query should list.
type Wanted<'a> = Box<dyn Fn(&v1::Change) -> bool + 'a>;

#[tokio::test]
async fn list_changes_streams_a_plan_with_the_totals_pages_and_filters_of_a_plain_walk() {
    let app = spawn_app().await;
    let run = app.start_sync(RunMode::Apply, &[]).await;
    app.snapshot_ready(&run).await;
    let changes = many_changes();
    app.plan_ready(&plan(&run, changes.clone(), None)).await;
    app.wait_for_state(&run.run_id, RunState::Applying).await;
    let mut outcomes = HashMap::new();
    for product in [Product::Jira, Product::Confluence, Product::Bitbucket] {
        let results: Vec<(&str, ChangeOutcome)> = changes
            .iter()
            .enumerate()
            .filter(|(index, change)| change.product() == product && index % 7 == 0)
            .map(|(index, change)| {
                let outcome = if index % 2 == 0 {
                    ChangeOutcome::Failed
                } else {
                    ChangeOutcome::Applied
                };
                (change.id.as_str(), outcome)
            })
            .collect();
        outcomes.extend(
            results
                .iter()
                .map(|(id, outcome)| (id.to_string(), *outcome)),
        );
        app.report(&run.run_id, product, &results).await;
    }
    let outcome_of = |change: &v1::Change| {
        outcomes
            .get(&change.id)
            .copied()
            .unwrap_or(ChangeOutcome::Planned)
    };

    let mut queries: Vec<(v1::ListChangesRequest, Wanted)> = Vec::new();
    queries.push((v1::ListChangesRequest::default(), Box::new(|_| true)));
    let mut request = v1::ListChangesRequest::default();
    request.set_product(Product::Confluence);
    request.set_op(ChangeOp::UpdateUser);
    queries.push((
        request,
        Box::new(|change| {
            change.product() == Product::Confluence && change.op() == ChangeOp::UpdateUser
        }),
    ));
    for outcome in [
        ChangeOutcome::Failed,
        ChangeOutcome::Applied,
        ChangeOutcome::Planned,
    ] {
        let mut request = v1::ListChangesRequest::default();
        request.set_outcome(outcome);
        queries.push((
            request,
            Box::new(move |change| outcome_of(change) == outcome),
        ));
    }
    let mut request = v1::ListChangesRequest {
        user: "KC-7".to_owned(),
        ..v1::ListChangesRequest::default()
    };
    request.set_outcome(ChangeOutcome::Planned);
    queries.push((
        request,
        Box::new(move |change| {
            change.keycloak_user_id == "kc-7" && outcome_of(change) == ChangeOutcome::Planned
        }),
    ));

    for (request, wanted) in &queries {
        let expected: Vec<&v1::Change> = changes.iter().filter(|change| wanted(change)).collect();
        assert!(!expected.is_empty());
        let mut listed = Vec::new();
        let mut token = String::new();
        loop {
            let page = app
                .client
                .clone()
                .list_changes(v1::ListChangesRequest {
                    run_id: run.run_id.clone(),
                    page_size: 40,
                    page_token: token.clone(),
                    ..request.clone()
                })
                .await
                .expect("ListChanges")
                .into_inner();
            assert_eq!(page.total as usize, expected.len(), "{request:?}");
            for record in &page.changes {
                let change = record.change.as_ref().expect("a change");
                assert_eq!(record.outcome(), outcome_of(change), "{}", change.id);
                if record.outcome() != ChangeOutcome::Planned {
                    assert_eq!(record.message, format!("{:?}", record.outcome()));
                }
            }
            listed.extend(page.changes.into_iter().filter_map(|record| record.change));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let expected: Vec<v1::Change> = expected.into_iter().cloned().collect();
        assert_eq!(listed, expected, "{request:?}");
    }
}
