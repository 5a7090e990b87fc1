//! The product state journal against a real nats-server: what a change set did is one
//! small entry on top of the base, not a rewrite of it; every replica sees it; a fold takes
//! the entries into a new base; and a refresh that overlaps a change set keeps its records.

use bus::{Bus, Topology};
use cache::Cache;
use model::state::Product;
use proto::v1;
use test_support::nats::NatsServer;

/// A base of `accounts` managed accounts, `JIRAUSER{n}` / `user{n}`.
fn base(accounts: usize, run_id: &str) -> v1::ProductState {
    v1::ProductState {
        schema_version: v1::SCHEMA_VERSION,
        product: v1::Product::Jira as i32,
        accounts: (0..accounts)
            .map(|n| v1::CachedAccount {
                id: format!("JIRAUSER{n}"),
                login: format!("user{n}"),
                display_name: format!("User {n}"),
                email: format!("user{n}@example.com"),
                active: true,
                managed: true,
                keycloak_user_id: format!("kc-{n}"),
                ..Default::default()
            })
            .collect(),
        groups: vec![v1::CachedGroup {
            name: "staff".to_owned(),
            managed: true,
            connector: String::new(),
        }],
        run_id: run_id.to_owned(),
        ..Default::default()
    }
}

/// A change id (16 hex digits) of its own for each login and kind.
fn change_id(login: &str, kind: u64) -> String {
    let hash = login
        .bytes()
        .fold(kind, |hash, byte| hash * 131 + u64::from(byte));
    format!("{hash:016x}")
}

fn create(login: &str) -> v1::StateRecord {
    v1::StateRecord {
        change: Some(v1::Change {
            id: change_id(login, 1),
            product: v1::Product::Jira as i32,
            op: v1::ChangeOp::CreateUser as i32,
            keycloak_user_id: format!("kc-{login}"),
            fields: Some(v1::AccountFields {
                login: login.to_owned(),
                display_name: login.to_owned(),
                email: format!("{login}@example.com"),
                ..Default::default()
            }),
            reason: "a test".to_owned(),
            ..Default::default()
        }),
        account_id: None,
        created_id: Some(format!("JIRAUSER-{login}")),
    }
}

fn join(login: &str, group: &str) -> v1::StateRecord {
    v1::StateRecord {
        change: Some(v1::Change {
            id: change_id(login, 2),
            product: v1::Product::Jira as i32,
            op: v1::ChangeOp::AddMembership as i32,
            keycloak_user_id: format!("kc-{login}"),
            group: group.to_owned(),
            reason: "a test".to_owned(),
            ..Default::default()
        }),
        account_id: Some(format!("JIRAUSER-{login}")),
        created_id: None,
    }
}

async fn cache(nats: &NatsServer, prefix: &str) -> Cache {
    let bus = Bus::connect(&nats.url(), Topology::new(prefix))
        .await
        .expect("bus");
    Cache::new(bus)
}

/// A cache under `prefix` with a stored Jira base of two accounts (run `full-1`).
async fn jira_with_base(nats: &NatsServer, prefix: &str) -> Cache {
    let cache = cache(nats, prefix).await;
    cache
        .store(Product::Jira, &base(2, "full-1"))
        .await
        .expect("stores the base");
    cache
}

fn logins(state: &v1::ProductState) -> Vec<&str> {
    let mut logins: Vec<&str> = state.accounts.iter().map(|a| a.login.as_str()).collect();
    logins.sort_unstable();
    logins
}

#[tokio::test]
async fn a_change_set_is_a_small_entry_every_replica_sees_and_a_fold_takes_it_into_the_base() {
    let nats = NatsServer::start().expect("nats-server");
    let applier = cache(&nats, "j1").await;
    let planner = cache(&nats, "j1").await;
    let object = applier
        .store(Product::Jira, &base(20_000, "full"))
        .await
        .expect("stores the base");
    let loaded = planner.load(Product::Jira).await.expect("loads");
    assert_eq!(loaded.expect("present").0.accounts.len(), 20_000);
    assert_eq!(planner.base_reads(), 1);

    let fold_due = applier
        .append(
            Product::Jira,
            "delta-1",
            "corp",
            vec![create("zoe"), join("zoe", "staff")],
        )
        .await
        .expect("appends");
    assert!(!fold_due, "one entry is far from a fold");
    // The base was not rewritten: the delta is one journal entry.
    assert_eq!(
        applier.current_sha256(Product::Jira).await.expect("sha"),
        Some(object.sha256.clone())
    );
    let journal = nats_bytes(&nats, "j1-state-journal").await;
    assert!(
        journal < 2_048,
        "the entry of one user takes {journal} bytes"
    );

    // The planner that had loaded the base reads only the new entry.
    let (seen, base_ref) = planner
        .load(Product::Jira)
        .await
        .expect("loads")
        .expect("present");
    assert_eq!(planner.base_reads(), 1, "the base was read again");
    assert_eq!(base_ref, object);
    assert_eq!(seen.accounts.len(), 20_001);
    let zoe = seen
        .accounts
        .iter()
        .find(|account| account.login == "zoe")
        .expect("the created account");
    assert_eq!(
        (zoe.id.as_str(), zoe.managed, zoe.connector.as_str()),
        ("JIRAUSER-zoe", true, "corp")
    );
    assert!(
        seen.memberships
            .iter()
            .any(|m| m.account_id == "JIRAUSER-zoe" && m.group == "staff")
    );
    assert_eq!(seen.run_id, "delta-1");
    // A replica that never loaded it reads the base and replays the entry: the same state.
    let fresh = cache(&nats, "j1").await;
    let (same, _) = fresh
        .load(Product::Jira)
        .await
        .expect("loads")
        .expect("present");
    assert_eq!(cache::fingerprint(&same), cache::fingerprint(&seen));

    applier.fold(Product::Jira).await.expect("folds");
    let folded = applier.current_sha256(Product::Jira).await.expect("sha");
    assert_ne!(folded, Some(object.sha256.clone()), "a new base");
    assert_eq!(
        nats_messages(&nats, "j1-state-journal").await,
        0,
        "the entries are purged"
    );
    for replica in [&planner, &fresh, &cache(&nats, "j1").await] {
        let (state, _) = replica
            .load(Product::Jira)
            .await
            .expect("loads")
            .expect("present");
        assert_eq!(cache::fingerprint(&state), cache::fingerprint(&seen));
        assert!(state.journal_seq > 0);
    }
    // The base the planner was told of is gone, and the newest state is answered instead.
    let (newest, newer) = planner
        .load_announced_or_newer(Product::Jira, &object, true)
        .await
        .expect("the newest");
    assert!(newer);
    let mut newest_logins: Vec<&str> = newest
        .state
        .accounts
        .iter()
        .map(|account| account.login.as_str())
        .collect();
    newest_logins.sort_unstable();
    assert_eq!(newest_logins, logins(&seen));
    // The model's form fingerprints as the cached state does, journal replayed and all.
    assert_eq!(newest.fingerprint(), cache::fingerprint(&seen));
}

#[tokio::test]
async fn a_refresh_that_overlaps_a_change_set_keeps_what_the_set_recorded() {
    let nats = NatsServer::start().expect("nats-server");
    let applier = jira_with_base(&nats, "j2").await;
    applier
        .append(Product::Jira, "delta-1", "", vec![create("early")])
        .await
        .expect("appends");
    // A refresh starts reading the product here; a change set records a user while it reads.
    let position = applier.journal_position().await.expect("position");
    applier
        .append(Product::Jira, "delta-2", "", vec![create("late")])
        .await
        .expect("appends");
    // The read saw `early` (made before it began) but not `late`.
    let mut fresh = base(2, "full-2");
    fresh.accounts.push(v1::CachedAccount {
        id: "JIRAUSER-early".to_owned(),
        login: "early".to_owned(),
        active: true,
        managed: true,
        keycloak_user_id: "kc-early".to_owned(),
        ..Default::default()
    });
    fresh.journal_seq = position;
    applier.store(Product::Jira, &fresh).await.expect("stores");

    assert_eq!(
        nats_messages(&nats, "j2-state-journal").await,
        1,
        "only `late` is left"
    );
    // Another connector's set after it: two entries, two owners, replayed in order.
    applier
        .append(Product::Jira, "delta-3", "partners", vec![create("later")])
        .await
        .expect("appends");

    let reader = cache(&nats, "j2").await;
    let (state, _) = reader
        .load(Product::Jira)
        .await
        .expect("loads")
        .expect("present");
    assert_eq!(logins(&state), ["early", "late", "later", "user0", "user1"]);
    let owner = |login: &str| {
        state
            .accounts
            .iter()
            .find(|account| account.login == login)
            .map(|account| account.connector.clone())
    };
    assert_eq!(owner("late").as_deref(), Some(""));
    assert_eq!(owner("later").as_deref(), Some("partners"));
    assert_eq!(state.run_id, "delta-3");
}

#[tokio::test]
async fn an_entry_of_another_product_under_this_one_is_refused_as_permanent() {
    let nats = NatsServer::start().expect("nats-server");
    jira_with_base(&nats, "j4").await;
    // Something that may write the journal files a Confluence entry under Jira's topic.
    let bus = Bus::connect(&nats.url(), Topology::new("j4"))
        .await
        .expect("bus");
    let bucket = bus.topology().state_journal_bucket();
    let journal = bus::journal::Journal::open(&bus, &bucket, "test")
        .await
        .expect("journal");
    let foreign = v1::StateRecords {
        schema_version: v1::SCHEMA_VERSION,
        product: v1::Product::Confluence as i32,
        run_id: "elsewhere".to_owned(),
        connector: String::new(),
        records: vec![create("intruder")],
    };
    journal.append("jira", &foreign).await.expect("appends");

    let reader = cache(&nats, "j4").await;
    let error = reader.load(Product::Jira).await.expect_err("refused");
    assert!(
        matches!(error, cache::Error::WrongProduct { .. }) && error.is_permanent(),
        "{error:?}"
    );
    assert!(error.to_string().contains("CONFLUENCE"), "{error}");
}

async fn stream_state(nats: &NatsServer, bucket: &str) -> async_nats::jetstream::stream::State {
    let client = async_nats::connect(nats.url()).await.expect("connects");
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream
        .get_stream(format!("KV_{bucket}"))
        .await
        .expect("the journal's stream");
    stream.info().await.expect("info").state.clone()
}

async fn nats_bytes(nats: &NatsServer, bucket: &str) -> u64 {
    stream_state(nats, bucket).await.bytes
}

async fn nats_messages(nats: &NatsServer, bucket: &str) -> u64 {
    stream_state(nats, bucket).await.messages
}

#[tokio::test]
async fn a_change_set_takes_the_followed_state_and_gives_it_back_unless_another_set_came_between() {
    let nats = NatsServer::start().expect("nats-server");
    let first = cache(&nats, "j3").await;
    let second = cache(&nats, "j3").await;
    first
        .store(Product::Jira, &base(3, "full"))
        .await
        .expect("stores the base");

    // Alone: the state comes back with the set's records, and the next set starts from it
    // without reading the base again.
    let (mut working, lease) = first
        .take_working(Product::Jira, "corp")
        .await
        .expect("takes")
        .expect("present");
    assert_eq!(first.base_reads(), 1);
    record(&mut working, create("ann"));
    first
        .record_set(Product::Jira, "set-1", "corp", working, Some(lease))
        .await
        .expect("records");
    let (working, lease) = first
        .take_working(Product::Jira, "corp")
        .await
        .expect("takes")
        .expect("present");
    assert_eq!(first.base_reads(), 1, "the base was read again");
    assert!(working.account_by_login("ann").is_some());

    // Another replica's set lands while this one applies: this one's state is not kept
    // (it lacks the other's records), and the next load replays both.
    let mut working = working;
    record(&mut working, create("bea"));
    second
        .append(Product::Jira, "set-2", "corp", vec![create("cid")])
        .await
        .expect("the other replica appends");
    first
        .record_set(Product::Jira, "set-3", "corp", working, Some(lease))
        .await
        .expect("records");
    let (state, _) = first
        .load(Product::Jira)
        .await
        .expect("loads")
        .expect("present");
    assert_eq!(
        logins(&state),
        ["ann", "bea", "cid", "user0", "user1", "user2"]
    );
    assert_eq!(first.base_reads(), 2, "read again once");
    let (elsewhere, _) = second
        .load(Product::Jira)
        .await
        .expect("loads")
        .expect("present");
    assert_eq!(cache::fingerprint(&elsewhere), cache::fingerprint(&state));
}

fn record(working: &mut cache::working::Working, record: v1::StateRecord) {
    let change = record.change.as_ref().expect("a change");
    working.record(
        change,
        record.account_id.as_deref(),
        record.created_id.as_deref(),
    );
}

/// One step of a generated history of the cache.
#[derive(Debug, Clone)]
enum Step {
    /// A change set of the applier that follows the journal: these users created and in
    /// the group; and another replica's set of one user appended while it applies.
    Set(Vec<u8>, Option<u8>),
    /// A change set of another replica, appended without the state taken.
    Other(u8),
    /// The applier folds the journal into a new base.
    Fold,
    /// The planner loads (and follows) the state.
    Load,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (
            proptest::collection::vec(0u8..12, 1..4),
            proptest::option::of(0u8..12)
        )
            .prop_map(|(ids, meanwhile)| Step::Set(ids, meanwhile)),
        1 => (0u8..12).prop_map(Step::Other),
        1 => Just(Step::Fold),
        2 => Just(Step::Load),
    ]
}

/// The records of users `ids`: each created, then in `staff` (a user created before is
/// created again, which the model's rules make a no-op).
fn set_records(ids: &[u8]) -> Vec<v1::StateRecord> {
    ids.iter()
        .flat_map(|id| {
            let login = format!("p{id}");
            [create(&login), join(&login, "staff")]
        })
        .collect()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 16,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Whatever the order of sets, other replicas' sets, folds and loads, every reader
    /// ends with the base plus every record, in order, as the model's rules make it.
    #[test]
    fn every_reader_sees_the_base_with_every_record_whatever_the_history(
        steps in proptest::collection::vec(step(), 1..24)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(history(steps));
    }
}

async fn history(steps: Vec<Step>) {
    static NATS: std::sync::OnceLock<NatsServer> = std::sync::OnceLock::new();
    static CASE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let nats = NATS.get_or_init(|| NatsServer::start().expect("nats-server"));
    let prefix = format!(
        "jp{}",
        CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let applier = cache(nats, &prefix).await;
    let other = cache(nats, &prefix).await;
    let planner = cache(nats, &prefix).await;
    let start = base(2, "full");
    applier
        .store(Product::Jira, &start)
        .await
        .expect("stores the base");
    let mut expected = cache::working::Working::new(Product::Jira, start).expect("a state");
    for (n, step) in steps.into_iter().enumerate() {
        let run_id = format!("run-{n}");
        match step {
            Step::Set(ids, meanwhile) => {
                let (mut working, lease) = applier
                    .take_working(Product::Jira, "")
                    .await
                    .expect("takes")
                    .expect("present");
                if let Some(id) = meanwhile {
                    let records = set_records(&[id]);
                    for record in &records {
                        record_in(&mut expected, record);
                    }
                    other
                        .append(Product::Jira, &format!("{run_id}-meanwhile"), "", records)
                        .await
                        .expect("appends");
                }
                for record in set_records(&ids) {
                    record_in(&mut working, &record);
                    record_in(&mut expected, &record);
                }
                let fold = applier
                    .record_set(Product::Jira, &run_id, "", working, Some(lease))
                    .await
                    .expect("records");
                if fold {
                    applier.fold(Product::Jira).await.expect("folds");
                }
            }
            Step::Other(id) => {
                let records = set_records(&[id]);
                for record in &records {
                    record_in(&mut expected, record);
                }
                other
                    .append(Product::Jira, &run_id, "", records)
                    .await
                    .expect("appends");
            }
            Step::Fold => applier.fold(Product::Jira).await.expect("folds"),
            Step::Load => {
                planner.load(Product::Jira).await.expect("loads");
            }
        }
    }
    let want = cache::fingerprint(&expected.into_state(""));
    for reader in [&applier, &planner, &cache(nats, &prefix).await] {
        let (state, _) = reader
            .load(Product::Jira)
            .await
            .expect("loads")
            .expect("present");
        assert_eq!(cache::fingerprint(&state), want);
    }
}

fn record_in(working: &mut cache::working::Working, record: &v1::StateRecord) {
    let change = record.change.as_ref().expect("a change");
    working.record(
        change,
        record.account_id.as_deref(),
        record.created_id.as_deref(),
    );
}
