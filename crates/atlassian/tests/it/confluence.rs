//! The Confluence client against the Confluence emulator.

use std::time::Duration;

use atlassian::config::ConfluenceSettings;
use atlassian::confluence::ConfluenceClient;
use atlassian::{AccountRef, AccountUpdate, Directory, Error, Membership, Outcome};
use emulator::Product;
use emulator::store::Seed;

use crate::helpers::*;

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
async fn update_account_cannot_rename() {
    let emulator = spawn_product(Product::Confluence).await;
    let client = confluence(&emulator);
    let created = client.create_account(&new_account("carol")).await.unwrap();
    let account = AccountRef {
        id: &created.id,
        login: "carol",
    };

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

    assert!(matches!(rename, Error::Unsupported { .. }), "{rename:?}");
    assert!(!client.capabilities().can_rename);
    assert_eq!(emulator.state().dump().accounts[0].login, "carol");
}

#[tokio::test]
async fn delete_account_waits_for_the_data_center_long_task_to_reach_100_percent() {
    let mut config = seeded(Product::Confluence, Seed::default());
    config.record_requests = true;
    let emulator = spawn(config).await;
    let mut settings = ConfluenceSettings::recommended();
    settings.long_task_poll_interval = Duration::from_millis(20);
    // Far longer than the task takes; a client waiting for Cloud's `finished` runs into it.
    settings.long_task_timeout = Duration::from_secs(3);
    let client = ConfluenceClient::new(connection(&emulator), settings).unwrap();
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
    let task_uri = &dump
        .requests
        .iter()
        .find(|request| request.uri.starts_with("/rest/api/longtask/"))
        .unwrap()
        .uri;
    let body = reqwest::Client::new()
        .get(format!("{}{task_uri}", emulator.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let task: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(task["percentageComplete"], 100, "{task}");
    assert_eq!(task["successful"], true, "{task}");
    assert!(
        task.get("finished").is_none(),
        "Data Center has no `finished`: {task}"
    );
    assert_eq!(
        client.delete_account(account).await.unwrap(),
        Outcome::AlreadyDone
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
