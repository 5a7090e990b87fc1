//! `TestConnection` against a real Keycloak realm and the product emulators, with the
//! settings of the shared configuration file.

use emulator::store::{GlobalPermission, Seed, SeedAccount, SeedCaller, SeedPermission};
use emulator::{Config, Product};
use proto::v1;
use test_support::keycloak::{Keycloak, RealmSpec, UserSpec};

use crate::helpers::{Options, spawn_app_with};

#[tokio::test]
async fn test_connection_checks_keycloak_and_each_enabled_product_with_its_settings() {
    let keycloak = Keycloak::shared().await.expect("Keycloak starts");
    let realm = keycloak
        .create_realm(
            RealmSpec::default()
                .user(UserSpec::new("alice").member_of("/staff"))
                .user(UserSpec::new("bob")),
        )
        .await
        .expect("a test realm");
    let jira = emulator::spawn(Config::for_tests(Product::Jira))
        .await
        .expect("the Jira emulator starts");
    let confluence = emulator::spawn(Config::for_tests(Product::Confluence))
        .await
        .expect("the Confluence emulator starts");
    let more_config = format!(
        "[keycloak.corp]\nendpoint = \"{}\"\nrealm = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\n\n\
         [products.jira]\nendpoint = \"{}\"\ntoken = \"test-token\"\n\n\
         [products.confluence]\nendpoint = \"{}\"\ntoken = \"not-the-token\"\nmax_retries = 0\n\n\
         [products.bitbucket]\nenabled = false\nendpoint = \"http://127.0.0.1:9\"\nuser = \"svc\"\npassword = \"pw\"\n",
        realm.base_url(),
        realm.name(),
        realm.client_id(),
        realm.client_secret(),
        jira.url(),
        confluence.url(),
    );
    let app = spawn_app_with(Options {
        more_config,
        ..Options::default()
    })
    .await;

    let checks = app
        .client
        .clone()
        .test_connection(v1::TestConnectionRequest::default())
        .await
        .expect("TestConnection")
        .into_inner()
        .checks;

    let targets: Vec<(&str, bool)> = checks
        .iter()
        .map(|check| (check.target.as_str(), check.ok))
        .collect();
    assert_eq!(
        targets,
        [
            ("keycloak:corp", true),
            ("jira", true),
            ("confluence", false)
        ],
        "{checks:#?}"
    );
    assert_eq!(
        checks[0].details.get("users").map(String::as_str),
        Some("2")
    );
    assert_eq!(
        checks[0].details.get("groups").map(String::as_str),
        Some("1")
    );
    assert!(checks[1].details.contains_key("version"), "{checks:#?}");
    assert_eq!(
        checks[1].details.get("permission").map(String::as_str),
        Some("SYSTEM_ADMIN"),
        "{checks:#?}"
    );
    assert!(
        checks[2].message.contains("credentials"),
        "{}",
        checks[2].message
    );

    let only_jira = app
        .client
        .clone()
        .test_connection(v1::TestConnectionRequest {
            targets: vec!["jira".to_owned()],
        })
        .await
        .expect("TestConnection")
        .into_inner()
        .checks;
    assert_eq!(only_jira.len(), 1);

    let unknown = app
        .client
        .clone()
        .test_connection(v1::TestConnectionRequest {
            targets: vec!["bitbucket".to_owned()],
        })
        .await
        .expect_err("bitbucket is disabled");
    assert_eq!(unknown.code(), tonic::Code::InvalidArgument);
    assert!(
        unknown
            .message()
            .contains("keycloak:corp, jira, confluence"),
        "{}",
        unknown.message()
    );
}

#[tokio::test]
async fn test_connection_without_connectors_or_products_is_a_failed_precondition() {
    let app = spawn_app_with(Options::default()).await;
    let status = app
        .client
        .clone()
        .test_connection(v1::TestConnectionRequest::default())
        .await
        .expect_err("nothing configured");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
}

fn account(login: &str) -> SeedAccount {
    SeedAccount {
        login: login.to_owned(),
        display_name: format!("{login} Example"),
        email: format!("{login}@example.com"),
        active: true,
        read_only: false,
    }
}

/// An emulator of `product` where `svc` (password `pw`) may sign in, with only the rights
/// `grant` gives it.
async fn with_service_account(
    product: Product,
    grant: impl FnOnce(&mut Config),
) -> emulator::Running {
    let mut config = Config::for_tests(product);
    config.seed = Seed {
        accounts: vec![account("svc")],
        ..Seed::default()
    };
    config.callers = vec![SeedCaller::with_password("svc", "pw")];
    grant(&mut config);
    emulator::spawn(config).await.expect("the emulator starts")
}

#[tokio::test]
async fn test_connection_fails_naming_the_permission_the_writes_need() {
    let jira = with_service_account(Product::Jira, |_| {}).await;
    let confluence = with_service_account(Product::Confluence, |_| {}).await;
    // Licensed, so it may read users and groups, but no administrator.
    let bitbucket = with_service_account(Product::Bitbucket, |config| {
        config.permissions = vec![SeedPermission::user("svc", GlobalPermission::LicensedUser)];
    })
    .await;
    let more_config = format!(
        "[products.jira]\nendpoint = \"{}\"\nuser = \"svc\"\npassword = \"pw\"\n\n\
         [products.confluence]\nendpoint = \"{}\"\nuser = \"svc\"\npassword = \"pw\"\n\n\
         [products.bitbucket]\nendpoint = \"{}\"\nuser = \"svc\"\npassword = \"pw\"\n",
        jira.url(),
        confluence.url(),
        bitbucket.url(),
    );
    let app = spawn_app_with(Options {
        more_config,
        ..Options::default()
    })
    .await;

    let checks = app
        .client
        .clone()
        .test_connection(v1::TestConnectionRequest::default())
        .await
        .expect("TestConnection")
        .into_inner()
        .checks;

    let failed: Vec<(&str, bool)> = checks
        .iter()
        .map(|check| (check.target.as_str(), check.ok))
        .collect();
    assert_eq!(
        failed,
        [("jira", false), ("confluence", false), ("bitbucket", false)],
        "{checks:#?}"
    );
    for (check, permission) in
        checks
            .iter()
            .zip(["ADMINISTER", "Confluence Administrator", "ADMIN"])
    {
        assert!(
            check.message.contains("lacks") && check.message.contains(permission),
            "{}: {}",
            check.target,
            check.message
        );
    }
}

#[tokio::test]
async fn test_connection_passes_an_administrator_and_says_what_it_holds() {
    let bitbucket = with_service_account(Product::Bitbucket, |config| {
        config.permissions = vec![SeedPermission::user("svc", GlobalPermission::Admin)];
    })
    .await;
    let more_config = format!(
        "[products.bitbucket]\nendpoint = \"{}\"\nuser = \"svc\"\npassword = \"pw\"\n",
        bitbucket.url(),
    );
    let app = spawn_app_with(Options {
        more_config,
        ..Options::default()
    })
    .await;

    let checks = app
        .client
        .clone()
        .test_connection(v1::TestConnectionRequest::default())
        .await
        .expect("TestConnection")
        .into_inner()
        .checks;

    assert_eq!(checks.len(), 1);
    assert!(checks[0].ok, "{checks:#?}");
    assert_eq!(
        checks[0].details.get("permission").map(String::as_str),
        Some("ADMIN")
    );
    assert!(checks[0].message.contains("ADMIN"), "{}", checks[0].message);
}

/// The `keycloak:corp` check of TestConnection against `realm`.
async fn keycloak_check(realm: &test_support::keycloak::TestRealm<'_>) -> v1::ConnectionCheck {
    let more_config = format!(
        "[keycloak.corp]\nendpoint = \"{}\"\nrealm = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\n",
        realm.base_url(),
        realm.name(),
        realm.client_id(),
        realm.client_secret(),
    );
    let app = spawn_app_with(Options {
        more_config,
        ..Options::default()
    })
    .await;
    let mut checks = app
        .client
        .clone()
        .test_connection(v1::TestConnectionRequest {
            targets: vec!["keycloak:corp".to_owned()],
        })
        .await
        .expect("TestConnection")
        .into_inner()
        .checks;
    assert_eq!(checks.len(), 1, "{checks:#?}");
    checks.remove(0)
}

#[tokio::test]
async fn test_connection_says_whether_the_realm_saves_the_events_keysync_would_follow() {
    let keycloak = Keycloak::shared().await.expect("Keycloak starts");
    let realm = keycloak
        .create_realm(RealmSpec::default().user(UserSpec::new("alice")))
        .await
        .expect("a test realm");

    // A new realm saves no events: the fetch works, and the check says what to turn on.
    let check = keycloak_check(&realm).await;
    assert!(check.ok, "events are not needed by a full sync: {check:#?}");
    let events = check.details.get("events").expect("an events detail");
    assert!(events.starts_with("not ready: "), "{events}");
    assert!(events.contains("`adminEventsEnabled`"), "{events}");
    assert!(events.contains("Include representation"), "{events}");

    // Turned on as the check says: ready.
    realm
        .save_events(&keycloak::events::USER_EVENT_TYPES)
        .await
        .expect("events turned on");
    let check = keycloak_check(&realm).await;
    let events = check.details.get("events").expect("an events detail");
    assert!(events.starts_with("ready"), "{events}");

    // A service account without view-events: named.
    let no_events_role = keycloak
        .create_realm(
            RealmSpec::default()
                .user(UserSpec::new("bob"))
                .client_roles(&["view-users", "query-groups"]),
        )
        .await
        .expect("a test realm");
    let check = keycloak_check(&no_events_role).await;
    assert!(check.ok, "{check:#?}");
    let events = check.details.get("events").expect("an events detail");
    assert!(events.starts_with("unknown: "), "{events}");
    assert!(events.contains("`view-events`"), "{events}");
}
