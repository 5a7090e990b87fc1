//! A run through the planner: the join of snapshot and states, the stored plan, change sets
//! in dependency order, held and simulated runs, and approval.

use model::state::Product;
use planner::StepOutcome;
use proto::v1::{self, ChangeOp, RunMode};

use crate::helpers::{TestPlanner, account, realm, state};

const ALL: [Product; 3] = [Product::Jira, Product::Confluence, Product::Bitbucket];

#[tokio::test]
async fn planner_joins_the_snapshot_with_every_state_and_publishes_the_stored_plan_in_dependency_order()
 {
    let planner = TestPlanner::spawn(2).await;
    let run_id = "01JRUNJOIN";
    // Jira has bob already (linked, not recreated) and an admin keysync never touches.
    planner
        .publish_state(
            run_id,
            state(
                Product::Jira,
                vec![
                    account("JIRAUSER1", "admin", ""),
                    account("JIRAUSER2", "bob", ""),
                ],
            ),
        )
        .await;
    assert_eq!(
        planner.step().await,
        StepOutcome::Waiting {
            run_id: run_id.to_owned()
        }
    );
    planner
        .publish_snapshot(run_id, RunMode::Apply, &[], realm())
        .await;
    assert!(matches!(planner.step().await, StepOutcome::Waiting { .. }));
    planner
        .publish_state(run_id, state(Product::Confluence, vec![]))
        .await;
    assert!(matches!(planner.step().await, StepOutcome::Waiting { .. }));
    planner
        .publish_state(run_id, state(Product::Bitbucket, vec![]))
        .await;
    let StepOutcome::Planned {
        held: false,
        change_sets,
        ..
    } = planner.step().await
    else {
        panic!("the run is planned");
    };

    let ready = planner.next_plan_event().await.ready();
    assert!(!ready.held);
    let summaries: Vec<i32> = ready
        .products
        .iter()
        .map(|summary| summary.product)
        .collect();
    assert_eq!(
        summaries,
        [
            v1::Product::Jira as i32,
            v1::Product::Confluence as i32,
            v1::Product::Bitbucket as i32
        ]
    );
    let plan = planner
        .stored_plan(ready.plan.as_ref().expect("a plan object"))
        .await;
    assert_eq!(plan.run_id, run_id);
    assert_eq!(plan.mode, RunMode::Apply as i32);
    assert_eq!(plan.products, ready.products);

    let jira: Vec<&v1::Change> = plan
        .changes
        .iter()
        .filter(|change| change.product == v1::Product::Jira as i32)
        .collect();
    let ops_of = |login: &str| -> Vec<ChangeOp> {
        jira.iter()
            .filter(|change| {
                change
                    .fields
                    .as_ref()
                    .is_some_and(|fields| fields.login == login)
            })
            .map(|change| change.op())
            .collect()
    };
    assert_eq!(
        ops_of("bob"),
        [ChangeOp::LinkUser],
        "bob is linked, not created"
    );
    assert_eq!(ops_of("alice"), [ChangeOp::CreateUser]);
    assert!(ops_of("dave").is_empty(), "a disabled user gets no account");
    assert!(
        jira.iter().all(|change| change.account
            != Some(v1::AccountRef {
                r#ref: Some(v1::account_ref::Ref::AccountId("JIRAUSER1".to_owned()))
            })),
        "the admin is untouched"
    );

    // The change sets are the plan's changes, product by product, at most two per set, in
    // plan order, which is dependency order.
    let sets = planner.change_sets().await;
    assert_eq!(sets.len(), change_sets);
    let mut from_sets = Vec::new();
    for product in ALL {
        let wire = cache::convert::product_to_proto(product) as i32;
        let of_product: Vec<&v1::ChangeSet> =
            sets.iter().filter(|set| set.product == wire).collect();
        for (sequence, set) in of_product.iter().enumerate() {
            assert_eq!(set.sequence as usize, sequence);
            assert_eq!(set.total_sets as usize, of_product.len());
            assert!(set.changes.len() <= 2 && !set.changes.is_empty());
            assert!(set.stored.is_none());
            assert_eq!(set.run_id, run_id);
        }
        let changes: Vec<v1::Change> = of_product
            .iter()
            .flat_map(|set| set.changes.clone())
            .collect();
        let ops: Vec<ChangeOp> = changes.iter().map(|change| change.op()).collect();
        assert!(ops.is_sorted(), "{product}: {ops:?}");
        from_sets.extend(changes);
    }
    assert_eq!(from_sets, plan.changes);
    assert!(
        plan.changes
            .iter()
            .any(|change| change.op() == ChangeOp::CreateGroup
                && change.product == v1::Product::Bitbucket as i32)
    );
}

#[tokio::test]
async fn a_simulated_run_stores_its_plan_like_a_real_one_and_publishes_no_change_sets() {
    let planner = TestPlanner::spawn(500).await;
    let run_id = "01JRUNSIMULATE";
    planner
        .publish_snapshot(run_id, RunMode::Simulate, &[Product::Confluence], realm())
        .await;
    planner
        .publish_state(run_id, state(Product::Confluence, vec![]))
        .await;
    assert!(matches!(planner.step().await, StepOutcome::Waiting { .. }));
    assert!(matches!(
        planner.step().await,
        StepOutcome::Planned {
            held: false,
            change_sets: 0,
            ..
        }
    ));
    let ready = planner.next_plan_event().await.ready();
    let plan = planner
        .stored_plan(ready.plan.as_ref().expect("a plan object"))
        .await;
    assert_eq!(plan.mode, RunMode::Simulate as i32);
    assert_eq!(
        plan.changes
            .iter()
            .filter(|change| change.op() == ChangeOp::CreateUser)
            .count(),
        3,
        "alice, bob and carol would be created"
    );
    assert_eq!(planner.change_set_messages_published().await, 0);

    // An approval of a simulated run the control plane never approved publishes nothing.
    planner.publish_approved(run_id).await;
    assert_eq!(planner.step().await, StepOutcome::DeadLettered);
    assert_eq!(planner.change_set_messages_published().await, 0);
}

#[tokio::test]
async fn a_change_set_too_large_for_one_message_goes_to_the_object_store() {
    let planner = TestPlanner::spawn(10_000).await;
    let run_id = "01JRUNLARGE";
    let mut snapshot = realm();
    snapshot.users = (0..6_000)
        .map(|idx| v1::KeycloakUser {
            id: format!("u-{idx}"),
            username: format!("user-with-a-rather-long-login-{idx:05}"),
            email: format!("user-with-a-rather-long-login-{idx:05}@example.com"),
            first_name: "Someone".to_owned(),
            last_name: format!("Number {idx}"),
            enabled: true,
            ..Default::default()
        })
        .collect();
    snapshot.memberships.clear();
    planner
        .publish_snapshot(run_id, RunMode::Apply, &[Product::Bitbucket], snapshot)
        .await;
    planner
        .publish_state(run_id, state(Product::Bitbucket, vec![]))
        .await;
    assert!(matches!(planner.step().await, StepOutcome::Waiting { .. }));
    let StepOutcome::Planned {
        held: false,
        change_sets: published,
        ..
    } = planner.step().await
    else {
        panic!("the run is planned");
    };
    let ready = planner.next_plan_event().await.ready();
    let plan = planner
        .stored_plan(ready.plan.as_ref().expect("a plan object"))
        .await;
    // One set per phase (the default group, then the creations); the creations are too
    // large for one message and go to the object store.
    let sets = planner.change_sets().await;
    assert_eq!(sets.len(), published);
    let large = sets
        .iter()
        .find(|set| set.stored.is_some())
        .expect("a set in the object store");
    assert!(large.changes.is_empty());
    let object = large.stored.as_ref().expect("stored in the object store");
    assert_eq!(
        object.key,
        format!("{run_id}/bitbucket/{}.pb.zst", large.sequence)
    );
    let stored: v1::ChangeSet = planner
        .bus
        .get_object(object)
        .await
        .expect("the stored set loads");
    let creations: Vec<&v1::Change> = plan
        .changes
        .iter()
        .filter(|change| change.op() == v1::ChangeOp::CreateUser)
        .collect();
    assert_eq!(stored.changes.iter().collect::<Vec<_>>(), creations);
    assert_eq!(
        (stored.sequence, stored.total_sets),
        (large.sequence, published as u32)
    );
}
