//! The Bitbucket client against the Bitbucket emulator.

use atlassian::config::Auth;
use atlassian::{AccountRef, AccountUpdate, Directory, Error, Outcome, Secret};
use emulator::Product;
use emulator::store::Seed;

use crate::helpers::*;

#[tokio::test]
async fn create_account_answers_204_and_the_client_reads_back_the_slug() {
    let mut config = seeded(
        Product::Bitbucket,
        Seed {
            groups: vec![seed_group("stash-users")],
            ..Seed::default()
        },
    );
    config.record_requests = true;
    let emulator = spawn(config).await;
    let client = bitbucket(&emulator);
    let mut account = new_account("Jane.Doe@corp");
    account.email = "jane@example.com".into();

    let created = client.create_account(&account).await.unwrap();

    assert_eq!(created.outcome, Outcome::Applied);
    assert_eq!(created.id, "jane.doe_corp", "the slug is not the name");
    let dump = emulator.state().dump();
    let create = dump
        .requests
        .iter()
        .find(|request| request.method == "POST")
        .unwrap();
    assert_eq!(create.status, 204);
    assert!(create.body.is_empty(), "create sends no body");
    assert!(
        create.uri.contains("name=Jane.Doe%40corp"),
        "{}",
        create.uri
    );
    assert_eq!(dump.memberships.len(), 1, "added to the default group");
}

#[tokio::test]
async fn create_account_is_already_done_after_a_409_for_the_same_user() {
    let emulator = spawn(seeded(
        Product::Bitbucket,
        Seed {
            accounts: vec![seed_account("alice")],
            ..Seed::default()
        },
    ))
    .await;
    let client = bitbucket(&emulator);

    let created = client.create_account(&new_account("alice")).await.unwrap();
    let mut other = new_account("alice");
    other.email = "other@example.com".into();
    let conflict = client.create_account(&other).await.unwrap_err();

    assert_eq!(created.outcome, Outcome::AlreadyDone);
    assert_eq!(created.id, "alice");
    assert!(
        matches!(conflict, Error::Conflict { status: 409, .. }),
        "{conflict:?}"
    );
}

#[tokio::test]
async fn create_account_beyond_the_licence_is_a_license_limit_error() {
    let mut config = seeded(
        Product::Bitbucket,
        Seed {
            accounts: vec![seed_account("alice")],
            ..Seed::default()
        },
    );
    config.license_seats = Some(1);
    let emulator = spawn(config).await;
    let client = bitbucket(&emulator);

    let error = client
        .create_account(&new_account("bob"))
        .await
        .unwrap_err();

    assert!(
        matches!(error, Error::LicenseLimit { status: 403, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn deactivate_is_unsupported_and_declared_as_a_capability() {
    let emulator = spawn(seeded(
        Product::Bitbucket,
        Seed {
            accounts: vec![seed_account("carol")],
            ..Seed::default()
        },
    ))
    .await;
    let client = bitbucket(&emulator);
    let account = AccountRef {
        id: "carol",
        login: "carol",
    };

    assert!(!client.capabilities().can_deactivate);
    let deactivate = client.deactivate_account(account).await.unwrap_err();
    let reactivate = client.reactivate_account(account).await.unwrap_err();

    assert!(
        matches!(deactivate, Error::Unsupported { .. }),
        "{deactivate:?}"
    );
    assert!(
        matches!(reactivate, Error::Unsupported { .. }),
        "{reactivate:?}"
    );
    assert!(emulator.state().dump().accounts[0].active);
}

#[tokio::test]
async fn writes_to_read_only_accounts_are_skipped_with_a_reason() {
    let mut ldap_user = seed_account("ldap-user");
    ldap_user.read_only = true;
    let emulator = spawn(seeded(
        Product::Bitbucket,
        Seed {
            accounts: vec![ldap_user],
            groups: vec![seed_group("developers")],
            memberships: vec![],
        },
    ))
    .await;
    let client = bitbucket(&emulator);
    let account = AccountRef {
        id: "ldap-user",
        login: "ldap-user",
    };

    let listed = client.list_accounts().await.unwrap();
    let update = client
        .update_account(
            account,
            &AccountUpdate {
                display_name: Some("Changed".into()),
                ..AccountUpdate::default()
            },
        )
        .await
        .unwrap();
    let delete = client.delete_account(account).await.unwrap();
    let add = client.add_member("developers", account).await.unwrap();

    assert!(
        listed[0]
            .read_only
            .as_deref()
            .is_some_and(|reason| reason.contains("mutableDetails"))
    );
    for outcome in [update, delete, add] {
        assert!(matches!(outcome, Outcome::Skipped { .. }), "{outcome:?}");
    }
    let dump = emulator.state().dump();
    assert_eq!(dump.accounts.len(), 1);
    assert!(dump.counters.writes.is_empty());
}

#[tokio::test]
async fn update_account_changes_details_and_renames() {
    let emulator = spawn_product(Product::Bitbucket).await;
    let client = bitbucket(&emulator);
    let created = client.create_account(&new_account("dave")).await.unwrap();
    let account = AccountRef {
        id: &created.id,
        login: "dave",
    };

    let outcome = client
        .update_account(
            account,
            &AccountUpdate {
                login: Some("david".into()),
                display_name: Some("David D".into()),
                email: Some("david@example.com".into()),
            },
        )
        .await
        .unwrap();

    assert_eq!(outcome, Outcome::Applied);
    let dump = emulator.state().dump();
    assert_eq!(dump.accounts[0].login, "david");
    assert_eq!(dump.accounts[0].display_name, "David D");
    assert_eq!(dump.accounts[0].email, "david@example.com");
}

#[tokio::test]
async fn update_account_of_a_missing_user_is_not_found() {
    let emulator = spawn_product(Product::Bitbucket).await;
    let client = bitbucket(&emulator);

    let error = client
        .update_account(
            AccountRef {
                id: "ghost",
                login: "ghost",
            },
            &AccountUpdate {
                display_name: Some("Ghost".into()),
                ..AccountUpdate::default()
            },
        )
        .await
        .unwrap_err();

    assert!(matches!(error, Error::NotFound { .. }), "{error:?}");
}

#[tokio::test]
async fn delete_account_removes_the_user_and_a_second_delete_is_already_done() {
    let emulator = spawn_product(Product::Bitbucket).await;
    let client = bitbucket(&emulator);
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
async fn groups_and_memberships_are_idempotent() {
    let emulator = spawn(seeded(
        Product::Bitbucket,
        Seed {
            accounts: vec![seed_account("frank")],
            ..Seed::default()
        },
    ))
    .await;
    let client = bitbucket(&emulator);
    let account = AccountRef {
        id: "frank",
        login: "frank",
    };

    assert_eq!(
        client.create_group("developers").await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        client.create_group("developers").await.unwrap(),
        Outcome::AlreadyDone
    );
    assert_eq!(
        client.add_member("developers", account).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        client.add_member("developers", account).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(client.list_members("developers").await.unwrap(), ["frank"]);
    assert_eq!(
        client.remove_member("developers", account).await.unwrap(),
        Outcome::Applied
    );
    assert!(emulator.state().dump().memberships.is_empty());
    assert_eq!(
        client.delete_group("developers").await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        client.delete_group("developers").await.unwrap(),
        Outcome::AlreadyDone
    );
}

#[tokio::test]
async fn add_member_to_a_missing_group_is_not_found() {
    let emulator = spawn(seeded(
        Product::Bitbucket,
        Seed {
            accounts: vec![seed_account("frank")],
            ..Seed::default()
        },
    ))
    .await;
    let client = bitbucket(&emulator);

    let error = client
        .add_member(
            "nowhere",
            AccountRef {
                id: "frank",
                login: "frank",
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
async fn fetch_state_pages_with_next_page_start() {
    let accounts = seed_accounts("user", 60);
    let memberships = accounts
        .iter()
        .skip(10)
        .map(|account| seed_membership("developers", &account.login))
        .collect();
    let mut config = seeded(
        Product::Bitbucket,
        Seed {
            accounts,
            groups: vec![seed_group("developers"), seed_group("empty")],
            memberships,
        },
    );
    config.record_requests = true;
    let emulator = spawn(config).await;
    let mut connection = connection(&emulator);
    connection.page_size = Some(25);
    let client = bitbucket_with(connection);

    let state = client.fetch_state().await.unwrap();

    assert_eq!(state.accounts.len(), 60);
    assert_eq!(state.groups.len(), 2);
    assert_eq!(state.memberships.len(), 50);
    assert_eq!(count_requests(&emulator, "/admin/users?"), 3);
    assert_eq!(
        count_requests(&emulator, "more-members?context=developers"),
        2
    );
}

#[tokio::test]
async fn test_connection_reports_the_version_and_refuses_bad_credentials() {
    let emulator = spawn_product(Product::Bitbucket).await;
    let client = bitbucket(&emulator);
    let bad = bitbucket_with(connection_with(
        &emulator,
        Auth::Bearer(Secret::new("wrong")),
    ));

    let info = client.test_connection().await.unwrap();
    let error = bad.test_connection().await.unwrap_err();

    assert_eq!(info.version.as_deref(), Some("8.14.0"));
    assert!(
        matches!(error, Error::Unauthorized { status: 401, .. }),
        "{error:?}"
    );
}
