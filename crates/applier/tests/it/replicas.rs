//! Applier replicas that help, not hurt: the change sets of one phase are applied by any
//! replica at the same time, a set waits only for the sets of the phases before its own, the
//! cached state keeps every replica's records, and a set whose run made no progress for the
//! sequence timeout fails its changes (never skips them).

use std::time::Duration;

use applier::StepOutcome;
use model::state::Product;
use proto::v1::{self, ChangeOp, ChangeOutcome, RunMode};

use crate::delivery::{change, new_login};
use crate::helpers::{Options, TestEnv};

fn create(id: u64, login: &str) -> v1::Change {
    v1::Change {
        keycloak_user_id: format!("u-{login}"),
        account: new_login(login),
        fields: Some(v1::AccountFields {
            login: login.to_owned(),
            display_name: format!("{login} Example"),
            email: format!("{login}@example.com"),
            active: true,
        }),
        ..change(id, ChangeOp::CreateUser)
    }
}

fn join(id: u64, login: &str) -> v1::Change {
    v1::Change {
        keycloak_user_id: format!("u-{login}"),
        account: new_login(login),
        group: "ops".to_owned(),
        ..change(id, ChangeOp::AddMembership)
    }
}

/// Sets 0 (the group), 1 and 2 (one account each: one phase), 3 (both memberships).
fn sets(run_id: &str) -> Vec<v1::ChangeSet> {
    let group = v1::Change {
        group: "ops".to_owned(),
        ..change(1, ChangeOp::CreateGroup)
    };
    let set = |sequence: u32, depends_on: u32, changes: Vec<v1::Change>| v1::ChangeSet {
        part: Default::default(),
        schema_version: v1::SCHEMA_VERSION,
        run_id: run_id.to_owned(),
        product: v1::Product::Jira as i32,
        sequence,
        total_sets: 4,
        changes,
        stored: None,
        connector: String::new(),
        depends_on: Some(depends_on),
    };
    vec![
        set(0, 0, vec![group]),
        set(1, 1, vec![create(2, "olivia")]),
        set(2, 1, vec![create(3, "peter")]),
        set(3, 3, vec![join(4, "olivia"), join(5, "peter")]),
    ]
}

async fn publish(env: &TestEnv, run_id: &str, set: &v1::ChangeSet) {
    env.bus
        .publish(
            &env.bus.topology().changes("jira"),
            set,
            &format!("{run_id}/jira/{}", set.sequence),
        )
        .await
        .expect("publishes the set");
}

fn applied(outcome: &StepOutcome) -> (u32, Vec<ChangeOutcome>) {
    match outcome {
        StepOutcome::Applied {
            sequence, results, ..
        } => (
            *sequence,
            results.iter().map(|result| result.outcome()).collect(),
        ),
        other => panic!("a set is applied: {other:?}"),
    }
}

#[tokio::test]
async fn two_replicas_apply_one_phase_at_once_and_the_next_phase_waits_for_both() {
    let env = TestEnv::spawn(&[Product::Jira]).await;
    let run_id = env.start_run(RunMode::Apply).await;
    env.settle().await;
    let sets = sets(&run_id);
    env.announce_plan(&run_id, &sets, false).await;
    let first = env.applier(Product::Jira);
    let second = applier::App::build(env.applier_settings.clone(), Product::Jira)
        .await
        .expect("a second replica starts");

    publish(&env, &run_id, &sets[0]).await;
    assert_eq!(applied(&first.try_step().await.expect("steps")).0, 0);

    // The memberships wait for both accounts; the accounts do not wait for each other.
    publish(&env, &run_id, &sets[3]).await;
    assert_eq!(
        first.try_step().await.expect("steps"),
        StepOutcome::Waiting {
            run_id: run_id.clone(),
            sequence: 3
        }
    );
    publish(&env, &run_id, &sets[2]).await;
    publish(&env, &run_id, &sets[1]).await;
    let (one, other) = tokio::join!(first.try_step(), second.try_step());
    let mut done = [
        applied(&one.expect("steps")),
        applied(&other.expect("steps")),
    ];
    done.sort();
    assert_eq!(
        done,
        [
            (1, vec![ChangeOutcome::Applied]),
            (2, vec![ChangeOutcome::Applied])
        ]
    );

    let outcomes = env.settle().await;
    let memberships: Vec<_> = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, StepOutcome::Applied { .. }))
        .map(applied)
        .collect();
    assert_eq!(
        memberships,
        [(3, vec![ChangeOutcome::Applied, ChangeOutcome::Applied])]
    );

    // The cached state has what both replicas did: two managed accounts, two memberships.
    let (state, _) = env
        .cache
        .load(Product::Jira)
        .await
        .expect("the cache reads")
        .expect("a cached state");
    let mut managed: Vec<(&str, &str)> = state
        .accounts
        .iter()
        .filter(|account| account.managed)
        .map(|account| (account.login.as_str(), account.keycloak_user_id.as_str()))
        .collect();
    managed.sort();
    assert_eq!(managed, [("olivia", "u-olivia"), ("peter", "u-peter")]);
    assert_eq!(
        state
            .memberships
            .iter()
            .filter(|membership| membership.group == "ops")
            .count(),
        2
    );
}

#[tokio::test]
async fn a_set_whose_run_stopped_making_progress_fails_its_changes_and_never_skips_them() {
    let mut options = Options::new(&[Product::Jira]);
    options.sequence_timeout_seconds = 1;
    let env = TestEnv::spawn_with(options).await;
    let run_id = env.start_run(RunMode::Apply).await;
    env.settle().await;
    let sets = sets(&run_id);
    env.announce_plan(&run_id, &sets, false).await;
    // Set 0 is never published: set 1 waits for it, then gives up.
    publish(&env, &run_id, &sets[1]).await;
    let applier = env.applier(Product::Jira);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let results = loop {
        match applier.try_step().await.expect("steps") {
            StepOutcome::Applied { results, .. } => break results,
            StepOutcome::Waiting { .. } | StepOutcome::Idle => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the set never gave up"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].outcome(), ChangeOutcome::Failed, "{results:?}");
    assert!(
        results[0].message.starts_with("not attempted")
            && results[0].message.contains("sequence_timeout"),
        "{}",
        results[0].message
    );
    assert!(
        env.dump(Product::Jira)
            .accounts
            .iter()
            .all(|account| account.login != "olivia"),
        "nothing was written"
    );
}
