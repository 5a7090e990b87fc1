//! What the planner publishes is what the control plane approved: a held plan goes out
//! only after the control plane confirms the approval, and every published change set is
//! listed, by digest, in the manifest the control plane recorded for the run.

use model::state::Product;
use planner::StepOutcome;
use proto::v1::{self, ChangeOp, RunMode, RunState};

use crate::helpers::{TestPlanner, account, realm, state};

/// Keysync manages 60 Jira accounts whose users are gone from Keycloak: deactivating them
/// all is over the safety limit, so the run is held.
fn sixty_leavers() -> v1::ProductState {
    let managed = (0..60)
        .map(|idx| {
            account(
                &format!("JIRAUSER{idx}"),
                &format!("gone{idx:02}"),
                &format!("u-gone-{idx}"),
            )
        })
        .collect();
    state(Product::Jira, managed)
}

#[tokio::test]
async fn a_held_plan_is_published_only_after_the_control_plane_confirms_its_approval() {
    let planner = TestPlanner::spawn(500).await;
    let run_id = planner.control.start_run(&[v1::Product::Jira]).await;
    planner
        .publish_snapshot(&run_id, RunMode::Apply, &[Product::Jira], realm())
        .await;
    planner.publish_state(&run_id, sixty_leavers()).await;
    assert!(matches!(planner.step().await, StepOutcome::Waiting { .. }));
    assert!(matches!(
        planner.step().await,
        StepOutcome::Planned {
            held: true,
            change_sets: 0,
            ..
        }
    ));
    let ready = planner.next_plan_event().await.ready();
    assert!(ready.held);
    assert!(
        ready.hold_reason.starts_with("jira: "),
        "{}",
        ready.hold_reason
    );
    assert!(!ready.products[0].hold_reason.is_empty());
    let plan = planner
        .stored_plan(ready.plan.as_ref().expect("a plan object"))
        .await;
    assert!(plan.held);
    assert_eq!(
        plan.changes
            .iter()
            .filter(|change| change.op() == ChangeOp::DeactivateUser)
            .count(),
        60
    );
    let held = planner.control.wait_for(&run_id, RunState::Held).await;
    assert_eq!(
        held.change_sets, ready.change_sets,
        "the manifest is recorded"
    );

    // A RunApproved anyone could publish: the control plane says the run is held, so it
    // is dead-lettered and nothing is published.
    planner.publish_approved(&run_id).await;
    assert_eq!(planner.step().await, StepOutcome::DeadLettered);
    assert_eq!(planner.change_set_messages_published().await, 0);
    assert_eq!(
        planner.control.get_run(&run_id).await.state(),
        RunState::Held
    );

    // Approved through the control plane: exactly the stored plan goes out.
    let approved = planner.control.approve_run(&run_id).await;
    assert_eq!(approved.state(), RunState::Applying);
    let StepOutcome::Approved {
        run_id: approved_run,
        change_sets: published,
    } = planner.step().await
    else {
        panic!("the approval is published");
    };
    assert_eq!(approved_run, run_id);
    // One set per phase, together exactly the stored plan, in order.
    let sets = planner.change_sets().await;
    assert_eq!(sets.len(), published);
    let sent: Vec<v1::Change> = sets.iter().flat_map(|set| set.changes.clone()).collect();
    assert_eq!(sent, plan.changes);
    let manifest: v1::ChangeSetManifest = planner
        .bus
        .get_object(held.change_sets.as_ref().expect("a manifest"))
        .await
        .expect("the manifest loads");
    for set in &sets {
        assert_eq!(bus::integrity::check(&manifest, set), Ok(()));
    }

    // A repeated approval publishes the same message ids, which JetStream drops.
    planner.publish_approved(&run_id).await;
    assert!(matches!(planner.step().await, StepOutcome::Approved { .. }));
    assert_eq!(
        planner.change_set_messages_published().await,
        published as u64
    );
}

#[tokio::test]
async fn every_published_change_set_is_listed_in_the_manifest_and_a_simulation_has_none() {
    let planner = TestPlanner::spawn(2).await;
    let run_id = "01JRUNMANIFEST";
    planner
        .publish_snapshot(
            run_id,
            RunMode::Apply,
            &[Product::Jira, Product::Bitbucket],
            realm(),
        )
        .await;
    planner
        .publish_state(run_id, state(Product::Jira, vec![]))
        .await;
    planner
        .publish_state(run_id, state(Product::Bitbucket, vec![]))
        .await;
    let mut planned = planner.step().await;
    while matches!(planned, StepOutcome::Waiting { .. }) {
        planned = planner.step().await;
    }
    let StepOutcome::Planned { change_sets, .. } = planned else {
        panic!("planned: {planned:?}");
    };
    let ready = planner.next_plan_event().await.ready();
    let manifest: v1::ChangeSetManifest = planner
        .bus
        .get_object(
            ready
                .change_sets
                .as_ref()
                .expect("an APPLY plan has a manifest"),
        )
        .await
        .expect("the manifest loads");
    let sets = planner.change_sets().await;
    assert!(sets.len() > 2, "sets of 2 changes: {}", sets.len());
    assert_eq!(sets.len(), change_sets);
    assert_eq!(manifest.sets.len(), sets.len());
    for set in &sets {
        assert_eq!(
            bus::integrity::check(&manifest, set),
            Ok(()),
            "{}",
            set.sequence
        );
    }
    let plan = planner
        .stored_plan(ready.plan.as_ref().expect("a plan object"))
        .await;
    assert_eq!(plan.change_set_size, 2, "an approval cuts the same sets");

    let simulated = "01JRUNMANIFESTSIM";
    planner
        .publish_snapshot(simulated, RunMode::Simulate, &[Product::Jira], realm())
        .await;
    planner
        .publish_state(simulated, state(Product::Jira, vec![]))
        .await;
    let mut planned = planner.step().await;
    while matches!(planned, StepOutcome::Waiting { .. }) {
        planned = planner.step().await;
    }
    let ready = planner.next_plan_event().await.ready();
    assert_eq!(ready.run_id, simulated);
    assert_eq!(ready.change_sets, None, "a simulation has nothing to apply");
}
