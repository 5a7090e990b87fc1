//! Whole runs through the real services: the appliers refresh their products, the planner
//! plans, the appliers apply and report, and each emulator ends up holding what the plan
//! promised, for all three products.

use emulator::store::{Seed, SeedGroup, SeedMembership};
use model::state::Product;
use proto::v1::{ChangeOutcome, RunMode, RunState};

use crate::helpers::{Directory, Options, TestEnv, expected, realm, seed_account};

const ALL: [Product; 3] = [Product::Jira, Product::Confluence, Product::Bitbucket];

/// Every product has a protected `admin`; Jira also has `bob` already (linked, not
/// recreated) and `zed`, whom Keycloak does not know (untouched).
fn seeds() -> Options {
    let mut options = Options::new(&ALL);
    let admin = || seed_account("admin", "Administrator");
    options.seeds = vec![
        Seed {
            accounts: vec![
                admin(),
                seed_account("bob", "Bob Example"),
                seed_account("zed", "Zed Unmanaged"),
            ],
            groups: vec![SeedGroup {
                name: "jira-administrators".to_owned(),
                deletable: true,
            }],
            memberships: vec![SeedMembership {
                group: "jira-administrators".to_owned(),
                login: "admin".to_owned(),
            }],
        },
        Seed {
            accounts: vec![admin()],
            ..Seed::default()
        },
        Seed {
            accounts: vec![admin()],
            ..Seed::default()
        },
    ];
    options
}

#[tokio::test]
async fn applying_a_run_makes_every_product_equal_the_expected_state_and_a_second_run_writes_nothing()
 {
    let env = TestEnv::spawn_with(seeds()).await;
    let snapshot = realm();
    let jira_before = env.dump(Product::Jira);

    let first = env.sync(RunMode::Apply, &snapshot).await;
    let run = env.wait_for_run(&first.run_id, RunState::Succeeded).await;
    for (idx, &product) in ALL.iter().enumerate() {
        let expected = expected(&first.planned_against[idx], &snapshot);
        let actual = Directory::of_dump(&env.dump(product)).with_unknown_emails_of(&expected);
        assert_eq!(actual, expected, "{product}");
    }
    let results = first.results();
    assert!(!results.is_empty());
    assert!(
        results
            .iter()
            .all(|result| result.outcome() == ChangeOutcome::Applied),
        "{results:#?}"
    );
    let planned: u64 = run.progress.iter().map(|progress| progress.planned).sum();
    let applied: u64 = run.progress.iter().map(|progress| progress.applied).sum();
    assert_eq!(
        (planned, applied),
        (results.len() as u64, results.len() as u64)
    );
    assert!(
        results
            .iter()
            .filter(|result| result.account_id.is_empty())
            .count()
            < results.len(),
        "creates report the new account's id"
    );

    // Each product has the synced users, and not the disabled one.
    for product in ALL {
        let logins: Vec<String> = env
            .dump(product)
            .accounts
            .iter()
            .map(|account| account.login.clone())
            .collect();
        for login in ["alice", "bob", "carol", "erin"] {
            assert_eq!(
                logins.iter().filter(|known| *known == login).count(),
                1,
                "{product}: {login}"
            );
        }
        assert!(!logins.iter().any(|login| login == "dave"), "{product}");
    }
    // Bob was linked in Jira, under the key he had; admin and zed are as they were.
    let jira_after = env.dump(Product::Jira);
    let key = |dump: &emulator::store::Dump, login: &str| {
        dump.accounts
            .iter()
            .find(|account| account.login == login)
            .cloned()
            .expect("the account exists")
    };
    assert_eq!(key(&jira_after, "bob").key, key(&jira_before, "bob").key);
    assert_eq!(key(&jira_after, "admin"), key(&jira_before, "admin"));
    assert_eq!(key(&jira_after, "zed"), key(&jira_before, "zed"));
    let (jira_state, _) = env
        .cache
        .load(Product::Jira)
        .await
        .expect("loads")
        .expect("cached");
    let cached_bob = jira_state
        .accounts
        .iter()
        .find(|account| account.login == "bob")
        .expect("bob is cached");
    assert!(cached_bob.managed && cached_bob.keycloak_user_id == "u-bob");
    let cached_zed = jira_state
        .accounts
        .iter()
        .find(|account| account.login == "zed")
        .expect("zed is cached");
    assert!(!cached_zed.managed);

    // The same directory again: nothing to do, nothing written.
    let writes: Vec<u64> = ALL.iter().map(|&product| env.writes(product)).collect();
    let second = env.sync(RunMode::Apply, &snapshot).await;
    env.wait_for_run(&second.run_id, RunState::Succeeded).await;
    assert!(second.results().is_empty(), "{:#?}", second.results());
    let writes_after: Vec<u64> = ALL.iter().map(|&product| env.writes(product)).collect();
    assert_eq!(writes_after, writes);
}

#[tokio::test]
async fn users_who_leave_keycloak_lose_access_once_approved_and_bitbucket_follows_its_cleanup_fallback()
 {
    let env = TestEnv::spawn_with(seeds()).await;
    let first = env.sync(RunMode::Apply, &realm()).await;
    env.wait_for_run(&first.run_id, RunState::Succeeded).await;

    // Carol is deleted from Keycloak, alice changes her email, bob leaves /staff.
    let mut snapshot = realm();
    snapshot.users.retain(|user| user.username != "carol");
    snapshot
        .memberships
        .retain(|membership| membership.user_id != "u-carol" && membership.user_id != "u-bob");
    for user in &mut snapshot.users {
        if user.username == "alice" {
            user.email = "alice@new.example.com".to_owned();
        }
    }
    // One of four managed accounts losing access is over the safety limit: the run is
    // held, nothing is written, and approving it applies the stored plan.
    let writes: Vec<u64> = ALL.iter().map(|&product| env.writes(product)).collect();
    let second = env.sync(RunMode::Apply, &snapshot).await;
    let held = env.wait_for_run(&second.run_id, RunState::Held).await;
    assert!(held.reason.contains("would lose access"), "{}", held.reason);
    assert!(second.results().is_empty());
    let writes_while_held: Vec<u64> = ALL.iter().map(|&product| env.writes(product)).collect();
    assert_eq!(writes_while_held, writes);
    env.approve_run(&second.run_id).await;
    let applied = env.settle().await;
    assert!(!applied.is_empty());
    env.wait_for_run(&second.run_id, RunState::Succeeded).await;
    for (idx, &product) in ALL.iter().enumerate() {
        let expected = expected(&second.planned_against[idx], &snapshot);
        let actual = Directory::of_dump(&env.dump(product)).with_unknown_emails_of(&expected);
        assert_eq!(actual, expected, "{product}");
    }
    let account = |product: Product, login: &str| {
        env.dump(product)
            .accounts
            .into_iter()
            .find(|account| account.login == login)
            .expect("the account exists")
    };
    assert!(!account(Product::Jira, "carol").active);
    assert!(!account(Product::Confluence, "carol").active);
    // Bitbucket cannot deactivate: carol keeps an active account without any group.
    assert!(account(Product::Bitbucket, "carol").active);
    assert!(
        !env.dump(Product::Bitbucket)
            .memberships
            .iter()
            .any(|membership| membership.login == "carol")
    );
    assert_eq!(
        account(Product::Jira, "alice").email,
        "alice@new.example.com"
    );
    assert!(
        !env.dump(Product::Jira)
            .memberships
            .iter()
            .any(|membership| membership.login == "bob" && membership.group == "staff")
    );
    assert_eq!(
        account(Product::Jira, "admin").display_name,
        "Administrator"
    );
}

#[tokio::test]
async fn a_change_made_by_hand_in_a_product_is_seen_and_corrected_by_the_next_run() {
    let env = TestEnv::spawn(&[Product::Jira]).await;
    let first = env.sync(RunMode::Apply, &realm()).await;
    env.wait_for_run(&first.run_id, RunState::Succeeded).await;

    // Someone renames alice's display name in Jira and takes erin's account away.
    let client = env.client(Product::Jira);
    let (state, _) = env
        .cache
        .load(Product::Jira)
        .await
        .expect("loads")
        .expect("cached");
    let alice = state
        .accounts
        .iter()
        .find(|account| account.login == "alice")
        .expect("alice");
    let erin = state
        .accounts
        .iter()
        .find(|account| account.login == "erin")
        .expect("erin");
    use atlassian::Directory as _;
    client
        .update_account(
            atlassian::AccountRef {
                id: &alice.id,
                login: &alice.login,
            },
            &atlassian::AccountUpdate {
                display_name: Some("Hacked Name".to_owned()),
                ..Default::default()
            },
        )
        .await
        .expect("an update by hand");
    client
        .deactivate_account(atlassian::AccountRef {
            id: &erin.id,
            login: &erin.login,
        })
        .await
        .expect("a deactivation by hand");

    let second = env.sync(RunMode::Apply, &realm()).await;
    env.wait_for_run(&second.run_id, RunState::Succeeded).await;
    let seen = &second.planned_against[0];
    let seen_alice = seen
        .accounts
        .iter()
        .find(|account| account.login == "alice")
        .expect("alice");
    assert_eq!(
        seen_alice.display_name, "Hacked Name",
        "the refresh saw the change"
    );
    assert!(seen_alice.managed, "and kept that keysync manages alice");
    let applied = second
        .results()
        .iter()
        .filter(|result| result.outcome() == ChangeOutcome::Applied)
        .count();
    assert_eq!(
        applied,
        2,
        "one update and one reactivation: {:#?}",
        second.results()
    );
    let dump = env.dump(Product::Jira);
    let alice = dump
        .accounts
        .iter()
        .find(|account| account.login == "alice")
        .expect("alice");
    assert_eq!(alice.display_name, "Alice Example");
    assert!(
        dump.accounts
            .iter()
            .find(|account| account.login == "erin")
            .expect("erin")
            .active
    );
}

#[tokio::test]
async fn a_simulated_run_writes_nothing_and_its_plan_is_stored() {
    let env = TestEnv::spawn(&[Product::Jira, Product::Bitbucket]).await;
    let sync = env.sync(RunMode::Simulate, &realm()).await;
    let run = env.wait_for_run(&sync.run_id, RunState::Succeeded).await;
    assert!(sync.results().is_empty());
    assert_eq!(env.writes(Product::Jira), 0);
    assert_eq!(env.writes(Product::Bitbucket), 0);
    let planned: u64 = run.progress.iter().map(|progress| progress.planned).sum();
    assert!(planned > 0, "the plan lists what a real run would do");
}
