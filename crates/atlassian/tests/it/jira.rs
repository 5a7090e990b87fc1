//! The Jira client against the Jira emulator.

use std::collections::BTreeSet;

use atlassian::config::{Auth, UserListing};
use atlassian::{AccountRef, AccountUpdate, Directory, Error, Membership, Outcome, Secret};
use emulator::store::Seed;
use emulator::{JiraVersion, Product};

use crate::helpers::*;

#[tokio::test]
async fn create_account_answers_the_user_key_and_the_user_exists() {
    let emulator = spawn_product(Product::Jira).await;
    let client = jira(&emulator);

    let created = client.create_account(&new_account("alice")).await.unwrap();

    assert_eq!(created.outcome, Outcome::Applied);
    assert!(created.id.starts_with("JIRAUSER"), "{}", created.id);
    let dump = emulator.state().dump();
    assert_eq!(dump.accounts.len(), 1);
    assert_eq!(dump.accounts[0].key, created.id);
    assert_eq!(dump.accounts[0].email, "alice@example.com");
}

#[tokio::test]
async fn create_account_is_already_done_when_the_same_user_exists() {
    let emulator = spawn(seeded(
        Product::Jira,
        Seed {
            accounts: vec![seed_account("alice")],
            ..Seed::default()
        },
    ))
    .await;
    let client = jira(&emulator);

    let created = client.create_account(&new_account("alice")).await.unwrap();

    assert_eq!(created.outcome, Outcome::AlreadyDone);
    assert_eq!(created.id, emulator.state().dump().accounts[0].key);
    assert_eq!(emulator.state().dump().accounts.len(), 1);
}

#[tokio::test]
async fn create_account_is_a_conflict_when_the_user_exists_with_other_details() {
    let emulator = spawn(seeded(
        Product::Jira,
        Seed {
            accounts: vec![seed_account("alice")],
            ..Seed::default()
        },
    ))
    .await;
    let client = jira(&emulator);
    let mut other = new_account("alice");
    other.email = "someone.else@example.com".into();

    let error = client.create_account(&other).await.unwrap_err();

    assert!(
        matches!(error, Error::Conflict { status: 400, .. }),
        "{error:?}"
    );
}

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
async fn update_account_changes_details_and_renames_by_key() {
    let emulator = spawn_product(Product::Jira).await;
    let client = jira(&emulator);
    let created = client.create_account(&new_account("carol")).await.unwrap();
    let account = AccountRef {
        id: &created.id,
        login: "carol",
    };

    let outcome = client
        .update_account(
            account,
            &AccountUpdate {
                login: Some("caroline".into()),
                display_name: Some("Caroline C".into()),
                email: Some("caroline@example.com".into()),
            },
        )
        .await
        .unwrap();

    assert_eq!(outcome, Outcome::Applied);
    let dump = emulator.state().dump();
    assert_eq!(dump.accounts[0].key, created.id);
    assert_eq!(dump.accounts[0].login, "caroline");
    assert_eq!(dump.accounts[0].display_name, "Caroline C");
    assert_eq!(dump.accounts[0].email, "caroline@example.com");
}

#[tokio::test]
async fn update_account_of_a_missing_user_is_not_found() {
    let emulator = spawn_product(Product::Jira).await;
    let client = jira(&emulator);

    let error = client
        .update_account(
            AccountRef {
                id: "JIRAUSER99999",
                login: "ghost",
            },
            &AccountUpdate {
                display_name: Some("Ghost".into()),
                ..AccountUpdate::default()
            },
        )
        .await
        .unwrap_err();

    assert!(
        matches!(error, Error::NotFound { status: 404, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn deactivate_and_reactivate_toggle_active_and_repeats_are_already_done() {
    let emulator = spawn_product(Product::Jira).await;
    let client = jira(&emulator);
    let created = client.create_account(&new_account("dave")).await.unwrap();
    let account = AccountRef {
        id: &created.id,
        login: "dave",
    };

    assert_eq!(
        client.deactivate_account(account).await.unwrap(),
        Outcome::Applied
    );
    assert!(!emulator.state().dump().accounts[0].active);
    assert_eq!(
        client.deactivate_account(account).await.unwrap(),
        Outcome::AlreadyDone
    );
    assert_eq!(
        client.reactivate_account(account).await.unwrap(),
        Outcome::Applied
    );
    assert!(emulator.state().dump().accounts[0].active);
    assert_eq!(
        client.reactivate_account(account).await.unwrap(),
        Outcome::AlreadyDone
    );
    let writes = emulator.state().dump().counters.writes;
    assert_eq!(writes.get("deactivate_account"), Some(&1));
    assert_eq!(writes.get("reactivate_account"), Some(&1));
}

#[tokio::test]
async fn delete_account_removes_the_user_and_a_second_delete_is_already_done() {
    let emulator = spawn_product(Product::Jira).await;
    let client = jira(&emulator);
    let created = client.create_account(&new_account("erin")).await.unwrap();
    let account = AccountRef {
        id: &created.id,
        login: "erin",
    };

    assert_eq!(
        client.delete_account(account).await.unwrap(),
        Outcome::Applied
    );
    assert!(emulator.state().dump().accounts.is_empty());
    assert_eq!(
        client.delete_account(account).await.unwrap(),
        Outcome::AlreadyDone
    );
}

#[tokio::test]
async fn create_and_delete_group_are_idempotent() {
    let emulator = spawn_product(Product::Jira).await;
    let client = jira(&emulator);

    assert_eq!(
        client.create_group("developers").await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        client.create_group("developers").await.unwrap(),
        Outcome::AlreadyDone
    );
    assert_eq!(emulator.state().dump().groups, ["developers"]);
    assert_eq!(
        client.delete_group("developers").await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        client.delete_group("developers").await.unwrap(),
        Outcome::AlreadyDone
    );
    assert!(emulator.state().dump().groups.is_empty());
}

#[tokio::test]
async fn add_member_is_already_done_when_jira_answers_400_for_an_existing_member() {
    let emulator = spawn(seeded(
        Product::Jira,
        Seed {
            accounts: vec![seed_account("frank")],
            groups: vec![seed_group("developers")],
            memberships: vec![],
        },
    ))
    .await;
    let client = jira(&emulator);
    let key = emulator.state().dump().accounts[0].key.clone();
    let account = AccountRef {
        id: &key,
        login: "frank",
    };

    assert_eq!(
        client.add_member("developers", account).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        client.add_member("developers", account).await.unwrap(),
        Outcome::AlreadyDone
    );
    assert_eq!(emulator.state().dump().memberships.len(), 1);
    assert_eq!(
        client.remove_member("developers", account).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        client.remove_member("developers", account).await.unwrap(),
        Outcome::AlreadyDone
    );
    assert!(emulator.state().dump().memberships.is_empty());
}

#[tokio::test]
async fn add_member_of_a_missing_user_is_not_found() {
    let emulator = spawn(seeded(
        Product::Jira,
        Seed {
            groups: vec![seed_group("developers")],
            ..Seed::default()
        },
    ))
    .await;
    let client = jira(&emulator);

    let error = client
        .add_member(
            "developers",
            AccountRef {
                id: "JIRAUSER1",
                login: "ghost",
            },
        )
        .await
        .unwrap_err();

    assert!(
        matches!(error, Error::NotFound { status: 404, .. }),
        "{error:?}"
    );
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

#[tokio::test]
async fn test_connection_reports_the_user_and_the_version() {
    let emulator = spawn_product(Product::Jira).await;
    let client = jira_with(
        connection_with(
            &emulator,
            Auth::Basic {
                user: "admin".into(),
                password: Secret::new("admin"),
            },
        ),
        UserListing::Auto,
    );

    let info = client.test_connection().await.unwrap();

    assert_eq!(info.user.as_deref(), Some("admin"));
    assert_eq!(info.version.as_deref(), Some("10.3.0"));
}

#[tokio::test]
async fn test_connection_with_a_bad_token_is_unauthorized() {
    let emulator = spawn_product(Product::Jira).await;
    let client = jira_with(
        connection_with(&emulator, Auth::Bearer(Secret::new("wrong"))),
        UserListing::Auto,
    );

    let error = client.test_connection().await.unwrap_err();

    assert!(
        matches!(error, Error::Unauthorized { status: 401, .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("rejected the credentials"),
        "{error}"
    );
}
