//! The Confluence client against the Confluence emulator.

use atlassian::config::Auth;
use atlassian::{AccountRef, AccountUpdate, Directory, Error, Membership, Outcome, Secret};
use emulator::Product;
use emulator::store::Seed;

use crate::helpers::*;

#[tokio::test]
async fn create_account_answers_the_user_key() {
    let emulator = spawn_product(Product::Confluence).await;
    let client = confluence(&emulator);

    let created = client.create_account(&new_account("alice")).await.unwrap();

    assert_eq!(created.outcome, Outcome::Applied);
    let dump = emulator.state().dump();
    assert_eq!(dump.accounts.len(), 1);
    assert_eq!(dump.accounts[0].key, created.id);
    assert_eq!(created.id.len(), 32);
}

#[tokio::test]
async fn create_account_is_already_done_after_a_409_for_the_same_user() {
    let emulator = spawn(seeded(
        Product::Confluence,
        Seed {
            accounts: vec![seed_account("alice")],
            ..Seed::default()
        },
    ))
    .await;
    let client = confluence(&emulator);

    let created = client.create_account(&new_account("alice")).await.unwrap();

    assert_eq!(created.outcome, Outcome::AlreadyDone);
    assert_eq!(created.id, emulator.state().dump().accounts[0].key);
}

#[tokio::test]
async fn create_account_is_a_conflict_when_the_user_exists_with_another_name() {
    let emulator = spawn(seeded(
        Product::Confluence,
        Seed {
            accounts: vec![seed_account("alice")],
            ..Seed::default()
        },
    ))
    .await;
    let client = confluence(&emulator);
    let mut other = new_account("alice");
    other.display_name = "Somebody Else".into();

    let error = client.create_account(&other).await.unwrap_err();

    assert!(
        matches!(error, Error::Conflict { status: 409, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn create_account_without_a_licence_seat_is_a_license_limit_error() {
    let mut config = seeded(
        Product::Confluence,
        Seed {
            accounts: vec![seed_account("alice")],
            ..Seed::default()
        },
    );
    config.license_seats = Some(1);
    let emulator = spawn(config).await;
    let client = confluence(&emulator);

    let error = client
        .create_account(&new_account("bob"))
        .await
        .unwrap_err();

    assert!(
        matches!(error, Error::LicenseLimit { status: 402, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn create_account_with_an_upper_case_login_is_a_validation_error() {
    let emulator = spawn_product(Product::Confluence).await;
    let client = confluence(&emulator);

    let error = client
        .create_account(&new_account("Bob"))
        .await
        .unwrap_err();

    assert!(
        matches!(error, Error::Validation { status: 400, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("lower case"), "{error}");
}

#[tokio::test]
async fn update_account_changes_details_but_cannot_rename() {
    let emulator = spawn_product(Product::Confluence).await;
    let client = confluence(&emulator);
    let created = client.create_account(&new_account("carol")).await.unwrap();
    let account = AccountRef {
        id: &created.id,
        login: "carol",
    };

    let outcome = client
        .update_account(
            account,
            &AccountUpdate {
                display_name: Some("Carol C".into()),
                email: Some("cc@example.com".into()),
                login: None,
            },
        )
        .await
        .unwrap();
    let rename = client
        .update_account(
            account,
            &AccountUpdate {
                login: Some("caroline".into()),
                ..AccountUpdate::default()
            },
        )
        .await
        .unwrap_err();

    assert_eq!(outcome, Outcome::Applied);
    let dump = emulator.state().dump();
    assert_eq!(dump.accounts[0].display_name, "Carol C");
    assert_eq!(dump.accounts[0].email, "cc@example.com");
    assert!(matches!(rename, Error::Unsupported { .. }), "{rename:?}");
    assert!(!client.capabilities().can_rename);
}

#[tokio::test]
async fn deactivate_and_reactivate_toggle_the_status_and_repeats_are_already_done() {
    let emulator = spawn_product(Product::Confluence).await;
    let client = confluence(&emulator);
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
    let listed = client.list_accounts().await.unwrap();
    assert!(!listed[0].active);
    assert_eq!(
        client.reactivate_account(account).await.unwrap(),
        Outcome::Applied
    );
    assert!(emulator.state().dump().accounts[0].active);
}

#[tokio::test]
async fn delete_account_waits_for_the_long_task_to_finish() {
    let mut config = seeded(Product::Confluence, Seed::default());
    config.record_requests = true;
    let emulator = spawn(config).await;
    let client = confluence(&emulator);
    let created = client.create_account(&new_account("erin")).await.unwrap();
    let account = AccountRef {
        id: &created.id,
        login: "erin",
    };

    let outcome = client.delete_account(account).await.unwrap();

    assert_eq!(outcome, Outcome::Applied);
    let dump = emulator.state().dump();
    assert!(
        dump.accounts.is_empty(),
        "the user is gone once the task finished"
    );
    let delete = dump
        .requests
        .iter()
        .find(|request| request.method == "DELETE")
        .unwrap();
    assert_eq!(delete.status, 202);
    assert!(count_requests(&emulator, "/rest/api/longtask/") >= 2);
    assert_eq!(
        client.delete_account(account).await.unwrap(),
        Outcome::AlreadyDone
    );
}

#[tokio::test]
async fn groups_and_memberships_are_idempotent() {
    let emulator = spawn(seeded(
        Product::Confluence,
        Seed {
            accounts: vec![seed_account("frank")],
            ..Seed::default()
        },
    ))
    .await;
    let client = confluence(&emulator);
    let key = emulator.state().dump().accounts[0].key.clone();
    let account = AccountRef {
        id: &key,
        login: "frank",
    };

    assert_eq!(
        client.create_group("writers").await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        client.create_group("writers").await.unwrap(),
        Outcome::AlreadyDone
    );
    assert_eq!(
        client.add_member("writers", account).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        client.add_member("writers", account).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(emulator.state().dump().memberships.len(), 1);
    assert_eq!(
        client.list_members("writers").await.unwrap(),
        vec![key.clone()]
    );
    assert_eq!(
        client.remove_member("writers", account).await.unwrap(),
        Outcome::Applied
    );
    assert!(emulator.state().dump().memberships.is_empty());
    assert_eq!(
        client.delete_group("writers").await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        client.delete_group("writers").await.unwrap(),
        Outcome::AlreadyDone
    );
    assert_eq!(
        client.remove_member("writers", account).await.unwrap(),
        Outcome::AlreadyDone
    );
}

#[tokio::test]
async fn add_member_of_a_missing_user_is_not_found() {
    let emulator = spawn(seeded(
        Product::Confluence,
        Seed {
            groups: vec![seed_group("writers")],
            ..Seed::default()
        },
    ))
    .await;
    let client = confluence(&emulator);

    let error = client
        .add_member(
            "writers",
            AccountRef {
                id: "nokey",
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
async fn fetch_state_pages_through_users_groups_and_members() {
    let accounts = seed_accounts("user", 130);
    let memberships = accounts
        .iter()
        .take(90)
        .map(|account| seed_membership("team with spaces", &account.login))
        .collect();
    let mut config = seeded(
        Product::Confluence,
        Seed {
            accounts,
            groups: (0..45)
                .map(|idx| seed_group(&format!("group-{idx:02}")))
                .chain([seed_group("team with spaces")])
                .collect(),
            memberships,
        },
    );
    config.record_requests = true;
    let emulator = spawn(config).await;
    let mut connection = connection(&emulator);
    connection.page_size = Some(40);
    let client = confluence_with(connection);

    let state = client.fetch_state().await.unwrap();

    assert_eq!(state.accounts.len(), 130);
    assert_eq!(state.groups.len(), 46);
    assert_eq!(state.memberships.len(), 90);
    assert!(state.memberships.contains(&Membership {
        group: "team with spaces".into(),
        account_id: emulator.state().dump().accounts[0].key.clone(),
    }));
    assert_eq!(count_requests(&emulator, "/rest/api/user/list"), 4);
    assert!(state.accounts.iter().all(|account| account.email.is_none()));
}

#[tokio::test]
async fn test_connection_fails_clearly_when_an_invalid_token_is_answered_as_anonymous() {
    let emulator = spawn_product(Product::Confluence).await;
    let client = confluence_with(connection_with(
        &emulator,
        Auth::Bearer(Secret::new("not-the-token")),
    ));

    let error = client.test_connection().await.unwrap_err();

    assert!(
        matches!(error, Error::Unauthorized { status: 200, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("anonymous"), "{error}");
}

#[tokio::test]
async fn test_connection_succeeds_with_the_token_and_fails_with_a_bad_password() {
    let emulator = spawn_product(Product::Confluence).await;
    let client = confluence(&emulator);
    let bad_basic = confluence_with(connection_with(
        &emulator,
        Auth::Basic {
            user: "admin".into(),
            password: Secret::new("wrong"),
        },
    ));

    let info = client.test_connection().await.unwrap();
    let error = bad_basic.test_connection().await.unwrap_err();

    assert_eq!(info.user.as_deref(), Some("admin"));
    assert!(
        matches!(error, Error::Unauthorized { status: 401, .. }),
        "{error:?}"
    );
}
