//! The Jira client against the Jira emulator.

use std::collections::BTreeSet;

use atlassian::config::UserListing;
use atlassian::{Directory, Error, Membership};
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
