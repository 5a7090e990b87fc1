//! Test connection against a real Keycloak: the counts when all is well, and an error a
//! person can act on when it is not.

use config::Secret;
use keycloak::{Error, check::ConnectionReport, client::Client};
use test_support::keycloak::{Keycloak, RealmSpec, UserSpec};

use crate::helpers::settings;

#[tokio::test]
async fn check_reports_the_counts_of_users_and_groups() -> anyhow::Result<()> {
    let keycloak = Keycloak::shared().await?;
    let realm = keycloak
        .create_realm(
            RealmSpec::default()
                .group("/staff/devs")
                .user(UserSpec::new("ann").member_of("/staff"))
                .user(UserSpec::new("bob")),
        )
        .await?;
    let report = Client::new(settings(&realm))?.check().await?;
    assert_eq!(
        report,
        ConnectionReport {
            realm: realm.name().to_owned(),
            // The client's service account is not counted.
            users: 2,
            groups: 2,
        }
    );
    Ok(())
}

#[tokio::test]
async fn check_names_the_role_the_service_account_lacks() -> anyhow::Result<()> {
    let keycloak = Keycloak::shared().await?;
    let realm = keycloak
        .create_realm(RealmSpec::default().client_roles(&["query-groups"]))
        .await?;
    let error = Client::new(settings(&realm))?
        .check()
        .await
        .expect_err("cannot read users");
    assert!(
        matches!(
            &error,
            Error::MissingRole {
                role: "view-users",
                ..
            }
        ),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn check_refuses_a_wrong_client_secret_without_printing_it() -> anyhow::Result<()> {
    let keycloak = Keycloak::shared().await?;
    let realm = keycloak.create_realm(RealmSpec::default()).await?;
    let mut settings = settings(&realm);
    settings.client_secret = Secret::new("not-the-secret");
    let error = Client::new(settings)?
        .check()
        .await
        .expect_err("wrong secret");
    assert!(matches!(&error, Error::Unauthorized { .. }), "{error:?}");
    let printed = format!("{error} {error:?}");
    assert!(!printed.contains("not-the-secret"), "{printed}");
    Ok(())
}

#[tokio::test]
async fn check_reports_a_realm_that_does_not_exist() -> anyhow::Result<()> {
    let keycloak = Keycloak::shared().await?;
    let realm = keycloak.create_realm(RealmSpec::default()).await?;
    let mut settings = settings(&realm);
    settings.realm = "no-such-realm".to_owned();
    let error = Client::new(settings)?.check().await.expect_err("no realm");
    assert!(
        matches!(&error, Error::RealmNotFound { realm, .. } if realm == "no-such-realm"),
        "{error:?}"
    );
    Ok(())
}
