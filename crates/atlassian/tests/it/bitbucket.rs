//! The Bitbucket client against the Bitbucket emulator.

use atlassian::{AccountRef, AccountUpdate, Directory, Error, Outcome};
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
