//! The Jira client against the Jira emulator.

use std::collections::BTreeSet;

use atlassian::config::UserListing;
use atlassian::{AccountRef, AccountUpdate, Directory, Error, Membership, Outcome};
use emulator::store::Seed;
use emulator::{JiraVersion, Product};

use crate::helpers::*;

#[tokio::test]
async fn create_account_reports_a_validation_error_without_retrying() {
    let mut config = seeded(Product::Jira, Seed::default());
    config.record_requests = true;
    let emulator = spawn(config).await;
    let client = jira(&emulator);
    let mut invalid = new_account("bob");
    invalid.email = "not-an-email".into();

    let error = client.create_account(&invalid).await.unwrap_err();

    assert!(
        matches!(error, Error::Validation { status: 400, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("email"), "{error}");
    // One create, then one read to see whether "bob" exists; never a second create.
    let posts = emulator
        .state()
        .dump()
        .requests
        .iter()
        .filter(|request| request.method == "POST")
        .count();
    assert_eq!(posts, 1);
}

#[tokio::test]
async fn list_accounts_follows_the_user_list_cursor_over_several_pages() {
    let mut config = seeded(
        Product::Jira,
        Seed {
            accounts: seed_accounts("user", 25),
            ..Seed::default()
        },
    );
    config.record_requests = true;
    let emulator = spawn(config).await;
    let mut connection = connection(&emulator);
    connection.page_size = Some(7);
    let client = jira_with(connection, UserListing::Cursor);

    let accounts = client.list_accounts().await.unwrap();

    assert_eq!(accounts.len(), 25);
    let keys: BTreeSet<&str> = accounts.iter().map(|account| account.id.as_str()).collect();
    assert_eq!(keys.len(), 25);
    assert_eq!(count_requests(&emulator, "/user/list"), 4);
}

#[tokio::test]
async fn list_accounts_on_jira_9_splits_prefixes_past_the_1000_user_cap() {
    let mut accounts = seed_accounts("u", 2500);
    accounts.push(seed_account("zed"));
    let mut config = seeded(
        Product::Jira,
        Seed {
            accounts,
            ..Seed::default()
        },
    );
    config.jira_version = JiraVersion::V9_12;
    let emulator = spawn(config).await;
    let client = jira(&emulator);

    assert_eq!(
        client.user_listing().await.unwrap(),
        UserListing::PrefixSearch
    );
    let accounts = client.list_accounts().await.unwrap();

    assert_eq!(accounts.len(), 2501);
    let keys: BTreeSet<&str> = accounts.iter().map(|account| account.id.as_str()).collect();
    assert_eq!(keys.len(), 2501, "accounts are deduplicated by key");
}

#[tokio::test]
async fn user_listing_auto_picks_the_cursor_from_jira_10_3() {
    let emulator = spawn_product(Product::Jira).await;
    let client = jira(&emulator);

    assert_eq!(client.user_listing().await.unwrap(), UserListing::Cursor);
}

#[tokio::test]
async fn list_groups_splits_picker_queries_when_the_picker_is_capped() {
    let names = [
        "admins",
        "analysts",
        "designers",
        "developers",
        "ops",
        "qa",
        "sales",
        "support",
        "team a",
        "x",
    ];
    let mut config = seeded(
        Product::Jira,
        Seed {
            groups: names.iter().map(|name| seed_group(name)).collect(),
            ..Seed::default()
        },
    );
    config.jira_picker_limit = 3;
    let emulator = spawn(config).await;
    let client = jira(&emulator);

    let groups = client.list_groups().await.unwrap();

    let listed: Vec<&str> = groups.iter().map(|group| group.name.as_str()).collect();
    assert_eq!(listed, names);
}

#[tokio::test]
async fn fetch_state_reads_memberships_over_several_member_pages_including_inactive_users() {
    let mut accounts = seed_accounts("member", 120);
    accounts[7].active = false;
    let memberships = accounts
        .iter()
        .map(|account| seed_membership("everyone", &account.login))
        .chain([seed_membership("small", "member0001")])
        .collect();
    let emulator = spawn(seeded(
        Product::Jira,
        Seed {
            accounts,
            groups: vec![
                seed_group("everyone"),
                seed_group("small"),
                seed_group("empty"),
            ],
            memberships,
        },
    ))
    .await;
    let client = jira(&emulator);

    let state = client.fetch_state().await.unwrap();

    assert_eq!(state.accounts.len(), 120);
    assert_eq!(state.groups.len(), 3);
    assert_eq!(state.memberships.len(), 121);
    let key_of_member_1 = &emulator.state().dump().accounts[1].key;
    assert!(state.memberships.contains(&Membership {
        group: "small".into(),
        account_id: key_of_member_1.clone(),
    }));
    assert_eq!(
        state
            .accounts
            .iter()
            .filter(|account| !account.active)
            .count(),
        1
    );
}

/// A Jira 10.1 seeded with `accounts`: no `/user/list`, and `/user/search` capped at 100.
fn jira_10_1(accounts: Vec<emulator::store::SeedAccount>) -> emulator::Config {
    let mut config = seeded(
        Product::Jira,
        Seed {
            accounts,
            ..Seed::default()
        },
    );
    config.jira_version = JiraVersion::V10_1;
    config
}

#[tokio::test]
async fn list_accounts_on_jira_10_1_refines_prefixes_past_the_100_user_cap() {
    let mut accounts = seed_accounts("u", 2500);
    let mut emile = seed_account("émile");
    emile.display_name = "Émile Zola".into();
    emile.email = "emile.zola@example.org".into();
    accounts.push(emile);
    let emulator = spawn(jira_10_1(accounts)).await;
    let client = jira(&emulator);

    assert_eq!(
        client.user_listing().await.unwrap(),
        UserListing::PrefixSearch
    );
    let accounts = client.list_accounts().await.unwrap();

    let keys: BTreeSet<&str> = accounts.iter().map(|account| account.id.as_str()).collect();
    assert_eq!(keys.len(), 2501, "every user, each once");
    assert_eq!(accounts.len(), 2501);
    assert!(accounts.iter().any(|account| account.login == "émile"));
}

#[tokio::test]
async fn a_listing_that_cannot_be_proven_complete_fails_the_read() {
    // 150 logins share their first 12 characters: past the longest prefix searched, Jira
    // 10.1 still answers its cap of 100.
    let emulator = spawn(jira_10_1(seed_accounts("aaaaaaaaaaaa", 150))).await;
    let client = jira(&emulator);

    let error = client.fetch_state().await.unwrap_err();

    assert!(matches!(error, Error::Incomplete { .. }), "{error:?}");
    assert!(error.to_string().contains("\"aaaaaaaaaaaa\""), "{error}");
}

#[tokio::test]
async fn fetch_state_reads_group_members_that_no_user_search_reaches() {
    // `ǆ` (U+01C6) is no character the search tries, and the capped samples never show it.
    let mut accounts = seed_accounts("u", 150);
    let mut hidden = seed_account("ǆemal");
    hidden.display_name = "ǆemal".into();
    hidden.email = "ǆemal@example.org".into();
    accounts.push(hidden);
    let mut config = jira_10_1(accounts);
    config.seed.groups = vec![seed_group("jira-software-users")];
    config.seed.memberships = vec![seed_membership("jira-software-users", "ǆemal")];
    let emulator = spawn(config).await;
    let client = jira(&emulator);

    let listed = client.list_accounts().await.unwrap();
    let state = client.fetch_state().await.unwrap();

    assert_eq!(listed.len(), 150, "the search alone misses it");
    assert_eq!(state.accounts.len(), 151);
    assert!(
        state
            .accounts
            .iter()
            .any(|account| account.login == "ǆemal")
    );
}

#[tokio::test]
async fn update_account_with_a_stale_login_does_not_rename_the_user_back() {
    let emulator = spawn(seeded(
        Product::Jira,
        Seed {
            accounts: vec![seed_account("alice")],
            ..Seed::default()
        },
    ))
    .await;
    let client = jira(&emulator);
    let key = emulator.state().dump().accounts[0].key.clone();
    // An administrator renames alice after keysync read her as `alice`.
    let stale = AccountRef {
        id: &key,
        login: "alice",
    };
    client
        .update_account(
            stale,
            &AccountUpdate {
                login: Some("alicia".into()),
                ..AccountUpdate::default()
            },
        )
        .await
        .unwrap();

    let outcome = client
        .update_account(
            stale,
            &AccountUpdate {
                email: Some("alicia@example.com".into()),
                ..AccountUpdate::default()
            },
        )
        .await
        .unwrap();

    assert_eq!(outcome, Outcome::Applied);
    let account = &emulator.state().dump().accounts[0];
    assert_eq!(
        account.login, "alicia",
        "the stale login renamed the user back"
    );
    assert_eq!(account.email, "alicia@example.com");
}
