//! How change sets are delivered: a set a dead replica held is applied by another without
//! duplicates, sets wait for their predecessors, a cancelled run is skipped, a failed run's late sets are
//! failed unattempted, a malformed set
//! is dead-lettered, and the services run on their own until stopped.

use std::time::{Duration, Instant};

use applier::StepOutcome;
use async_nats::jetstream::consumer::PullConsumer;
use atlassian::{Directory as _, NewAccount};
use futures::StreamExt;
use model::state::Product;
use proto::v1::{self, ChangeOp, ChangeOutcome, RunMode, RunState};

use crate::helpers::{Options, TestEnv, realm};

/// Steps only the planner until it has planned.
async fn plan(env: &TestEnv) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let planner::StepOutcome::Planned { .. } =
            env.planner.try_step().await.expect("the planner steps")
        {
            return;
        }
        assert!(Instant::now() < deadline, "the planner did not plan");
    }
}

fn results_of(outcomes: &[StepOutcome]) -> Vec<v1::ChangeResult> {
    outcomes
        .iter()
        .flat_map(|outcome| match outcome {
            StepOutcome::Applied { results, .. } => results.clone(),
            _ => Vec::new(),
        })
        .collect()
}

#[tokio::test]
async fn a_change_set_a_dead_replica_held_is_applied_by_another_without_duplicates() {
    let mut options = Options::new(&[Product::Jira]);
    options.ack_wait_seconds = 1;
    let env = TestEnv::spawn_with(options).await;
    let run_id = env.start_run(RunMode::Apply).await;
    env.settle().await;
    env.publish_snapshot(&run_id, RunMode::Apply, &realm())
        .await;
    plan(&env).await;

    // A replica takes the set from the shared consumer, creates two accounts, and dies
    // before it acknowledges.
    let topology = env.bus.topology();
    let consumer: PullConsumer = env
        .bus
        .jetstream()
        .get_stream(topology.changes_stream())
        .await
        .expect("the changes stream")
        .get_consumer(&topology.applier_consumer("jira"))
        .await
        .expect("the shared consumer");
    // The sets hold one phase each: the replica takes them all and keeps the creations'.
    let mut batch = consumer
        .fetch()
        .max_messages(16)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .expect("fetch");
    let mut taken = Vec::new();
    while let Some(message) = batch.next().await {
        let message = message.expect("a message");
        let set: v1::ChangeSet = bus::decode(&message.payload).expect("a change set");
        taken.push((message, set));
    }
    let (held, set) = taken
        .into_iter()
        .find(|(_, set)| {
            set.changes
                .iter()
                .any(|change| change.op() == ChangeOp::CreateUser)
        })
        .expect("a set of creations");
    let client = env.client(Product::Jira);
    let creates: Vec<&v1::Change> = set
        .changes
        .iter()
        .filter(|change| change.op() == ChangeOp::CreateUser)
        .take(2)
        .collect();
    assert_eq!(creates.len(), 2);
    for change in &creates {
        let fields = change.fields.as_ref().expect("account data");
        client
            .create_account(&NewAccount {
                login: fields.login.clone(),
                display_name: fields.display_name.clone(),
                email: fields.email.clone(),
                password: None,
            })
            .await
            .expect("the dead replica's create");
    }
    drop(batch);
    drop(held);

    // The other replica gets the sets once the dead one's time is up.
    let all = results_of(&env.settle().await);
    let results: Vec<&v1::ChangeResult> = all
        .iter()
        .filter(|result| {
            set.changes
                .iter()
                .any(|change| change.id == result.change_id)
        })
        .collect();
    assert_eq!(results.len(), set.changes.len());
    for result in &results {
        let precreated = creates.iter().any(|change| change.id == result.change_id);
        let expected = if precreated {
            ChangeOutcome::AlreadyDone
        } else {
            ChangeOutcome::Applied
        };
        assert_eq!(result.outcome(), expected, "{result:?}");
    }
    let dump = env.dump(Product::Jira);
    for login in ["alice", "bob", "carol", "erin"] {
        assert_eq!(
            dump.accounts
                .iter()
                .filter(|account| account.login == login)
                .count(),
            1,
            "{login}"
        );
    }
    let run = env.wait_for_run(&run_id, RunState::Succeeded).await;
    assert_eq!(run.progress[0].already_done, 2);
}

pub(crate) fn change(id: u64, op: ChangeOp) -> v1::Change {
    v1::Change {
        id: format!("{id:016x}"),
        product: v1::Product::Jira as i32,
        op: op as i32,
        reason: "a test".to_owned(),
        ..Default::default()
    }
}

pub(crate) fn new_login(login: &str) -> Option<v1::AccountRef> {
    Some(v1::AccountRef {
        r#ref: Some(v1::account_ref::Ref::NewLogin(login.to_owned())),
    })
}

#[tokio::test]
async fn a_change_set_waits_for_its_predecessor_and_a_finished_one_is_not_applied_again() {
    let env = TestEnv::spawn(&[Product::Jira]).await;
    let run_id = env.start_run(RunMode::Apply).await;
    env.settle().await;

    let group = v1::Change {
        group: "ops".to_owned(),
        ..change(1, ChangeOp::CreateGroup)
    };
    let user = v1::Change {
        keycloak_user_id: "u-olivia".to_owned(),
        account: new_login("olivia"),
        fields: Some(v1::AccountFields {
            login: "olivia".to_owned(),
            display_name: "Olivia Example".to_owned(),
            email: "olivia@example.com".to_owned(),
            active: true,
        }),
        ..change(2, ChangeOp::CreateUser)
    };
    let membership = v1::Change {
        keycloak_user_id: "u-olivia".to_owned(),
        account: new_login("olivia"),
        group: "ops".to_owned(),
        ..change(3, ChangeOp::AddMembership)
    };
    let set = |sequence: u32, changes: Vec<v1::Change>| v1::ChangeSet {
        part: Default::default(),
        schema_version: v1::SCHEMA_VERSION,
        run_id: run_id.clone(),
        product: v1::Product::Jira as i32,
        sequence,
        total_sets: 2,
        changes,
        stored: None,
        connector: String::new(),
        depends_on: None,
    };
    let first = set(0, vec![user, group]);
    let second = set(1, vec![membership]);
    env.announce_plan(&run_id, &[first.clone(), second.clone()], false)
        .await;
    let subject = env.bus.topology().changes("jira");
    env.bus
        .publish(&subject, &second, &format!("{run_id}/jira/1"))
        .await
        .expect("publishes the second set");
    env.bus
        .publish(&subject, &first, &format!("{run_id}/jira/0"))
        .await
        .expect("publishes the first set");

    let applier = env.applier(Product::Jira);
    assert_eq!(
        applier.try_step().await.expect("steps"),
        StepOutcome::Waiting {
            run_id: run_id.clone(),
            sequence: 1
        }
    );
    let StepOutcome::Applied {
        sequence: 0,
        results,
        ..
    } = applier.try_step().await.expect("steps")
    else {
        panic!("the first set is applied");
    };
    assert!(
        results
            .iter()
            .all(|result| result.outcome() == ChangeOutcome::Applied),
        "{results:#?}"
    );
    let outcomes = env.settle().await;
    let StepOutcome::Applied {
        sequence: 1,
        results,
        ..
    } = &outcomes[0]
    else {
        panic!("the second set is applied: {outcomes:?}");
    };
    assert_eq!(results[0].outcome(), ChangeOutcome::Applied);
    let dump = env.dump(Product::Jira);
    assert!(
        dump.memberships
            .iter()
            .any(|membership| membership.group == "ops" && membership.login == "olivia")
    );

    // The first set again (a repeated publication after the duplicate window): finished.
    env.bus
        .publish(&subject, &set(0, vec![]), &format!("{run_id}/jira/0/again"))
        .await
        .expect("publishes again");
    assert_eq!(
        applier.try_step().await.expect("steps"),
        StepOutcome::AlreadyApplied {
            run_id: run_id.clone(),
            sequence: 0
        }
    );
}

#[tokio::test]
async fn the_changes_of_a_cancelled_run_are_skipped_without_touching_the_products() {
    let env = TestEnv::spawn(&[Product::Jira, Product::Bitbucket]).await;
    let run_id = env.start_run(RunMode::Apply).await;
    env.settle().await;
    env.publish_snapshot(&run_id, RunMode::Apply, &realm())
        .await;
    plan(&env).await;
    env.wait_for_run(&run_id, RunState::Applying).await;
    assert_eq!(env.cancel_run(&run_id).await.state(), RunState::Cancelled);

    let results = results_of(&env.settle().await);
    assert!(!results.is_empty());
    for result in &results {
        assert_eq!(result.outcome(), ChangeOutcome::Skipped);
        assert_eq!(result.message, "run cancelled");
    }
    assert_eq!(env.writes(Product::Jira), 0);
    assert_eq!(env.writes(Product::Bitbucket), 0);
    assert_eq!(env.get_run(&run_id).await.state(), RunState::Cancelled);
}

#[tokio::test]
async fn the_late_sets_of_a_run_that_failed_are_failed_unattempted_without_touching_the_products() {
    let mut options = Options::new(&[Product::Jira]);
    // The run fails at its apply deadline while no applier has stepped.
    options.control_plane_keys = "apply_deadline_seconds = 1\n\
                                  apply_deadline_per_change_ms = 0\n\
                                  deadline_sweep_seconds = 1"
        .to_owned();
    let env = TestEnv::spawn_with(options).await;
    let run_id = env.start_run(RunMode::Apply).await;
    // The appliers answer the run request with the product's state.
    env.settle().await;
    env.publish_snapshot(&run_id, RunMode::Apply, &realm())
        .await;
    plan(&env).await;
    let failed = env.wait_for_run(&run_id, RunState::Failed).await;
    assert!(failed.reason.contains("deadline"), "{}", failed.reason);

    let results = results_of(&env.settle().await);
    assert!(!results.is_empty());
    for result in &results {
        assert_eq!(result.outcome(), ChangeOutcome::Failed);
        assert_eq!(
            result.message,
            format!("not attempted: run {run_id} had already failed")
        );
    }
    assert_eq!(env.writes(Product::Jira), 0);
    assert_eq!(env.get_run(&run_id).await.state(), RunState::Failed);
}

#[tokio::test]
async fn a_malformed_change_set_is_dead_lettered_and_the_next_one_is_applied() {
    let env = TestEnv::spawn(&[Product::Jira]).await;
    let topology = env.bus.topology().clone();
    env.bus
        .jetstream()
        .publish(
            topology.changes("jira"),
            bytes::Bytes::from_static(b"\x08\xff\xff not a change set"),
        )
        .await
        .expect("publishes")
        .await
        .expect("stored");
    assert_eq!(
        env.applier(Product::Jira).try_step().await.expect("steps"),
        StepOutcome::DeadLettered
    );

    let sync = env.sync(RunMode::Apply, &realm()).await;
    env.wait_for_run(&sync.run_id, RunState::Succeeded).await;
    assert!(!sync.results().is_empty());
    let mut dead = env
        .bus
        .jetstream()
        .get_stream(topology.dead_stream())
        .await
        .expect("the dead-letter stream");
    assert_eq!(dead.info().await.expect("info").state.messages, 1);
    let dead_letter = dead
        .get_last_raw_message_by_subject(&topology.dead_letter(&topology.changes("jira")))
        .await;
    let headers = dead_letter.expect("the dead letter").headers;
    let reason = headers.get(bus::DEAD_REASON_HEADER).expect("a reason");
    assert!(reason.as_str().contains("ChangeSet"), "{}", reason.as_str());
}

#[tokio::test]
async fn the_services_sync_on_their_own_and_stop_when_told() {
    let env = TestEnv::spawn(&[Product::Jira, Product::Confluence]).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let planner = planner::App::build(env.planner_settings.clone())
        .await
        .expect("a planner replica");
    let mut tasks = vec![tokio::spawn({
        let stopped = until_stopped(stopped.clone());
        async move {
            planner
                .run_until_stopped(stopped)
                .await
                .map_err(|error| error.to_string())
        }
    })];
    for product in [Product::Jira, Product::Confluence] {
        let applier = applier::App::build(env.applier_settings.clone(), product)
            .await
            .expect("an applier replica");
        let stopped = until_stopped(stopped.clone());
        tasks.push(tokio::spawn(async move {
            applier
                .run_until_stopped(stopped)
                .await
                .map_err(|error| error.to_string())
        }));
    }

    let run_id = env.start_run(RunMode::Apply).await;
    env.publish_snapshot(&run_id, RunMode::Apply, &realm())
        .await;
    env.wait_for_run(&run_id, RunState::Succeeded).await;
    for product in [Product::Jira, Product::Confluence] {
        assert!(
            env.dump(product)
                .accounts
                .iter()
                .any(|account| account.login == "alice"),
            "{product}"
        );
    }

    stop.send(true).expect("the services listen");
    for task in tasks {
        task.await
            .expect("the task ends")
            .expect("the service stops cleanly");
    }
}
