//! An applier writes only change sets the planner published for a run the control plane
//! lets write: a set for a held run, an altered set or one the run's manifest does not
//! list is dead-lettered with the reason, and the product is not touched.

use applier::StepOutcome;
use model::state::Product;
use proto::v1::{self, ChangeOp, RunMode};

use crate::delivery::{change, new_login};
use crate::helpers::TestEnv;

/// One Jira change set of run `run_id` that creates `login`.
fn create(run_id: &str, sequence: u32, login: &str) -> v1::ChangeSet {
    v1::ChangeSet {
        part: Default::default(),
        schema_version: v1::SCHEMA_VERSION,
        run_id: run_id.to_owned(),
        product: v1::Product::Jira as i32,
        sequence,
        total_sets: 1,
        changes: vec![v1::Change {
            keycloak_user_id: format!("u-{login}"),
            account: new_login(login),
            fields: Some(v1::AccountFields {
                login: login.to_owned(),
                display_name: format!("{login} Example"),
                email: format!("{login}@example.com"),
                active: true,
            }),
            ..change(u64::from(sequence) + 1, ChangeOp::CreateUser)
        }],
        stored: None,
        connector: String::new(),
        depends_on: None,
    }
}

/// Publishes `set` with a message id of its own and steps the Jira applier once.
async fn deliver(env: &TestEnv, set: &v1::ChangeSet, id: &str) -> StepOutcome {
    env.bus
        .publish(&env.bus.topology().changes("jira"), set, id)
        .await
        .expect("publishes the change set");
    env.applier(Product::Jira)
        .try_step()
        .await
        .expect("the applier steps")
}

/// The reason of the newest dead letter of the Jira change-set subject.
async fn last_dead_reason(env: &TestEnv) -> String {
    let topology = env.bus.topology();
    let dead = env
        .bus
        .jetstream()
        .get_stream(topology.dead_stream())
        .await
        .expect("the dead-letter stream");
    let message = dead
        .get_last_raw_message_by_subject(&topology.dead_letter(&topology.changes("jira")))
        .await
        .expect("a dead letter");
    message
        .headers
        .get(bus::DEAD_REASON_HEADER)
        .expect("a reason")
        .as_str()
        .to_owned()
}

#[tokio::test]
async fn a_change_set_for_a_held_run_is_dead_lettered_and_writes_nothing() {
    let env = TestEnv::spawn(&[Product::Jira]).await;
    let run_id = env.start_run(RunMode::Apply).await;
    // The appliers read their state for the run; no snapshot comes, so nothing is planned.
    env.settle().await;
    let set = create(&run_id, 0, "mallory");
    env.announce_plan(&run_id, std::slice::from_ref(&set), true)
        .await;

    // The very set the planner would publish once the run is approved: not before.
    assert_eq!(
        deliver(&env, &set, "forged-held").await,
        StepOutcome::DeadLettered
    );
    let reason = last_dead_reason(&env).await;
    assert!(reason.contains("is held"), "{reason}");
    assert_eq!(env.writes(Product::Jira), 0);
}

#[tokio::test]
async fn only_the_change_sets_the_manifest_lists_are_applied() {
    let env = TestEnv::spawn(&[Product::Jira]).await;
    let run_id = env.start_run(RunMode::Apply).await;
    // The appliers read their state for the run; no snapshot comes, so nothing is planned.
    env.settle().await;
    let genuine = create(&run_id, 0, "olivia");
    env.announce_plan(&run_id, std::slice::from_ref(&genuine), false)
        .await;

    // The listed set with its one change pointed at another account.
    let mut altered = genuine.clone();
    if let Some(fields) = altered.changes[0].fields.as_mut() {
        fields.login = "mallory".to_owned();
    }
    altered.changes[0].account = new_login("mallory");
    assert_eq!(
        deliver(&env, &altered, "forged-altered").await,
        StepOutcome::DeadLettered
    );
    let reason = last_dead_reason(&env).await;
    assert!(
        reason.contains("differs from the one the planner published"),
        "{reason}"
    );
    assert_eq!(env.writes(Product::Jira), 0);

    // The genuine set is applied.
    let StepOutcome::Applied { results, .. } = deliver(&env, &genuine, "genuine").await else {
        panic!("the listed set is applied");
    };
    assert_eq!(results[0].outcome(), v1::ChangeOutcome::Applied);
    let logins: Vec<String> = env
        .dump(Product::Jira)
        .accounts
        .iter()
        .map(|account| account.login.clone())
        .collect();
    assert!(logins.contains(&"olivia".to_owned()), "{logins:?}");
    assert!(!logins.contains(&"mallory".to_owned()), "{logins:?}");

    // Next in sequence, a set the manifest does not list at all.
    assert_eq!(
        deliver(&env, &create(&run_id, 1, "eve"), "forged-unlisted").await,
        StepOutcome::DeadLettered
    );
    let reason = last_dead_reason(&env).await;
    assert!(reason.contains("lists no change set 1"), "{reason}");
    assert_eq!(env.writes(Product::Jira), 1, "olivia's creation only");
}

#[tokio::test]
async fn a_set_from_a_newer_planner_with_fields_this_build_does_not_know_is_applied() {
    use prost::Message as _;
    let env = TestEnv::spawn(&[Product::Jira]).await;
    let run_id = env.start_run(RunMode::Apply).await;
    env.settle().await;
    let set = create(&run_id, 0, "nora");
    // A newer planner's set: a field 900 this build does not know, listed in the
    // manifest by the digest of the set as that planner encoded it.
    let mut wire = set.encode_to_vec();
    prost::encoding::uint32::encode(900, &7, &mut wire);
    let manifest = v1::ChangeSetManifest {
        schema_version: v1::SCHEMA_VERSION,
        run_id: run_id.clone(),
        sets: vec![v1::ChangeSetDigest {
            product: set.product,
            sequence: set.sequence,
            sha256: bus::integrity::change_set_digest_of_wire(&wire, None).expect("digests"),
        }],
    };
    assert_ne!(
        manifest.sets[0].sha256,
        bus::integrity::change_set_digest(&set),
        "the field counts in the digest"
    );
    env.announce_manifest(&run_id, std::slice::from_ref(&set), &manifest, false)
        .await;
    env.bus
        .jetstream()
        .publish(env.bus.topology().changes("jira"), wire.into())
        .await
        .expect("publishes")
        .await
        .expect("stored");
    let outcome = env
        .applier(Product::Jira)
        .try_step()
        .await
        .expect("the applier steps");
    let StepOutcome::Applied { results, .. } = outcome else {
        panic!("the newer planner's set is applied: {outcome:?}");
    };
    assert_eq!(results[0].outcome(), v1::ChangeOutcome::Applied);
    assert_eq!(env.writes(Product::Jira), 1);
}

#[tokio::test]
async fn a_set_whose_results_the_control_plane_refuses_is_dead_lettered_not_applied_again() {
    let env = TestEnv::spawn(&[Product::Jira]).await;
    let run_id = env.start_run(RunMode::Apply).await;
    env.settle().await;
    // A change without an id: its result names no change, which the control plane
    // refuses for good (InvalidArgument).
    let mut set = create(&run_id, 0, "oscar");
    set.changes[0].id = String::new();
    env.announce_plan(&run_id, std::slice::from_ref(&set), false)
        .await;
    assert_eq!(
        deliver(&env, &set, "no-change-id").await,
        StepOutcome::DeadLettered
    );
    let reason = last_dead_reason(&env).await;
    assert!(
        reason.contains("the control plane refused the results of change set 0"),
        "{reason}"
    );
    // Written once, and not delivered again to be written again.
    assert_eq!(env.writes(Product::Jira), 1);
    assert_eq!(
        env.applier(Product::Jira)
            .try_step()
            .await
            .expect("the applier steps"),
        StepOutcome::Idle
    );
    assert_eq!(env.writes(Product::Jira), 1);
}

#[tokio::test]
async fn a_part_of_a_streamed_first_sync_is_applied_before_the_plan_and_while_it_is_held() {
    let env = TestEnv::spawn(&[Product::Jira]).await;
    let run_id = env.start_run(RunMode::Apply).await;
    // The appliers read their state for the run; the run is still fetching.
    env.settle().await;
    let part = |sequence: u32, part: u32, login: &str| v1::ChangeSet {
        part,
        ..create(&run_id, sequence, login)
    };
    let (first, second) = (part(0, 1, "pia"), part(1, 2, "quinn"));

    // The planner's PlanReady of part 1: its manifest lists the first part's set only.
    let topology = env.bus.topology();
    let manifest = env
        .bus
        .put_object(
            &topology.plans_bucket(),
            &format!("{run_id}.sets-part-1.pb.zst"),
            &bus::integrity::manifest(&run_id, [&first]),
        )
        .await
        .expect("stores the manifest");
    let ready = v1::PlanReady {
        schema_version: v1::SCHEMA_VERSION,
        run_id: run_id.clone(),
        change_sets: Some(manifest),
        part: 1,
        ..Default::default()
    };
    env.bus
        .publish(
            &topology.plan_ready(),
            &ready,
            &format!("{run_id}/plan-part-1"),
        )
        .await
        .expect("publishes PlanReady");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while env.get_run(&run_id).await.streamed_parts != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the part is not recorded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(matches!(
        deliver(&env, &first, "part-1").await,
        StepOutcome::Applied { .. }
    ));
    // Part 2's set before its manifest is recorded: it waits, it is not refused.
    assert!(matches!(
        deliver(&env, &second, "part-2").await,
        StepOutcome::Unconfirmed { .. }
    ));
    assert_eq!(env.writes(Product::Jira), 1);

    // The complete plan is held; its manifest lists the parts' sets and its own.
    let own = create(&run_id, 2, "rhea");
    env.announce_plan(&run_id, &[first, second.clone(), own.clone()], true)
        .await;
    // Part 2's set comes again (it was handed back) and is applied, held or not.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let outcome = env
            .applier(Product::Jira)
            .try_step()
            .await
            .expect("the applier steps");
        if matches!(outcome, StepOutcome::Applied { .. }) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{outcome:?}");
    }
    assert_eq!(
        deliver(&env, &own, "own-held").await,
        StepOutcome::DeadLettered
    );
    assert!(last_dead_reason(&env).await.contains("is held"));
    assert_eq!(env.writes(Product::Jira), 2, "pia and quinn only");
}
