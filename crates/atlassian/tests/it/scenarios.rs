//! The scenarios every product shares, written once and run once per product.
//!
//! [`scenario!`] turns a scenario `async fn name(product: Product)` into the module `name`
//! with one test per listed product (`name::jira`, `name::confluence`, `name::bitbucket`),
//! so a failure names the product. Where the products answer the same request differently,
//! the scenario reads the difference from the table, [`expect`]. Behaviour only one product
//! has (Jira's listing flavours, Confluence's long tasks and missing rename, Bitbucket's
//! read-only accounts and missing deactivation, ...) is tested in that product's file.

use atlassian::config::Auth;
use atlassian::{AccountRef, AccountUpdate, Client, Directory, Error, Outcome};
use config::Secret;
use emulator::store::{GlobalPermission, Seed, SeedCaller, SeedPermission};
use emulator::{Product, Running};

use crate::helpers::*;

/// One test of `$scenario` for a product.
macro_rules! product_test {
    ($scenario:ident, jira) => {
        #[tokio::test]
        async fn jira() {
            super::$scenario(emulator::Product::Jira).await;
        }
    };
    ($scenario:ident, confluence) => {
        #[tokio::test]
        async fn confluence() {
            super::$scenario(emulator::Product::Confluence).await;
        }
    };
    ($scenario:ident, bitbucket) => {
        #[tokio::test]
        async fn bitbucket() {
            super::$scenario(emulator::Product::Bitbucket).await;
        }
    };
}

/// `scenario!(name: jira, confluence, bitbucket)`: the module `name` with one test per
/// product, each running the scenario `async fn name(product: Product)`.
macro_rules! scenario {
    ($scenario:ident: $($product:ident),+ $(,)?) => {
        mod $scenario {
            $(product_test!($scenario, $product);)+
        }
    };
}

/// What the scenarios expect where the products answer differently.
struct Expect {
    /// The stable id of an account the emulator does not have.
    missing_id: &'static str,
    /// The status of a create that meets an existing user with other details: Jira answers
    /// 400 for any existing username, Confluence and Bitbucket 409.
    conflict_status: u16,
    /// Listings report email addresses, so an existing user with another email is a
    /// conflict; where they do not (Confluence), the email cannot tell the users apart.
    lists_email: bool,
    /// The status of a create beyond the licence (Confluence 402, Bitbucket 403).
    license_limit_status: Option<u16>,
    /// Adding an existing member: Jira answers 400 and the client finds the membership;
    /// Confluence and Bitbucket answer success either way.
    repeated_add: Outcome,
    /// Removing a member that is not (any more) in the group: Jira answers 400 and the client
    /// finds no membership; Confluence and Bitbucket answer success either way.
    repeated_remove: Outcome,
    /// An account's login can be changed (not in Confluence).
    can_rename: bool,
    /// An update keeps the stable id; Bitbucket's slug follows a renamed login.
    update_keeps_id: bool,
    /// What `test_connection` reports as the user and the version.
    user: Option<&'static str>,
    version: Option<&'static str>,
    /// How a bad token is refused: Jira and Bitbucket answer 401; Confluence answers as the
    /// anonymous user with 200, which the client reports as unauthorized.
    bad_token_status: u16,
    /// Part of the error's message for a bad token.
    bad_token_message: &'static str,
    /// `fetch_state` marks the accounts that hold administrator rights: only Bitbucket lists
    /// them (its global permissions); Jira's and Confluence's administrators are left to
    /// the policy's `protected_groups`.
    lists_administrators: bool,
    /// The token is accepted on every endpoint the client calls: not by Bitbucket, whose
    /// admin endpoints refuse HTTP access tokens (BSERV-10482).
    accepts_token: bool,
    /// The permission `test_connection` proves for the test administrator, and for a
    /// member of [`Expect::admin_group`].
    permission: &'static str,
    group_permission: &'static str,
    /// A group whose members hold the administrator rights the writes need: Jira's and
    /// Confluence's by default, a Bitbucket group granted `ADMIN`.
    admin_group: &'static str,
    /// How a signed-in account without those rights is refused: Jira's `mypermissions`
    /// answers 200 with `havePermission` false, Confluence 403, Bitbucket 401.
    missing_permission_status: u16,
}

/// The table of [`Expect`]ations, one row per product.
fn expect(product: Product) -> Expect {
    match product {
        Product::Jira => Expect {
            missing_id: "JIRAUSER99999",
            conflict_status: 400,
            lists_email: true,
            license_limit_status: None,
            repeated_add: Outcome::AlreadyDone,
            repeated_remove: Outcome::AlreadyDone,
            can_rename: true,
            update_keeps_id: true,
            user: Some("admin"),
            version: Some("10.3.0"),
            bad_token_status: 401,
            bad_token_message: "rejected the credentials",
            lists_administrators: false,
            accepts_token: true,
            permission: "SYSTEM_ADMIN",
            group_permission: "ADMINISTER",
            admin_group: "jira-administrators",
            missing_permission_status: 200,
        },
        Product::Confluence => Expect {
            missing_id: "nokey",
            conflict_status: 409,
            lists_email: false,
            license_limit_status: Some(402),
            repeated_add: Outcome::Applied,
            repeated_remove: Outcome::Applied,
            can_rename: false,
            update_keeps_id: true,
            user: Some("admin"),
            version: None,
            bad_token_status: 200,
            bad_token_message: "anonymous",
            lists_administrators: false,
            accepts_token: true,
            permission: "Confluence Administrator",
            group_permission: "Confluence Administrator",
            admin_group: "confluence-administrators",
            missing_permission_status: 403,
        },
        Product::Bitbucket => Expect {
            missing_id: "ghost",
            conflict_status: 409,
            lists_email: true,
            license_limit_status: Some(403),
            repeated_add: Outcome::Applied,
            repeated_remove: Outcome::Applied,
            can_rename: true,
            update_keeps_id: false,
            user: None,
            version: Some("8.14.0"),
            bad_token_status: 401,
            bad_token_message: "rejected the credentials",
            lists_administrators: true,
            accepts_token: false,
            permission: "ADMIN",
            group_permission: "ADMIN",
            admin_group: "bb-admins",
            missing_permission_status: 401,
        },
    }
}

/// Checks the form of the stable id of a new account named `login`: a Jira `JIRAUSER…` key,
/// a 32-character Confluence `userKey`, a Bitbucket slug (the login itself for a plain one).
fn assert_new_id(product: Product, login: &str, id: &str) {
    match product {
        Product::Jira => assert!(id.starts_with("JIRAUSER"), "{id}"),
        Product::Confluence => assert_eq!(id.len(), 32, "{id}"),
        Product::Bitbucket => assert_eq!(id, login, "the slug of a plain login"),
    }
}

/// Checks that a call failed with the product's 404.
fn assert_not_found<T: std::fmt::Debug>(result: Result<T, Error>) {
    let error = result.unwrap_err();
    assert!(
        matches!(error, Error::NotFound { status: 404, .. }),
        "{error:?}"
    );
}

/// An emulator of `product` seeded with `seed`, and a client of it with the test token.
async fn start(product: Product, seed: Seed) -> (Running, Client) {
    let emulator = spawn(seeded(product, seed)).await;
    let client = client_with(product, connection(&emulator));
    (emulator, client)
}

/// A seed with one account, `login`.
fn one_account(login: &str) -> Seed {
    Seed {
        accounts: vec![seed_account(login)],
        ..Seed::default()
    }
}

/// The stable id the emulator gave its first account.
fn first_key(emulator: &Running) -> String {
    emulator.state().dump().accounts[0].key.clone()
}

scenario!(create_account_answers_the_new_users_id: jira, confluence, bitbucket);
async fn create_account_answers_the_new_users_id(product: Product) {
    let (emulator, client) = start(product, Seed::default()).await;

    let created = client.create_account(&new_account("alice")).await.unwrap();

    assert_eq!(created.outcome, Outcome::Applied);
    assert_new_id(product, "alice", &created.id);
    let dump = emulator.state().dump();
    assert_eq!(dump.accounts.len(), 1);
    assert_eq!(dump.accounts[0].key, created.id);
    assert_eq!(dump.accounts[0].email, "alice@example.com");
}

scenario!(create_account_is_already_done_when_the_same_user_exists: jira, confluence, bitbucket);
async fn create_account_is_already_done_when_the_same_user_exists(product: Product) {
    let (emulator, client) = start(product, one_account("alice")).await;

    let created = client.create_account(&new_account("alice")).await.unwrap();

    assert_eq!(created.outcome, Outcome::AlreadyDone);
    assert_new_id(product, "alice", &created.id);
    assert_eq!(created.id, first_key(&emulator));
    assert_eq!(emulator.state().dump().accounts.len(), 1);
}

scenario!(create_account_is_a_conflict_when_the_user_exists_with_other_details:
    jira, confluence, bitbucket);
async fn create_account_is_a_conflict_when_the_user_exists_with_other_details(product: Product) {
    let (emulator, client) = start(product, one_account("alice")).await;
    let expect = expect(product);
    let mut other_name = new_account("alice");
    other_name.display_name = "Somebody Else".into();
    let mut other_email = new_account("alice");
    other_email.email = "someone.else@example.com".into();

    let name_error = client.create_account(&other_name).await.unwrap_err();
    let email_result = client.create_account(&other_email).await;

    assert!(
        matches!(name_error, Error::Conflict { status, .. } if status == expect.conflict_status),
        "{name_error:?}"
    );
    assert_eq!(client.capabilities().lists_email, expect.lists_email);
    if expect.lists_email {
        let error = email_result.unwrap_err();
        assert!(
            matches!(error, Error::Conflict { status, .. } if status == expect.conflict_status),
            "{error:?}"
        );
    } else {
        let created = email_result.unwrap();
        assert_eq!(created.outcome, Outcome::AlreadyDone);
        assert_eq!(created.id, first_key(&emulator));
    }
}

scenario!(create_account_without_a_licence_seat_is_a_license_limit_error: confluence, bitbucket);
async fn create_account_without_a_licence_seat_is_a_license_limit_error(product: Product) {
    // Bitbucket's licence comes with its default group, which alice is in.
    let mut seed = one_account("alice");
    seed.groups = vec![seed_group("stash-users")];
    seed.memberships = vec![seed_membership("stash-users", "alice")];
    let mut config = seeded(product, seed);
    config.license_seats = Some(1);
    let emulator = spawn(config).await;
    let client = client_with(product, connection(&emulator));
    let expected_status = expect(product).license_limit_status;

    let error = client
        .create_account(&new_account("bob"))
        .await
        .unwrap_err();

    assert!(
        matches!(error, Error::LicenseLimit { status, .. } if Some(status) == expected_status),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("licence limit reached"),
        "{error}"
    );
}

scenario!(update_account_changes_details_and_the_login_where_it_can_rename:
    jira, confluence, bitbucket);
async fn update_account_changes_details_and_the_login_where_it_can_rename(product: Product) {
    let (emulator, client) = start(product, Seed::default()).await;
    let expect = expect(product);
    let created = client.create_account(&new_account("carol")).await.unwrap();
    let account = AccountRef {
        id: &created.id,
        login: "carol",
    };
    let new_login = if expect.can_rename {
        "caroline"
    } else {
        "carol"
    };

    let outcome = client
        .update_account(
            account,
            &AccountUpdate {
                login: expect.can_rename.then(|| new_login.to_owned()),
                display_name: Some("Caroline C".into()),
                email: Some("caroline@example.com".into()),
            },
        )
        .await
        .unwrap();

    assert_eq!(client.capabilities().can_rename, expect.can_rename);
    assert_eq!(outcome, Outcome::Applied);
    let dump = emulator.state().dump();
    if expect.update_keeps_id {
        assert_eq!(dump.accounts[0].key, created.id);
    }
    assert_eq!(dump.accounts[0].login, new_login);
    assert_eq!(dump.accounts[0].display_name, "Caroline C");
    assert_eq!(dump.accounts[0].email, "caroline@example.com");
}

scenario!(update_account_of_a_missing_user_is_not_found: jira, confluence, bitbucket);
async fn update_account_of_a_missing_user_is_not_found(product: Product) {
    let (_emulator, client) = start(product, Seed::default()).await;

    let result = client
        .update_account(
            AccountRef {
                id: expect(product).missing_id,
                login: "ghost",
            },
            &AccountUpdate {
                display_name: Some("Ghost".into()),
                ..AccountUpdate::default()
            },
        )
        .await;

    assert_not_found(result);
}

scenario!(deactivate_and_reactivate_toggle_active_and_repeats_are_already_done: jira, confluence);
async fn deactivate_and_reactivate_toggle_active_and_repeats_are_already_done(product: Product) {
    let (emulator, client) = start(product, Seed::default()).await;
    let created = client.create_account(&new_account("dave")).await.unwrap();
    let account = AccountRef {
        id: &created.id,
        login: "dave",
    };

    assert!(client.capabilities().can_deactivate);
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
    assert_eq!(
        client.reactivate_account(account).await.unwrap(),
        Outcome::AlreadyDone
    );
    let writes = emulator.state().dump().counters.writes;
    assert_eq!(writes.get("deactivate_account"), Some(&1));
    assert_eq!(writes.get("reactivate_account"), Some(&1));
}

scenario!(delete_account_removes_the_user_and_a_second_delete_is_already_done:
    jira, confluence, bitbucket);
async fn delete_account_removes_the_user_and_a_second_delete_is_already_done(product: Product) {
    let (emulator, client) = start(product, Seed::default()).await;
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

scenario!(create_and_delete_group_are_idempotent: jira, confluence, bitbucket);
async fn create_and_delete_group_are_idempotent(product: Product) {
    let (emulator, client) = start(product, Seed::default()).await;

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

scenario!(add_and_remove_member_are_idempotent: jira, confluence, bitbucket);
async fn add_and_remove_member_are_idempotent(product: Product) {
    let seed = Seed {
        accounts: vec![seed_account("frank")],
        groups: vec![seed_group("developers")],
        memberships: vec![],
    };
    let (emulator, client) = start(product, seed).await;
    let expect = expect(product);
    let key = first_key(&emulator);
    assert_new_id(product, "frank", &key);
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
        expect.repeated_add
    );
    assert_eq!(emulator.state().dump().memberships.len(), 1);
    assert_eq!(
        client.list_members("developers").await.unwrap(),
        vec![key.clone()]
    );
    assert_eq!(
        client.remove_member("developers", account).await.unwrap(),
        Outcome::Applied
    );
    assert!(emulator.state().dump().memberships.is_empty());
    assert_eq!(
        client.remove_member("developers", account).await.unwrap(),
        expect.repeated_remove
    );
    assert!(emulator.state().dump().memberships.is_empty());
}

scenario!(remove_member_from_a_deleted_group_is_already_done: jira, confluence, bitbucket);
async fn remove_member_from_a_deleted_group_is_already_done(product: Product) {
    let seed = Seed {
        accounts: vec![seed_account("frank")],
        groups: vec![seed_group("writers")],
        memberships: vec![seed_membership("writers", "frank")],
    };
    let (emulator, client) = start(product, seed).await;
    let key = first_key(&emulator);
    let account = AccountRef {
        id: &key,
        login: "frank",
    };

    assert_eq!(
        client.delete_group("writers").await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        client.remove_member("writers", account).await.unwrap(),
        Outcome::AlreadyDone
    );
}

scenario!(add_member_of_a_missing_user_is_not_found: jira, confluence, bitbucket);
async fn add_member_of_a_missing_user_is_not_found(product: Product) {
    let seed = Seed {
        groups: vec![seed_group("developers")],
        ..Seed::default()
    };
    let (_emulator, client) = start(product, seed).await;

    let result = client
        .add_member(
            "developers",
            AccountRef {
                id: expect(product).missing_id,
                login: "ghost",
            },
        )
        .await;

    assert_not_found(result);
}

scenario!(add_member_to_a_missing_group_is_not_found: jira, confluence, bitbucket);
async fn add_member_to_a_missing_group_is_not_found(product: Product) {
    let (emulator, client) = start(product, one_account("frank")).await;
    let key = first_key(&emulator);

    let result = client
        .add_member(
            "nowhere",
            AccountRef {
                id: &key,
                login: "frank",
            },
        )
        .await;

    assert_not_found(result);
}

scenario!(fetch_state_marks_the_administrators_the_product_lists: jira, confluence, bitbucket);
async fn fetch_state_marks_the_administrators_the_product_lists(product: Product) {
    let expect = expect(product);
    let mut config = seeded(
        product,
        Seed {
            accounts: vec![seed_account("root"), seed_account("dev")],
            groups: vec![seed_group("administrators"), seed_group("developers")],
            memberships: vec![
                seed_membership("administrators", "root"),
                seed_membership("developers", "dev"),
            ],
        },
    );
    if expect.lists_administrators {
        config.permissions = vec![
            SeedPermission::group("administrators", GlobalPermission::Admin),
            SeedPermission::group("developers", GlobalPermission::LicensedUser),
        ];
    }
    let emulator = spawn(config).await;
    let client = client_with(product, connection(&emulator));

    let state = client.fetch_state().await.unwrap();

    let administrators: Vec<&str> = state
        .accounts
        .iter()
        .filter(|account| account.administrator)
        .map(|account| account.login.as_str())
        .collect();
    let expected: &[&str] = if expect.lists_administrators {
        &["root"]
    } else {
        &[]
    };
    assert_eq!(administrators, expected);
    assert_eq!((state.accounts.len(), state.memberships.len()), (2, 2));
}

scenario!(test_connection_reports_the_user_the_version_and_the_rights: jira, confluence, bitbucket);
async fn test_connection_reports_the_user_the_version_and_the_rights(product: Product) {
    let emulator = spawn_product(product).await;
    let expect = expect(product);
    let token = Auth::Bearer(Secret::new(TOKEN));

    for auth in [token, basic("admin", "admin")] {
        let by_token = matches!(auth, Auth::Bearer(_));
        let client = client_with(product, connection_with(&emulator, auth));
        let result = client.test_connection().await;

        if by_token && !expect.accepts_token {
            let error = result.unwrap_err();
            assert!(
                matches!(error, Error::MissingPermission { status: 401, .. }),
                "{error:?}"
            );
            assert!(error.to_string().contains("BSERV-10482"), "{error}");
            continue;
        }
        let info = result.unwrap();
        assert_eq!(info.product, client.product());
        assert_eq!(info.user.as_deref(), expect.user);
        assert_eq!(info.version.as_deref(), expect.version);
        assert_eq!(info.permission.as_deref(), Some(expect.permission));
    }
}

scenario!(test_connection_names_the_permission_an_account_lacks: jira, confluence, bitbucket);
async fn test_connection_names_the_permission_an_account_lacks(product: Product) {
    let expect = expect(product);
    let mut config = seeded(
        product,
        Seed {
            accounts: vec![seed_account("svc"), seed_account("boss")],
            groups: vec![seed_group(expect.admin_group), seed_group("users")],
            memberships: vec![
                seed_membership(expect.admin_group, "boss"),
                seed_membership("users", "svc"),
            ],
        },
    );
    config.callers = vec![
        SeedCaller::with_password("svc", "svc-pw"),
        SeedCaller::with_password("boss", "boss-pw"),
    ];
    if product == Product::Bitbucket {
        config.permissions = vec![
            SeedPermission::group(expect.admin_group, GlobalPermission::Admin),
            SeedPermission::group("users", GlobalPermission::LicensedUser),
        ];
    }
    let emulator = spawn(config).await;
    let as_svc = client_with(product, connection_with(&emulator, basic("svc", "svc-pw")));
    let as_boss = client_with(
        product,
        connection_with(&emulator, basic("boss", "boss-pw")),
    );

    let refused = as_svc.test_connection().await.unwrap_err();
    let proven = as_boss.test_connection().await.unwrap();

    assert!(
        matches!(
            &refused,
            Error::MissingPermission { status, permission, .. }
                if *status == expect.missing_permission_status
                    && permission.contains(expect.group_permission)
        ),
        "{refused:?}"
    );
    assert!(
        refused.to_string().contains(expect.group_permission),
        "{refused}"
    );
    assert_eq!(proven.permission.as_deref(), Some(expect.group_permission));
}

scenario!(test_connection_with_a_bad_token_is_unauthorized: jira, confluence, bitbucket);
async fn test_connection_with_a_bad_token_is_unauthorized(product: Product) {
    let emulator = spawn_product(product).await;
    let expect = expect(product);
    let client = client_with(
        product,
        connection_with(&emulator, Auth::Bearer(Secret::new("wrong"))),
    );

    let error = client.test_connection().await.unwrap_err();

    assert!(
        matches!(error, Error::Unauthorized { status, .. } if status == expect.bad_token_status),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(expect.bad_token_message),
        "{error}"
    );
}

scenario!(test_connection_with_a_bad_password_is_unauthorized: jira, confluence, bitbucket);
async fn test_connection_with_a_bad_password_is_unauthorized(product: Product) {
    let emulator = spawn_product(product).await;
    let client = client_with(
        product,
        connection_with(
            &emulator,
            Auth::Basic {
                user: "admin".into(),
                password: Secret::new("wrong"),
            },
        ),
    );

    let error = client.test_connection().await.unwrap_err();

    assert!(
        matches!(error, Error::Unauthorized { status: 401, .. }),
        "{error:?}"
    );
}
