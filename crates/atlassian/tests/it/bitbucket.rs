//! The Bitbucket client against the Bitbucket emulator.

use atlassian::config::Auth;
use atlassian::{AccountRef, AccountUpdate, Directory, Error, Outcome};
use emulator::Product;
use emulator::store::{GlobalPermission, Seed, SeedCaller, SeedPermission};

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
async fn an_account_created_here_joins_its_groups_without_a_lookup() {
    let mut config = seeded(
        Product::Bitbucket,
        Seed {
            groups: ["stash-users", "developers", "testers", "writers"]
                .map(seed_group)
                .to_vec(),
            ..Seed::default()
        },
    );
    config.record_requests = true;
    let emulator = spawn(config).await;
    let client = bitbucket(&emulator);
    let created = client.create_account(&new_account("Dave")).await.unwrap();
    let dave = AccountRef {
        id: &created.id,
        login: "Dave",
    };
    let groups = |names: &[&str]| {
        names
            .iter()
            .map(|name| (*name).to_owned())
            .collect::<Vec<_>>()
    };
    let before = emulator.state().dump().requests.len();

    let joined = client
        .add_member_to_groups(&groups(&["developers", "testers"]), dave)
        .await;
    let one = client
        .add_member_to_groups(&groups(&["writers"]), dave)
        .await;

    assert!(
        joined
            .iter()
            .chain(&one)
            .all(|outcome| matches!(outcome, Ok(Outcome::Applied))),
        "{joined:?} {one:?}"
    );
    let dump = emulator.state().dump();
    let calls: Vec<(&str, &str)> = dump.requests[before..]
        .iter()
        .map(|request| (request.method.as_str(), request.uri.as_str()))
        .collect();
    assert_eq!(calls.len(), 2, "one add-groups each, no lookup: {calls:?}");
    assert!(
        calls
            .iter()
            .all(|(method, uri)| *method == "POST" && uri.contains("admin/users/add-groups")),
        "{calls:?}"
    );
    let mut daves: Vec<&str> = dump
        .memberships
        .iter()
        .filter(|membership| membership.login == "Dave")
        .map(|membership| membership.group.as_str())
        .collect();
    daves.sort_unstable();
    assert_eq!(daves, ["developers", "stash-users", "testers", "writers"]);

    // Deleted behind this client's back: the shortcut fails, and the lookup answers.
    assert_eq!(
        bitbucket(&emulator).delete_account(dave).await.unwrap(),
        Outcome::Applied
    );
    let gone = client
        .add_member_to_groups(&groups(&["developers", "testers"]), dave)
        .await;
    assert!(
        gone.iter()
            .all(|outcome| matches!(outcome, Err(Error::NotFound { .. }))),
        "{gone:?}"
    );
    // A login that is no longer the one created (a rename) takes the lookup too.
    let renamed = client
        .add_member_to_groups(
            &groups(&["developers"]),
            AccountRef {
                id: &created.id,
                login: "someone-else",
            },
        )
        .await;
    assert!(
        matches!(renamed[0], Err(Error::NotFound { .. })),
        "{renamed:?}"
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
async fn an_account_joins_several_groups_with_one_request_and_each_group_answers_for_itself() {
    let mut ldap_user = seed_account("ldap-user");
    ldap_user.read_only = true;
    let mut config = seeded(
        Product::Bitbucket,
        Seed {
            accounts: vec![seed_account("carol"), ldap_user],
            groups: ["developers", "testers", "writers"]
                .map(seed_group)
                .to_vec(),
            memberships: vec![],
        },
    );
    config.record_requests = true;
    let emulator = spawn(config).await;
    let client = bitbucket(&emulator);
    let carol = AccountRef {
        id: "carol",
        login: "carol",
    };
    let groups = |names: &[&str]| {
        names
            .iter()
            .map(|name| (*name).to_owned())
            .collect::<Vec<_>>()
    };
    assert!(client.capabilities().groups_per_add > 1);

    let joined = client
        .add_member_to_groups(&groups(&["developers", "testers"]), carol)
        .await;
    let requests = emulator.state().dump().requests.len();
    // A group that does not exist fails the request as a whole: each group is then added on
    // its own, and only the missing one fails.
    let mixed = client
        .add_member_to_groups(&groups(&["writers", "no-such-group"]), carol)
        .await;
    let read_only = client
        .add_member_to_groups(
            &groups(&["developers", "testers"]),
            AccountRef {
                id: "ldap-user",
                login: "ldap-user",
            },
        )
        .await;

    assert!(
        joined
            .iter()
            .all(|outcome| matches!(outcome, Ok(Outcome::Applied))),
        "{joined:?}"
    );
    assert_eq!(requests, 2, "one lookup and one add-groups for both groups");
    assert!(matches!(mixed[0], Ok(Outcome::Applied)), "{mixed:?}");
    assert!(matches!(mixed[1], Err(Error::NotFound { .. })), "{mixed:?}");
    assert!(
        read_only
            .iter()
            .all(|outcome| matches!(outcome, Ok(Outcome::Skipped { .. }))),
        "{read_only:?}"
    );
    let dump = emulator.state().dump();
    let mut carols: Vec<&str> = dump
        .memberships
        .iter()
        .filter(|membership| membership.login == "carol")
        .map(|membership| membership.group.as_str())
        .collect();
    carols.sort_unstable();
    assert_eq!(carols, ["developers", "testers", "writers"]);
    assert!(
        dump.memberships
            .iter()
            .all(|membership| membership.login != "ldap-user"),
        "nothing written for the read-only account"
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

/// The logins `fetch_state` marks as administrators, in listing order.
fn administrators(state: &atlassian::DirectoryState) -> Vec<&str> {
    state
        .accounts
        .iter()
        .filter(|account| account.administrator)
        .map(|account| account.login.as_str())
        .collect()
}

#[tokio::test]
async fn fetch_state_marks_exactly_the_holders_of_admin_or_sys_admin_directly_or_by_group() {
    let mut config = seeded(
        Product::Bitbucket,
        Seed {
            accounts: ["ops-admin", "lead", "creator", "user", "outsider"]
                .map(seed_account)
                .to_vec(),
            groups: vec![seed_group("bb-admins"), seed_group("stash-users")],
            memberships: vec![
                seed_membership("bb-admins", "lead"),
                seed_membership("stash-users", "user"),
                seed_membership("stash-users", "creator"),
            ],
        },
    );
    config.permissions = vec![
        SeedPermission::user("ops-admin", GlobalPermission::SysAdmin),
        SeedPermission::user("creator", GlobalPermission::ProjectCreate),
        SeedPermission::group("bb-admins", GlobalPermission::Admin),
        SeedPermission::group("stash-users", GlobalPermission::LicensedUser),
    ];
    config.record_requests = true;
    let emulator = spawn(config).await;
    // Through the `Client` enum, as the applier reads a product.
    let client = client_with(Product::Bitbucket, connection(&emulator));

    let state = client.fetch_state().await.unwrap();

    assert_eq!(administrators(&state), ["ops-admin", "lead"]);
    assert_eq!(state.accounts.len(), 5);
    assert_eq!(count_requests(&emulator, "/admin/permissions/users?"), 1);
    assert_eq!(count_requests(&emulator, "/admin/permissions/groups?"), 1);
}

#[tokio::test]
async fn fetch_state_reads_every_page_of_the_global_permissions() {
    let accounts = seed_accounts("user", 12);
    let groups: Vec<_> = (0..5)
        .map(|idx| seed_group(&format!("group{idx}")))
        .collect();
    // user0000..user0004 hold SYS_ADMIN or ADMIN themselves; user0005..user0009 are
    // the members of group0..group4, which hold ADMIN, LICENSED_USER, ADMIN, ... in turn.
    let memberships = (0..5)
        .map(|idx| seed_membership(&format!("group{idx}"), &format!("user{:04}", idx + 5)))
        .collect();
    let direct = (0..5).map(|idx| {
        let permission = [GlobalPermission::SysAdmin, GlobalPermission::Admin][idx % 2];
        SeedPermission::user(&format!("user{idx:04}"), permission)
    });
    let through_groups = (0..5).map(|idx| {
        let permission = [GlobalPermission::Admin, GlobalPermission::LicensedUser][idx % 2];
        SeedPermission::group(&format!("group{idx}"), permission)
    });
    let mut config = seeded(
        Product::Bitbucket,
        Seed {
            accounts,
            groups,
            memberships,
        },
    );
    config.permissions = direct.chain(through_groups).collect();
    config.record_requests = true;
    let emulator = spawn(config).await;
    let mut connection = connection(&emulator);
    connection.page_size = Some(2);
    let client = bitbucket_with(connection);

    let state = client.fetch_state().await.unwrap();

    assert_eq!(
        administrators(&state),
        [
            "user0000", "user0001", "user0002", "user0003", "user0004", "user0005", "user0007",
            "user0009"
        ]
    );
    assert_eq!(count_requests(&emulator, "/admin/permissions/users?"), 3);
    assert_eq!(count_requests(&emulator, "/admin/permissions/groups?"), 3);
}

/// alice (licensed through `stash-users`) and bob (no group); `stash-users`, `developers`,
/// `sysadmins` (granted SYS_ADMIN) and `bb-admins` (granted ADMIN, with ops in it); one
/// licence seat; ops signs in with `ops-pw`.
fn licensed_directory() -> emulator::Config {
    let mut config = seeded(
        Product::Bitbucket,
        Seed {
            accounts: ["alice", "bob", "ops"].map(seed_account).to_vec(),
            groups: ["stash-users", "developers", "sysadmins", "bb-admins"]
                .map(seed_group)
                .to_vec(),
            memberships: vec![
                seed_membership("stash-users", "alice"),
                seed_membership("bb-admins", "ops"),
            ],
        },
    );
    config.permissions = vec![
        SeedPermission::group("sysadmins", GlobalPermission::SysAdmin),
        SeedPermission::group("bb-admins", GlobalPermission::Admin),
    ];
    config.callers = vec![SeedCaller::with_password("ops", "ops-pw")];
    config.license_seats = Some(1);
    config
}

#[tokio::test]
async fn an_add_beyond_the_licence_limit_is_reported_as_such() {
    let emulator = spawn(licensed_directory()).await;
    let client = bitbucket(&emulator);
    let bob = AccountRef {
        id: "bob",
        login: "bob",
    };

    let unlicensed_group = client.add_member("developers", bob).await.unwrap();
    let error = client.add_member("stash-users", bob).await.unwrap_err();

    assert_eq!(unlicensed_group, Outcome::Applied);
    assert!(
        matches!(error, Error::LicenseLimit { status: 403, .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("licence limit reached"),
        "{error}"
    );
    assert_eq!(emulator.state().dump().memberships.len(), 3);
}

#[tokio::test]
async fn a_403_that_is_not_about_the_licence_is_forbidden() {
    let mut config = licensed_directory();
    config.license_seats = None;
    let emulator = spawn(config).await;
    // ops holds ADMIN; the group holds SYS_ADMIN, more than ops may hand out.
    let client = bitbucket_with(connection_with(&emulator, basic("ops", "ops-pw")));
    let bob = AccountRef {
        id: "bob",
        login: "bob",
    };

    let error = client.add_member("sysadmins", bob).await.unwrap_err();

    assert!(
        matches!(error, Error::Forbidden { status: 403, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn http_access_tokens_are_refused_on_every_admin_endpoint() {
    let emulator = spawn(seeded(
        Product::Bitbucket,
        Seed {
            accounts: vec![seed_account("carol")],
            ..Seed::default()
        },
    ))
    .await;
    let client = bitbucket_with(connection_with(
        &emulator,
        Auth::Bearer(config::Secret::new(TOKEN)),
    ));

    let read = client.fetch_state().await.unwrap_err();
    let write = client
        .create_account(&new_account("dave"))
        .await
        .unwrap_err();

    for error in [read, write] {
        assert!(
            matches!(error, Error::Unauthorized { status: 401, .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("not permitted"), "{error}");
    }
    assert_eq!(emulator.state().dump().accounts.len(), 1);
}
